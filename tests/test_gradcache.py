"""GradCache and the gradient engine on objectives with heads and pass-through columns.

A toy bag-of-embeddings encoder with dropout (cheap to compile) stands in for BERT here; the
BERT-based InfoNCE matrix is in test_parallel_grads.py. Every other objective of the trainer is
run on every engine (each make_grad_fn backend, plus gradient.method='jit' on the sharded global
batch), with and without GradCache, and compared with a single-device gradient written directly.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sentjax.losses import (cosent_loss, cosine_loss, distill_loss, init_softmax_head, make_column_loss,
                            softmax_loss)
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sentjax.parallel import guarded_update, make_grad_fn, make_mesh
from sentjax.parallel.dropout_keys import row_keys
from sentjax.parallel.global_grads import BACKENDS
from sentjax.train import objectives as train_objectives
from toy import random_tokens, toy_model_embed

B, L, V, D = 16, 6, 50, 8




@functools.lru_cache(maxsize=None)
def data():
    rng = np.random.default_rng(0)

    def tokens(n):
        return random_tokens(rng, n, L, V)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"model": {"emb": jax.random.normal(k1, (V, D)), "w": jax.random.normal(k2, (D, D)) / 3},
              "head": init_softmax_head(k3, D, 3)}
    cols = {"anchor": tokens(B), "positive": tokens(B),
            "label": jnp.asarray(rng.integers(0, 3, B), jnp.int32),
            "score": jnp.asarray(rng.uniform(0, 5, B), jnp.float32),
            "teacher": jnp.asarray(rng.standard_normal((B, D)), jnp.float32)}
    return params, cols


OBJECTIVES = {  # name -> (column loss, direct single-device loss of (params, u, v, cols))
    "softmax": (make_column_loss("softmax"),
                lambda p, u, v, c: softmax_loss(p["head"], u, v, c["label"])[0]),
    "cosine": (make_column_loss("cosine"), lambda p, u, v, c: cosine_loss(u, v, c["score"])[0]),
    "cosent": (make_column_loss("cosent"), lambda p, u, v, c: cosent_loss(u, v, c["score"])[0]),
    "distill": (make_column_loss("distill"), lambda p, u, v, c: distill_loss(u, v, c["teacher"])[0]),
}


# every make_grad_fn backend, plus each trainer gradient.method that runs one on the sharded global batch
ENGINES = tuple(BACKENDS) + tuple(m for m in train_objectives.GRADIENT_METHODS if m not in BACKENDS)
GC_CHUNK = {"shard_map": 1, "pmap": 2, "none": 4, "jit": 4}  # rows per chunk (per device)


def reference(name, params, cols, rng):
    """Single device, written directly: per-row dropout keys as documented in dropout_keys."""
    def emb(p, column):
        if rng is None:
            return toy_model_embed(p, cols[column], None)
        keys = row_keys(rng, column, 0, B)
        return jax.vmap(lambda t, k: toy_model_embed(p, jax.tree.map(lambda x: x[None], t), k)[0])(cols[column], keys)
    return jax.value_and_grad(lambda p: OBJECTIVES[name][1](p, emb(p, "anchor"), emb(p, "positive"), cols))(params)


def rel_err(got, want):
    return max(jax.tree.leaves(jax.tree.map(
        lambda g, w: float(jnp.max(jnp.abs(g - w)) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-30)), got, want)))


@functools.lru_cache(maxsize=None)
def reference_of(name):
    params, cols = data()
    return jax.jit(functools.partial(reference, name))(params, cols, jax.random.key(3))


def test_every_trainer_objective_is_in_a_matrix():
    # infonce (dense and tiled) is the BERT matrix of test_parallel_grads.py; multipos and
    # matryoshka have theirs in test_multipos.py / test_matryoshka.py; margin_mse and
    # listwise_kl (hard negatives + teacher scores) are the matrix of test_score_distill.py; sigmoid
    # (dense and tiled, trainable t and b) is the trainable-head matrix of test_parallel_grads.py
    assert set(train_objectives.OBJECTIVES) == set(OBJECTIVES) | {"infonce", "multipos", "matryoshka",
                                                                  "margin_mse", "listwise_kl", "sigmoid",
                                                                  # multi: test_multi_objective.py; mlm: test_mlm.py;
                                                                  # gist: test_gist.py (every engine x GradCache)
                                                                  "multi", "mlm", "gist"}
    assert set(train_objectives.GRADIENT_METHODS.values()) <= set(BACKENDS)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objectives_every_engine_equal_single_device(name, gradcache, engine):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    params, cols = data()
    rng = jax.random.key(3)
    want_loss, want = reference_of(name)
    mesh = make_mesh(8)
    backend = train_objectives.GRADIENT_METHODS.get(engine, engine)
    chunk = GC_CHUNK[engine] if gradcache else None
    f = make_grad_fn(toy_model_embed, OBJECTIVES[name][0], mesh=mesh, backend=backend, gradcache_chunk=chunk)
    if engine == "jit":  # the train step's jit: replicated parameters, the batch sharded on "data"
        rep = NamedSharding(mesh, P())
        f = jax.jit(f, in_shardings=(rep, NamedSharding(mesh, P("data")), rep), out_shardings=rep)
    elif engine != "pmap":
        f = jax.jit(f)
    (loss, metrics), grads = f(params, cols, rng)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < 1e-5
    if name == "softmax":  # the head receives its gradient too (the direct term in GradCache)
        assert float(jnp.max(jnp.abs(grads["head"]["kernel"]))) > 0


def test_chunked_embeddings_use_the_same_keys_as_the_whole_batch():
    """Pass 1 / pass 2 of GradCache embed chunk by chunk; per-row keys make that the whole-batch result."""
    params, cols = data()
    from sentjax.parallel.dropout_keys import embed_column
    rng = jax.random.key(5)
    whole = embed_column(toy_model_embed, params, cols["anchor"], rng, "anchor", 0)
    parts = [embed_column(toy_model_embed, params, jax.tree.map(lambda x: x[i:i + 4], cols["anchor"]), rng, "anchor", i)
             for i in range(0, B, 4)]
    np.testing.assert_array_equal(np.asarray(whole), np.concatenate([np.asarray(p) for p in parts]))
    other = embed_column(toy_model_embed, params, cols["anchor"], rng, "positive", 0)
    assert float(jnp.max(jnp.abs(other - whole))) > 1e-3  # another column draws other masks


def test_nonfinite_step_is_reported_and_skipped():
    params, cols = data()
    cols = {"anchor": cols["anchor"], "positive": cols["positive"]}

    def exploding(p, e, axis_name):  # a loss that blows up on this batch
        loss, m = make_column_loss("infonce")(p, e, axis_name)
        return loss * jnp.inf, m
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    for loss_fn, bad in ((exploding, 1.0), (make_column_loss("infonce"), 0.0)):
        (_, metrics), grads = jax.jit(make_grad_fn(toy_model_embed, loss_fn, backend="none"))(params, cols, None)
        assert float(metrics["nonfinite"]) == bad
        new_params, new_opt, flag = jax.jit(lambda g, o, p: guarded_update(tx, g, o, p))(grads, opt_state, params)
        assert float(flag) == bad
        assert (rel_err(new_params, params) > 0) != bool(bad)  # skipped iff non-finite
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((new_params, new_opt)))
