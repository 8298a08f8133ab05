"""The access log: one line per request (JSON or combined), sampled, redacted, written off the event loop."""
