"""Requests from many threads, served in batches by one thread of the process.

The worker's claims and finishes and the API's publishes each cost one round trip (a commit, a
publisher confirm) whatever their size. A thread asks and waits; one serving thread takes
everything waiting, serves it with one round trip and then wakes every asker, so each
still returns only once its own request is done.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from background.thread import BackgroundThread


@dataclass
class Request:
    """One thread's request; the serving thread answers it through `done`."""

    done: Future[Any] = field(default_factory=Future, init=False)


R = TypeVar("R", bound=Request)


#: A thread that submitted within this long counts as one whose next request may be near: a
#: busy worker thread writes every few milliseconds, one waiting for messages drops out.
ACTIVE_S = 0.05


class Batcher(Generic[R]):
    """Serves the requests of all threads of a process with `serve(batch)`.

    `serve` answers each request of the batch (`done.set_result` or `set_exception`); if it
    raises, every request it left unanswered fails with that error, so no thread waits on
    a batch that went wrong.

    With `linger_s`, a batch waits up to that long for the requests of the other threads
    that have been submitting (within `ACTIVE_S`), so that many threads share one round
    trip even when the serving thread is quicker than they are; a thread submitting alone
    never waits. With `idle_s`, the serving thread ends after that long without
    requests and the next request starts a new one. `on_exit` runs in the serving thread
    when it ends, to release what it holds (a connection of its own).
    """

    def __init__(
        self,
        serve: Callable[[list[R]], None],
        *,
        name: str,
        max_batch: int,
        idle_s: float | None = None,
        on_exit: Callable[[], None] | None = None,
        linger_s: float = 0.0,
    ) -> None:
        self._serve = serve
        self._name = name
        self.max_batch = max_batch
        self._idle_s = idle_s
        self._on_exit = on_exit
        self._linger_s = linger_s
        self._submitters: dict[int, float] = {}  # thread id: when it last submitted
        self._requests: queue.SimpleQueue[R | None] = queue.SimpleQueue()
        self._thread = BackgroundThread(self._serve_forever, name=name)
        self._lock = threading.Lock()

    def submit(self, request: R) -> Any:
        """Queue `request` and return its answer (or raise its error) once it is served."""
        with self._lock:
            self._thread.start()  # on first use, in the process that uses it
            if self._linger_s:
                self._submitters[threading.get_ident()] = time.monotonic()
            self._requests.put(request)
        return request.done.result()

    def waiting(self) -> int:
        """Requests queued and not yet taken into a batch."""
        return self._requests.qsize()

    def stop(self) -> None:
        """Let the serving thread end once the requests before this call are served."""
        with self._lock:
            if self._thread.alive:
                self._requests.put(None)
        self._thread.stop()

    def _serve_forever(self, _stopping: threading.Event) -> None:
        try:
            self._serve_until_stopped()
        finally:
            if self._on_exit is not None:
                self._on_exit()

    def _serve_until_stopped(self) -> None:
        while True:
            try:
                first = self._requests.get(timeout=self._idle_s)
            except queue.Empty:
                if self._end_if_idle():
                    return
                continue
            if first is None:
                return
            batch = [first]
            expected = self._active_submitters()
            deadline = time.monotonic() + self._linger_s
            while len(batch) < self.max_batch:
                wait_s = deadline - time.monotonic() if len(batch) < expected else 0.0
                try:
                    more = (
                        self._requests.get(timeout=wait_s)
                        if wait_s > 0
                        else self._requests.get_nowait()
                    )
                except queue.Empty:
                    break
                if more is None:
                    self._requests.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._serve_batch(batch)

    def _active_submitters(self) -> int:
        """How many threads have submitted within `ACTIVE_S` (0 without `linger_s`)."""
        if not self._linger_s:
            return 0
        since = time.monotonic() - ACTIVE_S
        with self._lock:
            for thread, when in list(self._submitters.items()):
                if when < since:
                    del self._submitters[thread]
            return len(self._submitters)

    def _end_if_idle(self) -> bool:
        with self._lock:  # no request can be queued for this thread while it decides
            if self._requests.qsize():
                return False
            self._thread.release()
        return True

    def _serve_batch(self, batch: list[R]) -> None:
        try:
            self._serve(batch)
        except BaseException as e:  # every waiting thread must wake up, whatever happened
            _fail(batch, e)
            if not isinstance(e, Exception):
                raise
        _fail(batch, RuntimeError(f"{self._name}: request left unanswered"))


def _fail(batch: list[R], error: BaseException) -> None:
    """Answer with `error` every request of `batch` that has no answer yet."""
    for request in batch:
        if not request.done.done():
            request.done.set_exception(error)
