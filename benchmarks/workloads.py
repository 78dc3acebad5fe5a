"""The workloads: what is measured, written once for any subject.

A subject is one way of storing and validating keys (the apikeys SQLAlchemy
backend today; peers such as djangorestframework-api-key can join as further
subjects) holding a given number of keys. Each workload function turns a
subject into a :class:`~benchmarks.harness.Case`; every operation checks its
outcome, so a workload that silently measured the wrong thing (a wrong secret
accepted, a valid key refused) stops the run instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from benchmarks.harness import Case, Op


@dataclass(frozen=True)
class KeySets:
    """Inputs of the validation workloads, prepared by the subject.

    Attributes:
        valid: Keys stored with a real hash of their secret.
        wrong_secret: Well-formed keys whose id is stored but whose secret is not.
        unknown_id: Well-formed keys (right checksum) whose id is not stored.
        garbage: A mix of malformed strings (see the subject for the kinds).
        bad_checksum: Keys of the right shape with one character changed, the
            costliest kind of garbage: only the checksum refuses them.
    """

    valid: Sequence[str]
    wrong_secret: Sequence[str]
    unknown_id: Sequence[str]
    garbage: Sequence[str]
    bad_checksum: Sequence[str]


class Subject(Protocol):
    """A key store under test, holding :attr:`size` keys."""

    name: str
    size: int
    keys: KeySets
    rejection: type[BaseException]
    """What :meth:`validate` raises for a refused key."""

    def validate(self, key: str) -> object:
        """Validate as a default deployment does (verification cache on)."""

    def validate_uncached(self, key: str) -> object:
        """Validate with no verification cache: every call reads and verifies."""

    def create(self) -> object:
        """Issue one key."""

    def forget_created(self) -> None:
        """Delete the keys :meth:`create` issued, so the stored count stays :attr:`size`."""

    def queries(self) -> int:
        """The running count of database queries this subject has issued."""


def _accepting(validate: Callable[[str], object], keys: Sequence[str]) -> Op:
    count = len(keys)

    def op(index: int) -> object:
        return validate(keys[index % count])

    return op


def _rejecting(subject: Subject, keys: Sequence[str]) -> Op:
    validate, rejection, count = subject.validate, subject.rejection, len(keys)

    def op(index: int) -> None:
        try:
            validate(keys[index % count])
        except rejection:
            return
        # The key itself is never shown: it may be a real secret.
        raise AssertionError(f"input #{index % count} was accepted but must be refused")

    return op


def _case(
    subject: Subject,
    workload: str,
    ops: int,
    op: Op,
    prime: Callable[[], object] | None = None,
) -> Case:
    return Case(subject.name, subject.size, workload, ops, op, prime, subject.queries)


def cache_hit(subject: Subject, ops: int) -> Case:
    """One valid key presented again and again: served from the verification cache."""
    key = subject.keys.valid[0]
    # The prime re-caches the key: its entry may have aged out since the last batch.
    return _case(
        subject,
        "cache_hit",
        ops,
        _accepting(subject.validate, [key]),
        lambda: subject.validate(key),
    )


def cache_miss(subject: Subject, ops: int) -> Case:
    """Valid keys drawn from many distinct keys with no cache: one read and one hash check each."""
    return _case(
        subject, "cache_miss", ops, _accepting(subject.validate_uncached, subject.keys.valid)
    )


def wrong_secret(subject: Subject, ops: int) -> Case:
    """A stored key id with a wrong secret: one read and one failed hash check."""
    keys = subject.keys.wrong_secret
    return _case(subject, "wrong_secret", ops, _rejecting(subject, keys))


def unknown_id(subject: Subject, ops: int) -> Case:
    """A well-formed key whose id is not stored."""
    return _case(subject, "unknown_id", ops, _rejecting(subject, subject.keys.unknown_id))


def garbage(subject: Subject, ops: int) -> Case:
    """Malformed strings of many kinds: refused before any IO."""
    return _case(subject, "garbage", ops, _rejecting(subject, subject.keys.garbage))


def bad_checksum(subject: Subject, ops: int) -> Case:
    """Typos: keys of the right shape with one character changed, refused by the checksum."""
    return _case(subject, "bad_checksum", ops, _rejecting(subject, subject.keys.bad_checksum))


def create(subject: Subject, ops: int) -> Case:
    """Issuing a key: a fresh secret, its hash and one committed insert."""
    return _case(subject, "create", ops, lambda _index: subject.create(), subject.forget_created)


Workload = Callable[[Subject, int], Case]

WORKLOADS: dict[str, Workload] = {
    "cache_hit": cache_hit,
    "cache_miss": cache_miss,
    "wrong_secret": wrong_secret,
    "unknown_id": unknown_id,
    "garbage": garbage,
    "bad_checksum": bad_checksum,
    "create": create,
}
"""Every workload by name, in report order."""

NO_IO_WORKLOADS = ("cache_hit", "garbage", "bad_checksum")
"""Workloads that must not touch the database at all."""


__all__ = [
    "NO_IO_WORKLOADS",
    "WORKLOADS",
    "KeySets",
    "Subject",
    "Workload",
    "bad_checksum",
    "cache_hit",
    "cache_miss",
    "create",
    "garbage",
    "unknown_id",
    "wrong_secret",
]
