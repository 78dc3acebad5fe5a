"""The targets the figures are held to, checked as data.

From the issue, on the 2-core reference machine, in one process: a cache hit
and garbage at a p50 of 5 µs or less, garbage and cache hits with no database
query, a cache miss at 1 ms or less with the default argon2 parameters, and
every workload's p50 at the largest size within 1.5× of its p50 at the smallest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import CaseResult
from benchmarks.workloads import NO_IO_WORKLOADS

P50_LIMITS_US: dict[str, float] = {
    "cache_hit": 5.0,
    "cache_miss": 1000.0,
    "garbage": 5.0,
    # Not in the list, but garbage includes typos and they are its
    # costliest kind; holding them to the garbage target keeps the mix honest.
    "bad_checksum": 5.0,
}
"""Upper bound of the p50, in microseconds, per workload and size."""

MAX_SCALING_RATIO = 1.5
"""Upper bound of p50(largest size) / p50(smallest size), per workload."""


@dataclass(frozen=True)
class TargetCheck:
    """One target next to what was measured."""

    target: str
    workload: str
    size: int | None
    measured: float
    limit: float
    unit: str
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return dict(self.__dict__)


def evaluate(results: Sequence[CaseResult], *, default_argon2: bool = True) -> list[TargetCheck]:
    """Check ``results`` against every target that applies to them.

    Args:
        results: What a run measured.
        default_argon2: Whether the run used the backend's default argon2
            parameters; the cache-miss target holds only for those.
    """
    checks: list[TargetCheck] = []
    for result in results:
        limit = P50_LIMITS_US.get(result.workload)
        if result.workload == "cache_miss" and not default_argon2:
            limit = None
        if limit is not None:
            checks.append(
                TargetCheck(
                    f"{result.workload} p50",
                    result.workload,
                    result.size,
                    result.p50_us,
                    limit,
                    "µs",
                    result.p50_us <= limit,
                )
            )
        if result.workload in NO_IO_WORKLOADS and result.io_calls_per_op is not None:
            checks.append(
                TargetCheck(
                    f"{result.workload} database queries",
                    result.workload,
                    result.size,
                    result.io_calls_per_op,
                    0.0,
                    "queries/op",
                    result.io_calls_per_op == 0,
                )
            )
    checks.extend(_scaling_checks(results))
    return checks


def _scaling_checks(results: Sequence[CaseResult]) -> list[TargetCheck]:
    by_workload: dict[tuple[str, str], dict[int, CaseResult]] = {}
    for result in results:
        by_workload.setdefault((result.subject, result.workload), {})[result.size] = result
    checks = []
    for (_subject, workload), by_size in by_workload.items():
        if len(by_size) < 2:
            continue
        smallest, largest = by_size[min(by_size)], by_size[max(by_size)]
        ratio = largest.p50_us / smallest.p50_us
        checks.append(
            TargetCheck(
                f"{workload} p50 at {largest.size:,} / at {smallest.size:,} keys",
                workload,
                None,
                ratio,
                MAX_SCALING_RATIO,
                "×",
                ratio <= MAX_SCALING_RATIO,
            )
        )
    return checks


__all__ = ["MAX_SCALING_RATIO", "P50_LIMITS_US", "TargetCheck", "evaluate"]
