"""Shadow traffic: mirror requests, compare responses, store differences."""

# Importing proxy installs the compiled request path's loader (proxy.native) before any shadow module loads: the
# shadow worker's first import is shadow.worker.process, which is compiled too.
import proxy  # noqa: F401
