"""Peers measured next to apikeys: other libraries doing the same work, as benchmark subjects.

Each module here wraps one peer as a :class:`~benchmarks.workloads.Subject`
holding its keys in a SQLite file, so the harness's workloads and its
interleaving runner measure peers and apikeys alike, in one process. The peers
are benchmark-only dependencies, installed into ``benchmarks/.venv`` from
``benchmarks/requirements-bench.txt``; nothing in ``apikeys`` imports them.
"""

from __future__ import annotations

import random
import string

ALPHABET = string.ascii_letters + string.digits
"""The alphabet both peers draw their ids and secrets from."""


class PeerRefusedError(Exception):
    """A peer refused a key (peers that answer ``False`` are made to raise this)."""


def typo(key: str, start: int, rng: random.Random) -> str:
    """``key`` with one character at or after ``start`` changed (peers have no checksum)."""
    position = rng.randrange(start, len(key))
    replacement = rng.choice(ALPHABET.replace(key[position], ""))
    return key[:position] + replacement + key[position + 1 :]


__all__ = ["ALPHABET", "PeerRefusedError", "typo"]
