"""The clock every duration is read from: the latencies stored, compared and reported, the request-duration metric
and the access log's duration.

`loop.time()` is the event loop's clock, and under uvloop (what `strangler serve` and the shadow worker run on) it
is libuv's: read once per loop iteration and kept in whole milliseconds. A latency taken from it is 0 or 1 ms for a
fast back end, and grows by however long the iteration had already run when the request started, so a report's
legacy / new latency ratio could read 0.00× (seen: legacy p50 1.0 ms, new 0.0). It stays the clock of deadlines and
timers, which are scheduled on it; durations come from `duration_clock` (time.perf_counter: monotonic, sub-microsecond,
about 50 ns a call).
"""

from __future__ import annotations

from time import perf_counter as duration_clock

__all__ = ["duration_clock"]
