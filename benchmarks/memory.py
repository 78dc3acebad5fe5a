"""Peak RSS while validating many distinct keys through the verification cache.

Each measurement runs in a child process of its own
(``python -m benchmarks.memory MODE COUNT``) so its peak resident set size is
its own. Two modes:

- ``cache``: the verification cache's own path, as every manager walks it
  after a successful verification (digest of the presented key, lookup, then
  ``put`` of the verified key), for a million distinct keys with the default
  bound (``cache_max_entries``). Fast enough for a million.
- ``manager``: whole validations through the Clerk backend with its default
  cache, over an upstream stub that accepts every well-shaped secret and
  answers with a key object derived from it (the stub keeps no state, so what
  grows is the manager's). Each validation is an ``httpx`` request and
  response, far slower than the cache's path, so it runs for a count a little
  past the bound,
  to show the manager holds nothing more per key than its cache does.

A cache that did not evict would grow with the count in both.
"""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
import sys
import time
from typing import Any

_CHECKPOINTS = 10


def _stub_transport() -> Any:
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        secret = json.loads(request.content)["secret"]
        key_id = "ak_" + hashlib.sha256(secret.encode()).hexdigest()[:32]
        body = {
            "object": "api_key",
            "id": key_id,
            "type": "api_key",
            "subject": "user_" + "a" * 27,
            "name": "memory",
            "description": None,
            "claims": None,
            "scopes": ["read:data"],
            "revoked": False,
            "revocation_reason": None,
            "expired": False,
            "expiration": None,
            "created_by": None,
            "last_used_at": None,
            "created_at": 1_700_000_000_000,
            "updated_at": 1_700_000_000_000,
        }
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


def _rss_kib() -> int:
    """This process's peak RSS (VmHWM), in KiB.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it across ``fork`` and
    ``execve``, so a child would report its parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _current_rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() // 1024


def _through_cache(count: int) -> dict[str, Any]:
    from apikeys import VerifiedKey
    from apikeys._cache import VerificationCache

    cache = VerificationCache()
    checkpoints: list[dict[str, Any]] = []
    started = time.perf_counter()
    step = max(1, count // _CHECKPOINTS)
    for index in range(count):
        digest = cache.digest(f"apk_{index:047d}")
        if cache.get(digest) is not None:
            raise AssertionError("a key never seen was found in the cache")
        cache.put(digest, VerifiedKey(id=f"k{index}", user_id="user", name="memory"))
        if (index + 1) % step == 0 or index + 1 == count:
            checkpoints.append({"validated": index + 1, "rss_kib": _current_rss_kib()})
    return {
        "mode": "cache",
        "validated": count,
        "seconds": time.perf_counter() - started,
        "cache_entries": len(cache),
        "cache_max_entries": cache.max_entries,
        "checkpoints": checkpoints,
        "peak_rss_kib": _rss_kib(),
    }


def measure_here(mode: str, count: int) -> dict[str, Any]:
    """Validate ``count`` distinct keys in this process; return RSS checkpoints and the peak."""
    if mode == "cache":
        return _through_cache(count)
    if mode != "manager":
        raise ValueError(f"unknown mode {mode!r}")
    import httpx

    from apikeys.backends.clerk import ClerkKeyManager
    from apikeys.testing import FAKE_SECRET_KEY

    manager = ClerkKeyManager(
        FAKE_SECRET_KEY,
        http_client=httpx.Client(transport=_stub_transport()),
        retry_backoff=0.0,
        verification_budget=None,  # every key here is new: what is measured is the cache
    )
    checkpoints: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        validate, step = manager.validate_api_key, max(1, count // _CHECKPOINTS)
        for index in range(count):
            # Distinct, well-shaped secrets (ak_ and 43 characters), cheap to make.
            validate(f"ak_{index:043d}")
            if (index + 1) % step == 0 or index + 1 == count:
                checkpoints.append({"validated": index + 1, "rss_kib": _current_rss_kib()})
        entries = len(manager.cache)
        limit = manager.cache.max_entries
    finally:
        manager.close()
    return {
        "mode": "manager",
        "validated": count,
        "seconds": time.perf_counter() - started,
        "cache_entries": entries,
        "cache_max_entries": limit,
        "checkpoints": checkpoints,
        "peak_rss_kib": _rss_kib(),
    }


def measure(
    mode: str, count: int, *, python: str = sys.executable, timeout: float = 900
) -> dict[str, Any]:
    """Run :func:`measure_here` in a child process and return what it printed."""
    completed = subprocess.run(
        [python, "-m", "benchmarks.memory", mode, str(count)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    print(json.dumps(measure_here(sys.argv[1], int(sys.argv[2]))))
