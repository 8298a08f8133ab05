"""Tests for reports/."""
