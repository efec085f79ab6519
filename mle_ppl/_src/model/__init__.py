"""Layer 1, model: model files, safe expressions, formulas, data binding, up to a pm.Model."""
