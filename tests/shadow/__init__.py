"""Tests for shadow/."""
