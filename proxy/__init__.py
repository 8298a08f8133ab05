"""strangler proxy core: routing, forwarding, admin. Imports no deepdiff, sqlite-utils, rich or typer."""

from proxy import native

native.activate()  # before any submodule: the request path's compiled modules load only from a current build
