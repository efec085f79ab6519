"""Layer 5, bayes: NUTS on the same model, the MLE-vs-posterior comparison and its plots."""
