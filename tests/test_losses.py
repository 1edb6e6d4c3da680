"""Each loss against an independent float64 NumPy reference, the worked example, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from sentjax.losses import (cosent_loss, cosine_loss, distill_loss, get_loss, infonce_loss,
                            init_softmax_head, make_column_loss, softmax_loss)
from sentjax.losses.softmax import CONCATS


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lse(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def ref_infonce(a, p, n, t, symmetric, w):
    """Loop-per-anchor float64 reference of the contract's formula."""
    a, p = unit(a.astype(np.float64)), unit(p.astype(np.float64))
    b = len(a)
    losses, correct = [], 0
    for i in range(b):
        cands = [a[i] @ p[j] / t for j in range(b)]
        if n is not None:
            nn_ = unit(n.astype(np.float64))
            for j in range(b):
                for m in range(n.shape[1]):
                    cands.append(nn_[j, m] @ a[i] / t + (w if j == i else 0.0))
        cands = np.array(cands)
        losses.append(lse(cands, 0) - cands[i])
        correct += int(np.argmax(cands) == i)
    loss = np.mean(losses)
    if symmetric:
        back = [lse(np.array([p[j] @ a[i] / t for i in range(b)]), 0) - p[j] @ a[j] / t for j in range(b)]
        loss = (loss + np.mean(back)) / 2
    return loss, correct / b


def test_worked_example():
    a = jnp.array([[0.8109, -0.9391, 0.2519]])
    p = jnp.array([[-1.2887, 1.5057, 0.4449]])
    n = jnp.array([[[2.1968, 0.4785, 1.5207]]])
    loss, _ = infonce_loss(a, p, n, temperature=0.5)
    assert float(loss) == pytest.approx(2.8811, abs=1e-4)


@pytest.mark.parametrize("k,symmetric,w", [(0, False, 0.0), (0, True, 0.0), (2, False, 0.0), (3, True, 0.7)])
def test_infonce_vs_numpy(k, symmetric, w):
    a, p = rand(0, 9, 6), rand(1, 9, 6)
    p[:3] = a[:3] + 0.1 * p[:3]  # some anchors get their positive right, some not
    n = rand(2, 9, k, 6) if k else None
    loss, m = infonce_loss(jnp.asarray(a, jnp.float32), jnp.asarray(p, jnp.float32),
                           None if n is None else jnp.asarray(n, jnp.float32),
                           temperature=0.07, symmetric=symmetric, hard_negative_weight=w)
    want, acc = ref_infonce(a, p, n, 0.07, symmetric, w)
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(m["accuracy"]) == pytest.approx(acc)


def test_infonce_bf16_low_temperature_is_stable():
    a, p, n = rand(3, 32, 16), rand(4, 32, 16), rand(5, 32, 2, 16)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)  # noqa: E731
    (loss, _), grads = jax.value_and_grad(
        lambda a, p, n: infonce_loss(a, p, n, temperature=0.01), argnums=(0, 1, 2), has_aux=True)(bf(a), bf(p), bf(n))
    # reference on the same bf16-rounded inputs: the float32 upcast inside should make it exact
    r = lambda x: np.asarray(bf(x).astype(jnp.float32), np.float64)  # noqa: E731
    want, _ = ref_infonce(r(a), r(p), r(n), 0.01, False, 0.0)
    assert want > 50  # large logits: a naive exp would overflow in bf16/float32 at T=0.01
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g.astype(jnp.float32)))) for g in grads)


@pytest.mark.parametrize("concat", CONCATS)
def test_softmax_vs_numpy(concat):
    u, v = rand(6, 10, 5), rand(7, 10, 5)
    labels = np.random.default_rng(8).integers(0, 3, 10)
    head = init_softmax_head(jax.random.key(0), 5, 3, concat)
    loss, m = softmax_loss(head, jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(labels),
                           concat=concat)
    parts = {"u": u, "v": v, "|u-v|": np.abs(u - v), "u*v": u * v}
    logits = np.concatenate([parts[c] for c in concat], 1) @ np.asarray(head["kernel"], np.float64) \
        + np.asarray(head["bias"], np.float64)
    want = np.mean(lse(logits, 1) - logits[np.arange(10), labels])
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(m["accuracy"]) == pytest.approx(np.mean(logits.argmax(1) == labels))


def test_softmax_bad_label_is_nan_not_silent():
    head = init_softmax_head(jax.random.key(0), 4, 3)
    loss, _ = softmax_loss(head, jnp.ones((2, 4)), jnp.zeros((2, 4)), jnp.array([0, 3]))
    assert np.isnan(float(loss))


def test_cosine_vs_numpy():
    u, v, s = rand(9, 12, 7), rand(10, 12, 7), np.random.default_rng(11).uniform(0, 5, 12)
    loss, _ = cosine_loss(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(s, jnp.float32))
    cos = np.sum(unit(u) * unit(v), 1)
    assert float(loss) == pytest.approx(np.mean((cos - s / 5) ** 2), rel=1e-5)


@pytest.mark.parametrize("with_tgt", [False, True])
def test_distill_vs_numpy(with_tgt):
    s, t, te = rand(12, 6, 8), rand(13, 6, 8), rand(14, 6, 8)
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    loss, _ = distill_loss(f(s), f(t) if with_tgt else None, f(te))
    want = np.mean((s - te) ** 2)
    if with_tgt:
        want = (want + np.mean((t - te) ** 2)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-5)
    g = jax.grad(lambda te: distill_loss(f(s), None, te)[0])(f(te))
    assert not np.any(np.asarray(g))  # the teacher is frozen


def test_cosent_vs_numpy():
    u, v = rand(15, 10, 6), rand(16, 10, 6)
    s = np.random.default_rng(17).integers(0, 4, 10).astype(np.float64)  # ties: those pairs are skipped
    loss, _ = cosent_loss(jnp.asarray(u, jnp.float32), jnp.asarray(v, jnp.float32), jnp.asarray(s, jnp.float32),
                          scale=20.0)
    c = 20 * np.sum(unit(u) * unit(v), 1)
    terms = [c[j] - c[i] for i in range(10) for j in range(10) if s[i] > s[j]]
    assert float(loss) == pytest.approx(lse(np.array([0.0] + terms), 0), rel=1e-5)


def test_losses_match_across_eight_devices():
    """Each loss with axis_name on 8 shards == the single-device loss and input gradient."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    f = lambda *s: jnp.asarray(rand(*s), jnp.float32)  # noqa: E731
    u, v, n = f(20, 16, 6), f(21, 16, 6), f(22, 16, 2, 6)
    scores = jnp.asarray(np.random.default_rng(23).uniform(0, 5, 16), jnp.float32)
    labels = jnp.asarray(np.random.default_rng(24).integers(0, 3, 16))
    head = init_softmax_head(jax.random.key(1), 6, 3)
    cases = {
        "infonce": lambda u, v, ax: infonce_loss(u, v, n_local(ax), symmetric=True, hard_negative_weight=0.5,
                                                 axis_name=ax),
        "softmax": lambda u, v, ax: softmax_loss(head, u, v, local(labels, ax), axis_name=ax),
        "cosine": lambda u, v, ax: cosine_loss(u, v, local(scores, ax), axis_name=ax),
        "distill": lambda u, v, ax: distill_loss(u, None, v, axis_name=ax),
        "cosent": lambda u, v, ax: cosent_loss(u, v, local(scores, ax), axis_name=ax),
    }

    def local(x, ax):
        if ax is None:
            return x
        b = x.shape[0] // 8
        return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(ax) * b, b)

    def n_local(ax):
        return local(n, ax)

    @jax.jit  # one compilation for all five losses, both ways
    def run(u, v):
        out = {}
        for name, fn in cases.items():
            single = jax.value_and_grad(lambda u, v: fn(u, v, None)[0], argnums=(0, 1))(u, v)
            sm = jax.shard_map(lambda u, v, fn=fn: fn(u, v, "data")[0], mesh=mesh,
                               in_specs=(P("data"), P("data")), out_specs=P())
            out[name] = (single, jax.value_and_grad(sm, argnums=(0, 1))(u, v))
        return out

    for name, ((want, gwant), (got, ggot)) in run(u, v).items():
        assert float(got) == pytest.approx(float(want), rel=1e-5), name
        for g, w in zip(ggot, gwant):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6 * float(jnp.max(jnp.abs(w))), err_msg=name)


def test_bad_input_errors():
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        infonce_loss(x, x, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        infonce_loss(x, x, temperature=-0.1)
    with pytest.raises(ValueError, match="same"):
        infonce_loss(x, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="negatives must be"):
        infonce_loss(x, x, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match="scores must have shape"):
        cosine_loss(x, x, jnp.ones(5))
    with pytest.raises(ValueError, match="concat"):
        init_softmax_head(jax.random.key(0), 3, 2, ("u", "w"))
    with pytest.raises(KeyError, match="unknown loss"):
        get_loss("triplet")
    with pytest.raises(ValueError, match="not a multiple"):
        make_column_loss("infonce")({}, {"anchor": x, "positive": x, "negative": jnp.ones((6, 3))})


def test_registry_and_column_adapter():
    assert get_loss("infonce") is infonce_loss
    a, p = jnp.asarray(rand(30, 4, 5), jnp.float32), jnp.asarray(rand(31, 4, 5), jnp.float32)
    n = jnp.asarray(rand(32, 4, 2, 5), jnp.float32)
    loss, _ = make_column_loss("infonce", temperature=0.1)({}, {"anchor": a, "positive": p,
                                                                "negative": n.reshape(8, 5)})
    assert float(loss) == pytest.approx(float(infonce_loss(a, p, n, temperature=0.1)[0]), rel=1e-6)
