"""Spending keys' limits through a fleet's workers, and reading what they spent: shared by
the fleet's rate-limit and quota tests.

Every reply says which worker gave it, what it was (a lost answer, when the
connection broke first, has status :data:`LOST`), its error code and its
``Retry-After``, and when it was asked and answered on the wall clock, which
is the clock the workers' epoch-aligned windows are read from.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import sqlalchemy as sa

from apikeys.backends.sqlalchemy import api_keys_table
from tests.reliability.fleet_apps import WORKER_HEADER

LOST = 0
"""The status of a request whose connection broke before an answer came (its worker died)."""
SENDERS = 8
"""Requests in flight at once: more than the workers, so that every worker is handed some."""


@dataclass(frozen=True)
class Reply:
    status: int
    worker: int
    code: str | None
    retry_after: str | None
    asked: float
    answered: float

    def window(self, seconds: int) -> int | None:
        """The number of the epoch-aligned window of ``seconds`` the call was counted in,
        or ``None`` when it was asked in one window and answered in the next."""
        first, last = int(self.asked // seconds), int(self.answered // seconds)
        return first if first == last else None


def reply_on(connection: http.client.HTTPConnection, path: str, key: str) -> Reply:
    """GET ``path`` with ``key`` on ``connection``; the reply is read whole, so the
    connection may serve another."""
    asked = time.time()
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        body = response.read()
    except (http.client.HTTPException, OSError):
        return Reply(LOST, 0, None, None, asked, time.time())
    code = json.loads(body).get("code") if response.status >= 400 else None
    worker = int(response.getheader(WORKER_HEADER) or 0)
    return Reply(
        response.status, worker, code, response.getheader("Retry-After"), asked, time.time()
    )


def ask(port: int, path: str, key: str) -> Reply:
    """GET ``path`` with ``key`` on a new connection, which the server hands to any worker."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        return reply_on(connection, path, key)
    finally:
        connection.close()


def ask_many(port: int, path: str, key: str, times: int) -> list[Reply]:
    """``times`` requests, :data:`SENDERS` of them in flight at once, each on a new
    connection (gunicorn's sync workers take one connection each at a time)."""
    with ThreadPoolExecutor(SENDERS) as pool:
        return list(pool.map(lambda _: ask(port, path, key), range(times)))


def ask_every_worker(
    pinned: Mapping[int, http.client.HTTPConnection], path: str, key: str, rounds: int
) -> list[Reply]:
    """``rounds`` requests on each worker's kept-alive connection, every worker at once
    (uvicorn's workers take new connections unevenly: one of them may take them all)."""

    def one_worker(connection: http.client.HTTPConnection) -> list[Reply]:
        return [reply_on(connection, path, key) for _ in range(rounds)]

    with ThreadPoolExecutor(len(pinned)) as pool:
        return [reply for replies in pool.map(one_worker, pinned.values()) for reply in replies]


def window_with_room(room: float, now: float) -> int:
    """A window length, in whole seconds of at least an hour, whose epoch-aligned window
    holding ``now`` has ``room`` seconds left: a run shorter than that sees one window."""
    for seconds in range(3600, 7200):
        if seconds - now % seconds >= room:
            return seconds
    raise AssertionError(f"no window has {room} s left")


class Flow:
    """Requests of one key sent without a pause by several threads while the test kills
    things; :meth:`pause` and :meth:`resume` hold it between phases, :meth:`stop` ends it.

    Each thread sends on a new connection per request (gunicorn's sync workers take one
    connection each at a time), or, given ``pinned``, one thread per worker sends on its
    kept-alive connection (uvicorn's workers take new connections unevenly).

    Args:
        port: The server's port.
        path: What every request asks for.
        key: The secret every request sends.
        senders: Requests in flight at once, on new connections.
        pinned: A kept-alive connection to each worker, used by this flow alone.
    """

    def __init__(
        self,
        port: int,
        path: str,
        key: str,
        *,
        senders: int = SENDERS,
        pinned: Mapping[int, http.client.HTTPConnection] | None = None,
    ) -> None:
        self.replies: list[Reply] = []
        self._flowing = threading.Event()
        self._stopped = False
        self._idle = threading.Condition()
        self._in_flight = 0
        sends: list[Callable[[], Reply]]
        if pinned is None:
            sends = [partial(ask, port, path, key)] * senders
        else:
            sends = [partial(reply_on, connection, path, key) for connection in pinned.values()]
        self._senders = [
            threading.Thread(target=self._send, args=(send,), daemon=True) for send in sends
        ]

    def __enter__(self) -> Flow:
        self._flowing.set()
        for sender in self._senders:
            sender.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _send(self, send: Callable[[], Reply]) -> None:
        while True:
            self._flowing.wait()
            with self._idle:
                if self._stopped:
                    return
                if not self._flowing.is_set():
                    continue
                self._in_flight += 1
            try:
                reply = send()
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()
            with self._idle:
                self.replies.append(reply)

    def pause(self) -> None:
        """Send nothing more, and return once every request sent has its reply."""
        with self._idle:
            self._flowing.clear()
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=60)

    def resume(self) -> None:
        self._flowing.set()

    def stop(self) -> None:
        with self._idle:
            self._stopped = True
        self._flowing.set()
        for sender in self._senders:
            if sender.is_alive():
                sender.join(timeout=60)

    def count(self, which: Callable[[Reply], bool]) -> int:
        with self._idle:
            return sum(1 for reply in self.replies if which(reply))

    def accepted(self) -> int:
        return self.count(lambda reply: reply.status == 200)

    def workers(self) -> set[int]:
        """The workers that answered so far."""
        with self._idle:
            return {reply.worker for reply in self.replies if reply.status != LOST}

    def last_worker(self, *, among: Collection[int]) -> int:
        """The worker of ``among`` that answered last."""
        with self._idle:
            return next(
                reply.worker
                for reply in reversed(self.replies)
                if reply.status != LOST and reply.worker in among
            )


def quota_used(database_url: str, meter_id: str) -> int:
    """What the database holds as spent from the quota of meter ``meter_id``."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            used = connection.execute(
                sa.select(api_keys_table.c.quota_used).where(api_keys_table.c.meter_id == meter_id)
            ).scalar_one()
    finally:
        engine.dispose()
    return int(used)


__all__ = [
    "LOST",
    "SENDERS",
    "Flow",
    "Reply",
    "ask",
    "ask_every_worker",
    "ask_many",
    "quota_used",
    "reply_on",
    "window_with_room",
]
