"""The start-up banner and exit line (`proxy.banner`) with one worker and with several."""

from __future__ import annotations

from pathlib import Path

from proxy.aggregate import merge_registries, registry_document
from proxy.banner import exit_line, startup_lines
from proxy.config.model import Config
from proxy.metrics import Metrics


def test_the_banner_names_the_worker_count() -> None:
    """The address line ends with the number of proxy workers (1 for a lone proxy)."""
    config = Config(source=Path("routes.yaml"))

    def banner(workers: int) -> list[str]:
        return startup_lines(
            config, host="127.0.0.1", port=8080, admin_host="127.0.0.1", admin_port=8081, store="s.db",
            shadow="worker process", workers=workers,
        )  # fmt: skip

    lone, many = banner(1), banner(4)
    assert lone[1].endswith("workers 1")
    assert many[1].endswith("workers 4")


def test_the_exit_line_sums_every_workers_final_figures() -> None:
    """With several workers the exit line counts the requests and shadow outcomes of all of them, and says so."""
    workers = [Metrics(), Metrics()]
    for n, metrics in zip((3, 4), workers, strict=True):
        metrics.requests.inc(("r", "legacy", "2xx"), n)
        metrics.shadow.inc(("r", "candidate", "match", ""), n)
    merged = merge_registries(registry_document(m) for m in workers)
    assert (
        exit_line(merged, workers=2) == "strangler stopped: 7 requests served by 2 workers, 7 shadow outcomes recorded"
    )
    assert exit_line(workers[0]) == "strangler stopped: 3 requests served, 3 shadow outcomes recorded"
