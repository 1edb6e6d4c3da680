"""Several positives per anchor (sentjax/losses/multipos.py): float64 NumPy reference of both forms,
k = 1 is InfoNCE, bad input, and the 1-vs-8-device gradient under every engine x GradCache."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.losses import infonce_loss, make_column_loss
from sentjax.losses.multipos import FORMS, multipos_loss, positive_columns
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.train.objectives import make_objective
from test_parallel_grads import B, N_DEV, TOL, chunk_of, engine_backend, rel_err, setup


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def ref_multipos(a, p, n, t, form):
    """Loop-per-anchor float64 reference of the module doc's formula."""
    a, p = unit(a.astype(np.float64)), unit(p.astype(np.float64))
    b, k, _ = p.shape
    cands = [p[j, q] for j in range(b) for q in range(k)]
    if n is not None:
        n = unit(n.astype(np.float64))
        cands += [n[j, q] for j in range(b) for q in range(n.shape[1])]
    losses, hits = [], 0
    for i in range(b):
        logits = np.array([a[i] @ c / t for c in cands])
        own = logits[i * k:(i + 1) * k]
        numer = own.mean() if form == "mean_log_prob" else lse(own)
        losses.append(lse(logits) - numer)
        hits += int(np.argmax(logits) // k == i and np.argmax(logits) < b * k)
    return np.mean(losses), hits / b


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("k,m", [(1, 0), (3, 0), (2, 2)])
def test_vs_numpy(form, k, m):
    a, p = rand(0, 7, 5), rand(1, 7, k, 5)
    p[:3, 0] = a[:3] + 0.1 * p[:3, 0]  # some anchors find a positive, some not
    n = rand(2, 7, m, 5) if m else None
    f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
    loss, met = multipos_loss(f32(a), f32(p), f32(n), temperature=0.1, form=form)
    want, acc = ref_multipos(a, p, n, 0.1, form)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(met["accuracy"]) == pytest.approx(acc)


def test_k1_is_infonce_and_forms_differ_by_jensen():
    a, p, n = (jnp.asarray(x, jnp.float32) for x in (rand(3, 6, 4), rand(4, 6, 4), rand(5, 6, 2, 4)))
    want, _ = infonce_loss(a, p, n, temperature=0.07)
    for form in FORMS:
        got, _ = multipos_loss(a, p[:, None], n, temperature=0.07, form=form)
        assert float(got) == pytest.approx(float(want), rel=1e-6)
    p3 = jnp.asarray(rand(6, 6, 3, 4), jnp.float32)
    out = float(multipos_loss(a, p3, n, temperature=0.07)[0])
    inn = float(multipos_loss(a, p3, n, temperature=0.07, form="log_sum_prob")[0])
    assert inn <= out - np.log(3) + 1e-5 and inn < out - np.log(3) - 1e-3  # strict: positives differ
    assert out >= np.log(3) and inn >= 0  # floors: k positives share the probability mass


def test_bad_input_is_explained():
    a = jnp.zeros((4, 3))
    with pytest.raises(ValueError, match=r"positives must be \[batch, k, dim\] = \[4, k, 3\]"):
        multipos_loss(a, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="form='sum'"):
        multipos_loss(a, jnp.zeros((4, 2, 3)), form="sum")
    with pytest.raises(Exception, match="objective 'multipos'.*positives must be an integer >= 1"):
        make_objective({"name": "multipos", "positives": 0})
    loss_fn = make_column_loss("multipos", positives=3)
    with pytest.raises(KeyError, match="needs a 'positive_2' column"):
        loss_fn({}, {"anchor": a, "positive": a, "positive_1": a})


def test_objective_columns():
    obj = make_objective({"name": "multipos", "positives": 3})
    assert obj.fields == ("anchor", "positive", "positive_1", "positive_2", "negative")
    assert positive_columns(1) == ("positive",)  # k = 1 trains on any pairs data


# ------------------------------------------------------------------- 1 vs 8 devices, GradCache

K = 2  # positives per anchor; one hard negative each


def columns():
    _, _, cols = setup()
    neg = cols["negative"]  # [B*2, L] token rows: half become the second positives, half negatives
    half = lambda lo: {f: v[lo:lo + B] for f, v in neg.items()}  # noqa: E731
    return {"anchor": cols["anchor"], "positive": cols["positive"], "positive_1": half(0), "negative": half(B)}


@functools.lru_cache(maxsize=None)
def reference(form):
    """Single device, written directly: grad of multipos_loss on the concatenated batch."""
    embed, params, _ = setup()
    c = columns()

    def loss(p):
        pos = jnp.stack([embed(p, c["positive"]), embed(p, c["positive_1"])], axis=1)
        return multipos_loss(embed(p, c["anchor"]), pos, embed(p, c["negative"])[:, None],
                             temperature=0.05, form=form)[0]
    return jax.jit(jax.value_and_grad(loss))(params)


def run_engine(engine, chunk, form):
    embed, params, _ = setup()
    mesh = make_mesh(N_DEV) if engine in ("shard_map", "jit") else None
    f = make_grad_fn(embed, make_column_loss("multipos", positives=K, temperature=0.05, form=form),
                     mesh=mesh, backend=engine_backend(engine), gradcache_chunk=chunk)
    if engine in ("shard_map", "none"):
        f = jax.jit(f)
    elif engine == "jit":
        from jax.sharding import NamedSharding, PartitionSpec as P
        f = jax.jit(f, in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")), None),
                    out_shardings=NamedSharding(mesh, P()))
    return f(params, columns(), None)


@pytest.mark.parametrize("engine", ["shard_map", "pmap"])  # 'none' / 'jit' share the loss with these
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
def test_every_engine_equals_single_device(engine, gradcache):
    if jax.device_count() < N_DEV:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    want_loss, want = reference("mean_log_prob")
    (loss, metrics), grads = run_engine(engine, chunk_of(engine, gradcache), "mean_log_prob")
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < TOL


def test_log_sum_prob_on_8_devices_with_gradcache():
    if jax.device_count() < N_DEV:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    want_loss, want = reference("log_sum_prob")
    (loss, _), grads = run_engine("shard_map", 1, "log_sum_prob")
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-6)
    assert rel_err(grads, want) < TOL
    assert rel_err(grads, reference("mean_log_prob")[1]) > 1e-2  # the forms really differ
