"""strangler proxy core: routing, forwarding, admin. Imports no deepdiff, sqlite-utils, rich or typer."""
