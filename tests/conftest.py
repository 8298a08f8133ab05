"""Shared fixtures. Builders live in tests/factories.py."""
