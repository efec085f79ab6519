"""Layer 4, api: ``mle_ppl.fit`` and the user-facing ``MLEFit`` with its convenience methods."""
