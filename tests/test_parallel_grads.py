"""Gradient equivalence matrix: 8 devices with global negatives == 1 device on the whole batch.

Every case differentiates a full step (tiny BERT encoder + mean pooling + loss) with respect to
the encoder parameters and compares it, leaf by leaf, with an independent single-device gradient
written directly with ``jax.grad`` (no engine code). The matrix is every InfoNCE implementation
(``sentjax.losses.IMPLS``) x every engine (each ``make_grad_fn`` backend in ``BACKENDS``, plus the
trainer's ``gradient.method='jit'``: backend 'none' on the global batch sharded over 8 devices)
x GradCache off / on; the objectives with trainable loss parameters (the sigmoid loss, dense and
ring, and InfoNCE with a learned temperature) get the same matrix over ``{"model", "head"}``. The bug tests re-implement the peers' known mistakes and assert that this
same check catches each of them.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sentjax.losses import IMPLS, infonce_loss, make_column_loss
from sentjax.models.config import EncoderConfig
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.parallel.global_grads import BACKENDS, embed_columns
from sentjax.train.objectives import GRADIENT_METHODS

N_DEV, B, L, K = 8, 16, 8, 2
TOL = 1e-5
# Loss values agree to 1e-6 relative, except the tiled kernel's: with 1-row tiles it adds a row's up
# to 48 exps one at a time, so its float32 sum differs from the dense one's by O(48 eps) = 3e-6.
LOSS_TOL = {"dense": 1e-6, "tiled": 5e-6, "tiled-ring": 5e-6}
# Every way a step's gradient is computed: each make_grad_fn backend, plus each trainer
# gradient.method that is not one itself ('jit': backend 'none' on the global batch, sharded over
# the mesh as the jit-compiled train step shards it, XLA inserting the collectives).
ENGINES = tuple(BACKENDS) + tuple(m for m in GRADIENT_METHODS if m not in BACKENDS)
# tiled: 1-row tiles, so each device walks 2 query tiles x (2 + 2 * K) candidate tiles per ring
# step over an 8-step ring (and the one-device engines 16 x 48 tiles)
TILE = 1
GC_CHUNK = {"none": 4, "jit": 2}  # GradCache rows per chunk (per device); 1 for the 2-row local shards
CASES = {  # name -> infonce hyperparameters, hard negatives per anchor
    "infonce": (dict(temperature=0.05), 0),
    # w != 0 makes the order of the gathered negatives matter (each anchor's OWN negatives get +w)
    "hard_negatives": (dict(temperature=0.05, hard_negative_weight=1.0), K),
    "symmetric": (dict(temperature=0.05, symmetric=True), 0),
}


@functools.lru_cache(maxsize=None)
def setup(dropout=False):
    # one layer: the matrix compiles ~100 programs and what it pins (how each engine gathers,
    # caches and averages) does not depend on depth
    p = 0.1 if dropout else 0.0
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=p,
                        attention_probs_dropout_prob=p)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens(n):
        ids = rng.integers(1, 100, (n, L)).astype(np.int32)
        lengths = rng.integers(3, L + 1, n)
        mask = (np.arange(L)[None, :] < lengths[:, None]).astype(np.int32)
        return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask),
                "token_type_ids": jnp.zeros((n, L), jnp.int32)}
    columns = {"anchor": tokens(B), "positive": tokens(B), "negative": tokens(B * K)}
    params = module.init(jax.random.key(1), columns["anchor"])["params"]
    return embed_fn(module), params, columns


def case_columns(columns, k):
    return {n: c for n, c in columns.items() if k or n != "negative"}


def rel_err(got, want):
    """Tree-wise max over leaves of max|got - want| / max|want|.

    A leaf's scale is floored at 1e-4 of the largest gradient: the attention key biases have an
    exactly-zero gradient (softmax is shift-invariant), so they only hold rounding noise.
    """
    floor = 1e-4 * max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want))
    errs = jax.tree.map(lambda g, w: float(jnp.max(jnp.abs(g - w))) / max(float(jnp.max(jnp.abs(w))), floor),
                        got, want)
    return max(jax.tree.leaves(errs))


@functools.lru_cache(maxsize=None)
def reference(case):
    """Single device, written directly: grad of infonce_loss on the concatenated batch."""
    embed, params, columns = setup()
    hp, k = CASES[case]

    def loss(p):
        a, pos = embed(p, columns["anchor"]), embed(p, columns["positive"])
        neg = embed(p, columns["negative"]).reshape(B, K, -1) if k else None
        return infonce_loss(a, pos, neg, **hp)[0]
    return jax.jit(jax.value_and_grad(loss))(params)


@functools.lru_cache(maxsize=None)
def reference_accuracy(case):
    embed, params, columns = setup()
    hp, k = CASES[case]

    def accuracy(p):
        neg = embed(p, columns["negative"]).reshape(B, K, -1) if k else None
        return infonce_loss(embed(p, columns["anchor"]), embed(p, columns["positive"]), neg, **hp)[1]["accuracy"]
    return float(jax.jit(accuracy)(params))


def engine_backend(engine):
    return engine if engine in BACKENDS else GRADIENT_METHODS[engine]


def chunk_of(engine, gradcache):
    return GC_CHUNK.get(engine, 1) if gradcache else None


@functools.lru_cache(maxsize=None)
def grad_fn(case, backend, chunk, impl="dense"):
    """The engine's gradient function; ``backend`` is any of ENGINES."""
    embed, _, _ = setup()
    hp, _ = CASES[case]
    if impl == "tiled":
        hp = dict(hp, tile_size=TILE)
    if impl == "tiled-ring":  # the [tile, tile] ring kernel where the row panel would be chosen
        hp, impl = dict(hp, tile_size=TILE, panel_mib=0.0), "tiled"
    mesh = make_mesh(N_DEV) if backend in ("shard_map", "jit") else None
    f = make_grad_fn(embed, make_column_loss("infonce", impl=impl, **hp), mesh=mesh,
                     backend=engine_backend(backend), gradcache_chunk=chunk)
    if backend == "pmap":
        return f
    if backend in BACKENDS:
        return jax.jit(f)
    # the train step's jit: replicated parameters, the global batch sharded over the data axis
    rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    jitted = jax.jit(f, in_shardings=(rep, rows, None), out_shardings=rep)

    def run(params, columns, rng):
        assert rng is None
        return jitted(params, columns, rng)
    return run


@pytest.fixture(autouse=True, scope="module")
def need_devices():
    if jax.device_count() < N_DEV:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")


def test_every_trainer_method_runs_a_tested_backend():
    assert set(GRADIENT_METHODS.values()) <= set(BACKENDS)
    assert set(GRADIENT_METHODS) <= set(ENGINES)


# impl "tiled" runs the row-panel kernel for the one-directional cases (they fit its budget) and the
# [tile, tile] ring for the symmetric one; "tiled-ring" forces the ring where the panel would run.
KERNELS = [(c, i) for c in CASES for i in IMPLS] + [(c, "tiled-ring") for c, (hp, _) in CASES.items()
                                                     if not hp.get("symmetric")]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("case,impl", KERNELS, ids=[f"{c}-{i}" for c, i in KERNELS])
def test_every_engine_equals_single_device(case, impl, gradcache, engine):
    """impl x engine x GradCache, each against the independent single-device jax.grad reference."""
    _, params, columns = setup()
    want_loss, want = reference(case)
    f = grad_fn(case, engine, chunk_of(engine, gradcache), impl)
    (loss, metrics), grads = f(params, case_columns(columns, CASES[case][1]), None)
    assert float(loss) == pytest.approx(float(want_loss), rel=LOSS_TOL[impl])
    assert float(metrics["accuracy"]) == pytest.approx(reference_accuracy(case), abs=1e-6)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < TOL


@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("case", ["hard_negatives", "symmetric"])
def test_tiled_pmap_gradient_is_not_divided_by_device_count(case, gradcache):
    """Issue 11 item 1: the tiled loss under pmap gave every gradient 1/8 of the dense loss's.

    Its custom VJP psum-ed the loss inside, so its backward saw cotangent 1 on every device where
    the dense loss's pmean transposes to N under pmap, and global_grads' pmean of the per-device
    gradients then divided the (already exact) shares by N.
    """
    _, params, columns = setup()
    cols = case_columns(columns, CASES[case][1])
    want_loss, want = reference(case)
    chunk = chunk_of("pmap", gradcache)
    (dense_loss, _), dense = grad_fn(case, "pmap", chunk, "dense")(params, cols, None)
    (tiled_loss, _), tiled = grad_fn(case, "pmap", chunk, "tiled")(params, cols, None)
    assert float(tiled_loss) == pytest.approx(float(dense_loss), rel=LOSS_TOL["tiled"])
    assert rel_err(tiled, dense) < TOL
    assert rel_err(tiled, want) < TOL
    assert rel_err(dense, want) < TOL


def test_gradcache_with_dropout_equals_uncached_with_same_keys():
    """Unsupervised SimCSE: anchor and positive are the SAME texts; only dropout tells them apart."""
    embed, params, columns = setup(dropout=True)
    cols = {"anchor": columns["anchor"], "positive": columns["anchor"]}
    loss_fn = make_column_loss("infonce", temperature=0.05)
    rng = jax.random.key(7)
    mesh = make_mesh(N_DEV)
    single = jax.jit(make_grad_fn(embed, loss_fn, backend="none"))  # one object: reused compilation
    (l0, _), g0 = jax.jit(make_grad_fn(embed, loss_fn, backend="shard_map", mesh=mesh))(params, cols, rng)
    (l1, _), g1 = jax.jit(make_grad_fn(embed, loss_fn, backend="shard_map", mesh=mesh,
                                       gradcache_chunk=1))(params, cols, rng)
    (l2, _), g2 = single(params, cols, rng)
    assert float(l1) == pytest.approx(float(l0), rel=1e-6)
    assert rel_err(g1, g0) < TOL  # GradCache == uncached, same keys, 8 devices
    assert float(l2) == pytest.approx(float(l0), rel=1e-6)
    assert rel_err(g2, g0) < TOL  # per-row keys: 1 device == 8 devices, even with dropout
    (_, _), g4 = single(params, cols, jax.random.key(8))
    assert rel_err(g4, g2) > 1e-3  # another step key, other masks: the keys are really used


# ------------------------------------------------------------------------------- known peer bugs

def _local_columns_loss(hp, k, scale=1.0, misorder=False):
    """A loss_fn for the engine with a deliberately injected bug."""
    def loss_fn(params, e, axis_name):
        a, p = e["anchor"], e["positive"]
        if not misorder:
            n = e["negative"].reshape(a.shape[0], k, -1) if k else None
            loss, m = infonce_loss(a, p, n, axis_name=axis_name, **hp)
            return loss * scale, m
        # sentence-transformers before PR #3453: negatives gathered slot-major (all first negatives,
        # then all second ones) while the loss assumes anchor-major order.
        n = e["negative"].reshape(a.shape[0], k, -1)
        n = jnp.transpose(n, (1, 0, 2)).reshape(a.shape[0], k, -1)
        return infonce_loss(a, p, n, axis_name=axis_name, **hp)
    return loss_fn


def test_bug_loss_scaled_by_world_size_is_caught():
    """SimCSE / Tevatron: loss * 1/world_size on top of an already global mean -> grads 8x too small."""
    embed, params, columns = setup()
    hp, k = CASES["infonce"]
    f = jax.jit(make_grad_fn(embed, _local_columns_loss(hp, k, scale=1.0 / N_DEV), mesh=make_mesh(N_DEV)))
    _, grads = f(params, case_columns(columns, k), None)
    assert rel_err(grads, reference("infonce")[1]) > 0.5


def test_bug_hard_negatives_misordered_is_caught():
    embed, params, columns = setup()
    hp, k = CASES["hard_negatives"]
    f = jax.jit(make_grad_fn(embed, _local_columns_loss(hp, k, misorder=True), mesh=make_mesh(N_DEV)))
    _, grads = f(params, columns, None)
    assert rel_err(grads, reference("hard_negatives")[1]) > 1e-2


def test_bug_gradients_not_averaged_is_caught():
    """The 2021 flax community script: per-device pmap gradients used without lax.pmean."""
    embed, params, columns = setup()
    hp, k = CASES["infonce"]
    loss_fn = make_column_loss("infonce", **hp)
    cols = case_columns(columns, k)

    def device_grads(params, cols):
        def loss(p):
            return loss_fn(p, embed_columns(embed, p, cols, None), "data")[0]
        return jax.grad(loss)(params)  # bug: no lax.pmean(grads, "data")
    split = jax.tree.map(lambda x: x.reshape((N_DEV, -1) + x.shape[1:]), cols)
    grads = jax.pmap(device_grads, axis_name="data", in_axes=(None, 0))(params, split)
    device0 = jax.tree.map(lambda g: g[0], grads)
    assert rel_err(device0, reference("infonce")[1]) > 0.5


# ------------------------------------------------------------------------------- guard + bad input

def test_bad_batches_raise_clear_errors():
    embed, params, columns = setup()
    f = make_grad_fn(embed, make_column_loss("infonce"), mesh=make_mesh(N_DEV))
    a = columns["anchor"]
    cut = lambda t, n: jax.tree.map(lambda x: x[:n], t)  # noqa: E731
    with pytest.raises(ValueError, match="different batch sizes"):
        f(params, {"anchor": a, "positive": cut(columns["negative"], 24)}, None)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        f(params, {"anchor": cut(a, 12), "positive": cut(a, 12)}, None)
    g = make_grad_fn(embed, make_column_loss("infonce"), mesh=make_mesh(N_DEV), gradcache_chunk=3)
    with pytest.raises(ValueError, match="gradcache_chunk=3 must be a positive int dividing"):
        g(params, {"anchor": a, "positive": a}, None)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_grad_fn(embed, make_column_loss("infonce", temperature=0.0), backend="none")(
            params, {"anchor": a, "positive": a}, None)
    with pytest.raises(ValueError, match="backend"):
        make_grad_fn(embed, make_column_loss("infonce"), backend="tpu")


# ------------------------------------------------------------------------------- trainable loss parameters
# Objectives whose loss has its own trainable scalars in params["head"]: the sigmoid loss (SigLIP's
# t', b; both kernels) and InfoNCE with CLIP's learned temperature (dense only: the tiled kernel's
# refusal is tests/test_sigmoid.py::test_config_refusals). The step differentiates {"model", "head"};
# the head's gradient (from the loss stage, also under GradCache) is pinned like the encoder's.

HEAD_CASES = {  # name -> (objective config, hard negatives per anchor, impls it accepts)
    "sigmoid": ({"name": "sigmoid", "init_bias": -5.0}, K, ("dense", "tiled")),
    "infonce_learned_t": ({"name": "infonce", "learn_temperature": True, "temperature": 0.1,
                           "symmetric": True}, 0, ("dense",)),
}
HEAD_MATRIX = [(c, i) for c, (_, _, impls) in HEAD_CASES.items() for i in impls]


def _head_objective(case, impl="dense"):
    from sentjax.train.objectives import make_objective
    block, _, _ = HEAD_CASES[case]
    extra = {"impl": impl, "tile_size": 3} if impl == "tiled" else {}
    return make_objective({**block, **extra})


@functools.lru_cache(maxsize=None)
def head_params(case):
    _, params, _ = setup()
    return {"model": params, "head": _head_objective(case).init_head(jax.random.key(0), 32)}


@functools.lru_cache(maxsize=None)
def head_reference(case):
    """Single device, written directly with the loss functions on the concatenated batch."""
    from sentjax.losses.sigmoid import sigmoid_loss
    embed, _, columns = setup()
    block, k, _ = HEAD_CASES[case]

    def loss(p):
        a, pos = embed(p["model"], columns["anchor"]), embed(p["model"], columns["positive"])
        if case == "sigmoid":
            neg = embed(p["model"], columns["negative"]).reshape(B, K, -1)
            return sigmoid_loss(a, pos, neg, log_scale=p["head"]["log_scale"], bias=p["head"]["bias"])
        return infonce_loss(a, pos, symmetric=True, logit_scale=jnp.exp(p["head"]["log_scale"]))
    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(head_params(case))
    return value, float(aux["accuracy"]), grads


@functools.lru_cache(maxsize=None)
def head_grad_fn(case, impl, backend, chunk):
    embed, _, _ = setup()
    mesh = make_mesh(N_DEV) if backend in ("shard_map", "jit") else None
    f = make_grad_fn(lambda p, t, r: embed(p["model"], t, r), _head_objective(case, impl).loss_fn, mesh=mesh,
                     backend=engine_backend(backend), gradcache_chunk=chunk)
    if backend == "pmap":
        return f
    if backend in BACKENDS:
        return jax.jit(f)
    rep, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(f, in_shardings=(rep, rows, None), out_shardings=rep)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("case,impl", HEAD_MATRIX, ids=[f"{c}-{i}" for c, i in HEAD_MATRIX])
def test_trainable_loss_parameters_every_engine_equals_single_device(case, impl, gradcache, engine):
    _, _, columns = setup()
    want_loss, want_acc, want = head_reference(case)
    f = head_grad_fn(case, impl, engine, chunk_of(engine, gradcache))
    (loss, metrics), grads = f(head_params(case), case_columns(columns, HEAD_CASES[case][1]), None)
    assert float(loss) == pytest.approx(float(want_loss), rel=LOSS_TOL[impl])
    assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads["model"], want["model"]) < TOL
    for name, g in want["head"].items():  # each scalar against its own size (not the tree's floor)
        assert abs(float(g)) > 1e-4, name
        assert abs(float(grads["head"][name]) - float(g)) <= TOL * abs(float(g)), name
