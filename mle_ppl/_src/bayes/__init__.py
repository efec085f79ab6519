"""bayes layer."""
