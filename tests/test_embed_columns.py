"""embed_columns traces the encoder once per column shape and embeds each column exactly as
embed_column does on its own (same per-row dropout keys)."""
import jax
import jax.numpy as jnp
import numpy as np

from sentjax.models.bert import EncoderConfig
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.parallel import embed_columns
from sentjax.parallel.dropout_keys import embed_column
from sentjax import rng as srng


def _setup():
    cfg = EncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens(n, length):
        ids = rng.integers(1, 50, (n, length)).astype(np.int32)
        mask = (np.arange(length)[None, :] < rng.integers(2, length + 1, n)[:, None]).astype(np.int32)
        return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask)}
    columns = {"anchor": tokens(4, 8), "positive": tokens(4, 8), "negative": tokens(8, 12),
               "label": jnp.arange(4)}
    params = module.init(jax.random.key(0), columns["anchor"])["params"]
    return embed_fn(module), params, columns


def test_one_trace_per_column_shape_and_the_same_embeddings_as_column_by_column():
    embed, params, columns = _setup()
    calls = []

    def counting(p, tokens, key):
        calls.append(tokens["input_ids"].shape)
        return embed(p, tokens, key)
    key = srng.key(3)
    out = jax.jit(lambda p: embed_columns(counting, p, columns, key, 1))(params)
    # anchor and positive share [4, 8]: one trace; negative [8, 12]: another
    assert len(calls) == 2, calls
    assert set(out) == set(columns) and out["label"] is not None
    for name in ("anchor", "positive", "negative"):
        n = columns[name]["input_ids"].shape[0]
        alone = jax.jit(lambda p, t: embed_column(embed, p, t, key, name, n))(params, columns[name])
        np.testing.assert_allclose(out[name], alone, rtol=0, atol=1e-6)
    # dropout is on: the two same-shape columns get different masks, so different embeddings
    assert not np.allclose(embed_column(embed, params, columns["anchor"], key, "anchor", 4),
                           embed_column(embed, params, columns["anchor"], key, "positive", 4))
    np.testing.assert_array_equal(out["label"], columns["label"])


def test_gradients_through_the_shared_trace_equal_column_by_column():
    embed, params, columns = _setup()
    key = srng.key(5)
    text = ("anchor", "positive", "negative")

    def loss(p, joint):
        if joint:
            e = embed_columns(embed, p, columns, key)
        else:
            e = {n: embed_column(embed, p, columns[n], key, n, 0) for n in text}
        return sum(jnp.sum(jnp.sin(e[n]) * (i + 1)) for i, n in enumerate(text))
    g_joint = jax.jit(jax.grad(lambda p: loss(p, True)))(params)
    g_sep = jax.jit(jax.grad(lambda p: loss(p, False)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_joint, g_sep)


def test_gradcache_traces_the_encoder_once_per_chunk_shape_with_unchanged_gradients():
    from sentjax.parallel.gradcache import gradcache_local
    embed, params, columns = _setup()
    key = srng.key(7)
    calls = []

    def counting(p, tokens, k):
        calls.append(tokens["input_ids"].shape)
        return embed(p, tokens, k)

    def loss_fn(p, e, axis_name):
        return sum(jnp.sum(jnp.sin(e[n]) * (i + 1)) for i, n in enumerate(("anchor", "positive", "negative"))), {}
    (loss, _), grads = jax.jit(lambda p: gradcache_local(counting, loss_fn, p, columns, key, chunk=2))(params)
    # forward chunks and their VJPs of anchor and positive share one [2, 8] trace; negative [2, 12] another
    assert len(calls) == 2, calls
    ref_loss, ref = jax.jit(jax.value_and_grad(
        lambda p: loss_fn(p, {n: embed_column(embed, p, columns[n], key, n, 0)
                              for n in ("anchor", "positive", "negative")}, None)[0]))(params)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads, ref)
