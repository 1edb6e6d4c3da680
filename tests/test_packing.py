"""Bin packing keeps every sentence exactly once and within the row capacity."""
import numpy as np
import pytest

from sentjax.packing import pack_rows, packed_batch


def test_pack_rows_partition_and_capacity():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 60, size=500)
    rows = pack_rows(lengths, 64, 8)
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(500))
    assert all(sum(lengths[i] for i in r) <= 64 and len(r) <= 8 for r in rows)
    # First-fit decreasing is within 11/9 OPT + 1 of the lower bound.
    assert len(rows) <= 11 / 9 * np.ceil(lengths.sum() / 64) + 1
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([65], 64, 8)


def test_packed_batch_layout():
    ids = [[1, 2, 3], [4, 5], [6]]
    b = packed_batch(ids, [[0, 1], [2]], 8, 4, num_rows=3, position_offset=2)
    assert b["input_ids"][0].tolist() == [1, 2, 3, 4, 5, 0, 0, 0]
    assert b["segment_ids"][0].tolist() == [1, 1, 1, 2, 2, 0, 0, 0]
    assert b["position_ids"][0, :5].tolist() == [2, 3, 4, 2, 3]
    assert b["segment_starts"][0].tolist() == [0, 3, 0, 0]
    assert b["attention_mask"][2].sum() == 0
