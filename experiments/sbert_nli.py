"""Sentence-BERT (Reimers & Gurevych, 2019): a siamese encoder trained as an NLI classifier,
then used with cosine similarity; concatenation ablation of the paper's Table 6.

  o = softmax(W^T f(u, v)),  f(u, v) = (u, v, |u - v|)   u, v = mean-pooled [batch, dim]
  loss = cross-entropy(o, label),  labels entailment / neutral / contradiction
The head W is thrown away after training; STS uses cos(u, v). Optional second stage: cosine
regression mean (cos(u, v) - score / 5)^2 on STS-B train (the paper's "NLI + STSb" setting).

Data: NLI-CAD train (Kaushik et al., 2020, all_combined) + SICK train entailment labels, round
robin. SNLI dev only for evaluation (the head's accuracy on a fixed 2,000-pair prefix).

The concatenation is ``objective.concat`` (parts from "u", "v", "|u-v|", "u*v").

Paper setting (``PAPER``): BERT-base, mean pooling, SNLI + MultiNLI (570k + 430k pairs), 1 epoch,
batch 16, Adam lr 2e-5, 10% linear warm-up; STSb stage 4 epochs batch 16.
Reduced CPU run: all-MiniLM-L6-v2, 60 steps of batch 16:  python experiments/run.py sbert_nli
"""
import os

import jax
import numpy as np

from sentjax.configs import default
from sentjax.train.config_cli import objective_config

TITLE = "Sentence-BERT: NLI softmax objective, concatenation ablation (all-MiniLM-L6-v2, NLI-CAD + SICK)"
PAPER = {"model": "bert-base-uncased", "batch": 16, "steps": "1 epoch of SNLI+MNLI (~62.5k)", "lr": 2e-5,
         "warmup": "10%", "pooling": "mean", "then": "STSb cosine, 4 epochs, batch 16"}
NLI_CAD = "nli:bundled/nli_cad/all_combined/train.tsv"
SNLI_DEV_N = 2000


def get_config():
    c = default.get_config()
    c.workdir = "runs/sbert_nli"
    c.model.init_from = "minilm"
    c.model.pooling = "mean"
    c.model.max_length = 32
    c.objective = objective_config("softmax", concat=("u", "v", "|u-v|"), num_labels=3)
    c.batch_size = 16
    c.total_steps = 1000
    c.optim.lr = 2e-5
    c.optim.warmup_ratio = 0.1
    c.data.datasets = (NLI_CAD,)   # prepare() adds SICK train (converted to an NLI TSV)
    c.evals.sts_dev.every_steps = 50
    return c


CPU = {"total_steps": 60, "log_every": 1}
MAIN = "(u, v, |u-v|)"
ROWS = {
    MAIN: {},
    "(u, v)": {"objective.concat": ("u", "v")},
    "(|u-v|)": {"objective.concat": ("|u-v|",)},
    "(u, v, |u-v|, u*v)": {"objective.concat": ("u", "v", "|u-v|", "u*v")},
    "(u, v, |u-v|) then STS-B cosine": {"objective.name": "cosine", "data.datasets": ("sts:stsb-en-train",),
                                        "total_steps": 40},
}
FULL_EVAL = [MAIN]
BASELINES = {"MiniLM untrained (cosine before training)": {"pooling": "mean"}}
SMOKE = {"total_steps": 3}

NOTES = f"""
"STS with cosine before and after training": the first row is the untrained encoder, the others the
trained one; the head is discarded and similarity is the cosine of mean-pooled embeddings. SNLI dev
accuracy applies the trained softmax head (`sentjax.eval.nli_head`) to the first {SNLI_DEV_N} labelled
SNLI dev pairs. The "then STS-B cosine" row starts from the final model of the (u, v, |u-v|) row (same
seed) and trains cosine regression on STS-B (multi-mt en) train rows. all-MiniLM-L6-v2 was itself
trained on 1B sentence pairs including NLI, so the untrained row is strong and a few dozen NLI steps
move it little; SBERT's Table 6 trend (|u-v| matters most, u*v does not help) is what to compare, not
absolute numbers.
"""


def _sick_nli_tsv(workroot: str) -> str:
    """SICK train entailment judgments as a ``sentence1 sentence2 gold_label`` TSV (lower-case labels)."""
    from sentjax.data import bundled, readers
    path = os.path.join(workroot, "_data", "sick_train_nli.tsv")
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        lines = readers.read_text(bundled.path("sick/SICK_train.txt")).split("\n")
        header = lines[0].split("\t")
        a, b, y = (header.index(k) for k in ("sentence_A", "sentence_B", "entailment_judgment"))
        rows = ["sentence1\tsentence2\tgold_label"]
        for ln in lines[1:]:
            if ln.strip():
                c = ln.rstrip("\r").split("\t")
                rows.append(f"{c[a]}\t{c[b]}\t{c[y].lower()}")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        os.replace(path + ".tmp", path)
    return path


def prepare(cfg, row: str, workroot: str) -> None:
    if cfg.objective.name == "softmax":
        cfg.data.datasets = tuple(cfg.data.datasets) + (f"nli:{_sick_nli_tsv(workroot)}",)
    else:  # second stage: continue from the NLI model of the same seed
        first = os.path.join(workroot, MAIN, f"seed{cfg.seed}", "final_model")
        if not os.path.isdir(first):
            raise FileNotFoundError(f"{first} is missing: the STS-B stage continues the {MAIN!r} row; run "
                                    f"that row first (same --seeds), e.g. --rows '{MAIN};{row}'.")
        cfg.model.init_from = first
        cfg.model.tokenizer = ""
        cfg.optim.warmup_ratio = 0.1


def extra_eval(model, summary, cfg, baseline: bool) -> dict:
    """SNLI dev accuracy of the trained head (the head is not part of the exported model)."""
    if baseline or summary is None or "head" not in summary["state"]["params"]:
        return {}
    from sentjax.eval.evaluators import EVALUATORS
    head = jax.tree.map(np.asarray, jax.device_get(summary["state"]["params"]["head"]))
    n = 32 if cfg.total_steps <= 3 else SNLI_DEV_N  # smoke runs: a few pairs
    nli = EVALUATORS.build({"type": "nli", "data": "snli-dev", "limit": n, "concat": tuple(cfg.objective.concat)})
    encode = lambda t: model.encode(t, batch_size=128, show_progress=False)  # noqa: E731
    return {"snli_dev_acc": nli(encode, head)["accuracy"]}
