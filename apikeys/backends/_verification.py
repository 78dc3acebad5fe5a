"""Backend-independent pieces every manager shares: the cached fast path of
validation and memoised checks of ``required_scopes``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from apikeys._arguments import check_required_scopes
from apikeys._cache import VerificationCache
from apikeys._errors import InvalidKeyError
from apikeys._keyformat import MAX_KEY_LENGTH
from apikeys._keystate import check_scopes
from apikeys._models import VerifiedKey


@lru_cache(maxsize=1024)
def _required_from_tuple(scopes: tuple[str, ...]) -> tuple[str, ...]:
    return check_required_scopes(scopes)


@lru_cache(maxsize=1024)
def _required_from_text(scopes: str) -> tuple[str, ...]:
    return check_required_scopes(scopes)


def required_scopes_of(required_scopes: Iterable[str] | str) -> tuple[str, ...]:
    """Validate ``required_scopes``, memoised: routes pass the same few sets again and again.

    Only an empty sequence requires no scope; ``None`` and blank strings are
    refused (see :func:`~apikeys._arguments.check_required_scopes`).
    """
    if required_scopes == ():  # the usual case, answered first
        return ()
    if isinstance(required_scopes, str):
        return _required_from_text(required_scopes)
    if not isinstance(required_scopes, tuple | list | set | frozenset):
        # Anything else (a generator, a wrong type) goes to the validator, which
        # bounds what it reads and names the problem.
        return check_required_scopes(required_scopes)
    if not required_scopes:
        return ()
    scopes = tuple(required_scopes)
    try:
        return _required_from_tuple(scopes)
    except TypeError:  # unhashable items: let the validator name the problem
        return check_required_scopes(scopes)


def cached_verification(
    cache: VerificationCache,
    secret: object,
    required_scopes: tuple[str, ...],
    *,
    max_length: int = MAX_KEY_LENGTH,
) -> VerifiedKey | None:
    """Serve a validation from the cache, or return ``None`` on a miss.

    Only keys that passed full verification are ever cached, under a digest
    of the exact presented string, so a hit needs no parsing and no IO.

    Raises:
        InvalidKeyError: ``secret`` is not a string or longer than ``max_length``.
        InsufficientScopeError: A hit lacks a required scope.
    """
    if not isinstance(secret, str) or len(secret) > max_length:
        raise InvalidKeyError()
    verified = cache.lookup(secret)
    if verified is None or not required_scopes:
        return verified
    return check_scopes(verified, required_scopes)


__all__ = ["cached_verification", "required_scopes_of"]
