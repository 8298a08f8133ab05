"""Tests for proxy/."""
