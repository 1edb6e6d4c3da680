"""Exact blocked top-k (sentjax.search) against a float64 NumPy brute force: random data, exact
ties (lowest index first), k larger than a corpus chunk, padding, and 8 devices = 1 device."""
import jax
import numpy as np
import pytest

from sentjax.search import top_k


def brute_force(q, c, k, metric):
    q, c = np.asarray(q, np.float64), np.asarray(c, np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    s = q @ c.T
    # sort by score descending, then by index ascending
    order = np.stack([np.lexsort((np.arange(len(c)), -row)) for row in s])[:, :k]
    return np.take_along_axis(s, order, axis=1), order


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("qb,cb,k", [(7, 16, 5), (64, 5, 12), (3, 1000, 37)])
def test_matches_float64_brute_force(metric, qb, cb, k):
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(23, 16)), rng.normal(size=(37, 16))
    s, i = top_k(q, c, k, metric=metric, query_block=qb, corpus_block=cb)
    s_ref, i_ref = brute_force(q, c, k, metric)
    assert s.shape == i.shape == (23, k) and i.dtype == np.int64
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=1e-5)
    gaps = np.diff(np.sort(brute_force(q, c, 37, metric)[0], axis=1), axis=1)
    assert np.min(np.abs(gaps)) > 1e-5  # the data has no near-ties, so the order is exact
    np.testing.assert_array_equal(i, i_ref)


def test_ties_go_to_the_lowest_index_across_chunks_and_k_above_the_chunk_size():
    # rows of +-1 (norm 2): every score, cosine included, is exact in float32 and many are equal
    rng = np.random.default_rng(1)
    c = rng.choice([-1.0, 1.0], size=(50, 4)).astype(np.float32)
    c[[3, 17, 31, 49]] = c[10]  # duplicates of one row in other chunks
    q = np.concatenate([rng.choice([-1.0, 1.0], size=(9, 4)), c[10:11]]).astype(np.float32)
    for metric in ("dot", "cosine"):
        s_ref, i_ref = brute_force(q, c, 20, metric)
        for cb in (1, 3, 8, 50):
            s, i = top_k(q, c, 20, metric=metric, query_block=4, corpus_block=cb)
            np.testing.assert_array_equal(i, i_ref, err_msg=f"{metric} corpus_block={cb}")
            np.testing.assert_allclose(s, s_ref, atol=1e-6)
    twins = [3, 10, 17, 31, 49] + [j for j in range(50) if (c[j] == c[10]).all() and j not in (3, 10, 17, 31, 49)]
    _, i = top_k(q[-1:], c, len(twins), metric="cosine", corpus_block=3)
    assert list(i[0]) == sorted(twins)


def test_eight_devices_equal_one_device():
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("data",))
    rng = np.random.default_rng(2)
    c = rng.choice([-1.0, 1.0], size=(61, 6)).astype(np.float32)  # 61: uneven shards, ties across devices
    q = rng.normal(size=(13, 6)).astype(np.float32)
    for metric in ("dot", "cosine"):
        for k, cb in ((1, 4), (10, 3), (61, 8)):
            one = top_k(q, c, k, metric=metric, corpus_block=cb, query_block=5)
            many = top_k(q, c, k, metric=metric, corpus_block=cb, query_block=5, mesh=mesh)
            np.testing.assert_array_equal(many[1], one[1])
            np.testing.assert_array_equal(many[0], one[0])
            np.testing.assert_array_equal(one[1], brute_force(q, c, k, metric)[1])


def test_bad_input_is_refused_with_the_fix():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"k must be in 1..3"):
        top_k(x, x, 4)
    with pytest.raises(ValueError, match="same model"):
        top_k(x, np.ones((3, 5)), 1)
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.full((1, 4), np.nan), x, 1)
    with pytest.raises(ValueError, match="metric"):
        top_k(x, x, 1, metric="l2")
