"""Layer 3, inference: beyond Wald (profile, sandwich, bootstrap), tests (LRT), predictions."""
