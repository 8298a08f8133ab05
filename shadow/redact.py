"""Redact secrets before anything reaches the disk."""
