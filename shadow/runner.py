"""Mirror requests to the other side and feed comparisons to the store."""
