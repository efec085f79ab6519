"""Layer 3, report: closed-form cross-checks, teaching demos and the ArviZ DataTree export."""
