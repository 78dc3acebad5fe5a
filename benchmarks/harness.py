"""The generic half of the harness: cases, the interleaving runner and the statistics.

Nothing here knows about apikeys. A :class:`Case` is one workload on one
subject at one size: a callable timed once per operation. The runner warms
every case up, then runs every case's batch once per repeat, cut into slices
run round by round in a fresh random order each round, so that machine noise
(another process, a CPU frequency change) lands on every case alike instead of
on whichever ran during the disturbance. Each case's figures are the median
of its repeats.
"""

from __future__ import annotations

import gc
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Op = Callable[[int], object]
"""One timed operation, given its index in the batch (to pick an input)."""


@dataclass(frozen=True)
class Case:
    """One workload against one subject at one stored-key count.

    Attributes:
        subject: What is measured, e.g. ``"apikeys-sqlalchemy"`` (peers later).
        size: How many keys the subject stores.
        workload: The workload's name, e.g. ``"cache_hit"``.
        ops: Operations per timed batch.
        op: The timed operation.
        prime: Untimed preparation run before every batch (e.g. warm the cache).
        io_count: Reads a running count of IO calls (database queries); the
            runner reports how many happened inside the timed batches.
    """

    subject: str
    size: int
    workload: str
    ops: int
    op: Op
    prime: Callable[[], object] | None = None
    io_count: Callable[[], int] | None = None


@dataclass(frozen=True)
class BatchSample:
    """The figures of one timed batch of one case."""

    p50_us: float
    p99_us: float
    ops_per_s: float
    io_calls: int | None


@dataclass(frozen=True)
class CaseResult:
    """A case's figures: the median over its repeats, and every repeat's own."""

    subject: str
    size: int
    workload: str
    ops: int
    p50_us: float
    p99_us: float
    ops_per_s: float
    io_calls_per_op: float | None
    samples: tuple[BatchSample, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "subject": self.subject,
            "size": self.size,
            "workload": self.workload,
            "ops": self.ops,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "ops_per_s": self.ops_per_s,
            "io_calls_per_op": self.io_calls_per_op,
            "samples": [sample.__dict__ for sample in self.samples],
        }


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """The nearest-rank percentile of already sorted values (``fraction`` in (0, 1])."""
    if not sorted_values:
        raise ValueError("no values")
    # round() first: 0.29 * 100 is 28.999999999999996, and its rank is 29.
    rank = max(1, math.ceil(round(len(sorted_values) * fraction, 9)))
    return sorted_values[rank - 1]


def timer_overhead_ns(samples: int = 100_000) -> float:
    """The median cost of the two clock reads that bracket every timed operation."""
    clock = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        start = clock()
        costs.append(clock() - start)
    return float(statistics.median(costs))


@dataclass
class _Batch:
    """One repeat of one case, filled slice by slice."""

    durations: list[int]
    elapsed_ns: int = 0
    io_calls: int | None = 0

    def sample(self) -> BatchSample:
        self.durations.sort()
        ops = len(self.durations)
        return BatchSample(
            p50_us=percentile(self.durations, 0.50) / 1000,
            p99_us=percentile(self.durations, 0.99) / 1000,
            ops_per_s=ops / (self.elapsed_ns / 1e9) if self.elapsed_ns else float("inf"),
            io_calls=self.io_calls,
        )


def _time_slice(case: Case, batch: _Batch, start: int, stop: int) -> None:
    """Run operations ``start``..``stop`` of ``case``, timing each one on its own."""
    if case.prime is not None:
        case.prime()
    op, durations, clock = case.op, batch.durations, time.perf_counter_ns
    io_before = case.io_count() if case.io_count is not None else 0
    slice_start = clock()
    for index in range(start, stop):
        began = clock()
        op(index)
        durations[index] = clock() - began
    batch.elapsed_ns += clock() - slice_start
    if case.io_count is None:
        batch.io_calls = None
    elif batch.io_calls is not None:
        batch.io_calls += case.io_count() - io_before


def run_interleaved(
    cases: Sequence[Case],
    repeats: int,
    *,
    seed: int = 0,
    slices: int = 10,
    warmup_ops: int | None = None,
    progress: Callable[[str], object] | None = None,
) -> list[CaseResult]:
    """Warm every case up, then run them all ``repeats`` times, finely interleaved.

    Each repeat is cut into ``slices`` rounds; a round runs the next slice of
    every case's batch, in a freshly shuffled order. A disturbance lasting a
    second thus lands on every case, not on the one whose batch ran then.

    Args:
        cases: What to measure.
        repeats: Timed batches per case; figures are their median.
        seed: Seeds the order of cases within each round, so a run can be replayed.
        slices: Rounds per repeat (a case with fewer operations runs in fewer).
        warmup_ops: Untimed operations per case before the first repeat; by
            default one whole batch, so one-off costs (a first ``last_used_at``
            write per key, cold pages) stay out of every timed batch.
        progress: Called with a short line after each repeat.
    """
    if repeats < 1 or slices < 1:
        raise ValueError("repeats and slices must be >= 1")
    for case in cases:
        if case.prime is not None:
            case.prime()
        for index in range(case.ops if warmup_ops is None else min(warmup_ops, case.ops)):
            case.op(index)
    # What setup left behind is frozen out of every later collection, so the
    # collections that do happen (one per round, untimed) stay short.
    gc.collect()
    gc.freeze()
    samples: dict[int, list[BatchSample]] = {index: [] for index in range(len(cases))}
    order = list(range(len(cases)))
    shuffler = random.Random(seed)
    try:
        for repeat in range(repeats):
            batches = [_Batch([0] * case.ops) for case in cases]
            for round_ in range(slices):
                shuffler.shuffle(order)
                gc.collect()
                for index in order:
                    ops = cases[index].ops
                    start, stop = ops * round_ // slices, ops * (round_ + 1) // slices
                    if start < stop:
                        _time_slice(cases[index], batches[index], start, stop)
            for index, batch in enumerate(batches):
                samples[index].append(batch.sample())
            if progress is not None:
                progress(f"repeat {repeat + 1}/{repeats} done")
    finally:
        gc.unfreeze()
    return [_summarise(case, samples[index]) for index, case in enumerate(cases)]


def _summarise(case: Case, samples: list[BatchSample]) -> CaseResult:
    io_counts = [sample.io_calls for sample in samples]
    io_per_op = (
        None
        if any(count is None for count in io_counts)
        else sum(count or 0 for count in io_counts) / (case.ops * len(samples))
    )
    return CaseResult(
        subject=case.subject,
        size=case.size,
        workload=case.workload,
        ops=case.ops,
        p50_us=statistics.median(sample.p50_us for sample in samples),
        p99_us=statistics.median(sample.p99_us for sample in samples),
        ops_per_s=statistics.median(sample.ops_per_s for sample in samples),
        io_calls_per_op=io_per_op,
        samples=tuple(samples),
    )


__all__ = [
    "BatchSample",
    "Case",
    "CaseResult",
    "Op",
    "percentile",
    "run_interleaved",
    "timer_overhead_ns",
]
