"""Fill a store with a week of exchanges (1,000,000 by default) and time the report queries on it.

Run: .venv/bin/python -m benchmarks.store_fill [--rows 1000000] [--path /tmp/fill.db] [--keep]
Rows go through `Store.write_batch` (executemany, rollups in the same transaction) in batches of 5,000; about 2% of
exchanges carry differences and 0.2% carry bodies, like a migration that mostly matches.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from shadow.store.database import Store
from shadow.values import Difference, ExchangeRecord, Outcome, StoredBody

WEEK = 7 * 86400.0
ROUTES = [f"route-{i:02d}" for i in range(20)]
GROUPS = ["$.total", "$.items[*].qty", "$.items[*].price", "$.meta.generated_at", "header.content-type", "status"]
WEIGHTS: dict[Outcome, int] = {"match": 90, "mismatch": 4, "candidate_error": 2, "skipped": 3, "dropped": 1}
OUTCOMES: list[Outcome] = [outcome for outcome, n in WEIGHTS.items() for _ in range(n)]


def records(rows: int, end: float, rng: random.Random) -> Iterator[ExchangeRecord]:
    step = WEEK / rows
    body = StoredBody(b'{"items": [' + b'{"qty": 1, "price": 9.5}, ' * 40 + b"{}]}", 1040, False)
    for i in range(rows):
        outcome = rng.choice(OUTCOMES)
        diffs: tuple[Difference, ...] = ()
        if outcome == "mismatch" and rng.random() < 0.5:
            group = rng.choice(GROUPS)
            diffs = (Difference(group.replace("*", "0"), group, "changed", "1", "2"),)
        compared = outcome in ("match", "mismatch")
        yield ExchangeRecord(
            time=end - WEEK + i * step,
            route_id=rng.choice(ROUTES),
            mode="shadow",
            pair="noise" if rng.random() < 0.05 else "candidate",
            method="GET",
            template="/api/items/{id}",
            path=f"/api/items/{rng.randrange(10_000)}",
            query="",
            request_id=f"{i:x}",
            served_by="legacy",
            outcome=outcome,
            reason="timeout" if outcome in ("candidate_error", "skipped", "dropped") else None,
            legacy_status=200,
            legacy_latency_ms=rng.lognormvariate(3.0, 0.8),
            legacy_size=1040,
            new_status=200 if compared else None,
            new_latency_ms=rng.lognormvariate(3.2, 0.6) if compared else None,
            new_size=1040 if compared else None,
            legacy_body=body if rng.random() < 0.002 else None,
            differences=diffs,
        )


def timed(name: str, call: Callable[[], object]) -> None:
    start = time.perf_counter()
    result = call()
    size = len(result) if isinstance(result, list | dict) else "-"
    print(f"  {name:<44} {1000 * (time.perf_counter() - start):8.1f} ms  ({size} results)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--path", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the filled file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "fill.db"
        end = time.time()
        rng = random.Random(1)
        start = time.perf_counter()
        with Store.open(path) as store:
            batch: list[ExchangeRecord] = []
            for record in records(args.rows, end, rng):
                batch.append(record)
                if len(batch) == 5000:
                    store.write_batch(batch)
                    batch.clear()
            store.write_batch(batch)
        fill = time.perf_counter() - start
        print(
            f"filled {args.rows:,} exchanges in {fill:.1f} s ({args.rows / fill:,.0f}/s); {path.stat().st_size:,} bytes"
        )
        with Store.open(path, create=False) as store:
            mid_hour = end - 86400 - 1800.5
            timed("route_stats()", store.route_stats)
            timed("route_stats(since=1 day ago, mid-hour)", lambda: store.route_stats(since=mid_hour))
            timed("route_stats(route_id=...)", lambda: store.route_stats(route_id="route-03"))
            timed("latency_percentiles()", store.latency_percentiles)
            timed("latency_percentiles(since=1 day ago)", lambda: store.latency_percentiles(since=mid_hour))
            timed("latency_percentiles(route_id=...)", lambda: store.latency_percentiles(route_id="route-03"))
            timed("field_stats()", store.field_stats)
            timed("field_stats(since=1 day ago)", lambda: store.field_stats(since=mid_hour))
            timed("list_exchanges(route, mismatch, 50)", lambda: store.list_exchanges("route-03", "mismatch"))
            timed("list_exchanges(field_group=..., 50)", lambda: store.list_exchanges(field_group="$.total"))
            timed("field_samples(route, group, 200)", lambda: store.field_samples("route-03", "$.total", 200))
            timed("exchanges_for_replay(route, 100)", lambda: store.exchanges_for_replay("route-03"))
            timed("enforce_retention(6 days, 900k)", lambda: [store.enforce_retention(6 * 86400, 900_000, end)])
        if args.keep and args.path is None:
            kept = Path(tempfile.gettempdir()) / "strangler-store-fill.db"
            path.replace(kept)
            print(f"kept {kept}")


if __name__ == "__main__":
    main()
