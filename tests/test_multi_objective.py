"""The ``multi`` objective: a weighted sum of objectives in one step.

Pins: the gradient of the sum is the weighted sum of each term's gradient; the sum is exact on 8
devices (every engine, with and without GradCache) against a single-device gradient written
directly; each term's loss is reported; the refused configurations say why.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sentjax.errors import ConfigError
from sentjax.losses import cosine_loss, distill_loss, infonce_loss, registry
from sentjax.losses.infonce import init_temperature_head
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.parallel.dropout_keys import row_keys
from sentjax.parallel.global_grads import BACKENDS
from sentjax.train import objectives as train_objectives
from toy import random_tokens, toy_model_embed

B, L, V, D = 16, 6, 50, 8
TERMS = ({"name": "infonce", "weight": 1.0, "temperature": 0.1, "learn_temperature": True},
         {"name": "cosine", "weight": 0.5},
         {"name": "distill", "weight": 0.25, "key": "mse"})
WEIGHTS = (1.0, 0.5, 0.25)




@functools.lru_cache(maxsize=None)
def data():
    rng = np.random.default_rng(0)

    def tokens(n):
        return random_tokens(rng, n, L, V)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"model": {"emb": jax.random.normal(k1, (V, D)), "w": jax.random.normal(k2, (D, D)) / 3},
              "head": {"infonce": init_temperature_head(0.1)}}
    cols = {"anchor": tokens(B), "positive": tokens(B),
            "score": jnp.asarray(rng.uniform(0, 1, B), jnp.float32),
            "teacher": jnp.asarray(rng.standard_normal((B, D)), jnp.float32)}
    return params, cols


def multi():
    return registry.build({"name": "multi", "terms": TERMS})


def reference(params, cols, rng):
    """Single device, written directly from the loss functions (no engine, no multi code)."""
    def emb(p, column):
        keys = row_keys(rng, column, 0, B)
        return jax.vmap(lambda t, k: toy_model_embed(p, jax.tree.map(lambda x: x[None], t), k)[0])(cols[column], keys)

    def loss(p):
        u, v = emb(p, "anchor"), emb(p, "positive")
        scale = jnp.exp(p["head"]["infonce"]["log_scale"])
        return (1.0 * infonce_loss(u, v, logit_scale=scale)[0] + 0.5 * cosine_loss(u, v, cols["score"], score_range=(0.0, 1.0))[0]
                + 0.25 * distill_loss(u, v, cols["teacher"])[0])
    return jax.value_and_grad(loss)(params)


def rel_err(got, want):
    return max(jax.tree.leaves(jax.tree.map(
        lambda g, w: float(jnp.max(jnp.abs(g - w)) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-30)), got, want)))


def test_built_objective_unions_columns_and_flags():
    obj = multi()
    assert obj.fields == ("anchor", "positive", "negative")  # infonce reads hard negatives when present
    assert obj.in_batch_negatives and obj.needs_teacher and not obj.token_level
    head = obj.init_head(jax.random.key(0), D)
    assert set(head) == {"infonce"}  # only the term with a head; cosine / distill train none
    clipped = obj.clip_head({"infonce": {"log_scale": jnp.asarray(10.0)}})
    assert float(clipped["infonce"]["log_scale"]) == pytest.approx(np.log(100.0))
    assert not registry.build({"name": "multi", "terms": [{"name": "cosine"}]}).in_batch_negatives


def test_gradient_of_sum_is_weighted_sum_of_term_gradients():
    params, cols = data()
    rng = jax.random.key(3)
    (loss, metrics), grads = jax.jit(make_grad_fn(toy_model_embed, multi().loss_fn, backend="none"))(params, cols, rng)
    want_loss, want = 0.0, jax.tree.map(jnp.zeros_like, params)
    for w, term in zip(WEIGHTS, TERMS):
        block = {k: v for k, v in term.items() if k not in ("weight", "key")}
        alone = registry.build(block)
        sub = dict(params, head=params["head"]["infonce"]) if term["name"] == "infonce" else \
            {"model": params["model"]}
        (l_k, _), g_k = jax.jit(make_grad_fn(toy_model_embed, alone.loss_fn, backend="none"))(sub, cols, rng)
        key = term.get("key", term["name"])
        assert float(metrics[f"loss_{key}"]) == pytest.approx(float(l_k), rel=1e-6)  # logged per term
        want_loss += w * float(l_k)
        want["model"] = jax.tree.map(lambda a, b: a + w * b, want["model"], g_k["model"])
        if "head" in g_k:
            want["head"]["infonce"] = jax.tree.map(lambda a, b: a + w * b, want["head"]["infonce"], g_k["head"])
    assert float(loss) == pytest.approx(want_loss, rel=1e-6)
    assert rel_err(grads, want) < 1e-5
    assert float(jnp.abs(grads["head"]["infonce"]["log_scale"])) > 0


ENGINES = tuple(BACKENDS) + tuple(m for m in train_objectives.GRADIENT_METHODS if m not in BACKENDS)
GC_CHUNK = {"shard_map": 1, "pmap": 2, "none": 4, "jit": 4}


@functools.lru_cache(maxsize=None)
def reference_of():
    params, cols = data()
    return jax.jit(reference)(params, cols, jax.random.key(3))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
def test_8_devices_equal_single_device(engine, gradcache):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    params, cols = data()
    want_loss, want = reference_of()
    mesh = make_mesh(8)
    backend = train_objectives.GRADIENT_METHODS.get(engine, engine)
    f = make_grad_fn(toy_model_embed, multi().loss_fn, mesh=mesh, backend=backend,
                     gradcache_chunk=GC_CHUNK[engine] if gradcache else None)
    if engine == "jit":
        rep = NamedSharding(mesh, P())
        f = jax.jit(f, in_shardings=(rep, NamedSharding(mesh, P("data")), rep), out_shardings=rep)
    elif engine != "pmap":
        f = jax.jit(f)
    (loss, metrics), grads = f(params, cols, jax.random.key(3))
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert set(metrics) >= {"loss_infonce", "loss_cosine", "loss_mse", "nonfinite"}
    assert rel_err(grads, want) < 1e-5


@pytest.mark.parametrize("terms, match", [
    ((), "non-empty list"),
    (({"name": "multi"},), "cannot contain 'multi'"),
    (({"name": "cosine"}, {"name": "cosine"}), "two terms named 'cosine'.*distinct 'key'"),
    (({"name": "cosine", "weight": -1.0},), "weight must be a finite number >= 0"),
    (({"name": "cosine", "weight": float("nan")},), "weight must be a finite number >= 0"),
    (({"name": "cosine", "temperature": 0.1},), "objective 'cosine' has no field 'temperature'"),
    (({"name": "distill", "teacher": "a"}, {"name": "distill", "key": "d2", "teacher": "b"}), "different teachers"),
])
def test_refused_configurations_say_why(terms, match):
    with pytest.raises(ConfigError, match=match):
        registry.build({"name": "multi", "terms": terms})


def test_trainer_refuses_accumulation_with_a_coupling_term(tmp_path):
    from tiny import tiny_config

    from sentjax.train import train
    c = tiny_config(str(tmp_path), **{"accum_steps": 2})
    c.objective = {"name": "multi", "terms": [{"name": "infonce"}, {"name": "cosine"}]}
    model = train.build_model(c)
    with pytest.raises(ConfigError, match="accum_steps=2 with objective 'multi'"):
        train.build_objective_and_grad(c, model, train_objectives.make_objective(c.objective), train.make_mesh(c))
