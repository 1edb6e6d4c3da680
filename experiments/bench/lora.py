"""LoRA vs full fine-tuning of a decoder embedder: one InfoNCE train step, sentjax and PyTorch + peft.

Workload: a random SmolLM2-135M-shaped Llama (width 576, 9 query / 3 k-v heads, SwiGLU 1536,
vocabulary 49152) cut to ``--layers`` blocks (default 6) so a run fits in minutes on 2 cores;
last-token pooling, right padding; batch ``--batch`` pairs (default 16) of random token ids, 8..32
tokens; InfoNCE at temperature 0.05 over in-batch negatives; AdamW lr 1e-4. LoRA: rank 8, alpha 16,
no dropout, on q_proj and v_proj (peft's default targets for Llama). Each engine runs in its own
process (its own peak RSS), 2 threads; time = median step after ``--warmup`` steps (the first
includes jit / first-call costs). sentjax: ``make_grad_fn`` + optax AdamW, jit, the base passed as a
traced argument (LoRA) exactly as ``sentjax train`` does with ``config.model.lora``.

  python experiments/bench/lora.py                 # writes results/lora.md
  python experiments/bench/lora.py --layers 30     # the full 135M depth (slow on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

SMOL = dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            rms_norm_eps=1e-5, rope_theta=100000.0)
RANK, ALPHA, TARGETS, LR, TEMP, MAX_LEN = 8, 16.0, ("q_proj", "v_proj"), 1e-4, 0.05, 32


def _batches(batch: int, steps: int, seed: int = 0):
    """Right-padded random token batches ``(ids, mask)`` [batch, MAX_LEN] for anchor and positive."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        pair = []
        for _ in range(2):
            lengths = rng.integers(8, MAX_LEN + 1, batch)
            mask = (np.arange(MAX_LEN)[None] < lengths[:, None]).astype(np.int32)
            ids = rng.integers(1, SMOL["vocab_size"], (batch, MAX_LEN)).astype(np.int32) * mask
            pair.append((ids, mask))
        yield pair


def _count(tree) -> int:
    import jax
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def child_sentjax(layers: int, batch: int, steps: int, warmup: int, use_lora: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from sentjax.losses import make_column_loss
    from sentjax.models import lora, registry
    from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn, init_params
    from sentjax.parallel.global_grads import make_grad_fn
    cfg = registry.config_from_dict({**SMOL, "num_hidden_layers": layers}, source="bench")
    module = SentenceEncoderModule(cfg, pooling="lasttoken")
    base = init_params(module, jax.random.key(0))
    loss = make_column_loss("infonce", temperature=TEMP)
    tx = optax.adamw(LR)
    if use_lora:
        lcfg = lora.LoRAConfig(rank=RANK, alpha=ALPHA, targets=TARGETS)
        params = lora.init_adapters(base, lcfg, jax.random.key(1))
        f = lora.lora_embed_fn(module, lcfg)

        def grad_fn(frozen):
            return make_grad_fn(lambda p, t, r: f(frozen, p, t, r), loss, backend="none")
    else:
        params, f = base, embed_fn(module)

        def grad_fn(frozen):
            return make_grad_fn(f, loss, backend="none")

    @jax.jit
    def step(frozen, params, opt_state, columns):
        (value, _), grads = grad_fn(frozen)(params, columns, None)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state = tx.init(params)
    frozen = base if use_lora else None
    times = []
    for i, pair in enumerate(_batches(batch, warmup + steps)):
        t = time.perf_counter()
        cols = {name: {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
                for name, (ids, mask) in zip(("anchor", "positive"), pair)}
        params, opt_state, value = step(frozen, params, opt_state, cols)
        value.block_until_ready()
        times.append(time.perf_counter() - t)
    sec = statistics.median(times[warmup:])
    return {"seconds_per_step": sec, "pairs_per_s": batch / sec, "peak_rss_mib": common.peak_rss_mib(),
            "loss": float(value), "trained_params": _count(params), "optimizer_state": _count(opt_state),
            "total_params": _count(base) + (_count(params) if use_lora else 0), "first_step_s": times[0]}


def child_torch(layers: int, batch: int, steps: int, warmup: int, use_lora: bool) -> dict:
    import torch
    import transformers
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**{k: v for k, v in SMOL.items() if k != "model_type"},
                                   num_hidden_layers=layers, attn_implementation="sdpa")
    model = transformers.LlamaModel(cfg)
    total = sum(p.numel() for p in model.parameters())
    if use_lora:
        import peft
        model = peft.get_peft_model(model, peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                                           target_modules=list(TARGETS)))
        total = sum(p.numel() for p in model.parameters())
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=LR)
    times = []
    for i, pair in enumerate(_batches(batch, warmup + steps)):
        t = time.perf_counter()
        embs = []
        for ids, mask in pair:
            ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = mask.sum(1) - 1  # right padding: the last real token
            embs.append(h[torch.arange(h.shape[0]), last])
        a = torch.nn.functional.normalize(embs[0], dim=-1)
        p = torch.nn.functional.normalize(embs[1], dim=-1)
        loss = torch.nn.functional.cross_entropy(a @ p.T / TEMP, torch.arange(a.shape[0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    sec = statistics.median(times[warmup:])
    opt_numel = sum(v.numel() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    return {"seconds_per_step": sec, "pairs_per_s": batch / sec, "peak_rss_mib": common.peak_rss_mib(),
            "loss": float(loss), "trained_params": sum(p.numel() for p in trained),
            "optimizer_state": opt_numel, "total_params": total, "first_step_s": times[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--out", default=os.path.join(common.HERE, "results", "lora.md"))
    a = p.parse_args()
    if a.child:
        fn = child_sentjax if a.child == "sentjax" else child_torch
        print(json.dumps(fn(a.layers, a.batch, a.steps, a.warmup, a.lora)))
        return
    try:
        import peft  # noqa: F401
        has_peft = True
    except ImportError:
        has_peft = False
    cases = [("sentjax full fine-tuning", "sentjax", False), ("sentjax LoRA", "sentjax", True),
             ("PyTorch full fine-tuning", "torch", False)]
    cases += [("PyTorch + peft LoRA", "torch", True)] if has_peft else []
    rows = []
    for name, engine, use_lora in cases:
        args = [engine, "--layers", str(a.layers), "--batch", str(a.batch), "--steps", str(a.steps),
                "--warmup", str(a.warmup)] + (["--lora"] if use_lora else [])
        r = common.run_child(__file__, args)
        rows.append((name, r))
        print(name, r, flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    import importlib.metadata as md
    mach = common.machine()
    if has_peft:
        mach["versions"]["peft"] = md.version("peft")
    lines = ["# LoRA vs full fine-tuning: decoder-embedder train step, sentjax and PyTorch + peft", "",
             f"Command: `python experiments/bench/lora.py --layers {a.layers} --batch {a.batch} "
             f"--steps {a.steps} --warmup {a.warmup}`  ",
             f"Workload: random SmolLM2-135M-shaped Llama (width 576, 9/3 heads, SwiGLU 1536, vocab 49152) with "
             f"{a.layers} layers, last-token pooling, batch {a.batch} pairs of 8..{MAX_LEN} random tokens (right "
             f"padding), InfoNCE T={TEMP}, AdamW lr {LR}; LoRA r={RANK}, alpha={ALPHA:g}, targets {list(TARGETS)}, "
             "no dropout. float32, 1 device, 2 threads; median step after the warm-up.  ",
             f"Machine: {json.dumps(mach)}  ",
             f"Load at the end of the run: `{load}` -- the 2 cores were shared with other jobs (contended), so "
             "absolute times are noisy; compare rows of the same run.", "",
             "| engine | pairs/s | s/step | first step s | peak RSS MiB | trained params | optimizer state (floats) "
             "| total params | final loss |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['pairs_per_s']:.2f} | {r['seconds_per_step']:.2f} | {r['first_step_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} | {r['trained_params']:,} | {r['optimizer_state']:,} | "
                     f"{r['total_params']:,} | {r['loss']:.4f} |")
    if not has_peft:
        lines += ["", "peft is not installed (`pip install peft`): the PyTorch + peft row is missing."]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
