"""Layer 2, engine: the objective (the one seam), optimizers, diagnostics, and the core estimate."""
