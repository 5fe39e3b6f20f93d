"""Reading a sink's rows ahead of the reconciler, in a thread of a small pool.

The reconciliation's read-back (`run_rows`) mostly waits: on DynamoDB to answer the next Query
page, on PostgreSQL the next keyset page. Read ahead, the stores work on the next pages while
the reconciler settles the rows it has. The stdlib has thread pools but no bounded, stoppable
prefetch of one iterator, hence this small class: memory holds at most `depth` chunks, and
`close()` stops the read at its next chunk, so a reconciliation that stops early (continuing
in a new invocation, or failing) leaves nothing reading behind it.

The reads run on one pool of `WORKERS` threads per process, kept across invocations of a warm
Lambda: a thread's PostgreSQL connection (`PostgresDatabase` keeps one per thread) is reused
rather than a new one opened and left behind by every reconciliation. The pool runs reads in
the order they were started, so the entity the reconciler settles first is always read.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Generic, TypeVar

T = TypeVar("T")

CHUNK: Final = 1000
"""Rows handed over at once (a queue hand-off per row would cost more than it saves)."""
DEPTH: Final = 4
"""Chunks read ahead at most."""
WORKERS: Final = 8
"""Reads at once in a process (a reconciliation starts one per entity and sink)."""
ABANDONED_S: Final = 900.0
"""A read whose reader took nothing for this long (Lambda's longest invocation) stops."""
_END: Final = object()
_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reconcile-read-ahead")


class _Failed:
    """The exception the reading thread met, raised again in the reader."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Generic[T]):
    """An iterator over `items`, read by a thread of the pool up to `depth` chunks ahead."""

    def __init__(self, items: Iterator[T], chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._chunk = chunk
        self._current: Iterator[T] = iter(())
        self._done = False
        self.reading = _pool.submit(self._read, items)
        """Done once the read has ended: all read, failed, or stopped by `close()`."""

    def _read(self, items: Iterator[T]) -> None:
        try:
            chunk: list[T] = []
            for item in items:
                chunk.append(item)
                if len(chunk) >= self._chunk:
                    if not self._put(chunk):
                        return
                    chunk = []
            if chunk and not self._put(chunk):
                return
            self._put(_END)
        except BaseException as error:  # handed to the reader, raised there
            self._put(_Failed(error))

    def _put(self, value: object) -> bool:
        """Queue `value`; False once the reader has closed (or abandoned) this read-ahead."""
        waiting_since = time.monotonic()
        while not self._stopped.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                if time.monotonic() - waiting_since > ABANDONED_S:
                    return False
        return False

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        while True:
            for item in self._current:
                return item
            if self._done:
                raise StopIteration
            value = self._queue.get()
            if value is _END:
                self._done = True
                raise StopIteration
            if isinstance(value, _Failed):
                self._done = True
                raise value.error
            self._current = iter(value)  # type: ignore[call-overload]

    def close(self) -> None:
        """Stop reading ahead (the thread ends at its next chunk)."""
        self._stopped.set()
        self._done = True
        self._current = iter(())
