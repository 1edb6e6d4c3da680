"""Tiled InfoNCE equals the dense contrastive loss: value, accuracy and gradients.

References: a float64 NumPy/PyTorch implementation of the contract math written independently of
sentjax, a dense jnp implementation, and (when present) sentjax.losses.infonce.infonce_loss.
Batch sizes are deliberately not multiples of the tile.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from sentjax.losses.infonce import column_loss
from sentjax.losses.tiled_infonce import tiled_infonce_loss

T = 0.05
TILE = 16


# ---------------------------------------------------------------------------------------------
# references


def torch_reference(a, p, n, *, temperature, symmetric, weight):
    """Contract math in float64 PyTorch: (loss, accuracy, grads of the unnormalised inputs)."""
    ta = torch.tensor(np.asarray(a, np.float64), requires_grad=True)
    tp = torch.tensor(np.asarray(p, np.float64), requires_grad=True)
    tn = None if n is None else torch.tensor(np.asarray(n, np.float64), requires_grad=True)
    norm = torch.nn.functional.normalize
    an, pn = norm(ta, dim=-1), norm(tp, dim=-1)
    big_b = an.shape[0]
    cands = pn
    bias = torch.zeros(big_b, big_b, dtype=torch.float64)
    if tn is not None:
        k = tn.shape[1]
        cands = torch.cat([pn, norm(tn, dim=-1).reshape(big_b * k, -1)])
        own = torch.kron(torch.eye(big_b, dtype=torch.float64), torch.ones(1, k, dtype=torch.float64))
        bias = torch.cat([bias, weight * own], dim=1)
    logits = an @ cands.T / temperature + bias
    labels = torch.arange(big_b)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    if symmetric:
        back = pn @ an.T / temperature
        loss = (loss + torch.nn.functional.cross_entropy(back, labels)) / 2
    loss.backward()
    acc = (logits.argmax(1) == labels).double().mean().item()
    grads = [ta.grad.numpy(), tp.grad.numpy()] + ([] if tn is None else [tn.grad.numpy()])
    return loss.item(), acc, grads


def numpy_loss(a, p, n, *, temperature, symmetric, weight):
    """Contract math in float64 NumPy, explicit loops over anchors for the hard-negative bias."""
    def unit(x):
        x = np.asarray(x, np.float64)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def lse(x):
        m = x.max(axis=1, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]

    a, p = unit(a), unit(p)
    big_b, d = a.shape
    cands = p if n is None else np.concatenate([p, unit(n).reshape(-1, d)])
    logits = a @ cands.T / temperature
    if n is not None:
        k = n.shape[1]
        for i in range(big_b):
            logits[i, big_b + i * k: big_b + (i + 1) * k] += weight
    loss = np.mean(lse(logits) - np.diag(logits))
    if symmetric:
        back = p @ a.T / temperature
        loss = (loss + np.mean(lse(back) - np.diag(back))) / 2
    return loss


def dense_jnp(a, p, n=None, *, temperature, symmetric=False, hard_negative_weight=0.0, axis_name=None):
    """Dense float32 contract implementation (materialises the B x B logits) for end-to-end checks."""
    del axis_name
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    a, p = unit(a), unit(p)
    big_b, d = a.shape
    cands, bias = p, jnp.zeros((big_b, big_b))
    if n is not None:
        k = n.shape[1]
        cands = jnp.concatenate([p, unit(n).reshape(big_b * k, d)])
        bias = jnp.concatenate([bias, hard_negative_weight * jnp.kron(jnp.eye(big_b), jnp.ones((1, k)))], 1)
    logits = a @ cands.T / temperature + bias
    lab = jnp.arange(big_b)
    loss = jnp.mean(jax.nn.logsumexp(logits, 1) - logits[lab, lab])
    if symmetric:
        back = p @ a.T / temperature
        loss = (loss + jnp.mean(jax.nn.logsumexp(back, 1) - back[lab, lab])) / 2
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, 1) == lab)}


def make_batch(seed, big_b, d, k, dtype=np.float32):
    """Random embeddings where positives resemble their anchors (so accuracy is non-trivial)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((big_b, d))
    p = a + 1.5 * rng.standard_normal((big_b, d))
    n = None if k == 0 else a[:, None, :] + 2.0 * rng.standard_normal((big_b, k, d))
    cast = lambda x: None if x is None else x.astype(dtype)  # noqa: E731
    return cast(a), cast(p), cast(n)


def assert_close(got, want, rtol=1e-5, what=""):
    """Elementwise |got - want| <= rtol * max|want| (relative to the array's scale)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(np.max(np.abs(want)), 1e-30)
    err = np.max(np.abs(got - want)) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


def assert_tree_close(got, want, rtol, what):
    """assert_close on all parameter gradients at once: some leaves (e.g. the attention key bias,
    which softmax ignores) are zero up to rounding, so the scale is the whole gradient's."""
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert_close(flat(got), flat(want), rtol, what)


def tiled_value_and_grad(a, p, n, **kw):
    argnums = (0, 1) if n is None else (0, 1, 2)
    f = lambda a, p, n: tiled_infonce_loss(a, p, n, **kw)  # noqa: E731
    return jax.jit(jax.value_and_grad(f, argnums=argnums, has_aux=True))(a, p, n)


CASES = [  # (global batch, k hard negatives, symmetric, hard_negative_weight)
    (37, 0, False, 0.0),
    (37, 0, True, 0.0),
    (37, 2, False, 0.0),
    (100, 1, True, 0.7),
    (100, 2, False, 1.3),
]


# ---------------------------------------------------------------------------------------------
# one device


# kernels of the one-directional loss: the row panel (default budget) and the [tile, tile] ring
PANEL, RING = 256.0, 0.0
KERNEL_CASES = [c + (PANEL,) for c in CASES] + [c + (RING,) for c in CASES if not c[2]]


@pytest.mark.parametrize("big_b,k,symmetric,weight,panel_mib", KERNEL_CASES)
def test_single_device_matches_float64_reference(big_b, k, symmetric, weight, panel_mib):
    a, p, n = make_batch(big_b * 10 + k, big_b, 16, k)
    kw = dict(temperature=T, symmetric=symmetric, weight=weight)
    want_loss, want_acc, want_grads = torch_reference(a, p, n, **kw)
    assert want_loss == pytest.approx(numpy_loss(a, p, n, **kw), rel=1e-12)
    (loss, metrics), grads = tiled_value_and_grad(a, p, n, temperature=T, symmetric=symmetric,
                                                  hard_negative_weight=weight, tile_size=TILE,
                                                  panel_mib=panel_mib)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)
    assert 0.0 < want_acc < 1.0  # the accuracy check is not vacuous
    for name, g, w in zip(("anchors", "positives", "negatives"), grads, want_grads):
        assert_close(g, w, 1e-5, name)


def test_tile_larger_than_batch_and_tile_one():
    a, p, n = make_batch(1, 9, 8, 1)
    want_loss, _, want_grads = torch_reference(a, p, n, temperature=0.1, symmetric=True, weight=0.5)
    for tile in (1, 64):
        (loss, _), grads = tiled_value_and_grad(a, p, n, temperature=0.1, symmetric=True,
                                                hard_negative_weight=0.5, tile_size=tile)
        assert float(loss) == pytest.approx(want_loss, rel=1e-5)
        for g, w in zip(grads, want_grads):
            assert_close(g, w, 1e-5, f"tile {tile}")


@pytest.mark.parametrize("temperature", [0.05, 0.01, 0.002])
@pytest.mark.parametrize("big_b,tile,masked", [(37, 16, True), (40, 20, False)])
def test_fixed_shift_and_online_max_paths(temperature, big_b, tile, masked):
    """T = 0.05 sums exp(logit - 1/T) in one pass (a fixed shift); T = 0.01 and 0.002 span more than
    float32's exp range, so they keep the online max. Both are exact, padded (masked) or not. At
    T = 0.002 logits reach 500: a fixed shift would underflow whole rows to 0, an unshifted exp overflow."""
    from sentjax.losses.tiled_infonce import _fixed_shift, _tile_size
    assert (_fixed_shift(1 / temperature, 0.5) is not None) == (temperature == 0.05)
    assert (big_b % _tile_size(big_b, tile) != 0) == masked
    a, p, n = make_batch(5, big_b, 16, 1)
    want_loss, want_acc, want_grads = torch_reference(a, p, n, temperature=temperature, symmetric=True, weight=0.5)
    (loss, metrics), grads = tiled_value_and_grad(a, p, n, temperature=temperature, symmetric=True,
                                                  hard_negative_weight=0.5, tile_size=tile)
    assert np.isfinite(float(loss)) and float(loss) == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)
    for name, g, w in zip(("anchors", "positives", "negatives"), grads, want_grads):
        assert_close(g, w, 1e-5, name)


def test_tile_size_avoids_padding_when_a_divisor_fits():
    from sentjax.losses.tiled_infonce import _tile_size
    assert _tile_size(64, 1024) == 64           # one tile, no padding
    assert _tile_size(3000, 1024) == 1000       # largest divisor in (512, 1024]
    assert _tile_size(2 ** 16, 1024) == 1024
    assert _tile_size(1031, 1024) == 1024       # prime: padded tiles
    assert _tile_size(5, 2) == 2                # divisors only above half the tile


def test_accuracy_ties_follow_argmax_first_index():
    # duplicated pairs give exactly tied logits; jnp.argmax / torch argmax pick the first index
    a, p, _ = make_batch(3, 20, 8, 0)
    a[7], p[7] = a[3], p[3]
    _, want_acc, _ = torch_reference(a, p, None, temperature=T, symmetric=False, weight=0.0)
    _, metrics = tiled_infonce_loss(jnp.asarray(a), jnp.asarray(p), temperature=T, tile_size=8)
    assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)


def test_bfloat16_within_1e2_of_float32():
    a, p, n = make_batch(5, 100, 32, 1)
    kw = dict(temperature=T, symmetric=True, hard_negative_weight=0.5, tile_size=TILE)
    (l32, _), g32 = tiled_value_and_grad(a, p, n, **kw)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)  # noqa: E731
    (l16, _), g16 = tiled_value_and_grad(bf(a), bf(p), bf(n), **kw)
    assert l16.dtype == jnp.float32 and g16[0].dtype == jnp.bfloat16
    assert float(l16) == pytest.approx(float(l32), rel=1e-2)
    for g, w in zip(g16, g32):
        assert_close(g, w, 1e-2, "bf16 grad")


def test_matches_sentjax_dense_infonce_if_present():
    infonce = pytest.importorskip("sentjax.losses.infonce")
    a, p, n = make_batch(11, 37, 16, 2)
    for symmetric, weight, neg in ((False, 0.0, None), (True, 0.0, None), (False, 0.8, n), (True, 0.8, n)):
        kw = dict(temperature=T, symmetric=symmetric, hard_negative_weight=weight)
        argnums = (0, 1) if neg is None else (0, 1, 2)
        (ld, md), gd = jax.value_and_grad(lambda *x: infonce.infonce_loss(*x, **kw), argnums, has_aux=True)(
            a, p, *(() if neg is None else (neg,)))
        (lt, mt), gt = tiled_value_and_grad(a, p, neg, tile_size=TILE, **kw)
        assert float(lt) == pytest.approx(float(ld), rel=1e-5)
        assert float(mt["accuracy"]) == pytest.approx(float(md["accuracy"]), abs=1e-6)
        for g, w in zip(gt, gd):
            assert_close(g, w, 1e-5, "vs infonce_loss")


# ---------------------------------------------------------------------------------------------
# eight devices: local shards + axis_name, gradient taken outside shard_map


def data_mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


@pytest.mark.parametrize("big_b,k,symmetric,weight,panel_mib", [
    (104, 0, True, 0.0, PANEL), (104, 2, False, 0.9, PANEL), (104, 2, False, 0.9, RING), (104, 0, False, 0.0, PANEL),
    (104, 1, True, 0.4, PANEL)])
def test_eight_devices_match_single_device(big_b, k, symmetric, weight, panel_mib):
    mesh = data_mesh()  # local batch 13, tile 8: neither multiple of the other
    a, p, n = make_batch(big_b + k, big_b, 16, k)
    kw = dict(temperature=T, symmetric=symmetric, hard_negative_weight=weight, panel_mib=panel_mib)

    def local(a, p, n):
        loss, metrics = tiled_infonce_loss(a, p, n, axis_name="data", tile_size=8, **kw)
        return loss, metrics["accuracy"]

    specs = (P("data"), P("data"), None if n is None else P("data"))
    sharded = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=(P(), P()))
    argnums = (0, 1) if n is None else (0, 1, 2)
    (loss, acc), grads = jax.jit(jax.value_and_grad(sharded, argnums=argnums, has_aux=True))(a, p, n)

    want_loss, want_acc, want_grads = torch_reference(a, p, n, weight=weight, temperature=T,
                                                      symmetric=symmetric)
    (one_loss, _), one_grads = tiled_value_and_grad(a, p, n, tile_size=8, **kw)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(loss) == pytest.approx(float(one_loss), rel=1e-5)
    assert float(acc) == pytest.approx(want_acc, abs=1e-6)
    for g, w, o in zip(grads, want_grads, one_grads):
        assert_close(g, w, 1e-5, "8 devices vs float64")
        assert_close(g, o, 1e-5, "8 devices vs 1 device")


def torch_weighted_reference(a, p, n, w_rows, *, temperature, weight, symmetric=True):
    """Symmetric loss with row i's forward term and column i's backward term weighted by w_rows[i]
    (one-directional: row i's term only)."""
    ta, tp, tn = (torch.tensor(np.asarray(x, np.float64), requires_grad=True) for x in (a, p, n))
    norm = torch.nn.functional.normalize
    an, pn = norm(ta, dim=-1), norm(tp, dim=-1)
    big_b, k = n.shape[0], n.shape[1]
    cands = torch.cat([pn, norm(tn, dim=-1).reshape(big_b * k, -1)])
    own = torch.kron(torch.eye(big_b, dtype=torch.float64), torch.ones(1, k, dtype=torch.float64))
    bias = torch.cat([torch.zeros(big_b, big_b, dtype=torch.float64), weight * own], dim=1)
    labels = torch.arange(big_b)
    ce = lambda x: torch.nn.functional.cross_entropy(x, labels, reduction="none")  # noqa: E731
    w = torch.tensor(np.asarray(w_rows, np.float64))
    if symmetric:
        loss = (w * (ce(an @ cands.T / temperature + bias) + ce(pn @ an.T / temperature))).sum() / (2 * big_b)
    else:
        loss = (w * ce(an @ cands.T / temperature + bias)).sum() / big_b
    loss.backward()
    return loss.item(), [ta.grad.numpy(), tp.grad.numpy(), tn.grad.numpy()]


def check_weighted_device_shares(core, cfg, big_b, k, seed, weight, symmetric):
    """Device r's unreduced loss share enters with weight r + 1 (psum outside the custom VJP); the
    value and gradients must equal the float64 loss with those per-row weights."""
    from sentjax.losses.tiled_infonce import _l2_normalize
    mesh = data_mesh()
    d = 8
    a, p, n = make_batch(seed, big_b, d, k)
    w = np.arange(1.0, 9.0, dtype=np.float32)

    def local(a, p, n, w):
        share, _ = core(_l2_normalize(a), _l2_normalize(p), _l2_normalize(n).reshape(-1, d), cfg)
        return jax.lax.psum(w[0] * share, "data")

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P("data"),) * 4, out_specs=P())
    loss, grads = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1, 2)))(a, p, n, w)
    want_loss, want_grads = torch_weighted_reference(a, p, n, np.repeat(w, big_b // 8), temperature=T,
                                                     weight=weight, symmetric=symmetric)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    for name, g, wg in zip(("anchors", "positives", "negatives"), grads, want_grads):
        assert_close(g, wg, 1e-5, name)


def test_custom_vjp_weights_each_device_share_by_its_own_cotangent():
    """The custom VJP covers each device's unreduced share of the loss (the psum to the global mean
    is outside it), so its backward gets whatever cotangent the caller's transpose hands each device
    (1 under shard_map, N under pmap). Check it is the exact VJP for DIFFERENT per-device cotangents:
    anchor rows are weighted by their device's, symmetric positive columns by their owner's, which
    travels around the ring with the block. Local batch 3, tile 2."""
    from sentjax.losses.tiled_infonce import _Config, _fixed_shift, _tiled_core
    cfg = _Config(1.0 / T, 0.6, True, "data", 2, 1, masked=True, shift=_fixed_shift(1.0 / T, 0.6))
    check_weighted_device_shares(_tiled_core, cfg, big_b=24, k=1, seed=21, weight=0.6, symmetric=True)


def test_panel_vjp_weights_each_device_share_by_its_own_cotangent():
    """The row-panel kernel computes its gradient in the forward pass for a unit cotangent; the
    backward scales each device's rows by that device's cotangent before the candidate gradients
    are summed at their owners (psum_scatter). Exact for DIFFERENT per-device cotangents, with
    padded panels (local batch 5, 4 rows per panel)."""
    from sentjax.losses.panel_infonce import PanelConfig, panel_core
    check_weighted_device_shares(panel_core, PanelConfig(1.0 / T, 0.6, "data", 4, 2), big_b=40, k=2, seed=23,
                                 weight=0.6, symmetric=False)


def test_panel_rows_budget_and_padding():
    from sentjax.losses.panel_infonce import panel_rows
    assert panel_rows(64, 64 * 8 * 2, 256 * 2 ** 20) == 64          # the whole local batch fits
    assert panel_rows(2 ** 16, 2 ** 16, 256 * 2 ** 20) == 512        # 2 x 4 B x 512 x 65536 = 256 MiB
    assert panel_rows(37, 111, 32 * 8 * 111) == 32                  # no divisor of 37 above 16: padded
    assert panel_rows(100, 300, 60 * 8 * 300) == 50                 # a divisor: no padding
    assert panel_rows(4096, 2 ** 20, 16 * 8 * 2 ** 20) == 0         # under 32 rows: the ring kernel
    a, p, n = make_batch(31, 37, 16, 2)
    want_loss, want_acc, want_grads = torch_reference(a, p, n, temperature=T, symmetric=False, weight=0.4)
    (loss, metrics), grads = tiled_value_and_grad(a, p, n, temperature=T, hard_negative_weight=0.4,
                                                  panel_mib=32 * 8 * 111 / 2 ** 20)  # 32-row panels
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert float(metrics["accuracy"]) == pytest.approx(want_acc, abs=1e-6)
    for name, g, w in zip(("anchors", "positives", "negatives"), grads, want_grads):
        assert_close(g, w, 1e-5, name)


@pytest.mark.parametrize("symmetric", [True, False], ids=["ring", "panel"])
def test_pmap_per_device_gradient_is_n_times_its_share(symmetric):
    """Under jax.pmap (gradient taken per device, sentjax.parallel.global_grads' pmap backend) JAX
    transposes the loss's psum into a psum, so each device's gradient is N times its share of the
    global gradient -- as for the dense loss -- and the pmean of parameter gradients is exact
    (issue 11: the psum sat inside the custom VJP, shares came out 1x, and the pmean gave 1/N)."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    big_b, k = 40, 2  # local batch 5, tile 2: three tiles, the last one padded
    a, p, n = make_batch(17, big_b, 8, k)
    kw = dict(temperature=T, symmetric=symmetric, hard_negative_weight=0.5, tile_size=2, axis_name="data")

    def device_step(a, p, n):
        (loss, m), g = jax.value_and_grad(lambda *x: tiled_infonce_loss(*x, **kw), (0, 1, 2), has_aux=True)(a, p, n)
        return loss, m["accuracy"], jax.tree.map(lambda x: jax.lax.all_gather(x, "data", tiled=True), g)

    split = lambda x: x.reshape((8, -1) + x.shape[1:])  # noqa: E731
    loss, acc, grads = jax.pmap(device_step, axis_name="data")(split(a), split(p), split(n))
    want_loss, want_acc, want_grads = torch_reference(a, p, n, temperature=T, symmetric=symmetric, weight=0.5)
    assert float(loss[0]) == pytest.approx(want_loss, rel=1e-5)
    assert float(acc[0]) == pytest.approx(want_acc, abs=1e-6)
    for name, g, wg in zip(("anchors", "positives", "negatives"), grads, want_grads):
        assert_close(g[0] / 8, wg, 1e-5, name)


def test_global_batch_under_jit_on_explicit_mesh():
    # the train step's pattern: global arrays sharded over an Explicit-axes mesh, no axis_name
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    mesh = jax.make_mesh((8,), ("data",))
    a, p, n = make_batch(8, 40, 8, 1)
    sharding = jax.sharding.NamedSharding(mesh, P("data"))
    args = [jax.device_put(x, sharding) for x in (a, p, n)]
    kw = dict(temperature=T, symmetric=True, hard_negative_weight=0.3, tile_size=TILE)
    (loss, _), grads = tiled_value_and_grad(*args, **kw)
    want_loss, _, want_grads = torch_reference(a, p, n, temperature=T, symmetric=True, weight=0.3)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    for g, w in zip(grads, want_grads):
        assert_close(g, w, 1e-5, "explicit mesh, global batch")


# ---------------------------------------------------------------------------------------------
# end to end through a tiny encoder


@functools.lru_cache(maxsize=1)
def tiny_encoder():
    from sentjax.models.config import EncoderConfig
    from sentjax.models.sentence_model import SentenceEncoderModule
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)
    n, length = 40, 12
    lengths = rng.integers(3, length + 1, size=(2, n))
    ids = rng.integers(1, 100, size=(2, n, length)).astype(np.int32)
    mask = (np.arange(length)[None, None, :] < lengths[..., None]).astype(np.int32)
    batches = [{"input_ids": ids[i], "attention_mask": mask[i]} for i in range(2)]
    params = module.init(jax.random.key(0), batches[0])["params"]
    return module, params, batches


def encoder_loss(loss_fn, module, params, qb, pb, **kw):
    za = module.apply({"params": params}, qb)
    zp = module.apply({"params": params}, pb)
    return loss_fn(za, zp, None, temperature=T, symmetric=True, **kw)[0]


def test_encoder_parameter_gradients_match_dense_one_device():
    module, params, (qb, pb) = tiny_encoder()
    # 40 rows, tile 16: the last tile is padded
    ld, gd = jax.jit(jax.value_and_grad(lambda w: encoder_loss(dense_jnp, module, w, qb, pb)))(params)
    tiled = functools.partial(tiled_infonce_loss, tile_size=TILE)
    lt, gt = jax.jit(jax.value_and_grad(lambda w: encoder_loss(tiled, module, w, qb, pb)))(params)
    assert float(lt) == pytest.approx(float(ld), rel=1e-5)
    assert_tree_close(gt, gd, 1e-5, "encoder params")

    # GradCache-style composition: loss gradient w.r.t. cached embeddings, then chunked encoder VJPs
    embed = jax.jit(lambda w, batch: module.apply({"params": w}, batch))
    chunk_vjp = jax.jit(lambda w, batch, dz: jax.vjp(lambda w: module.apply({"params": w}, batch), w)[1](dz)[0])
    za, zp = embed(params, qb), embed(params, pb)
    (_, _), (dza, dzp) = tiled_value_and_grad(za, zp, None, temperature=T, symmetric=True, tile_size=TILE)
    total = jax.tree.map(jnp.zeros_like, params)
    for batch, dz in ((qb, dza), (pb, dzp)):
        for s in (0, 20):
            chunk = {k: v[s:s + 20] for k, v in batch.items()}
            total = jax.tree.map(jnp.add, total, chunk_vjp(params, chunk, dz[s:s + 20]))
    assert_tree_close(total, gd, 1e-5, "gradcache composition")


def test_encoder_parameter_gradients_match_dense_eight_devices():
    mesh = data_mesh()
    module, params, (qb, pb) = tiny_encoder()  # 40 rows: local batch 5, tile 4

    def sharded_loss(w, qb, pb):
        def local(w, qb, pb):
            tiled = functools.partial(tiled_infonce_loss, tile_size=4, axis_name="data")
            return encoder_loss(tiled, module, w, qb, pb)
        return jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=P())(w, qb, pb)

    lt, gt = jax.jit(jax.value_and_grad(sharded_loss))(params, qb, pb)
    ld, gd = jax.jit(jax.value_and_grad(lambda w: encoder_loss(dense_jnp, module, w, qb, pb)))(params)
    assert float(lt) == pytest.approx(float(ld), rel=1e-5)
    assert_tree_close(gt, gd, 1e-5, "encoder params, 8 devices")


# ---------------------------------------------------------------------------------------------
# selection and bad input


def test_column_loss_selects_implementation():
    a, p, _ = make_batch(2, 20, 8, 0)
    tiled = column_loss(impl="tiled", tile_size=8, temperature=T)
    assert float(tiled({}, {"anchor": a, "positive": p})[0]) == pytest.approx(
        numpy_loss(a, p, None, temperature=T, symmetric=False, weight=0.0), rel=1e-5)
    with pytest.raises(ValueError, match="dense' or 'tiled"):
        column_loss(impl="blocked")


@pytest.mark.parametrize("args,kw,match", [
    ((np.ones((4, 8)), np.ones((5, 8))), {}, "same"),
    ((np.ones((4, 8)), np.ones((4, 8)), np.ones((4, 8))), {}, r"\[batch, k, dim\]"),
    ((np.ones((4,)), np.ones((4,))), {}, r"\[batch, dim\]"),
    ((np.ones((4, 8)), np.ones((4, 8))), {"tile_size": 0}, "tile_size"),
    ((np.ones((4, 8)), np.ones((4, 8))), {"temperature": 0.0}, "temperature"),
    ((np.ones((4, 8), np.int32), np.ones((4, 8), np.int32)), {}, "floating"),
])
def test_bad_input_is_explained(args, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tiled_infonce_loss(*args, **kw)
