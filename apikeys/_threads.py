"""A background thread per process, for work kept off the request path."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class ProcessThread:
    """Runs ``target(stop)`` in one daemon thread per process, started on demand.

    A manager may be built before a server forks its workers: the thread is
    started by the first :meth:`start` in each process, and ``on_fork`` runs
    first in a child, to drop what belongs to the parent.

    Args:
        name: The thread's name.
        target: The thread's work; it returns when ``stop`` is set.
        on_fork: Called in a forked child before its thread starts.
    """

    def __init__(
        self,
        name: str,
        target: Callable[[threading.Event], None],
        on_fork: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self._target = target
        self._on_fork = on_fork
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Make sure this process's thread runs (cheap when it does); never after :meth:`stop`."""
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's thread stayed in the parent.
                self._pid = os.getpid()
                self._thread = None
                if self._on_fork is not None:
                    self._on_fork()
            if self._thread is None and not self.stop_event.is_set():
                self._thread = threading.Thread(
                    target=self._target, args=(self.stop_event,), name=self.name, daemon=True
                )
                self._thread.start()

    def stop(self, *, wait: bool = True) -> None:
        """Signal the thread to stop; wait for it unless ``wait`` is false."""
        self.stop_event.set()
        thread, self._thread = self._thread, None
        if wait and thread is not None and self._pid == os.getpid():
            thread.join()


__all__ = ["ProcessThread"]
