"""mle-ppl's implementation, in layers (docs/architecture.md); the public face is ``mle_ppl``."""
