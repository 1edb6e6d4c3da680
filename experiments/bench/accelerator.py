"""One prepared accelerator run: encode and train throughput, the tiled loss, MFU (issue 13 item 6).

  bash experiments/bench/accelerator.sh              # on the device machine: one GPU, < 10 minutes
  python experiments/bench/accelerator.py --tiny     # CPU smoke run (tests/test_bench_accelerator.py)

Sections (each row is written to the output as soon as it is measured, so a timeout still leaves
every row measured so far; a row that fails, e.g. out of memory, is written as failed):

  encode  all-MiniLM-L6-v2's shape (random weights: throughput does not depend on them, and the
          85 MB weights cannot travel to the device machine), float32 and bfloat16 compute, batch
          64 to 4096 sentences, padded (each batch padded to its longest) and packed (several
          sentences per row, block-diagonal attention).
  train   the InfoNCE train step of experiments/bench/train.py (unsupervised SimCSE: the same
          sentences twice, dropout on; max length 32; AdamW; one device), float32 and bfloat16,
          batch 64 to 4096 (GradCache with 512-row chunks from 1024 up, as a user would run it).
  tiled   the tiled InfoNCE loss + gradient at B = 2^16 to 2^20 (dim 384, float32): the step time
          and its FLOPs against the 3-matmul floor.

Sentence lengths come from the frozen benchmark file (experiments/bench/sentences-2048.txt,
whitespace words + 2 special tokens, cycled to the batch); token ids are random. This keeps the
run free of the tokenizer package while the padded/packed real-token ratio stays that of real text.

MFU = model FLOPs on real tokens (matmuls; training = 3 x forward) / time / the device's dense bf16
peak (H100/H200 SXM: 989 TFLOP/s; see PEAK_BF16). float32 rows are put against the same peak so
the columns compare; on CPU (--tiny) the peak is the measured float32 matmul rate instead.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

# Dense bf16 peak (no sparsity), TFLOP/s, by jax device_kind substring.
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "TPU v5": 197.0, "TPU v4": 275.0}

FULL = dict(batches=(64, 256, 1024, 4096), tiled_log2=(16, 18, 20), tile=4096, repeats=5,
            layers=6, hidden=384, heads=12, intermediate=1536, cache_from=1024, chunk=512)
TINY = dict(batches=(8, 16), tiled_log2=(8,), tile=64, repeats=2,
            layers=1, hidden=32, heads=2, intermediate=64, cache_from=16, chunk=8)
MAX_LEN_ENCODE, MAX_LEN_TRAIN, VOCAB = 128, 32, 30522


def sentence_lengths() -> list[int]:
    return [len(s.split()) + 2 for s in common.read_sentences()]


def device_peak_tflops() -> tuple[float, str]:
    import jax
    kind = jax.devices()[0].device_kind
    for key, tflops in PEAK_BF16.items():
        if key.lower() in kind.lower():
            return tflops, f"{kind} dense bf16 peak"
    return common.jax_matmul_gflops() / 1e3, f"{kind}: measured float32 matmul rate"


def forward_flops(lengths, p: dict) -> float:
    return sum(common.bert_flops_per_sentence(int(n), p["hidden"], p["layers"], p["intermediate"])
               for n in lengths)


def make_module(p: dict, dtype):
    from sentjax.models.bert import EncoderConfig
    from sentjax.models.sentence_model import SentenceEncoderModule, init_params
    import jax
    cfg = EncoderConfig(vocab_size=VOCAB, hidden_size=p["hidden"], num_hidden_layers=p["layers"],
                        num_attention_heads=p["heads"], intermediate_size=p["intermediate"])
    module = SentenceEncoderModule(cfg, pooling="mean", dtype=dtype)
    return module, init_params(module, jax.random.key(0))


def token_ids(lengths, seed: int = 0) -> list[list[int]]:
    import numpy as np
    rng = np.random.default_rng(seed)
    return [[101] + rng.integers(1000, VOCAB, n - 2).tolist() + [102] for n in lengths]


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of the next ``repeats``), seconds."""
    import jax
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    times.sort()
    return first, times[len(times) // 2]


# ============================================================================ encode
def bench_encode(p: dict, dtype_name: str, batch: int, packed: bool, all_lengths) -> dict:
    import jax
    import jax.numpy as jnp
    from sentjax.packing import pack_rows, packed_batch
    from sentjax.tokenization import bucket_length
    module, params = make_module(p, getattr(jnp, dtype_name))
    lengths = [min(all_lengths[i % len(all_lengths)], MAX_LEN_ENCODE) for i in range(batch)]
    ids = token_ids(lengths)
    if packed:
        row_length = bucket_length(max(64, max(lengths)), MAX_LEN_ENCODE, 16)
        rows = pack_rows(lengths, row_length, 16)
        arrays = packed_batch(ids, rows, row_length, 16, len(rows))
    else:
        width = max(lengths)
        arrays = {"input_ids": jnp.array([x + [0] * (width - len(x)) for x in ids], jnp.int32),
                  "attention_mask": jnp.array([[1] * len(x) + [0] * (width - len(x)) for x in ids], jnp.int32)}
    arrays = jax.device_put({k: jnp.asarray(v) for k, v in arrays.items()})
    fwd = jax.jit(lambda prm, b: module.apply({"params": prm}, b))
    first, sec = timed(lambda: fwd(params, arrays), p["repeats"])
    return {"seconds": sec, "compile_s": first - sec, "sent_per_s": batch / sec,
            "flops": forward_flops(lengths, p),
            "token_slots": int(arrays["input_ids"].size), "real_tokens": int(sum(lengths))}


# ============================================================================ train
def bench_train(p: dict, dtype_name: str, batch: int, all_lengths) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from sentjax.losses import make_column_loss
    from sentjax.models.sentence_model import embed_fn
    from sentjax.parallel.global_grads import make_grad_fn
    module, params = make_module(p, getattr(jnp, dtype_name))
    chunk = p["chunk"] if batch >= p["cache_from"] else None
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    grad_fn = make_grad_fn(embed_fn(module), make_column_loss("infonce", temperature=0.05),
                           mesh=mesh, backend="shard_map", gradcache_chunk=chunk)
    tx = optax.adamw(2e-5)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, columns, rng):
        (loss, _), grads = grad_fn(params, columns, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    lengths = [min(all_lengths[i % len(all_lengths)], MAX_LEN_TRAIN) for i in range(batch)]
    ids = token_ids(lengths)
    tok = {"input_ids": jnp.array([x + [0] * (MAX_LEN_TRAIN - len(x)) for x in ids], jnp.int32),
           "attention_mask": jnp.array([[1] * len(x) + [0] * (MAX_LEN_TRAIN - len(x)) for x in ids], jnp.int32)}
    tok = jax.device_put(tok, NamedSharding(mesh, P("data")))
    columns = {"anchor": tok, "positive": tok}
    params = jax.device_put(params, NamedSharding(mesh, P()))
    state = {"params": params, "opt": tx.init(params), "i": 0}

    def one():
        state["params"], state["opt"], loss = step(state["params"], state["opt"], columns,
                                                   jax.random.fold_in(jax.random.key(0), state["i"]))
        state["i"] += 1
        return loss

    first, sec = timed(one, p["repeats"])
    return {"seconds": sec, "compile_s": first - sec, "pairs_per_s": batch / sec,
            "flops": 3 * 2 * forward_flops(lengths, p), "gradcache_chunk": chunk or 0}


# ============================================================================ tiled loss
def bench_tiled(p: dict, log2b: int) -> dict:
    import jax
    import jax.numpy as jnp
    from sentjax.losses.tiled_infonce import tiled_infonce_loss
    b, d = 1 << log2b, 384
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (b, d), jnp.float32)
    y = jax.random.normal(k2, (b, d), jnp.float32)
    f = jax.jit(jax.value_and_grad(
        lambda a, c: tiled_infonce_loss(a, c, temperature=0.05, tile_size=p["tile"])[0], argnums=(0, 1)))
    first, sec = timed(lambda: f(x, y), max(1, p["repeats"] // 2))
    return {"seconds": sec, "compile_s": first - sec, "flops": 3 * 2 * b * b * d}


# ============================================================================ driver
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny sizes for a CPU smoke run")
    ap.add_argument("--sections", default="encode,train,tiled")
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="stop starting new rows after this many seconds (rows already measured are kept)")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "/tmp"), "accelerator.md"))
    a = ap.parse_args(argv)
    p = TINY if a.tiny else FULL
    import jax
    t0 = time.perf_counter()
    peak, peak_what = device_peak_tflops()
    lengths = sentence_lengths()
    head = ["# Accelerator benchmark", "",
            f"Command: `python experiments/bench/accelerator.py{' --tiny' if a.tiny else ''}`  ",
            f"Device: {jax.devices()[0].device_kind} x{jax.device_count()}; jax {jax.__version__}; "
            f"machine {json.dumps(common.machine())}  ",
            f"MFU against {peak:.4g} TFLOP/s ({peak_what}). Model: {p['layers']} layers, hidden {p['hidden']}.", ""]
    rows: list[str] = []

    def write() -> None:
        text = "\n".join(head + rows) + "\n"
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)

    def mfu(r: dict) -> str:
        return f"{r['flops'] / r['seconds'] / (peak * 1e12):.1%}"

    def attempt(label: str, fn):
        if time.perf_counter() - t0 > a.budget_s:
            rows.append(f"| {label} | skipped: time budget of {a.budget_s:.0f} s spent | | | |")
            return None
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 (an OOM at 4096 must not lose the other rows)
            traceback.print_exc()
            rows.append(f"| {label} | failed: {type(e).__name__}: {str(e).splitlines()[0][:100]} | | | |")
            return None

    sections = a.sections.split(",")
    if "encode" in sections:
        rows += ["## encode", "", "| case | sentences/s | MFU | compile s | real tokens / slots |", "|---|---|---|---|---|"]
        for dtype in ("float32", "bfloat16"):
            for batch in p["batches"]:
                for packed in (False, True):
                    label = f"{dtype} batch {batch} {'packed' if packed else 'padded'}"
                    r = attempt(label, lambda: bench_encode(p, dtype, batch, packed, lengths))
                    if r:
                        rows.append(f"| {label} | {r['sent_per_s']:.0f} | {mfu(r)} | {r['compile_s']:.1f} | "
                                    f"{r['real_tokens'] / r['token_slots']:.0%} |")
                    write()
                    print(rows[-1], flush=True)
        rows.append("")
    if "train" in sections:
        rows += ["## train (InfoNCE step, AdamW, padded to 32)", "",
                 "| case | pairs/s | MFU | compile s | GradCache chunk |", "|---|---|---|---|---|"]
        for dtype in ("float32", "bfloat16"):
            for batch in p["batches"]:
                label = f"{dtype} batch {batch}"
                r = attempt(label, lambda: bench_train(p, dtype, batch, lengths))
                if r:
                    rows.append(f"| {label} | {r['pairs_per_s']:.0f} | {mfu(r)} | {r['compile_s']:.1f} | "
                                f"{r['gradcache_chunk'] or '-'} |")
                write()
                print(rows[-1], flush=True)
        rows.append("")
    if "tiled" in sections:
        rows += ["## tiled InfoNCE loss + gradient (float32, dim 384)", "",
                 "| B | seconds | MFU | compile s | x 3-matmul floor at peak |", "|---|---|---|---|---|"]
        for log2b in p["tiled_log2"]:
            label = f"2^{log2b}"
            r = attempt(label, lambda: bench_tiled(p, log2b))
            if r:
                floor = r["flops"] / (peak * 1e12)
                rows.append(f"| {label} | {r['seconds']:.3f} | {mfu(r)} | {r['compile_s']:.1f} | "
                            f"{r['seconds'] / floor:.2f} |")
            write()
            print(rows[-1], flush=True)
    write()
    print(f"wrote {a.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
