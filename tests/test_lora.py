"""LoRA (sentjax/models/lora.py and its wiring in sentjax/train): step 0 is the base model, the
adapter gradient equals a float64 reference, 1 vs 8 devices (shard_map, GradCache) agree, training
keeps the base frozen with optimizer state for the adapters only, adapter-only checkpoints resume
exactly, and the merged export loads in sentence-transformers with the same embeddings."""
from __future__ import annotations

import functools
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.models import lora, registry
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn, init_params

BERT = dict(model_type="bert", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64)
LLAMA = dict(model_type="llama", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
MPNET = dict(model_type="mpnet", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64)
FAMILIES = {"bert": (BERT, ("query", "value")), "llama": (LLAMA, ("q_proj", "v_proj")),
            "mpnet": (MPNET, ("q", "v"))}


def _model(kind, dropout=0.0, **enc):
    raw, targets = FAMILIES[kind]
    module = SentenceEncoderModule(registry.config_from_dict({**raw, **enc}, source="test"))
    params = init_params(module, jax.random.key(0))
    cfg = lora.LoRAConfig(rank=4, alpha=8.0, dropout=dropout, targets=targets)
    return module, params, cfg


def _batch(n=8, length=7, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 90, (n, length)).astype(np.int32)
    lengths = rng.integers(3, length + 1, n)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask)}


def _perturbed(adapters, scale=0.3, seed=5):
    """B != 0 (a trained adapter), so gradients reach A too."""
    leaves, tree = jax.tree.flatten(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("kind", list(FAMILIES))
def test_step0_is_the_base_model_and_merge_equals_adapted(kind):
    module, params, cfg = _model(kind, dropout=0.1)
    adapters = lora.init_adapters(params, cfg, jax.random.key(1))
    paths = lora.adapter_paths(adapters)
    assert len(paths) == 4 and {p[-1] for p in paths} == set(cfg.targets)
    assert all(not np.any(lora._get(adapters, p)["lora_b"]) for p in paths)  # B = 0
    f, base = jax.jit(lora.lora_embed_fn(module, cfg)), jax.jit(embed_fn(module))
    b = _batch()
    np.testing.assert_array_equal(f(params, adapters, b), base(params, b))
    # with dropout on: the base keeps its own masks, so still exactly the base model
    key = jax.random.key(3)
    np.testing.assert_array_equal(f(params, adapters, b, key), base(params, b, key))
    trained = _perturbed(adapters)
    out = f(params, trained, b)
    assert np.abs(out - base(params, b)).max() > 1e-3
    np.testing.assert_allclose(out, base(lora.merge(params, trained, cfg), b), atol=2e-6)


def test_adapter_gradient_equals_float64_reference():
    """d loss / d (A, B) through the interceptor (float32) equals the float64 gradient computed
    through the merged kernel: dL/dA = s G B^T, dL/dB = s A^T G with G = dL/dW at W + s A B."""
    module, params, cfg = _model("bert")
    adapters = _perturbed(lora.init_adapters(params, cfg, jax.random.key(1)))
    b = _batch()

    def loss32(ad):
        e = lora.lora_embed_fn(module, cfg)(params, ad, b)
        return jnp.sum(jnp.tanh(e) * jnp.arange(e.size, dtype=e.dtype).reshape(e.shape) / e.size)
    got = jax.jit(jax.grad(loss32))(adapters)

    with jax.enable_x64(True):
        m64 = module.clone(dtype=jnp.float64)
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
        a64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), adapters)

        def loss64(p):
            e = embed_fn(m64)(p, b)
            return jnp.sum(jnp.tanh(e) * jnp.arange(e.size, dtype=e.dtype).reshape(e.shape) / e.size)
        merged = lora.merge(p64, a64, cfg)
        g_w = jax.jit(jax.grad(loss64))(merged)
        for path in lora.adapter_paths(adapters):
            a = np.asarray(lora._get(a64, path)["lora_a"])
            bb = np.asarray(lora._get(a64, path)["lora_b"])
            g = np.asarray(lora._get(g_w, path)["kernel"])
            want_a, want_b = cfg.scaling * g @ bb.T, cfg.scaling * a.T @ g
            have = lora._get(got, path)
            for name, want in (("lora_a", want_a), ("lora_b", want_b)):
                err = np.abs(np.asarray(have[name], np.float64) - want).max()
                assert err <= 1e-5 * max(1.0, np.abs(want).max()), (path, name, err)
                assert np.abs(want).max() > 1e-4


def test_targets_and_config_errors():
    module, params, cfg = _model("bert")
    with pytest.raises(ConfigError, match="names no dense projection.*query"):
        lora.init_adapters(params, lora.LoRAConfig(rank=2, targets=("q_proj",)), jax.random.key(0))
    # a path suffix selects one layer's projection only
    one = lora.target_paths(params, ("layer_1/attention/self/query",))
    assert one == [("encoder", "layer_1", "attention", "self", "query")]
    assert lora.LoRAConfig.from_mapping({"rank": 0, "alpha": 16.0, "dropout": 0.0, "targets": ()}) is None
    for bad, msg in (({"rank": -1, "targets": ("query",)}, "rank"), ({"rank": 2, "targets": ()}, "targets"),
                     ({"rank": 2, "targets": ("query",), "dropout": 1.0}, "dropout"),
                     ({"rank": 2, "targets": ("query",), "alpha": 0.0}, "alpha"),
                     ({"rank": 2, "targets": ("query",), "ranks": 3}, "no key")):
        with pytest.raises(ConfigError, match=msg):
            lora.LoRAConfig.from_mapping(bad)


@pytest.mark.parametrize("over, msg", [({"gradient.method": "pmap"}, "pmap"),
                                       ({"model.pooling": "cls_mlp"}, "cls_mlp"),
                                       ({"parallel.param_sharding": "fsdp"}, "param_sharding"),
                                       ({"model.lora.targets": ("nope",)}, "nope")])
def test_unsupported_combinations_are_refused(tmp_path, over, msg):
    from sentjax.train.train import train
    from tiny import tiny_config
    c = tiny_config(str(tmp_path), **{"model.lora.rank": 2, "model.lora.targets": ("query", "value"), **over})
    with pytest.raises(ConfigError, match=msg):
        train(c, progress=False)


def _lora_run(tmp, **over):
    from tiny import tiny_config
    return tiny_config(tmp, **{"model.lora.rank": 4, "model.lora.alpha": 8.0, "model.lora.dropout": 0.1,
                               "model.lora.targets": ("query", "value"), **over})


@pytest.mark.parametrize("chunk", [0, 2])
def test_one_vs_eight_devices_adapter_gradients(tmp_path, tok, chunk):
    """The trainer's LoRA gradient (dropout on, in the base and in the adapters) on 8 devices under
    shard_map (global negatives; GradCache with chunk 2) equals the 1-device gradient."""
    from sentjax.train import step as step_lib
    from sentjax.train import train as tr
    from sentjax.train.objectives import make_objective
    texts = [f"the {w} plays in the park" for w in ("cat", "dog", "man", "woman", "child", "bird", "fish",
                                                       "car", "bike", "ball", "book", "song", "food",
                                                       "garden", "kitchen", "house")]
    batch = {"anchor": tok(texts), "positive": tok(texts[::-1])}
    grads = {}
    for n in (1, 8):
        c = _lora_run(str(tmp_path / str(n)), **{"mesh.data": n, "gradient.gradcache_chunk": chunk})
        model = tr.build_model(c)
        objective = make_objective(c.objective)
        mesh = tr.make_mesh(c)
        params = tr.init_params(c, model, objective)
        params["lora"] = _perturbed(params["lora"])
        _, grad_for = tr.build_objective_and_grad(c, model, objective, mesh)
        fn = jax.jit(lambda frozen, p, b, r: grad_for(frozen)(p, b, r))
        b = jax.device_put({k: dict(v) for k, v in batch.items()}, step_lib.batch_sharded(mesh))
        (loss, _), g = fn(model.params, params, b, jax.random.key(7))
        grads[n] = (float(loss), jax.tree.map(np.asarray, g))
    assert set(grads[1][1]) == {"lora"}
    np.testing.assert_allclose(grads[8][0], grads[1][0], rtol=1e-6)
    flat1, flat8 = jax.tree.leaves(grads[1][1]), jax.tree.leaves(grads[8][1])
    assert max(np.abs(x).max() for x in flat1) > 1e-4
    for a, b in zip(flat1, flat8):
        np.testing.assert_allclose(b, a, atol=2e-6, rtol=1e-4)


def test_training_frozen_base_adapter_checkpoints_resume_and_merged_export(tmp_path, ws):
    """A LoRA run: base bitwise unchanged, optimizer state only over the adapters, checkpoints
    without the base, a run resumed from step 2 ends bitwise on the uninterrupted one, and the
    merged final_model/ loads in sentence-transformers with sentjax's LoRA embeddings (1e-5); the
    evaluation during training scores the merged model."""
    from sentjax.train import train as tr
    over = {"mesh.data": 2, "checkpoint.async_save": False, "total_steps": 4, "checkpoint.every_steps": 2,
            "evals.sts_dev.every_steps": 2, "evals.sts_dev.data": ws.sts}
    c = _lora_run(str(tmp_path / "a"), **over)
    base = tr.build_model(c)
    full = tr.train(c, progress=False)
    state = full["state"]
    assert set(state["params"]) == {"lora"}
    for x, y in zip(jax.tree.leaves(state["frozen"]), jax.tree.leaves(base.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    n_adapter = lora.count_params(state["params"])
    n_opt = lora.count_params(state["opt_state"])
    assert n_opt <= 2 * n_adapter + 16 < lora.count_params(state["frozen"])  # Adam mu, nu + counters
    b_vals = [np.abs(np.asarray(lora._get(state["params"]["lora"], p)["lora_b"])).max()
              for p in lora.adapter_paths(state["params"]["lora"])]
    assert min(b_vals) > 0  # the adapters trained
    ckpt_dir = os.path.join(full["workdir"], "checkpoints")
    saved = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(ckpt_dir, "4"))
                for f in fs)
    assert saved < 4 * lora.count_params(state["frozen"])  # the base (float32) is not in it

    c2 = _lora_run(str(tmp_path / "b"), **over)
    shutil.copytree(ckpt_dir, os.path.join(c2.workdir, "checkpoints"))
    shutil.rmtree(os.path.join(c2.workdir, "checkpoints", "4"))
    resumed = tr.train(c2, resume=True, progress=False)
    for x, y in zip(jax.tree.leaves(resumed["state"]["params"]), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    for x, y in zip(jax.tree.leaves(resumed["state"]["opt_state"]), jax.tree.leaves(state["opt_state"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    st = pytest.importorskip("sentence_transformers")
    texts = ["the cat plays in the park", "a dog runs fast", "the woman reads a book today"]
    lcfg = tr.lora_config(c)
    tokens = base.tokenizer(texts)
    ours = np.asarray(lora.lora_embed_fn(base.module, lcfg)(
        jax.tree.map(np.asarray, state["frozen"]), jax.tree.map(np.asarray, state["params"]["lora"]),
        {k: jnp.asarray(v) for k, v in tokens.items()}))
    theirs = st.SentenceTransformer(full["final_model"], device="cpu").encode(texts, convert_to_numpy=True)
    assert np.abs(ours - base.encode(texts)).max() > 1e-4  # the adapters changed the model
    np.testing.assert_allclose(theirs, ours, atol=1e-5)

    import sentjax
    from sentjax.eval.evaluators import build_evaluators
    exported = sentjax.load(full["final_model"])
    score = build_evaluators(c.evals)["sts_dev"](lambda t: exported.encode(list(t)), None)
    assert abs(score["spearman"] - full["sts_dev_spearman"]) < 1e-6, (score, full["sts_dev_spearman"])
