"""Record what concurrent workers did, with when, for checking invariants afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from apikeys import APIKeysError


@dataclass
class Outcome:
    """One operation: what, by whom, when, and how it ended."""

    operation: str
    worker: str
    started: float
    ended: float = 0.0
    error: str | None = None  # an APIKeysError code, or the class name of anything else
    key_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Journal:
    """Thread-safe list of :class:`Outcome`."""

    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def record(self, operation: str, worker: str, key_id: str | None = None) -> Iterator[Outcome]:
        """Time the block; an exception ends the outcome as an error and is not raised."""
        outcome = Outcome(operation, worker, time.monotonic(), key_id=key_id)
        try:
            yield outcome
        except APIKeysError as exc:
            outcome.error = exc.code
        except Exception as exc:
            outcome.error = type(exc).__name__
        outcome.ended = time.monotonic()
        with self.lock:
            self.outcomes.append(outcome)

    def select(self, operation: str | None = None, *, ok: bool | None = None) -> list[Outcome]:
        with self.lock:
            return [
                o
                for o in self.outcomes
                if (operation is None or o.operation == operation) and (ok is None or o.ok == ok)
            ]
