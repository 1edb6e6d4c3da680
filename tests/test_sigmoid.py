"""Sigmoid loss (SigLIP) and InfoNCE's learnable temperature.

- both sigmoid kernels (dense, ppermute ring) and the learned-temperature InfoNCE against a float64
  NumPy reference: the loss, the accuracy, and the gradients (embeddings by central differences
  along random directions, t' and b by central differences) of the float64 formula;
- the ring against the dense loss on 8 fake devices (loss, input gradients, t' / b gradients),
  odd tile sizes and padding included, and its compiled memory against the dense one's;
- config-time refusals, CLIP's clip (forward and the optimizer projection);
- a trained run: t' and b move, a resumed run restores them bitwise, the export leaves them out.
The encoder-level 1-vs-8-device matrix (every engine x GradCache) is in test_parallel_grads.py.
"""
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from sentjax.errors import ConfigError
from sentjax.losses import get_loss, infonce_loss, make_column_loss
from sentjax.losses.infonce import clip_temperature_head, init_temperature_head
from sentjax.losses.sigmoid import init_sigmoid_head, sigmoid_loss
from sentjax.losses.tiled_sigmoid import tiled_sigmoid_loss
from sentjax.train.objectives import make_objective
from sentjax.train.optim import project_head


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_sigmoid(a, p, n, t_prime, bias):
    """Loop-per-pair float64 reference of the docstring's formula (loss, accuracy)."""
    a, p = unit(a), unit(p)
    cands = [(p[j], j) for j in range(len(p))]
    if n is not None:
        cands += [(v, -1) for v in unit(n).reshape(-1, a.shape[1])]
    total, correct = 0.0, 0
    for i in range(len(a)):
        logits = np.array([math.exp(t_prime) * (a[i] @ c) + bias for c, _ in cands])
        z = np.array([1.0 if j == i else -1.0 for _, j in cands])
        total += np.sum(-np.logaddexp(0.0, -z * logits))  # log sigmoid(x) = -log(1 + e^-x)
        correct += int(logits[i] > np.max(np.delete(logits, i)))
    return -total / len(a), correct / len(a)


def ref_infonce_scale(a, p, scale):
    a, p = unit(a), unit(p)
    logits = scale * a @ p.T
    m = logits.max(1, keepdims=True)
    return np.mean(m[:, 0] + np.log(np.exp(logits - m).sum(1)) - np.diag(logits))


def check_grads_vs_float64(f64, grads, args, seed, rel=2e-4):
    """grads (float32, from JAX) against central differences of the float64 reference f64(*args):
    a random direction per array argument, the plain derivative per scalar."""
    rng = np.random.default_rng(seed)
    for i, (g, x) in enumerate(zip(grads, args)):
        if x is None:
            continue
        v = rng.standard_normal(np.shape(x)) if np.ndim(x) else 1.0
        h = 1e-6

        def at(e, i=i, v=v):
            return f64(*[(xx + e * v if j == i else xx) for j, xx in enumerate(args)])
        fd = (at(h) - at(-h)) / (2 * h)
        got = float(np.sum(np.asarray(g, np.float64) * v))
        assert got == pytest.approx(fd, rel=rel, abs=1e-6), f"argument {i}"


@pytest.mark.parametrize("impl", ["dense", "tiled"])
@pytest.mark.parametrize("k", [0, 2])
def test_sigmoid_vs_float64_numpy(impl, k):
    a, p = rand(0, 9, 6), rand(1, 9, 6)
    p[:4] = a[:4] + 0.2 * p[:4]  # some anchors score their positive highest, some do not
    n = rand(2, 9, k, 6) if k else None
    t_prime, bias = math.log(4.0), -1.5
    f = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
    if impl == "dense":
        fn = lambda a, p, n, t, b: sigmoid_loss(a, p, n, log_scale=t, bias=b)  # noqa: E731
    else:  # tile 4: the 9 + 18 candidate rows end in a padded tile
        fn = lambda a, p, n, t, b: tiled_sigmoid_loss(a, p, n, log_scale=t, bias=b, tile_size=4)  # noqa: E731
    argnums = (0, 1, 2, 3, 4) if k else (0, 1, 3, 4)
    (loss, m), grads = jax.value_and_grad(fn, argnums=argnums, has_aux=True)(
        f(a), f(p), f(n), jnp.float32(t_prime), jnp.float32(bias))
    want, acc = ref_sigmoid(a, p, n, t_prime, bias)
    assert 0 < acc < 1
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(m["accuracy"]) == pytest.approx(acc)
    if not k:
        grads = grads[:2] + (None,) + grads[2:]
    check_grads_vs_float64(lambda *x: ref_sigmoid(*x)[0], grads, [a, p, n, t_prime, bias], seed=k)


def test_sigmoid_paper_init_and_registry():
    head = init_sigmoid_head()
    assert float(head["log_scale"]) == pytest.approx(math.log(10.0)) and float(head["bias"]) == -10.0
    obj = make_objective({"name": "sigmoid"})
    assert obj.in_batch_negatives and obj.fields == ("anchor", "positive", "negative")
    assert jax.tree.map(float, obj.init_head(jax.random.key(0), 8)) == jax.tree.map(float, head)
    assert make_objective({"name": "sigmoid", "learnable": False}).init_head(jax.random.key(0), 8) is None
    assert get_loss("sigmoid") is sigmoid_loss
    # the fixed (not learnable) loss uses the initial values
    a, p = jnp.asarray(rand(3, 4, 5), jnp.float32), jnp.asarray(rand(4, 4, 5), jnp.float32)
    loss, m = make_column_loss("sigmoid", init_scale=3.0, init_bias=-2.0)({}, {"anchor": a, "positive": p})
    assert float(loss) == pytest.approx(ref_sigmoid(np.asarray(a, np.float64), np.asarray(p, np.float64), None,
                                                     math.log(3.0), -2.0)[0], rel=1e-5)
    assert float(m["logit_scale"]) == pytest.approx(3.0) and float(m["logit_bias"]) == -2.0


def test_config_refusals():
    with pytest.raises(ConfigError, match="objective.impl='ring'"):
        make_objective({"name": "sigmoid", "impl": "ring"})
    with pytest.raises(ConfigError, match="init_scale must be > 0"):
        make_objective({"name": "sigmoid", "init_scale": 0.0})
    with pytest.raises(ConfigError, match="learn_temperature=True needs impl='dense'"):
        make_objective({"name": "infonce", "learn_temperature": True, "impl": "tiled"})
    with pytest.raises(ConfigError, match=r"1/T=200 outside \[1, max_logit_scale=100\]"):
        make_objective({"name": "infonce", "learn_temperature": True, "temperature": 0.005})
    with pytest.raises(KeyError, match="needs params\\['head'\\]"):
        make_objective({"name": "infonce", "learn_temperature": True}).loss_fn(
            {}, {"anchor": jnp.ones((2, 3)), "positive": jnp.ones((2, 3))})


def test_learned_temperature_vs_float64_and_clip():
    a, p = rand(5, 8, 6), rand(6, 8, 6)
    obj = make_objective({"name": "infonce", "learn_temperature": True, "temperature": 0.05})
    head = obj.init_head(jax.random.key(0), 6)
    assert float(head["log_scale"]) == pytest.approx(math.log(20.0))
    cols = {"anchor": jnp.asarray(a, jnp.float32), "positive": jnp.asarray(p, jnp.float32)}

    def loss(ls, a, p):
        return obj.loss_fn({"head": {"log_scale": ls}}, {"anchor": a, "positive": p})[0]
    for ls in (math.log(20.0), math.log(2.0)):
        val, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(jnp.float32(ls), cols["anchor"], cols["positive"])
        assert float(val) == pytest.approx(ref_infonce_scale(a, p, math.exp(ls)), rel=1e-5)
        check_grads_vs_float64(lambda ls, a, p: ref_infonce_scale(a, p, math.exp(ls)), grads, [ls, a, p], seed=3)
    # same value as the fixed temperature at the start
    fixed = infonce_loss(cols["anchor"], cols["positive"], temperature=0.05)[0]
    assert float(loss(head["log_scale"], cols["anchor"], cols["positive"])) == pytest.approx(float(fixed), rel=1e-6)
    # CLIP's clip: past log 100 the forward pass uses 100 and there is no gradient to push it further
    over = jnp.float32(math.log(100.0) + 0.5)
    val, g = jax.value_and_grad(loss)(over, cols["anchor"], cols["positive"])
    assert float(val) == pytest.approx(ref_infonce_scale(a, p, 100.0), rel=1e-5) and float(g) == 0.0
    # the optimizer projection puts the parameter itself back into [0, log 100]
    params = {"model": {"w": jnp.ones(3)}, "head": {"log_scale": jnp.float32(math.log(100.0) - 0.01)}}
    tx = optax.chain(optax.sgd(1.0), project_head(obj.clip_head))
    grads = {"model": {"w": jnp.full(3, 0.25)}, "head": {"log_scale": jnp.float32(-1.0)}}  # sgd: +1 on log_scale
    upd, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, upd)
    assert float(new["head"]["log_scale"]) == pytest.approx(math.log(100.0), abs=1e-6)
    np.testing.assert_array_equal(new["model"]["w"], np.full(3, 0.75))  # other updates untouched
    low = clip_temperature_head({"log_scale": jnp.float32(-3.0)})
    assert float(low["log_scale"]) == 0.0  # 1/T >= 1 as in open_clip
    # a run without a head (fixed temperature) goes through the projection unchanged
    upd, _ = tx.update({"model": grads["model"]}, tx.init({"model": params["model"]}), {"model": params["model"]})
    np.testing.assert_array_equal(upd["model"]["w"], np.full(3, -0.25))


def test_scalars_get_no_weight_decay():
    from sentjax.train.optim import decay_mask
    mask = decay_mask({"model": {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}},
                       "head": init_sigmoid_head()})
    assert mask["model"]["dense"]["kernel"] and not mask["model"]["dense"]["bias"]
    assert not mask["head"]["log_scale"] and not mask["head"]["bias"]


def test_head_lr_mult_scales_only_the_head_updates():
    from sentjax.configs.default import get_config
    from sentjax.train.optim import make_optimizer
    params = {"model": {"w": jnp.ones((2, 2))}, "head": init_sigmoid_head()}
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5), params)
    opt = get_config().optim.to_dict()
    opt["warmup_steps"] = 0  # a nonzero lr at step 0
    base, _ = make_optimizer(_with(opt, 1.0), 10)
    fast, _ = make_optimizer(_with(opt, 10.0), 10)
    u1, _ = base.update(grads, base.init(params), params)
    u2, _ = fast.update(grads, fast.init(params), params)
    np.testing.assert_array_equal(u2["model"]["w"], u1["model"]["w"])
    for k in ("log_scale", "bias"):
        assert float(u1["head"][k]) != 0.0
        assert float(u2["head"][k]) == pytest.approx(10.0 * float(u1["head"][k]), rel=1e-6)
    with pytest.raises(ConfigError, match="head_lr_mult must be > 0"):
        make_optimizer(_with(opt, 0.0), 10)


def _with(opt: dict, mult: float):
    import ml_collections
    return ml_collections.ConfigDict({**opt, "head_lr_mult": mult})


# ------------------------------------------------------------------------------- 8 devices

def _mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


@pytest.mark.parametrize("k,tile", [(0, 3), (2, 5), (1, 64)])
def test_ring_equals_dense_on_eight_devices(k, tile):
    """Loss, accuracy and every gradient (anchors, positives, negatives, t', b): ring == dense, both
    sharded over 8 devices with the gradient outside shard_map, and == the one-device dense loss."""
    mesh = _mesh()
    b_all, d = 32, 6
    a, p = jnp.asarray(rand(10, b_all, d), jnp.float32), jnp.asarray(rand(11, b_all, d), jnp.float32)
    p = p.at[:12].set(a[:12] + 0.3 * p[:12])
    n = jnp.asarray(rand(12, b_all, max(k, 1), d)[:, :k], jnp.float32)
    ls, bias = jnp.float32(math.log(10.0)), jnp.float32(-4.0)

    def sharded(fn):
        def f(a, p, n, ls, bias):
            body = lambda a, p, n, ls, bias: fn(a, p, n if k else None, log_scale=ls, bias=bias,  # noqa: E731
                                                axis_name="data")
            return jax.shard_map(body, mesh=mesh, in_specs=(P("data"),) * 3 + (P(), P()),
                                 out_specs=P())(a, p, n, ls, bias)
        return f

    def tiled(*args, **kw):
        return tiled_sigmoid_loss(*args, tile_size=tile, **kw)
    vg = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True))  # noqa: E731
    (l1, m1), g1 = vg(lambda a, p, n, ls, bias: sigmoid_loss(a, p, n if k else None, log_scale=ls, bias=bias))(
        a, p, n, ls, bias)
    (ld, md), gd = vg(sharded(sigmoid_loss))(a, p, n, ls, bias)
    (lr, mr), gr = vg(sharded(tiled))(a, p, n, ls, bias)
    assert float(lr) == pytest.approx(float(ld), rel=1e-6) and float(ld) == pytest.approx(float(l1), rel=1e-6)
    assert float(mr["accuracy"]) == float(md["accuracy"]) == float(m1["accuracy"])
    assert 0 < float(m1["accuracy"]) < 1
    for name, x, y, z in zip(["anchors", "positives", "negatives", "t'", "b"], gr, gd, g1):
        if name == "negatives" and not k:
            continue
        scale = float(jnp.max(jnp.abs(z)))
        assert scale > 0, name
        assert float(jnp.max(jnp.abs(x - y))) / scale < 1e-5, name
        assert float(jnp.max(jnp.abs(x - z))) / scale < 1e-5, name


def test_ring_never_holds_the_global_logits():
    """Compiled temporary memory of loss + gradient per program, 8 devices, B = 4096, tile 128: the
    dense loss holds [512, 4096] float32 logits per device (8 MiB each, 64 MiB for the 8), the ring
    [512, 128] slices."""
    mesh = _mesh()
    b_all, d = 4096, 16
    a = jax.random.normal(jax.random.key(0), (b_all, d))
    p = jax.random.normal(jax.random.key(1), (b_all, d))

    def temp_bytes(fn):
        def f(a, p):
            body = lambda a, p: fn(a, p, log_scale=2.3, bias=-10.0, axis_name="data")[0]  # noqa: E731
            return jax.shard_map(body, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())(a, p)
        compiled = jax.jit(jax.grad(f, argnums=(0, 1))).lower(a, p).compile()
        return compiled.memory_analysis().temp_size_in_bytes
    dense = temp_bytes(sigmoid_loss)
    ring = temp_bytes(lambda *x, **kw: tiled_sigmoid_loss(*x, tile_size=128, **kw))
    logits_per_device = 512 * 4096 * 4
    assert dense >= logits_per_device  # the dense program does materialise the logits
    assert ring < dense / 8 and ring < logits_per_device / 2


# ------------------------------------------------------------------------------- a trained run

RUNS = {
    "sigmoid_ring": {"objective.name": "sigmoid", "objective.impl": "tiled", "objective.tile_size": 4},
    # head lr 5 per step: 1/T is driven onto CLIP's clip within the run, and the projection holds it there
    "infonce_learned_t": {"objective.learn_temperature": True, "optim.head_lr_mult": 5000.0},
}


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_trained_head_moves_resumes_exactly_and_is_not_exported(tmp_path, run):
    """The loss parameters are trained (they move), checkpointed (a run resumed from step 3 ends
    bitwise on the uninterrupted run's step 6), kept in range (CLIP's clip, in the trainer) and left
    out of the exported encoder."""
    from safetensors.numpy import load_file

    from sentjax.train.train import train
    from tiny import tiny_config
    over = {**RUNS[run], "mesh.data": 2, "checkpoint.async_save": False}
    full = train(tiny_config(str(tmp_path / "a"), **over), progress=False)
    head = jax.tree.map(np.asarray, full["state"]["params"]["head"])
    if run == "sigmoid_ring":
        assert abs(float(head["log_scale"]) - math.log(10.0)) > 1e-4 and abs(float(head["bias"]) + 10.0) > 1e-4
    else:  # on a bound of [0, log 100], not past it
        ls = float(head["log_scale"])
        assert -1e-6 <= ls <= math.log(100.0) + 1e-6
        assert min(abs(ls), abs(ls - math.log(100.0))) < 1e-5, ls
    # a second workdir holding only the step-3 checkpoint of the first run, resumed to the end
    c = tiny_config(str(tmp_path / "b"), **over)
    shutil.copytree(os.path.join(full["workdir"], "checkpoints"), os.path.join(c.workdir, "checkpoints"))
    shutil.rmtree(os.path.join(c.workdir, "checkpoints", "6"))
    resumed = train(c, resume=True, progress=False)
    for x, y in zip(jax.tree.leaves(resumed["state"]["params"]), jax.tree.leaves(full["state"]["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    weights = [f for f in os.listdir(full["final_model"]) if f.endswith(".safetensors")]
    assert weights
    names = [k for f in weights for k in load_file(os.path.join(full["final_model"], f))]
    assert names and not any("log_scale" in k or k.endswith("head.bias") or "head" in k for k in names)
