"""The local cloud's fix of moto's Kinesis shard answers exactly what moto itself answers."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st
from moto.kinesis.models import Shard

from localcloud.emulators import moto_server


def _shard(count: int) -> Shard:
    shard = Shard(0, 0, 2**128)
    for number in range(count):
        moto_server._original_put_record(shard, f"key-{number}", "ZGF0YQ==", "")
    return shard


@given(
    count=st.integers(min_value=0, max_value=60),
    after=st.integers(min_value=0, max_value=70),
    limit=st.none() | st.integers(min_value=1, max_value=80),
)
def test_get_records_matches_moto(count: int, after: int, limit: int | None) -> None:
    shard = _shard(count)
    fast_records, fast_last, _ = moto_server._get_records(shard, str(after), limit)
    slow_records, slow_last, _ = moto_server._original_get_records(shard, str(after), limit)
    assert [r.sequence_number for r in fast_records] == [r.sequence_number for r in slow_records]
    assert fast_last == slow_last


@given(count=st.integers(min_value=0, max_value=30))
def test_min_and_max_sequence_numbers_match_moto(count: int) -> None:
    shard = _shard(count)
    assert moto_server._max_sequence_number(shard) == moto_server._original_max(shard)
    assert moto_server._min_sequence_number(shard) == moto_server._original_min(shard)


def test_concurrent_puts_lose_no_record() -> None:
    shard = Shard(0, 0, 2**128)

    def put_many(worker: int) -> None:
        for number in range(300):
            moto_server._locked_put_record(shard, f"key-{worker}-{number}", "ZGF0YQ==", "")

    threads = [threading.Thread(target=put_many, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(shard.records) == 1800
    assert list(shard.records) == list(range(1, 1801))
