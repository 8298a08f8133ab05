"""Migration reports: read the store, build summaries, render them."""
