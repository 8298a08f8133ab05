"""Normalise response bodies and headers for comparison (pure)."""
