"""Shadow traffic: mirror requests, compare responses, store differences."""
