"""What `strangler serve` says on stderr when it starts and when it exits (issue 11: a start-up banner), as plain
text lines built from the running proxy's state (pure; the caller writes them)."""

from __future__ import annotations

from collections import Counter
from importlib import metadata

from proxy.config.model import MODES, Config
from proxy.metrics import Metrics


def version() -> str:
    try:
        return metadata.version("strangler")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def startup_lines(
    config: Config,
    *,
    host: str,
    port: int,
    admin_host: str,
    admin_port: int,
    store: str,
    shadow: str,
    listener: str = "",
    workers: int = 1,
    code: str = "",
) -> list[str]:
    """Version, addresses (and which proxy listener serves), proxy workers, routes by mode, the store, how the
    shadow side runs, and whether the request path runs compiled (`code`, from `proxy.native`)."""
    served_by = f" ({listener} listener)" if listener else ""
    by_mode = Counter(r.mode for r in config.routes)
    modes = ", ".join(f"{by_mode[m]} {m}" for m in MODES if by_mode[m]) or "none"
    scheme = "http" if config.listen.tls is None else "https"  # the admin listener is always clear text
    lines = [
        f"strangler {version()} serving {config.source}",
        f"  proxy  {scheme}://{host}:{port}{served_by}    admin  http://{admin_host}:{admin_port}    workers {workers}",
        f"  routes {len(config.routes)} ({modes}); unmatched requests go to {config.defaults.legacy}",
        f"  store  {store}    shadow side: {shadow}",
    ]
    if code:
        lines.append(f"  code   {code}")
    return lines


def exit_line(metrics: Metrics, workers: int = 1) -> str:
    """Requests served and shadow outcomes recorded (rows written or drops counted) since start; with several
    workers, `metrics` holds their final registries merged (`proxy.aggregate`)."""
    served = int(sum(metrics.requests.values.values()))
    recorded = int(sum(metrics.shadow.values.values()))
    over = f" by {workers} workers" if workers > 1 else ""
    return f"strangler stopped: {served} requests served{over}, {recorded} shadow outcomes recorded"
