"""Measures the MLM objective against its references and prints one JSON object (CPU, ~1 min).

  python experiments/check_mlm.py

1. head: random BertForMaskedLM / XLMRobertaForMaskedLM (2 layers, hidden 64, vocabulary 1000,
   every tensor perturbed), saved and read back by sentjax: max |logits - transformers| and the
   relative difference of the MLM loss to transformers' ``.loss`` and to a float64 NumPy
   cross-entropy;
2. masking: 512 x 128 tokens (pads and [CLS]/[SEP] included) masked at 15%: the selected share of
   the maskable tokens, the [MASK] / random / kept shares, and how many special tokens were picked;
3. devices: infonce + 0.1 * mlm on a tiny BERT, 8 fake CPU devices (shard_map, GradCache chunk 1)
   vs 1 device: max relative gradient difference.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from sentjax.losses import registry  # noqa: E402
from sentjax.losses.mlm import IGNORE, mask_tokens, mlm_loss  # noqa: E402
from sentjax.models.bert import BertEncoder, EncoderConfig, config_for_weights  # noqa: E402
from sentjax.models.hf_weights import hf_to_params, read_tensors  # noqa: E402
from sentjax.models.mlm_head import init_mlm_head, load_mlm_head, mlm_logits, mlm_rows  # noqa: E402
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn  # noqa: E402
from sentjax.parallel import make_grad_fn, make_mesh  # noqa: E402
from sentjax.train.mlm import embed_with_mlm  # noqa: E402


def head_check(kind: str) -> dict:
    import torch
    import transformers
    tiny = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = (transformers.BertForMaskedLM(transformers.BertConfig(**tiny)) if kind == "bert" else
          transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**tiny, type_vocab_size=1, pad_token_id=1)))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hf.eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        tensors, _ = read_tensors(d)
        cfg = config_for_weights(EncoderConfig.from_json_file(os.path.join(d, "config.json")), tensors)
        head, loaded = load_mlm_head(cfg, d, jax.random.key(0))
    abstract = jax.eval_shape(lambda: BertEncoder(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    model = {"encoder": hf_to_params(tensors, abstract["params"])}
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 1000, (8, 32))
    mask = (np.arange(32)[None] < rng.integers(8, 33, 8)[:, None]).astype(np.int64)
    ids[mask == 0] = cfg.pad_token_id
    labels = np.where((rng.random(ids.shape) < 0.15) & (mask > 0), ids, IGNORE)
    tokens = {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask, jnp.int32),
              "mlm_labels": jnp.asarray(labels, jnp.int32)}
    module = SentenceEncoderModule(cfg)
    ours = np.asarray(mlm_logits(module, model, head, tokens))
    loss = float(mlm_loss(mlm_rows(module, model, head, tokens))[0])
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    ref = out.logits.numpy().astype(np.float64)
    logp = ref - ref.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    sel = labels != IGNORE
    f64 = -np.mean(logp[sel, labels[sel]])
    return {"head_loaded": loaded, "max_abs_logits_diff": float(np.max(np.abs(ours - ref))),
            "loss": loss, "rel_diff_vs_hf_loss": abs(loss - float(out.loss)) / float(out.loss),
            "rel_diff_vs_float64": abs(loss - f64) / f64, "masked_tokens": int(sel.sum())}


def masking_check() -> dict:
    rng = np.random.default_rng(0)
    n, length, vocab, mask_id = 512, 128, 30000, 4
    ids = rng.integers(5, vocab, (n, length))
    ids[:, 0], ids[:, -1] = 2, 3
    ids[: n // 2, 80:] = 0
    maskable = ids > 4
    keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.key(7), r))(jnp.arange(n))
    out, labels = (np.asarray(a) for a in jax.jit(jax.vmap(lambda k, x, m: mask_tokens(
        k, x, m, mask_id=mask_id, vocab_size=vocab)))(keys, jnp.asarray(ids, jnp.int32), jnp.asarray(maskable)))
    sel = labels != IGNORE
    as_mask, kept = float((out[sel] == mask_id).mean()), float((out[sel] == ids[sel]).mean())
    return {"maskable_tokens": int(maskable.sum()), "selected_share": float(sel.sum() / maskable.sum()),
            "mask_share": as_mask, "random_share": 1 - as_mask - kept, "kept_share": kept,
            "special_or_pad_selected": int(sel[~maskable].sum())}


def device_check() -> dict:
    cfg = EncoderConfig(vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens(n):
        m = (np.arange(8)[None] < rng.integers(3, 9, n)[:, None]).astype(np.int32)
        return {"input_ids": jnp.asarray(rng.integers(5, 60, (n, 8)) * m, jnp.int32), "attention_mask": jnp.asarray(m)}
    cols = {"anchor": tokens(16), "positive": tokens(16)}
    lab = np.where(rng.random((16, 8)) < 0.3, np.asarray(cols["anchor"]["input_ids"]), IGNORE)
    lab[np.asarray(cols["anchor"]["attention_mask"]) == 0] = IGNORE
    cols["mlm"] = {**cols["anchor"], "input_ids": jnp.where(lab >= 0, 4, cols["anchor"]["input_ids"]),
                   "mlm_labels": jnp.asarray(lab, jnp.int32)}
    params = {"model": module.init(jax.random.key(1), cols["anchor"])["params"],
              "mlm_head": init_mlm_head(cfg, jax.random.key(2))}
    obj = registry.build({"name": "multi", "terms": [{"name": "infonce"}, {"name": "mlm", "weight": 0.1}]})
    embed = functools.partial(embed_with_mlm, embed_fn(module), module)
    one = jax.jit(make_grad_fn(embed, obj.loss_fn, backend="none"))(params, cols, None)[1]
    eight = jax.jit(make_grad_fn(embed, obj.loss_fn, mesh=make_mesh(8), backend="shard_map",
                                 gradcache_chunk=1))(params, cols, None)[1]
    err = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b)) / max(float(jnp.max(jnp.abs(b))), 1e-6)), eight, one)
    return {"devices": jax.device_count(), "max_rel_grad_diff_8_gradcache_vs_1": max(jax.tree.leaves(err))}


def main() -> int:
    out = {"bert": head_check("bert"), "xlm-roberta": head_check("xlm-roberta"), "masking": masking_check(),
           "devices": device_check()}
    print(json.dumps(out, indent=1))
    ok = all(out[k]["max_abs_logits_diff"] < 1e-5 and out[k]["rel_diff_vs_float64"] < 1e-5 for k in ("bert", "xlm-roberta"))
    return 0 if ok and out["masking"]["special_or_pad_selected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
