"""The MLM / TLM auxiliary objective: the head against transformers' *ForMaskedLM, the loss against a
float64 NumPy cross-entropy, the masking statistics, TLM pairs against the tokenizer, the
1-vs-8-device gradient (alone and with InfoNCE, with and without GradCache), the refusals and a
whole-trainer run of infonce + mlm."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.losses import infonce_loss, registry
from sentjax.losses.mlm import IGNORE, concat_pair, mask_tokens, mlm_loss
from sentjax.models.bert import BertEncoder, EncoderConfig, config_for_weights
from sentjax.models.hf_weights import hf_to_params, read_tensors
from sentjax.models.mlm_head import init_mlm_head, load_mlm_head, mlm_logits, mlm_rows
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.train.mlm import embed_with_mlm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _hf_mlm(kind, path):
    torch.manual_seed(0)
    if kind == "bert":
        hf = transformers.BertForMaskedLM(transformers.BertConfig(**TINY, type_vocab_size=2))
    else:
        hf = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**TINY, type_vocab_size=1, pad_token_id=1))
    with torch.no_grad():  # random init leaves LayerNorms at 1 and biases at 0: perturb every tensor
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.eval().save_pretrained(path)
    return hf


@pytest.mark.parametrize("kind", ["bert", "xlm-roberta"])
def test_head_logits_and_loss_match_transformers(tmp_path, kind):
    hf = _hf_mlm(kind, tmp_path)
    tensors, _ = read_tensors(str(tmp_path))
    cfg = config_for_weights(EncoderConfig.from_json_file(tmp_path / "config.json"), tensors)
    module = SentenceEncoderModule(cfg)
    enc_abstract = jax.eval_shape(lambda: BertEncoder(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    model = {"encoder": hf_to_params(tensors, enc_abstract["params"]), "pooler": {}}
    head, loaded = load_mlm_head(cfg, str(tmp_path), jax.random.key(0))
    assert loaded
    rng = np.random.default_rng(1)
    ids = rng.integers(3, 99, (3, 11))
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    ids[mask == 0] = cfg.pad_token_id
    tokens = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32)}
    ours = np.asarray(mlm_logits(module, model, head, tokens))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)

    labels = np.full_like(ids, IGNORE)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[2, 9] = ids[2, 9]  # row 1 has no masked token: it must count for nothing
    rows = mlm_rows(module, model, head, {**tokens, "mlm_labels": jnp.asarray(labels, jnp.int32)})
    loss, metrics = mlm_loss(rows)
    x = ref.astype(np.float64)  # float64 NumPy cross-entropy over the masked tokens of the batch
    logp = x - x.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    sel = labels != IGNORE
    want = -np.mean(logp[sel, labels[sel]])
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(metrics["masked_tokens"]) == 3.0
    with torch.no_grad():  # and HF's own MLM loss (mean over labels != -100)
        hf_loss = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)).loss
    assert float(loss) == pytest.approx(float(hf_loss), rel=1e-5)


def test_head_is_initialised_without_checkpoint_weights():
    cfg = EncoderConfig(**TINY)
    head, loaded = load_mlm_head(cfg, None, jax.random.key(0))
    assert not loaded and head["bias"].shape == (99,) and head["dense"]["kernel"].shape == (32, 32)
    np.testing.assert_array_equal(np.asarray(head["LayerNorm"]["scale"]), 1.0)
    again = init_mlm_head(cfg, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(again["dense"]["kernel"]), np.asarray(head["dense"]["kernel"]))


def test_masking_statistics_and_special_tokens():
    rng = np.random.default_rng(0)
    n, length, vocab, mask_id = 512, 64, 1000, 4
    ids = rng.integers(5, vocab, (n, length))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    ids[: n // 2, 40:] = 0  # padding
    maskable = (ids > 4)
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(7), r))(jnp.arange(n))
    f = jax.jit(jax.vmap(lambda k, x, m: mask_tokens(k, x, m, mask_id=mask_id, vocab_size=vocab)))
    out, labels = (np.asarray(a) for a in f(keys, jnp.asarray(ids, jnp.int32), jnp.asarray(maskable)))
    sel = labels != IGNORE
    assert not sel[~maskable].any()  # never a special or pad token
    np.testing.assert_array_equal(out[~maskable], ids[~maskable])
    np.testing.assert_array_equal(labels[sel], ids[sel])
    assert sel.sum() / maskable.sum() == pytest.approx(0.15, abs=0.006)  # ~23k candidates: sd 0.0024
    as_mask = (out[sel] == mask_id).mean()
    kept = (out[sel] == ids[sel]).mean()
    random = 1 - as_mask - kept
    assert as_mask == pytest.approx(0.8, abs=0.015) and kept == pytest.approx(0.1, abs=0.01)
    assert random == pytest.approx(0.1, abs=0.01)
    # a pure function of (key, example): the same row under the same key masks identically
    again = np.asarray(f(keys[5:9], jnp.asarray(ids[5:9], jnp.int32), jnp.asarray(maskable[5:9]))[0])
    np.testing.assert_array_equal(again, out[5:9])


def test_tlm_pair_matches_the_tokenizers_pair_encoding(tok):
    a_txt, b_txt = ["the cat plays", "a dog runs in the park today"], ["a bird sings now", "the man"]
    a, b = tok(a_txt), tok(b_txt)
    got = concat_pair({k: jnp.asarray(v) for k, v in a.items()}, {k: jnp.asarray(v) for k, v in b.items()},
                      style="bert", sep_id=3, type_vocab_size=2)
    for i, (x, y) in enumerate(zip(a_txt, b_txt)):
        enc = tok.backend.encode(x, y)
        n = len(enc.ids)
        np.testing.assert_array_equal(np.asarray(got["input_ids"][i, :n]), enc.ids)
        # BERT's pair types (BertTokenizer): 0 through the first [SEP], 1 for b and its [SEP]
        # (this tiny tokenizer's template leaves them 0, so the rule is written out)
        first_sep = enc.ids.index(3)
        np.testing.assert_array_equal(np.asarray(got["token_type_ids"][i, :n]), np.arange(n) > first_sep)
        assert int(got["attention_mask"][i].sum()) == n and int(got["input_ids"][i, n:].sum()) == 0
    rob = concat_pair({"input_ids": jnp.asarray([[0, 7, 8, 2, 1]]), "attention_mask": jnp.asarray([[1, 1, 1, 1, 0]])},
                      {"input_ids": jnp.asarray([[0, 9, 2]]), "attention_mask": jnp.asarray([[1, 1, 1]])},
                      style="roberta", sep_id=2, type_vocab_size=1)
    np.testing.assert_array_equal(np.asarray(rob["input_ids"][0, :7]), [0, 7, 8, 2, 2, 9, 2])  # <s> a </s></s> b </s>
    assert int(rob["token_type_ids"].sum()) == 0


B, L = 16, 8


@functools.lru_cache(maxsize=None)
def setup():
    cfg = EncoderConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens(n):
        mask = (np.arange(L)[None] < rng.integers(3, L + 1, n)[:, None]).astype(np.int32)
        return {"input_ids": jnp.asarray(rng.integers(5, 60, (n, L)) * mask, jnp.int32), "attention_mask": jnp.asarray(mask)}
    cols = {"anchor": tokens(B), "positive": tokens(B)}
    labels = np.where(rng.random((B, L)) < 0.3, np.asarray(cols["anchor"]["input_ids"]), IGNORE)
    labels[np.asarray(cols["anchor"]["attention_mask"]) == 0] = IGNORE
    labels[:3] = IGNORE  # whole devices' shards without a masked token: the global mean must not care
    cols["mlm"] = {**cols["anchor"], "input_ids": jnp.where(labels >= 0, 4, cols["anchor"]["input_ids"]),
                   "mlm_labels": jnp.asarray(labels, jnp.int32)}
    params = {"model": module.init(jax.random.key(1), cols["anchor"])["params"],
              "mlm_head": init_mlm_head(cfg, jax.random.key(2))}
    return module, params, cols


def reference(module, params, cols, with_infonce):
    """One device, written directly: the CE mean over every masked token (+ InfoNCE)."""
    def loss(p):
        logits = mlm_logits(module, p["model"], p["mlm_head"], cols["mlm"])
        lab = cols["mlm"]["mlm_labels"]
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.maximum(lab, 0)[..., None], -1)[..., 0]
        out = 0.1 * jnp.sum(jnp.where(lab >= 0, ce, 0)) / jnp.sum(lab >= 0)
        if with_infonce:
            e = embed_fn(module)
            out = out + infonce_loss(e(p["model"], cols["anchor"]), e(p["model"], cols["positive"]), temperature=0.05)[0]
        return out
    return jax.value_and_grad(loss)(params)


@pytest.mark.parametrize("backend, with_infonce, gradcache", [
    ("shard_map", False, False), ("shard_map", False, True), ("shard_map", True, True), ("pmap", True, False)])
def test_8_devices_equal_single_device(backend, with_infonce, gradcache):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    module, params, cols = setup()
    terms = ([{"name": "infonce", "temperature": 0.05}] if with_infonce else []) + [{"name": "mlm", "weight": 0.1}]
    obj = registry.build({"name": "multi", "terms": terms})
    use = cols if with_infonce else {"mlm": cols["mlm"]}
    want_loss, want = jax.jit(functools.partial(reference, module, with_infonce=with_infonce))(params, cols)
    embed = functools.partial(embed_with_mlm, embed_fn(module), module)
    f = make_grad_fn(embed, obj.loss_fn, mesh=make_mesh(8), backend=backend, gradcache_chunk=1 if gradcache else None)
    f = jax.jit(f) if backend == "shard_map" else f  # pmap compiles itself
    (loss, metrics), grads = f(params, use, None)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(metrics["masked_tokens_mlm"]) == float(jnp.sum(cols["mlm"]["mlm_labels"] >= 0))
    errs = jax.tree.map(lambda g, w: float(jnp.max(jnp.abs(g - w)) / max(float(jnp.max(jnp.abs(w))), 1e-6)), grads, want)
    assert max(jax.tree.leaves(errs)) < 1e-4
    assert float(jnp.max(jnp.abs(grads["mlm_head"]["bias"]))) > 0


def _cfg(tmp_path, **kw):
    from tiny import tiny_config
    c = tiny_config(str(tmp_path), **kw)
    c.objective = {"name": "multi", "terms": [{"name": "infonce", "temperature": 0.05},
                                              {"name": "mlm", "weight": 0.5}]}
    return c


@pytest.mark.parametrize("override, match", [
    ({"accum_steps": 2}, "accum_steps=2"),
    ({"data.packing": True}, "data.packing with an mlm objective"),
    ({"model.lora.rank": 2, "model.lora.targets": ("query",)}, "model.lora with an mlm objective"),
])
def test_trainer_refuses_inexact_combinations(tmp_path, override, match):
    from sentjax.train import train
    from sentjax.train.objectives import make_objective
    c = _cfg(tmp_path, **override)
    if override.get("accum_steps"):  # infonce couples the batch: test MLM's own refusal with cosine
        c.objective = {"name": "multi", "terms": [{"name": "mlm"}]}
    model = train.build_model(c)
    with pytest.raises(ConfigError, match=match):
        train.build_objective_and_grad(c, model, make_objective(c.objective), train.make_mesh(c))


@pytest.mark.slow  # ~1 min each on a shared 2-core machine
@pytest.mark.parametrize("method, chunk", [("jit", 0), ("shard_map", 1)], ids=["jit", "shard_map-gradcache"])
def test_whole_trainer_infonce_plus_mlm(tmp_path, method, chunk):
    from sentjax.train import train
    c = _cfg(tmp_path, **{"total_steps": 3, "checkpoint.every_steps": 3, "gradient.method": method,
                          "gradient.gradcache_chunk": chunk})
    summary = train.train(c, progress=False)
    rows = [json.loads(line) for line in open(os.path.join(c.workdir, "metrics.jsonl"))]
    steps = [r for r in rows if "loss_mlm" in r]
    assert len(steps) == 3
    for r in steps:  # the sum is logged with each term
        assert r["loss"] == pytest.approx(r["loss_infonce"] + 0.5 * r["loss_mlm"], rel=1e-5)
        assert np.isfinite(r["loss_mlm"]) and r["masked_tokens_mlm"] > 0
    assert steps[0]["loss_mlm"] == pytest.approx(np.log(c_vocab(summary)), rel=0.3)  # fresh head ~ uniform
    assert "mlm_head" in summary["state"]["params"]
    card = open(os.path.join(summary["final_model"], "README.md")).read()
    assert "Cross-lingual Language Model Pretraining" in card and "Language-agnostic" in card  # term citations


def c_vocab(summary):
    return summary["state"]["params"]["mlm_head"]["bias"].shape[0]


def test_step_column_is_masked_per_example_and_step(tmp_path):
    """add_mlm_column: TLM pairs joined, special tokens never masked, masks a function of
    (step key, example): the same under the same key, for a row wherever it sits in a sub-batch."""
    from sentjax.train import train
    from sentjax.train.mlm import add_mlm_column, mlm_settings
    from sentjax.train.objectives import make_objective
    c = _cfg(tmp_path)
    c.objective = {"name": "multi", "terms": [{"name": "infonce"}, {"name": "mlm", "source": "tlm", "mask_rate": 0.5}]}
    model = train.build_model(c)
    s = mlm_settings(make_objective(c.objective), model)
    tok = model.tokenizer
    assert {tok.backend.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]")} <= set(s.special_ids)
    assert (s.source, s.style, s.mask_id) == ("tlm", "bert", tok.backend.token_to_id("[MASK]"))
    a = {k: jnp.asarray(v) for k, v in tok(["the cat plays in the park"] * 4 + ["a dog"] * 4).items()}
    p = {k: jnp.asarray(v) for k, v in tok(["a bird sings now"] * 8).items()}
    key = jax.random.key(0)
    out = add_mlm_column({"anchor": a, "positive": p}, key, s)["mlm"]
    joined = concat_pair(a, p, style="bert", sep_id=s.sep_id, type_vocab_size=2)
    labels, ids = np.asarray(out["mlm_labels"]), np.asarray(joined["input_ids"])
    sel = labels != IGNORE
    assert sel.any() and not np.isin(ids[sel], s.special_ids).any()
    np.testing.assert_array_equal(labels[sel], ids[sel])
    np.testing.assert_array_equal(np.asarray(out["token_type_ids"]), np.asarray(joined["token_type_ids"]))
    assert len({tuple(r) for r in labels[:4]}) > 1  # identical texts, different examples: other masks
    again = add_mlm_column({"anchor": a, "positive": p}, key, s)["mlm"]
    np.testing.assert_array_equal(np.asarray(again["input_ids"]), np.asarray(out["input_ids"]))
    other = add_mlm_column({"anchor": a, "positive": p}, jax.random.fold_in(key, 1), s)["mlm"]
    assert (np.asarray(other["mlm_labels"]) != labels).any()  # another step draws other masks
    with pytest.raises(KeyError, match="needs a 'positive' column"):
        add_mlm_column({"anchor": a}, key, s)


def test_config_file_with_a_multi_objective(tmp_path):
    from sentjax.train import config_cli
    from sentjax.train.objectives import make_objective
    f = tmp_path / "cfg.py"
    f.write_text("from sentjax.configs.default import get_config as base\n"
                 "def get_config():\n"
                 "    c = base()\n"
                 "    c.objective = {'name': 'multi', 'terms': [{'name': 'infonce', 'temperature': 0.05},\n"
                 "                                              {'name': 'mlm', 'weight': 0.1, 'source': 'tlm'}]}\n"
                 "    return c\n")
    cfg, _ = config_cli.parse_config_args(["--config", str(f)])
    obj = make_objective(cfg.objective)
    assert obj.name == "multi" and obj.token_level and obj.fields == ("anchor", "positive", "negative", "mlm")
    cfg, _ = config_cli.parse_config_args(["--config", str(f), "--config.objective.name=cosent"])
    assert make_objective(cfg.objective).name == "cosent"


@pytest.mark.parametrize("block, match", [
    ({"name": "mlm", "source": "xlm"}, "source='xlm'.*'mlm'.*'tlm'"),
    ({"name": "mlm", "mask_rate": 1.5}, r"mask_rate must be in \(0, 1\)"),
    ({"name": "multi", "terms": [{"name": "mlm", "temperature": 0.1}]}, "objective 'mlm' has no field 'temperature'"),
    ({"name": "multi", "terms": [{"name": "infonce"}, {"name": "gist"}]}, "'gist' with a frozen guide"),
])
def test_bad_mlm_blocks_are_refused(block, match):
    with pytest.raises(ConfigError, match=match):
        registry.build(block)


def test_other_encoder_families_are_refused():
    from types import SimpleNamespace

    from sentjax.models.mlm_head import check_mlm_model
    with pytest.raises(ConfigError, match="supports the BERT family.*'mpnet'"):
        check_mlm_model(SimpleNamespace(model_type="mpnet"))
    check_mlm_model(EncoderConfig(**TINY))  # bert: accepted


def test_chunked_logits_equal_the_whole_sequence():
    """mlm_rows builds the logits a few positions at a time (rebuilt in the backward pass): same rows
    and the same gradient as all positions at once."""
    module, params, cols = setup()

    def loss(p, chunk):
        return mlm_loss(mlm_rows(module, p["model"], p["mlm_head"], cols["mlm"], chunk=chunk))[0]
    (whole, g_whole), (parts, g_parts) = (jax.jit(jax.value_and_grad(functools.partial(loss, chunk=c)))(params)
                                          for c in (L, 2))
    assert float(parts) == pytest.approx(float(whole), rel=1e-6)
    errs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b)) / max(float(jnp.max(jnp.abs(b))), 1e-6)),
                        g_parts, g_whole)
    assert max(jax.tree.leaves(errs)) < 1e-5
