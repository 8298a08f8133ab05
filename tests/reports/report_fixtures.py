"""A routes file for the report tests and a filled store built from it once per test module.

Its routes give every verdict from the demo's planted differences: orders-list differs only in the volatile
`$.meta.generated_at` (noise, checked against a second legacy call) and is ready; orders-read (`$.currency`),
customers (`$.phone` → `$.phone_number`) and catalog (float prices) diverge; search fails on the new side every
17th call (candidate errors); orders-write and reports compare nothing (needs samples); /health is unrouted.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.config.loader import load_config
from tests.pipeline import fill_store

REPORT_CONFIG = """\
# Report test routes (comments must survive `noise suggest --apply`).
version: 1
listen: {host: 127.0.0.1, port: 0}
admin: {host: 127.0.0.1, port: 0}
store:
  path: strangler.db
  sample_matches: 100%
upstreams:
  legacy: {url: http://127.0.0.1:9001}
  new: {url: http://127.0.0.1:9002}
defaults:
  readiness:
    min_compared: 20        # small, so a few hundred requests can make a route ready
routes:
  - id: orders-read
    match: {path: "/api/orders/{id:int}", methods: [GET]}
    mode: shadow
  - id: orders-list
    match: {path: /api/orders, methods: [GET]}
    mode: shadow
    noise: {sample: 1.0}    # every request also goes to legacy twice: generated_at is legacy's own noise
  - id: orders-write
    match: {path: /api/orders, methods: [POST]}
    mode: legacy
  - id: customers
    match: {path: /api/customers/**}
    mode: shadow
  - id: catalog
    match: {path: /api/catalog/**}
    mode: shadow
  - id: search
    match: {path: /api/search}
    mode: shadow
  - id: reports
    match: {path: /reports/**}
    mode: new
"""


@dataclass(frozen=True, slots=True)
class Filled:
    config: Path
    db: Path


def fill(factory: pytest.TempPathFactory, name: str, requests: int = 300) -> Filled:
    """A private copy (config, store and its key) of a store the real pipeline filled once per test session.

    Called from synchronous module-scoped fixtures, so `asyncio.run` owns its loop; the copy lets a module change
    its files without disturbing the others.
    """
    source = factory.getbasetemp() / f"report-store-{requests}"
    if not (source / "done").exists():
        source.mkdir(exist_ok=True)
        asyncio.run(fill_store(source, requests=requests, config_text=REPORT_CONFIG))
        (source / "done").touch()
    target = factory.mktemp(name)
    for item in source.iterdir():
        if item.is_file() and item.name != "done":
            shutil.copy2(item, target / item.name)
    config = target / "routes.yaml"
    return Filled(config, load_config(config).store.path)
