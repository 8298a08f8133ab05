"""Compare a legacy and a new response field by field; the only deepdiff import."""
