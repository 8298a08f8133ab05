"""How many shadow rows one SQLite store file takes per second: the ceiling `docs/scale.md` plans around.

Run: .venv/bin/python -m benchmarks.store_rate [--seconds 5] [--writers 1] [--mismatch 0.05] [--path FILE]

Two figures, each from the real store code and realistic rows (a 1.4 KB JSON body pair, request headers on every
row, response headers and bodies on mismatches and on `--sample-matches` of matches, three differences per
mismatch, twenty routes):

- **writer path**: records handed to the real `StoreWriter` (`submit_many`, 200 at a time, as the shadow worker's
  compare thread does), which turns them into rows in the caller's thread and writes them in its own thread in
  batches, for `--seconds`; rows/s counts the rows written, the final flush included. `--writers N` runs N such
  processes on ONE file, as N shadow workers on one machine would.
- **SQLite alone**: batches already turned into rows, written back to back with `Store.write_prepared` (one
  transaction per 2,000 rows, the writer's batch size): the file's own ceiling, without the Python that builds rows.

MB/s is the store file's size after the run (WAL checkpointed) over the run's duration: what the disk must absorb.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shadow.store.database import Store
from shadow.store.rows import PreparedBatch, prepare_records
from shadow.store.writer import StoreWriter
from shadow.values import Difference, ExchangeRecord, StoredBody

ROUTES = [(f"route-{i:02d}", f"/api/r{i:02d}/{{id}}") for i in range(20)]
POOL = 4000  # distinct records cycled through (building them is the compare's job, not the store's)
SUBMIT = 200  # records per submit_many, like the worker's compare thread hands over
WRITE_BATCH = 2000  # StoreWriter's default batch_size
MAX_DEPTH = 20_000  # keep the writer's queue below its bound: a benchmark measures rows written, never dropped
REQUEST_HEADERS = (
    ("accept", "application/json"),
    ("accept-encoding", "gzip, br"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    ("x-request-id", "5b0e7c1e-8f4a-4d0e-9d57-3b1c2f9a7e10"),
    ("x-forwarded-for", "203.0.113.7"),
    ("authorization", "[redacted]"),
)
RESPONSE_HEADERS = (("content-type", "application/json"), ("content-length", "1400"), ("cache-control", "no-store"))


def json_body(seed: int) -> bytes:
    """About 1.4 KB of JSON, different per seed (so each compresses like a real body, not like a repeat)."""
    rng = random.Random(seed)
    items = ",".join(
        f'{{"sku":"SKU-{rng.randrange(10**6):06d}","qty":{rng.randrange(1, 9)},"price":{rng.uniform(1, 500):.2f},'
        f'"name":"item {rng.randrange(10**4)}"}}'
        for _ in range(14)
    )
    return (
        f'{{"id":{seed},"customer":{{"id":{rng.randrange(10**6)},"email":"c{seed}@example.com"}},'
        f'"status":"shipped","total":{rng.uniform(10, 5000):.2f},"items":[{items}],'
        f'"meta":{{"generated_at":"2026-12-06T15:{rng.randrange(60):02d}:00Z"}}}}'
    ).encode()


def record_pool(mismatch: float, sample_matches: float, seed: int = 1) -> list[ExchangeRecord]:
    """POOL records with the shadow worker's keep rules: request headers always; response headers and bodies on
    every mismatch and on a `sample_matches` share of matches."""
    rng = random.Random(seed)
    pool = []
    now = time.time()
    for i in range(POOL):
        route_id, template = ROUTES[i % len(ROUTES)]
        mismatched = rng.random() < mismatch
        keep = mismatched or rng.random() < sample_matches
        legacy = json_body(i)
        new = legacy.replace(b'"status":"shipped"', b'"status":"SHIPPED"') if mismatched else legacy
        differences = (
            (
                Difference("$.status", "$.status", "changed", '"shipped"', '"SHIPPED"'),
                Difference("$.items[3].price", "$.items[*].price", "changed", "12.5", "12.50"),
                Difference("header.cache-control", "header.cache-control", "changed", '"no-store"', '"private"'),
            )
            if mismatched
            else ()
        )
        pool.append(
            ExchangeRecord(
                time=now + i * 0.001,
                route_id=route_id,
                mode="shadow",
                pair="candidate",
                method="GET",
                template=template,
                path=template.replace("{id}", str(rng.randrange(10**6))),
                query="expand=items&page=2",
                request_id=f"{rng.getrandbits(64):016x}",
                served_by="legacy",
                outcome="mismatch" if mismatched else "match",
                reason=None,
                legacy_status=200,
                legacy_latency_ms=rng.lognormvariate(2.5, 0.6),
                legacy_size=len(legacy),
                new_status=200,
                new_latency_ms=rng.lognormvariate(2.7, 0.6),
                new_size=len(new),
                compare_ms=rng.uniform(0.02, 0.2),
                request_headers=REQUEST_HEADERS,
                legacy_headers=RESPONSE_HEADERS if keep else (),
                new_headers=RESPONSE_HEADERS if keep else (),
                legacy_body=StoredBody(legacy, len(legacy), False) if keep else None,
                new_body=StoredBody(new, len(new), False) if keep else None,
                differences=differences,
            )
        )
    return pool


@dataclass(frozen=True, slots=True)
class Rate:
    rows: int
    seconds: float  # wall clock
    cpu: float  # CPU seconds of the process (all its threads): steadier than the wall clock on a busy machine

    @property
    def per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def writer_path(path: str, seconds: float, mismatch: float, sample_matches: float, seed: int) -> Rate:
    """Rows written through a real StoreWriter in `seconds` (plus its final flush), from one process."""
    pool = record_pool(mismatch, sample_matches, seed)
    writer = StoreWriter(path)
    cpu = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    i = 0
    while time.perf_counter() < end:
        if writer.depth() > MAX_DEPTH:
            time.sleep(0.001)
            continue
        writer.submit_many(pool[i : i + SUBMIT])
        i = (i + SUBMIT) % POOL
    writer.close()
    elapsed = time.perf_counter() - start
    assert writer.rows_lost == 0, f"{writer.rows_lost} rows lost: the benchmark must measure rows written"
    return Rate(writer.written, elapsed, time.process_time() - cpu)


def sqlite_alone(path: str, seconds: float, mismatch: float, sample_matches: float) -> Rate:
    """Rows written by `Store.write_prepared` of batches prepared beforehand, back to back for `seconds`."""
    pool = record_pool(mismatch, sample_matches)
    batches: list[PreparedBatch] = [prepare_records(pool[i : i + WRITE_BATCH]) for i in range(0, POOL, WRITE_BATCH)]
    rows = 0
    with Store.open(path) as store:
        cpu = time.process_time()
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            batch = batches[rows // WRITE_BATCH % len(batches)]
            store.write_prepared(batch)
            rows += len(batch)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return Rate(rows, elapsed, cpu)


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def report(name: str, rate: Rate, path: Path, note: str) -> None:
    size = file_bytes(path)
    print(
        f"store_rate: {name:<14} {rate.per_second:>9,.0f} rows/s  {size / rate.seconds / 1e6:6.2f} MB/s  "
        f"{rate.rows / rate.cpu if rate.cpu else 0:>9,.0f} rows per CPU-second  ({rate.rows:,} rows in "
        f"{rate.seconds:.1f} s, {size / max(rate.rows, 1):,.0f} B/row on disk; {note})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--writers", type=int, default=1, help="processes writing the one file (writer path)")
    parser.add_argument("--mismatch", type=float, default=0.05, help="share of mismatching rows")
    parser.add_argument("--sample-matches", type=float, default=0.01, help="share of matches keeping bodies")
    parser.add_argument("--path", type=Path, default=None, help="directory for the store files (default: a temp one)")
    args = parser.parse_args()
    shape = f"{args.mismatch:.0%} mismatches, {args.sample_matches:.0%} of matches with bodies"
    print(f"store_rate: {os.cpu_count()} cores; {shape}")
    with tempfile.TemporaryDirectory(dir=args.path) as tmp:
        shared = Path(tmp) / "writers.db"
        Store.open(shared).close()  # created and migrated once, before the writers race to it
        if args.writers == 1:
            rate = writer_path(str(shared), args.seconds, args.mismatch, args.sample_matches, 1)
        else:
            spawn = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(args.writers, mp_context=spawn) as pool:
                futures = [
                    pool.submit(writer_path, str(shared), args.seconds, args.mismatch, args.sample_matches, seed)
                    for seed in range(1, args.writers + 1)
                ]
                rates = [f.result() for f in futures]
            rate = Rate(sum(r.rows for r in rates), max(r.seconds for r in rates), sum(r.cpu for r in rates))
        report("writer path", rate, shared, f"{args.writers} writer process(es) on one file, StoreWriter")
        alone = Path(tmp) / "alone.db"
        report("SQLite alone", sqlite_alone(str(alone), args.seconds, args.mismatch, args.sample_matches), alone,
               "Store.write_prepared of prepared 2,000-row batches")  # fmt: skip


if __name__ == "__main__":
    main()
