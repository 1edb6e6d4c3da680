"""Training throughput: sentjax InfoNCE steps vs sentence-transformers on the frozen sentences.

Workload (issue 3/4): all-MiniLM-L6-v2, max length 32, positive = the same sentence (unsupervised
SimCSE: the two views differ by dropout), InfoNCE with temperature 0.05 (= sentence-transformers'
MultipleNegativesRankingLoss scale 20), AdamW lr 2e-5. Each engine runs in its own process (own
peak RSS), 2 threads; time = median step time after --warmup steps (the first includes jit).

  python experiments/bench/train.py                       # batch 64: ST MNRL vs sentjax, 1 vs 8 devices
  python experiments/bench/train.py --gradcache           # + batch 512/4096, cached and uncached
  python experiments/bench/train.py --packing             # sentjax batch 64: padded vs packed rows
  python experiments/bench/train.py --memory              # peak RSS only, every batch, cached and uncached
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MAX_LEN, LR, TEMP = 32, 2e-5, 0.05


def _batches(texts, batch, steps):
    n = len(texts)
    for s in range(steps):
        yield [texts[(s * batch + i) % n] for i in range(batch)]


def child_st(batch: int, steps: int, warmup: int, cached: int) -> dict:
    import torch
    torch.set_num_threads(2)
    from sentence_transformers import SentenceTransformer, losses
    from sentjax.testing import minilm_dir
    model = SentenceTransformer(minilm_dir(), device="cpu")
    model.max_seq_length = MAX_LEN
    model.train()
    loss_fn = (losses.CachedMultipleNegativesRankingLoss(model, scale=1 / TEMP, mini_batch_size=cached)
               if cached else losses.MultipleNegativesRankingLoss(model, scale=1 / TEMP))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, fused=True)
    texts = common.read_sentences()
    times = []
    for i, b in enumerate(_batches(texts, batch, warmup + steps)):
        t = time.perf_counter()
        # Fresh features every step: sentence-transformers writes outputs into the dict it is given.
        feats = [model.tokenize(b), model.tokenize(b)]
        loss = loss_fn(feats, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    sec = statistics.median(times[warmup:])
    return {"seconds_per_step": sec, "pairs_per_s": batch / sec, "peak_rss_mib": common.peak_rss_mib(),
            "loss": float(loss)}


def child_sentjax(batch: int, steps: int, warmup: int, cached: int, devices: int, packing: bool = False) -> dict:
    import jax
    import optax
    import sentjax
    from sentjax.losses import make_column_loss
    from sentjax.models.sentence_model import embed_fn
    from sentjax.parallel.global_grads import make_grad_fn
    from sentjax.testing import minilm_dir
    model = sentjax.load(minilm_dir(), max_length=MAX_LEN)
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    grad_fn = make_grad_fn(embed_fn(model.module), make_column_loss("infonce", temperature=TEMP),
                           mesh=mesh, backend="shard_map", gradcache_chunk=cached or None)
    tx = optax.adamw(LR)

    def step(params, opt_state, columns, rng):
        (loss, metrics), grads = grad_fn(params, columns, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    # The state donated, as sentjax's train step does (jit_train_step): without it the old and the new
    # parameters + AdamW moments coexist during the step (~430 MiB more peak RSS for MiniLM).
    step = jax.jit(step, donate_argnums=(0, 1))
    params = jax.device_put(model.params, rep)
    opt_state = jax.device_put(tx.init(params), rep)
    texts = common.read_sentences()
    times, tokens_real = [], 0
    key = jax.random.key(0)
    for i, b in enumerate(_batches(texts, batch, warmup + steps)):
        t = time.perf_counter()
        tok = model.tokenizer(b, length=MAX_LEN)  # pad to 32 like the peer (one compiled shape)
        real = int(tok["attention_mask"].sum())
        if packing:  # rows of 2 x MAX_LEN tokens, packed on the host inside the timed step
            from sentjax.packing import pack_column
            tok = pack_column(tok, devices, 2 * MAX_LEN, 16, model.config.position_offset,
                              model.tokenizer.pad_token_id, cached or 1)
        tok = {k: v for k, v in tok.items() if k != "token_type_ids"}
        tok = jax.device_put(tok, rows)
        columns = {"anchor": tok, "positive": tok}
        params, opt_state, loss = step(params, opt_state, columns, jax.random.fold_in(key, i))
        loss.block_until_ready()
        times.append(time.perf_counter() - t)
        if i >= warmup:
            tokens_real += real
    sec = statistics.median(times[warmup:])
    peak = common.peak_rss_mib()
    # XLA's scratch for one step (activations kept for the backward pass, ...), after the timed steps
    stats = step.lower(params, opt_state, columns, key).compile().memory_analysis()
    temp_mib = stats.temp_size_in_bytes / 2**20 if stats is not None else float("nan")
    return {"seconds_per_step": sec, "pairs_per_s": batch / sec, "peak_rss_mib": peak,
            "loss": float(loss), "compile_s": times[0] - sec,
            "real_tokens_per_step": tokens_real / steps, "xla_temp_mib": temp_mib}


def _write_report(lines: list[str], out: str | None, default_name: str) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    with open(out or os.path.join(common.HERE, "results", default_name), "w") as f:
        f.write(text)


def run_packing(a) -> None:
    """sentence-transformers MNRL vs sentjax padded vs sentjax packed, batch 64, in one run (same-run
    ratios); writes results/train-packing.md."""
    out = {"sentence-transformers MNRL": common.run_child(
        __file__, ["st", "--batch", "64", "--cached", "0", "--steps", str(a.steps), "--warmup", str(a.warmup)])}
    print("st", out["sentence-transformers MNRL"], flush=True)
    for name, extra in (("sentjax InfoNCE, padded to 32", []), ("sentjax InfoNCE, packed rows of 64", ["--packing"])):
        out[name] = common.run_child(__file__, ["sentjax", "--batch", "64", "--cached", "0", "--devices", "1",
                                                "--steps", str(a.steps), "--warmup", str(a.warmup)] + extra)
        print(name, out[name], flush=True)
    import subprocess
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    peer = out["sentence-transformers MNRL"]["pairs_per_s"]
    lines = ["# Training benchmark: packed vs padded sentjax steps, sentence-transformers side by side", "",
             f"Command: `python experiments/bench/train.py --packing --steps {a.steps} --warmup {a.warmup}`  ",
             f"Workload: all-MiniLM-L6-v2, batch 64, max length {MAX_LEN}, InfoNCE / MNRL (see train.md); packed: "
             "the batch's sentences first-fit into rows of 64 tokens on the host inside the timed step.  ",
             f"Machine: {json.dumps(common.machine())}  ", f"Load at the end of the run: `{load}`.", "",
             "| engine | pairs/s | ratio vs ST | s/step | peak RSS MiB |", "|---|---|---|---|---|"]
    for name, r in out.items():
        lines.append(f"| {name} | {r['pairs_per_s']:.1f} | {r['pairs_per_s'] / peer:.2f} | "
                     f"{r['seconds_per_step']:.2f} | {r['peak_rss_mib']:.0f} |")
    _write_report(lines, a.out, "train-packing.md")


# (batch, sentence-transformers' CachedMNRL mini-batch, sentjax GradCache chunk); 0 = uncached. ST's mini-batch
# counts sentences of one column, sentjax's chunk counts examples (anchor + positive: twice the sentences),
# so chunk 32 is the same token budget as mini-batch 64. ST's uncached 512 (13 GB) and 4096 (~80 GB) left out.
MEMORY_PAIRS = [(64, 0, 0), (64, 64, 32), (64, 64, 64), (512, 64, 32), (512, 64, 64), (4096, 64, 32)]


def run_memory(a) -> None:
    """Peak RSS over two steps (for sentjax the first includes compilation, which is part of every
    run's peak) per engine and batch, one process each; writes results/train-memory.md. Memory does not
    depend on the machine's load, so this runs on a busy machine; the times are not reported."""
    pairs = [p for p in MEMORY_PAIRS if a.min_batch <= p[0] <= a.max_batch]
    runs: dict[tuple, dict] = {}
    for batch, mini, chunk in pairs:
        for engine, cached in (("st", mini), ("sentjax", chunk)):
            if (engine, batch, cached) in runs:
                continue
            # two steps: PyTorch allocates AdamW's moments in the first optimizer step, so its peak comes later
            r = common.run_child(__file__, [engine, "--batch", str(batch), "--cached", str(cached), "--devices", "1",
                                            "--steps", "2", "--warmup", "0"])
            runs[(engine, batch, cached)] = r
            print(engine, batch, cached, r, flush=True)
    lines = ["# Training step peak memory: sentjax vs sentence-transformers", "",
             "Command: `python experiments/bench/train.py --memory`  ",
             f"Workload: as train.md (all-MiniLM-L6-v2, max length {MAX_LEN}, InfoNCE / (Cached)MNRL, AdamW); "
             "two steps per process, peak RSS of the whole process (`ru_maxrss`); sentjax's includes jit compilation. "
             "sentjax's state is donated to the step, as in `sentjax train`. ST's mini-batch counts sentences of one "
             "column, sentjax's chunk examples (two sentences each): chunk 32 = the same token budget as mini-batch 64.  ",
             f"Machine: {json.dumps(common.machine())}", "",
             "| batch | ST mini-batch | ST MiB | sentjax chunk | sentjax MiB | sentjax / ST | sentjax XLA temp MiB |",
             "|---|---|---|---|---|---|---|"]
    for batch, mini, chunk in pairs:
        st, sj = runs[("st", batch, mini)], runs[("sentjax", batch, chunk)]
        lines.append(f"| {batch} | {mini or '-'} | {st['peak_rss_mib']:.0f} | {chunk or '-'} | {sj['peak_rss_mib']:.0f} | "
                     f"{sj['peak_rss_mib'] / st['peak_rss_mib']:.2f} | {sj.get('xla_temp_mib', float('nan')):.0f} |")
    _write_report(lines, a.out, "train-memory.md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cached", type=int, default=0, help="GradCache mini-batch (0: off)")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--gradcache", action="store_true", help="also batches 512 and 4096")
    p.add_argument("--max-batch", type=int, default=4096, help="skip cases above this batch")
    p.add_argument("--min-batch", type=int, default=0, help="skip cases below this batch (rerun one size)")
    p.add_argument("--packing", action="store_true",
                   help="only sentjax batch 64, padded vs packed (config.data.packing), 1 device")
    p.add_argument("--memory", action="store_true", help="peak RSS only: batch 64 uncached and cached, 512 and "
                                                           "4096 cached, both engines (results/train-memory.md)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.child == "st":
        print(json.dumps(child_st(a.batch, a.steps, a.warmup, a.cached)))
        return
    if a.child == "sentjax":
        print(json.dumps(child_sentjax(a.batch, a.steps, a.warmup, a.cached, a.devices, a.packing)))
        return
    if a.packing:
        run_packing(a)
        return
    if a.memory:
        run_memory(a)
        return

    np_rate = common.numpy_matmul_gflops()
    cases = [("sentence-transformers MNRL", "st", 64, 0, 1),
             ("sentjax InfoNCE", "sentjax", 64, 0, 1),
             ("sentjax InfoNCE, 8 fake devices", "sentjax", 64, 0, 8)]
    if a.gradcache:
        # Issue 3's matrix, less what cannot run here: sentence-transformers' uncached loss at
        # 4096 needs ~80 GB (5.3 GB at 256), and batch-4096 steps take minutes each on 2 cores.
        cases += [("sentence-transformers CachedMNRL (mini 64)", "st", 64, 64, 1),
                  ("sentjax InfoNCE + GradCache (chunk 64)", "sentjax", 64, 64, 1),
                  ("sentence-transformers MNRL", "st", 512, 0, 1),
                  ("sentjax InfoNCE", "sentjax", 512, 0, 1),
                  ("sentence-transformers CachedMNRL (mini 64)", "st", 512, 64, 1),
                  ("sentjax InfoNCE + GradCache (chunk 64)", "sentjax", 512, 64, 1),
                  ("sentence-transformers CachedMNRL (mini 64)", "st", 4096, 64, 1),
                  ("sentjax InfoNCE + GradCache (chunk 64)", "sentjax", 4096, 64, 1)]
    cases = [c for c in cases if a.min_batch <= c[2] <= a.max_batch]
    rows = []
    for name, engine, batch, cached, devices in cases:
        args = [engine, "--batch", str(batch), "--cached", str(cached), "--devices", str(devices),
                "--steps", str(a.steps if batch <= 64 else 1),
                "--warmup", str(a.warmup if batch <= 512 else 0)]
        env_flags = os.environ.get("XLA_FLAGS", "")
        if devices > 1:
            os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        try:
            r = common.run_child(__file__, args)
        except RuntimeError as e:
            r = {"error": str(e).splitlines()[-1][:120]}
        finally:
            os.environ["XLA_FLAGS"] = env_flags
        rows.append((name, batch, cached, devices, r))
        print(name, batch, r, flush=True)
    peer64 = next((r.get("pairs_per_s") for name, b, c, d, r in rows if b == 64 and name.startswith("sentence-")), None)
    import subprocess
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["# Training benchmark: sentjax vs sentence-transformers", "",
             f"Command: `python experiments/bench/train.py{' --gradcache' if a.gradcache else ''} --steps {a.steps}`  ",
             f"Workload: all-MiniLM-L6-v2, max length {MAX_LEN} (every batch padded to {MAX_LEN}), positive = same "
             f"sentence (dropout views), temperature {TEMP} / scale {1 / TEMP:.0f}, AdamW {LR}; "
             "sentences from experiments/bench/sentences-2048.txt.  ",
             f"Machine: {json.dumps(common.machine())}; numpy float32 matmul {np_rate:.1f} GFLOP/s.  ",
             "Utilisation = 3 x forward FLOPs of both columns on real tokens / step time / numpy matmul rate.  ",
             "Batches above 64 time one step (above 512 with no warm-up, so jit compile is included).  ",
             f"Load at the end of the run: `{load}`.", "",
             "| engine | batch | cache mini-batch | devices | pairs/s | ratio vs ST batch 64 | s/step | peak RSS MiB | utilisation |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, batch, cached, devices, r in rows:
        if "error" in r:
            lines.append(f"| {name} | {batch} | {cached or '-'} | {devices} | failed: {r['error']} | | | | |")
            continue
        util = ""
        if "real_tokens_per_step" in r:
            mean_len = r["real_tokens_per_step"] / batch
            flops = 3 * 2 * batch * common.bert_flops_per_sentence(int(round(mean_len)))
            util = f"{flops / r['seconds_per_step'] / (np_rate * 1e9):.0%}"
        ratio = f"{r['pairs_per_s'] / peer64:.2f}" if peer64 else "-"
        lines.append(f"| {name} | {batch} | {cached or '-'} | {devices} | {r['pairs_per_s']:.1f} | {ratio} | "
                     f"{r['seconds_per_step']:.2f} | {r['peak_rss_mib']:.0f} | {util} |")
    _write_report(lines, a.out, "train.md")


if __name__ == "__main__":
    main()
