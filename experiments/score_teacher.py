"""Teacher scores for score distillation: a ``scored-triplets`` TSV from NLI triplets.

  python experiments/score_teacher.py OUT.tsv [--limit N] [--teacher minilm]

Reads the bundled NLI-CAD training triplets (premise, entailment, contradiction; the data of
``sentjax/configs/demo.py``), embeds all three texts with the frozen teacher (all-MiniLM-L6-v2 by
default: mean pooling, unit-norm outputs, so its dot product is its cosine) and writes the headed
TSV ``sent0 sent1 hard_neg pos_score neg_score`` with ``pos_score = t(premise, entailment)`` and
``neg_score = t(premise, contradiction)``, which ``--config.data.datasets=scored-triplets:OUT.tsv``
feeds to the ``margin_mse`` / ``listwise_kl`` objectives as their ``score`` column ``[n, 2]``.
"""
from __future__ import annotations

import argparse
import os
import re

import numpy as np

NLI_TRAIN = "bundled/nli_cad/all_combined/train.tsv"
_WS = re.compile(r"[\t\r\n]+")


def write_teacher_scores(out: str, limit: int = 0, teacher: str = "minilm", max_length: int = 32) -> dict:
    """Scores the first ``limit`` (0 = all) NLI-CAD triplets with ``teacher``; returns a summary."""
    import sentjax
    from sentjax.data import sources
    tri = sources.load_source(f"nli-triplets:{NLI_TRAIN}")
    cols = {k: list(tri.columns[k][:limit or None]) for k in ("anchor", "positive", "negative")}
    from sentjax.models import bundled
    model = sentjax.load(bundled.resolve_bundled(teacher, "--teacher"), max_length=max_length)
    emb = {k: np.asarray(model.encode(v, batch_size=128, show_progress=True), np.float64) for k, v in cols.items()}
    pos = np.sum(emb["anchor"] * emb["positive"], axis=1)
    neg = np.sum(emb["anchor"] * emb["negative"], axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("sent0\tsent1\thard_neg\tpos_score\tneg_score\n")
        for a, p, n, sp, sn in zip(cols["anchor"], cols["positive"], cols["negative"], pos, neg):
            f.write("\t".join([_WS.sub(" ", a), _WS.sub(" ", p), _WS.sub(" ", n), f"{sp:.6f}", f"{sn:.6f}"]) + "\n")
    os.replace(tmp, out)  # a half-written file is never read as the scores
    return {"triplets": len(pos), "mean_margin": float(np.mean(pos - neg)),
            "teacher_ranks_entailment_first": float(np.mean(pos > neg))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--limit", type=int, default=0, help="score only the first N triplets (0 = all)")
    ap.add_argument("--teacher", default="minilm", help="model folder, hub id or 'minilm'")
    args = ap.parse_args(argv)
    print(write_teacher_scores(args.out, args.limit, args.teacher))


if __name__ == "__main__":
    main()
