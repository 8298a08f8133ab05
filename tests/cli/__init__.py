"""Tests for cli/."""
