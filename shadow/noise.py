"""Tell real differences from non-determinism (legacy vs legacy)."""
