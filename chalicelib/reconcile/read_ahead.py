"""Reading a sink's rows one chunk ahead, in a thread of its own.

The reconciliation's read-back (`run_rows`) mostly waits: on DynamoDB to answer the next Query
page, on PostgreSQL the next keyset page. Read ahead, the service works on the next page while
the reconciler settles the rows it has. The stdlib has thread pools but no bounded,
stoppable prefetch of one iterator, hence this small class: memory holds at most `depth`
chunks, and `close()` stops the thread at its next chunk, so a reconciliation that stops early
(continuing in a new invocation, or failing) leaves no thread behind in a warm Lambda.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

CHUNK: Final = 1000
"""Rows handed over at once (a queue hand-off per row would cost more than it saves)."""
DEPTH: Final = 4
"""Chunks read ahead at most."""
_END: Final = object()


class _Failed:
    """The exception the reading thread met, raised again in the reader."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead(Generic[T]):
    """An iterator over `items`, read by a daemon thread up to `depth` chunks ahead."""

    def __init__(self, items: Iterator[T], chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._chunk = chunk
        self._current: Iterator[T] = iter(())
        self._done = False
        self._thread = threading.Thread(
            target=self._read, args=(items,), name="reconcile-read-ahead", daemon=True
        )
        self._thread.start()

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
        """Queue `value`; False once the reader has closed this read-ahead."""
        while not self._stopped.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
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
