"""Fill a store with a week of traffic counts (1,000,000 requests by default, across ~170,000 distinct unrouted
paths and a few routes) and time `strangler inventory`'s work on it: the store query, the clustering, the JSON.

Run: .venv/bin/python -m benchmarks.inventory_bench [--requests 1000000] [--path /tmp/inventory.db] [--keep]
Each request is one traffic row of its minute (count 1, a status and a latency bucket), as the proxy's tally writes
them when paths rarely repeat within a minute: the worst case for the inventory's input size.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from proxy.config.loader import parse_config
from reports.inventory import build_inventory, propose_routes
from reports.inventory_view import inventory_document
from shadow.store.database import Store
from shadow.values import TrafficCount, latency_bucket

WEEK = 7 * 86400
CONFIG = """
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9001"}
  new: {url: "http://127.0.0.1:9002"}
defaults: {legacy: legacy, new: new}
routes:
  - id: orders-read
    match:
      path: /api/orders/{id:int}
      methods: [GET]
    mode: shadow
  - id: catalog
    match: {path: /api/catalog/**}
    mode: shadow
"""


def _path(rng: random.Random) -> tuple[str, str, str]:
    """(route_id, method, path) of one request."""
    roll = rng.random()
    if roll < 0.2:
        return "orders-read", "GET", "/api/orders/{id:int}"
    if roll < 0.3:
        return "catalog", "GET", "/api/catalog/**"
    if roll < 0.65:
        return "", "GET", f"/users/{rng.randrange(1, 100_000)}"
    if roll < 0.75:
        return "", rng.choice(("GET", "PUT")), f"/users/{rng.randrange(1, 100_000)}/orders/{rng.randrange(1, 50)}"
    if roll < 0.85:
        return "", "GET", f"/sessions/{uuid.UUID(int=rng.getrandbits(128))}"
    if roll < 0.93:
        return "", "GET", f"/blobs/{rng.getrandbits(48):012x}"
    if roll < 0.98:
        return "", "GET", f"/db/table{rng.randrange(40)}.json"
    return "", "POST", "/api/orders/" + str(rng.randrange(1, 1000))


def fill(store: Store, requests: int, end: int, rng: random.Random) -> None:
    start = end - WEEK
    batch: list[TrafficCount] = []
    for i in range(requests):
        route_id, method, path = _path(rng)
        minute = (start + i * WEEK // requests) // 60 * 60
        status = 200 if rng.random() < 0.97 else rng.choice((404, 500))
        ms = rng.lognormvariate(2.5, 0.6)
        histogram = ((status, latency_bucket(ms), 1),)
        mode = "shadow" if route_id else "legacy"
        batch.append(TrafficCount(minute, route_id, mode, "legacy", method, path, 1, int(status >= 500), ms, histogram))
        if len(batch) == 20_000:
            store.write_batch([], batch)
            batch = []
    store.write_batch([], batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    path = args.path or Path(tempfile.mkdtemp()) / "inventory.db"
    config = parse_config(CONFIG, Path("routes.yaml"))
    end = int(time.time()) // 60 * 60
    with Store.open(path) as store:
        pass
    with sqlite3.connect(path) as conn:  # a store made a week ago: its traffic is all in path_rollup
        conn.execute("UPDATE meta SET value = ? WHERE key = 'path_rollup_since'", (str(end - WEEK),))
    with Store.open(path) as store:
        t0 = time.perf_counter()
        fill(store, args.requests, end, random.Random(7))
        print(f"filled {args.requests:,} requests in {time.perf_counter() - t0:.1f}s ({path})")
    with Store.open_readers([path]) as store:
        t0, c0 = time.perf_counter(), time.process_time()
        rows = store.path_traffic()
        t1, c1 = time.perf_counter(), time.process_time()
        inventory = build_inventory(rows, config.routes)
        t2, c2 = time.perf_counter(), time.process_time()
        text = orjson.dumps(inventory_document(inventory))
        proposals = propose_routes(inventory, [r.id for r in config.routes])
        t3, c3 = time.perf_counter(), time.process_time()
    # CPU time beside wall time: on a shared machine the wall clock also counts other processes' turns.
    print(
        f"inventory of {inventory.requests:,} requests, {len(rows):,} distinct (route, method, path) rows,"
        f" {len(inventory.endpoints)} templates ({len(text):,} bytes of JSON), {len(proposals)} proposed routes\n"
        f"  query      {t1 - t0:6.2f}s wall {c1 - c0:6.2f}s CPU\n"
        f"  clustering {t2 - t1:6.2f}s wall {c2 - c1:6.2f}s CPU\n"
        f"  JSON       {t3 - t2:6.2f}s wall {c3 - c2:6.2f}s CPU\n"
        f"  total      {t3 - t0:6.2f}s wall {c3 - c0:6.2f}s CPU"
    )
    for e in inventory.endpoints:
        print(f"  {e.template:40} {','.join(e.methods):8} {e.requests:>8,}  {e.route or '-'}")
    if not args.keep:
        for extra in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            extra.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
