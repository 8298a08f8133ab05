"""Judging finished pairs and recording every exchange: on the loop when the fast path can, else in a thread.

Pairs the fast path can judge (matches, failures; small bodies) are judged and recorded on the loop, in one handoff
every `HANDOFF` seconds; only the rest cross to the compare thread (deepdiff, never on the loop), in batches, and
their metric updates come back the same way. Records go to the store's writer thread in batches too. Every wake-up
of a thread must win the GIL back from the busy loop, which costs both threads far more than the work itself, so
threads wake per batch, never per pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Protocol

from proxy.config.model import Redact, Route
from proxy.events import ExchangeStart, ResponseSnapshot
from proxy.metrics import Metrics
from shadow.judge.compare import Unjudged, judge_pair, judge_pair_quick, judge_rest
from shadow.judge.origins import exchange_origins
from shadow.records import exchange_record, unpaired_record
from shadow.redact import Redactor
from shadow.store.writer import StoreWriter
from shadow.values import Comparison, ExchangeRecord, Outcome, Pair

log = logging.getLogger("strangler.shadow")

HANDOFF = 0.01  # seconds finished pairs (and records made on the loop) gather before crossing to a thread
# Pairs whose bodies are both at most this size are judged on the loop when no field-by-field comparison is needed
# (matches, failures): the fast path costs microseconds, less than waking the compare thread for them.
LOOP_JUDGE_MAX = 64 * 1024

# (route id, pair, outcome, reason, compare seconds): one metric update, made in a thread and applied on the loop.
_FELL_BACK: tuple[Outcome, str | None, Comparison | None] = ("skipped", "primary_fell_back", None)
_Tally = tuple[str, Pair, Outcome, str | None, float | None]


class FinishedPair(Protocol):
    """A mirrored exchange with both sides known."""

    @property
    def start(self) -> ExchangeStart: ...
    @property
    def route(self) -> Route: ...
    @property
    def pair(self) -> Pair: ...
    @property
    def primary(self) -> ResponseSnapshot | None: ...
    @property
    def candidate(self) -> ResponseSnapshot | None: ...


_Slow = tuple[FinishedPair, Unjudged | None]  # a pair for the compare thread, and what the loop left of it


class Recorder:
    """Judges pairs, redacts and records every exchange, counts outcomes. Create it on the event loop it serves."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        writer: StoreWriter,
        key: bytes,
        compare_queue: int,
        rand: Callable[[], float],
        candidates: Callable[[], int],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._metrics = metrics
        self._writer = writer
        self._key = key
        self._redactors: dict[Redact, Redactor] = {}  # one per redaction rule set: reloads may change the rules
        self._compare_queue = compare_queue
        self._rand = rand
        self._candidates = candidates  # copies under way, for the queue-depth gauge
        # Gathered on the loop, handed over together: pairs to the compare thread, records to the writer.
        self._ready: list[FinishedPair] = []
        self._loop_records: list[ExchangeRecord] = []
        self._handoff: asyncio.TimerHandle | None = None
        self._handed = 0  # pairs handed to the compare thread (written on the loop only)
        self._compared = 0  # pairs it has finished (written by the compare thread only)
        # Pairs for the compare thread, each with what the loop's quick judge left of it (None: not looked at).
        self._compare_q: queue.SimpleQueue[list[_Slow] | None] = queue.SimpleQueue()
        self._compare_thread = threading.Thread(target=self._compare_loop, name="strangler-compare", daemon=True)
        self._compare_thread.start()

    def pair_ready(self, p: FinishedPair) -> None:
        """A pair with both sides: judged and recorded at the next handoff."""
        self._ready.append(p)
        self._schedule_handoff()

    def _schedule_handoff(self) -> None:
        if self._handoff is None:
            self._handoff = self._loop.call_later(HANDOFF, self._hand_over)

    def _hand_over(self) -> None:
        """Judge the pairs gathered since the last handoff that the fast path can (matches, failures) and record
        them; send the rest to the compare thread and every record to the writer, each in one go."""
        self._handoff = None
        finished, self._ready = self._ready, []
        ready = self._judge_on_loop(finished) if finished else []
        if ready:
            room = self._compare_queue - (self._handed - self._compared)
            if len(ready) > room:
                for p, _ in ready[max(room, 0) :]:
                    self.record_skip(p.start, "dropped", "compare_queue_full", p.pair)
                del ready[max(room, 0) :]
            if ready:
                self._handed += len(ready)
                self._compare_q.put(ready)
        records, self._loop_records = self._loop_records, []
        if records:
            self._writer.submit_many(records)
        self._metrics.shadow_queue.set(("compare",), self._handed - self._compared)

    def _judge_on_loop(self, ready: list[FinishedPair]) -> list[_Slow]:
        """Record the pairs judged without a field-by-field comparison; returns the ones the compare thread must
        finish, with what the quick judge left of them (unified, fast path tried: the thread does neither again)."""
        slow: list[_Slow] = []
        tallies: list[_Tally] = []
        records = self._loop_records
        for p in ready:
            primary, candidate = p.primary, p.candidate
            assert primary is not None
            assert candidate is not None
            try:
                if self._fell_back(p):
                    judged: tuple[Outcome, str | None, Comparison | None] | Unjudged | None = _FELL_BACK
                elif len(primary.body or b"") > LOOP_JUDGE_MAX or len(candidate.body or b"") > LOOP_JUDGE_MAX:
                    judged = None
                else:
                    judged = judge_pair_quick(
                        primary,
                        candidate,
                        p.route.compare,
                        candidate_is_new=self._candidate_is_new(p),
                        origins=exchange_origins(p.start),
                    )
                if judged is None or isinstance(judged, Unjudged):
                    slow.append((p, judged))
                    continue
                records.append(self._record(p, *judged, tallies))
            except Exception:  # a bad pair must never break the loop's handoff, nor go unrecorded
                log.exception("judging a shadow pair failed")
                self.record_skip(p.start, "skipped", "compare_failed", p.pair)
        if tallies:
            self._count_outcomes(tallies)
        return slow

    @staticmethod
    def _fell_back(p: FinishedPair) -> bool:
        """The new side failed and the route fell back: legacy answered both, nothing to learn from the pair."""
        return (
            p.pair == "candidate"
            and p.primary is not None
            and p.candidate is not None
            and (p.primary.side == p.candidate.side)
        )

    @staticmethod
    def _candidate_is_new(p: FinishedPair) -> bool:
        # A noise pair is legacy vs a second legacy call; the second call sits on the record's "new" side.
        return p.pair == "noise" or p.start.served_by == "legacy"

    def _compare_loop(self) -> None:
        while (batch := self._compare_q.get()) is not None:
            records: list[ExchangeRecord] = []
            tallies: list[_Tally] = []
            for p, unjudged in batch:
                try:
                    records.append(self._compare_and_record(p, unjudged, tallies))
                except Exception:  # a bad pair must never stop the thread, nor go unrecorded
                    log.exception("comparing a shadow pair failed")
                    redactor = self._redactor(p.start.config.store.redact)
                    records.append(unpaired_record(p.start, p.pair, "skipped", "compare_failed", redactor))
                    tallies.append((p.route.id, p.pair, "skipped", "compare_failed", None))
            self._writer.submit_many(records)
            self._compared += len(batch)
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
                self._loop.call_soon_threadsafe(self._count_outcomes, tallies)

    def _compare_and_record(self, p: FinishedPair, unjudged: Unjudged | None, tallies: list[_Tally]) -> ExchangeRecord:
        """In the compare thread: the full judgement and the record; from where the loop's quick judge left the
        pair when it looked at it."""
        if unjudged is not None:
            return self._record(p, *judge_rest(unjudged, p.route.compare), tallies)
        primary, candidate = p.primary, p.candidate
        assert primary is not None
        assert candidate is not None
        if self._fell_back(p):
            return self._record(p, *_FELL_BACK, tallies)
        judged = judge_pair(
            primary,
            candidate,
            p.route.compare,
            candidate_is_new=self._candidate_is_new(p),
            origins=exchange_origins(p.start),
        )
        return self._record(p, *judged, tallies)

    def _record(
        self,
        p: FinishedPair,
        outcome: Outcome,
        reason: str | None,
        comparison: Comparison | None,
        tallies: list[_Tally],
    ) -> ExchangeRecord:
        """The redacted record of a judged pair (bodies kept for all but an unsampled match); tallied."""
        primary, candidate = p.primary, p.candidate
        assert primary is not None
        assert candidate is not None
        legacy, new = (primary, candidate) if self._candidate_is_new(p) else (candidate, primary)
        keep_bodies = outcome != "match" or self._rand() < p.start.config.store.sample_matches
        redactor = self._redactor(p.start.config.store.redact)
        record = exchange_record(
            p.start, p.pair, legacy, new, outcome, reason, comparison, redactor, keep_bodies=keep_bodies
        )
        seconds = comparison.seconds if comparison is not None else None
        tallies.append((p.route.id, p.pair, outcome, reason, seconds))
        return record

    def _redactor(self, rules: Redact) -> Redactor:
        r = self._redactors.get(rules)
        if r is None:
            r = self._redactors[rules] = Redactor(self._key, rules)
        return r

    def record_skip(
        self, start: ExchangeStart, outcome: Outcome, reason: str, pair: Pair = "candidate", *, counted: bool = True
    ) -> None:
        """On the loop: count at once (unless `counted` elsewhere), and queue the record for the next handoff."""
        route = start.route
        assert route is not None
        if counted:
            self.count_outcome(route.id, pair, outcome, reason, None)
        redactor = self._redactor(start.config.store.redact)
        self._loop_records.append(unpaired_record(start, pair, outcome, reason, redactor))
        self._schedule_handoff()

    # --- metrics: only ever touched on the event loop (the registry is plain dicts) ----------------------------

    def count_outcome(
        self, route_id: str, pair: Pair, outcome: Outcome, reason: str | None, seconds: float | None
    ) -> None:
        metrics = self._metrics
        metrics.shadow.inc((route_id, pair, outcome, reason or ""))
        if seconds is not None:
            metrics.compare_time.observe((route_id,), seconds)
        self._set_depths()

    def _count_outcomes(self, tallies: list[_Tally]) -> None:
        shadow, compare_time = self._metrics.shadow, self._metrics.compare_time
        for route_id, pair, outcome, reason, seconds in tallies:
            shadow.inc((route_id, pair, outcome, reason or ""))
            if seconds is not None:
                compare_time.observe((route_id,), seconds)
        self._set_depths()

    def _set_depths(self) -> None:
        depth = self._metrics.shadow_queue
        depth.set(("compare",), self._handed - self._compared)
        depth.set(("store",), self._writer.depth())
        depth.set(("candidates",), self._candidates())

    async def close(self) -> None:
        """Judge and record what is gathered, let the compare thread finish its queue, hand every record over."""
        if self._handoff is not None:
            self._handoff.cancel()
        self._hand_over()
        self._compare_q.put(None)
        await asyncio.to_thread(self._compare_thread.join)
        await asyncio.sleep(0)  # run the metric updates the compare thread scheduled last
