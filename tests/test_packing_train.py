"""Sequence packing in the train step: the packed step's loss and gradients equal the padded step's.

A tiny BERT + mean pooling + InfoNCE with hard negatives (weighted, so the order of the unpacked
embeddings matters) is differentiated with padded columns and with the same columns packed
(``sentjax.packing.pack_column``), under shard_map on 1 and 8 devices, with and without GradCache,
dense and tiled loss. With dropout on the masks depend on the layout (see docs/training.md), so
there the statistics are compared instead.
"""
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.losses import make_column_loss
from sentjax.models.config import EncoderConfig
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.packing import pack_column, rows_ladder
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.parallel.global_grads import embed_columns

B, L, K, ROW, SEG = 16, 8, 2, 16, 4
TOL = 1e-5


def tokens(rng, n, length=L, low=2):
    ids = rng.integers(5, 100, (n, length)).astype(np.int32)
    lengths = rng.integers(low, length + 1, n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


@functools.lru_cache(maxsize=None)
def setup(dropout=0.0, normalize=False):
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    module = SentenceEncoderModule(cfg, pooling="mean", normalize=normalize)
    rng = np.random.default_rng(0)
    columns = {"anchor": tokens(rng, B), "positive": tokens(rng, B), "negative": tokens(rng, B * K)}
    params = module.init(jax.random.key(1), jax.tree.map(jnp.asarray, columns["anchor"]))["params"]
    return module, params, columns


def packed(columns, n_dev, multiple=1):
    return {k: pack_column(c, n_dev, ROW, SEG, rows_multiple=multiple) for k, c in columns.items()}


def max_rel(got, want):
    floor = 1e-4 * max(float(jnp.max(jnp.abs(w))) for w in jax.tree.leaves(want))
    return max(jax.tree.leaves(jax.tree.map(
        lambda g, w: float(jnp.max(jnp.abs(g - w))) / max(float(jnp.max(jnp.abs(w))), floor), got, want)))


def test_pack_column_keeps_every_sentence_in_order():
    rng = np.random.default_rng(3)
    col = tokens(rng, 24, length=12, low=1)
    out = pack_column(col, 4, 16, 3)
    per_dev_rows = out["input_ids"].shape[0] // 4
    assert per_dev_rows == rows_ladder(per_dev_rows)  # a fixed ladder value
    for i in range(24):
        d, n = divmod(i, 6)
        r, s = divmod(int(out["unpack_index"][i]), 3)
        row = d * per_dev_rows + r
        seg = out["segment_ids"][row] == s + 1
        assert out["input_ids"][row][seg].tolist() == col["input_ids"][i][col["attention_mask"][i] == 1].tolist()
    # All sentences of 12 tokens in rows of 16: one per row -> the ladder grows, nothing is dropped.
    full = {k: np.ones((8, 12), np.int32) if k != "token_type_ids" else np.zeros((8, 12), np.int32)
            for k in col}
    assert pack_column(full, 1, 16, 3)["input_ids"].shape == (8, 16)
    with pytest.raises(ValueError, match="does not fit"):
        pack_column(full, 1, 8, 3)
    with pytest.raises(ValueError, match="single-sentence"):
        pack_column(dict(col, token_type_ids=col["attention_mask"]), 4, 16, 3)


@functools.lru_cache(maxsize=None)
def padded_reference(n_dev, normalize=False):
    """The padded step's (loss, grads) on n_dev devices, dropout off."""
    module, params, columns = setup(normalize=normalize)
    loss_fn = make_column_loss("infonce", temperature=0.05, hard_negative_weight=1.0)
    (loss, _), grads = jax.jit(make_grad_fn(embed_fn(module), loss_fn, mesh=make_mesh(n_dev)))(
        params, jax.tree.map(jnp.asarray, columns), None)
    return loss, grads


@pytest.mark.parametrize("n_dev,variant", [(1, "dense"), (8, "dense"), (8, "gradcache"), (8, "tiled"),
                                            (1, "normalize")])
def test_packed_step_equals_padded_step(n_dev, variant):
    # normalize: L2-normalised embeddings; the empty segment slots must not make the gradient NaN
    module, params, columns = setup(normalize=variant == "normalize")
    embed = embed_fn(module)
    mesh = make_mesh(n_dev)
    impl = dict(impl="tiled", tile_size=1) if variant == "tiled" else {}
    loss_fn = make_column_loss("infonce", temperature=0.05, hard_negative_weight=1.0, **impl)
    chunk = 1 if variant == "gradcache" else None
    got_fn = jax.jit(make_grad_fn(embed, loss_fn, mesh=mesh, gradcache_chunk=chunk))
    want_loss, want = padded_reference(n_dev, variant == "normalize")
    cols = packed(columns, n_dev, chunk or 1)
    assert cols["negative"]["input_ids"].shape[0] < B * K  # it did pack
    (got_loss, _), got = got_fn(params, jax.tree.map(jnp.asarray, cols), None)
    assert abs(float(got_loss) - float(want_loss)) <= TOL * abs(float(want_loss))
    assert max_rel(got, want) < TOL


def test_no_recompiles_across_steps_with_different_lengths():
    module, params, _ = setup()
    grad_fn = make_grad_fn(embed_fn(module), make_column_loss("infonce", temperature=0.05), mesh=make_mesh(8))
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, cols):
        return grad_fn(params, cols, None)[0][0]

    shapes = set()
    for seed in range(4):
        rng = np.random.default_rng(10 + seed)
        length = (5, 6, 7, 8)[seed]  # the padded step would compile one program per padded length
        cols = {k: pack_column(tokens(rng, B, length), 8, ROW, SEG) for k in ("anchor", "positive")}
        shapes.add(cols["anchor"]["input_ids"].shape)
        assert np.isfinite(float(step(params, jax.tree.map(jnp.asarray, cols))))
    assert shapes == {(8, ROW)}


@pytest.mark.slow
def test_dropout_statistics_match():
    """Dropout keys are per packed row, so a sentence's mask depends on its place in the layout:
    the packed step is not the padded step's sample, but the same distribution. Checked: the
    fraction of dropped hidden units on real tokens, and the loss mean over 32 step keys."""
    p = 0.25
    module, params, columns = setup(dropout=p)
    pad = jax.tree.map(jnp.asarray, columns["anchor"])
    pk = jax.tree.map(jnp.asarray, pack_column(columns["anchor"], 1, ROW, SEG))
    pk_tokens = {k: v for k, v in pk.items() if k != "unpack_index"}

    @jax.jit
    def dropped(batch, real):
        _, inter = module.apply({"params": params}, batch, deterministic=False,
                                rngs={"dropout": jax.random.key(5)}, mutable=["intermediates"],
                                capture_intermediates=lambda m, _: isinstance(m, nn.Dropout))
        hidden = [x for x in jax.tree.leaves(inter) if x.ndim == 3]  # [b, l, h]; attention probs are 4-D
        zeros = sum(jnp.sum((x == 0) * real[..., None]) for x in hidden)
        return zeros / sum(jnp.sum(real) * x.shape[-1] for x in hidden)
    f_pad, f_pk = float(dropped(pad, pad["attention_mask"])), float(dropped(pk_tokens, pk["attention_mask"]))
    assert abs(f_pad - p) < 0.02 and abs(f_pk - p) < 0.02 and abs(f_pad - f_pk) < 0.02

    loss_fn = make_column_loss("infonce", temperature=0.05)
    losses = jax.jit(jax.vmap(  # forward only: the same embed_columns the step differentiates
        lambda cols, key: loss_fn(params, embed_columns(embed_fn(module), params, cols, key), None)[0],
        in_axes=(None, 0)))
    pad_cols = {k: jax.tree.map(jnp.asarray, columns[k]) for k in ("anchor", "positive")}
    pk_cols = {k: jax.tree.map(jnp.asarray, pack_column(columns[k], 1, ROW, SEG)) for k in ("anchor", "positive")}
    keys = jax.random.split(jax.random.key(100), 32)
    a, b = np.asarray(losses(pad_cols, keys)), np.asarray(losses(pk_cols, keys))
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert not np.allclose(a, b)  # the masks do differ ...
    assert abs(a.mean() - b.mean()) < 4 * se  # ... but not in distribution


# ----------------------------------------------------------------------------- the trainer

def _train(tmp_path, name, **overrides):
    from sentjax.train import step as step_lib
    from sentjax.train.train import train
    from tiny import tiny_config
    c = tiny_config(str(tmp_path / name), **{"total_steps": 2, "mesh.data": 8, "checkpoint.every_steps": 10,
                                             "model.encoder.hidden_dropout_prob": 0.0,
                                             "model.encoder.attention_probs_dropout_prob": 0.0, **overrides})
    return jax.tree.map(np.asarray, step_lib.to_host(train(c, progress=False)["state"]["params"]))


def test_trainer_packed_equals_padded(tmp_path):
    """config.data.packing=true (with GradCache over packed rows) trains to the padded run's parameters."""
    want = _train(tmp_path, "padded")
    got = _train(tmp_path, "packed", **{"data.packing": True, "gradient.gradcache_chunk": 1})
    from sentjax.train.train import build_model
    from tiny import tiny_config
    init = build_model(tiny_config(str(tmp_path / "init"))).params
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(want["model"]), jax.tree.leaves(init)))
    assert moved > 1e-4  # equal parameters prove nothing if training did not move them
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, atol=2e-5, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("overrides,match", [
    ({"gradient.method": "pmap"}, "shard_map"),
    ({"gradient.method": "jit"}, "shard_map"),
    ({"data.packing_row_length": 8}, "packing_row_length"),
    ({"data.packing_max_segments": 0}, "packing_max_segments"),
    ({"model.include_prompt": False, "data.prompts.anchor": "query: "}, "include_prompt"),
])
def test_unsupported_packing_configs_are_refused(tmp_path, overrides, match):
    from sentjax.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        _train(tmp_path, "bad", **{"data.packing": True, **overrides})
