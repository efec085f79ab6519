"""The bundled model library of mle-ppl (model files and their small data tables)."""
