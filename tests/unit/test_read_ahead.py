"""The reconciliation's read-ahead gives every row once, in order, raises what the reading
thread met, and leaves no thread behind once closed."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.reconcile import read_ahead
from chalicelib.reconcile.read_ahead import ReadAhead


@given(
    rows=st.lists(st.integers(), max_size=60),
    chunk=st.integers(min_value=1, max_value=7),
    depth=st.integers(min_value=1, max_value=3),
)
def test_every_row_once_in_order(rows: list[int], chunk: int, depth: int) -> None:
    assert list(ReadAhead(iter(rows), chunk=chunk, depth=depth)) == rows


@given(before=st.integers(min_value=0, max_value=12), chunk=st.integers(min_value=1, max_value=5))
def test_an_error_of_the_read_back_reaches_the_reader_after_the_rows_before_it(
    before: int, chunk: int
) -> None:
    def rows() -> Iterator[int]:
        yield from range(before)
        raise ConnectionError("the store went away")

    reader = ReadAhead(rows(), chunk=chunk)
    read = [next(reader) for _ in range(before - before % chunk)]
    assert read == list(range(len(read)))
    with pytest.raises(ConnectionError, match="went away"):
        list(reader)


def test_a_closed_read_ahead_stops_reading() -> None:
    produced = itertools.count()
    reader = ReadAhead((next(produced) for _ in itertools.repeat(None)), chunk=2, depth=1)
    assert next(reader) == 0
    reader.close()
    reader.reading.result(timeout=30)  # the endless read ended
    taken = next(produced)
    assert next(produced) == taken + 1  # and reads no more
    with pytest.raises(StopIteration):
        next(reader)


def test_reads_reuse_the_pool_s_threads() -> None:
    """Every read runs on the process's pool: a thread (and its PostgreSQL connection) serves
    many reconciliations instead of one each."""
    names: set[str] = set()

    def rows() -> Iterator[int]:
        names.add(threading.current_thread().name)
        yield 1

    for _ in range(40):
        assert list(ReadAhead(rows())) == [1]
    assert 1 <= len(names) <= read_ahead.WORKERS
    assert all(name.startswith("reconcile-read-ahead") for name in names)
