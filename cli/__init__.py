"""The strangler command line."""
