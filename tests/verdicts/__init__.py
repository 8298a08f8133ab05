"""The labelled verdict corpus."""
