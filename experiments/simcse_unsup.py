"""Unsupervised SimCSE (Gao et al., 2021): a sentence and itself under two dropout masks,
plus the augmentation ablation of the paper's Table 1.

Loss (InfoNCE over the batch, T = 0.05), h = CLS + MLP pooler at train time only:
  l_i = -log exp(cos(h_i, h_i+)/T) / sum_j exp(cos(h_i, h_j+)/T),  h_i, h_i+ = f(x_i) under two dropout masks
Table 1 rows replace the positive view by x_i+ = aug(x_i) (``sentjax.data.augment``; dropout stays
on except in the "w/o dropout" row): crop k%, word deletion k%, delete one word, synonym
replacement (WordNet 3.0), MLM 15% (here: masking only, see NOTES).

Paper setting (``PAPER``): BERT-base, batch 64, lr 3e-5, max length 32, T 0.05, 1M Wikipedia
sentences, 1 epoch (15,625 steps), no warm-up, CLS + MLP at train time only; Table 1 on STS-B dev.
  sentjax train --config experiments/simcse_unsup.py --config.model.init_from=bert-base-uncased \\
      --config.data.datasets=text:wiki1m_for_simcse.txt --config.total_steps=15625
Reduced CPU run (``CPU``): all-MiniLM-L6-v2, bundled Common Voice sentences, 16 steps of batch 64:
  python experiments/run.py simcse_unsup
"""
import json
import os
import shutil

from sentjax.configs import default

CV = "bundled/commonvoice_en/sentence-collector.txt"
TITLE = "Unsupervised SimCSE and SimCSE Table 1 augmentations (all-MiniLM-L6-v2, Common Voice)"
PAPER = {"model": "bert-base-uncased", "batch": 64, "steps": 15625, "lr": 3e-5, "max_length": 32,
         "temperature": 0.05, "data": "wiki1m_for_simcse.txt (1M sentences)", "warmup": 0}


def get_config():
    c = default.get_config()
    c.workdir = "runs/simcse_unsup"
    c.model.init_from = "minilm"
    c.model.pooling = "cls_mlp"
    c.model.mlp_at_inference = False
    c.model.max_length = 32
    c.objective.name = "infonce"
    c.objective.temperature = 0.05
    c.batch_size = 64
    c.total_steps = 1000
    c.optim.lr = 3e-5
    c.optim.warmup_steps = 0
    c.data.datasets = (f"text:{CV}",)
    c.evals.sts_dev.every_steps = 125
    c.checkpoint.every_steps = 125
    return c


CPU = {"total_steps": 16, "log_every": 1}


def _aug(spec: str) -> dict:
    return {"data.datasets": (f"text+{spec}:{CV}",)}


ROWS = {
    "None (dropout only = unsup. SimCSE)": {},
    "Crop 10%": _aug("crop=0.1"), "Crop 20%": _aug("crop=0.2"), "Crop 30%": _aug("crop=0.3"),
    "Word deletion 10%": _aug("delete=0.1"), "Word deletion 20%": _aug("delete=0.2"),
    "Word deletion 30%": _aug("delete=0.3"),
    "Delete one word": _aug("delete_one"),
    "Delete one word w/o dropout": _aug("delete_one"),
    "Synonym replacement": _aug("synonym=0.15"),
    "MLM 15% (masking only)": _aug("mask=0.15"),
}
NO_DROPOUT = {"Delete one word w/o dropout"}
FULL_EVAL = ["None (dropout only = unsup. SimCSE)"]
BASELINES = {"MiniLM untrained, CLS pooling (as evaluated)": {"pooling": "cls"},
             "MiniLM untrained, mean pooling (its own)": {"pooling": "mean"}}
SMOKE = {}

NOTES = """
Rows follow SimCSE Table 1: the positive view is aug(x) with dropout on (p = 0.1) unless stated.
Synonym replacement: 15% of the words that have a WordNet 3.0 synonym, replaced by a synonym of their
most frequent sense (the bundled table `sentjax/data/bundled/wordnet_synonyms/`, derived from the Debian
package `wordnet-base`; no PyPI package ships the database offline: `nltk` and `wn` download it at run time). MLM 15%: the paper samples replacements from BERT's
MLM head; all-MiniLM-L6-v2 has no MLM head (its checkpoint is the sentence encoder only), so this row
replaces 15% of the words by `[MASK]` and lets the encoder see the mask token (the masking half of MLM).
Inference uses CLS pooling without the MLP (SimCSE's unsup. setting), so the relevant baseline is the
untrained MiniLM with CLS pooling; MiniLM was trained with mean pooling, which is the stronger untrained row.
Reduced scale: 16 steps x 64 sentences = 1,024 sentences seen (the paper: 1M), one seed; differences of
about 1 point between rows are within run-to-run noise at this scale and are not the paper's numbers.
"""


def prepare(cfg, row: str, workroot: str) -> None:
    """'w/o dropout': the same MiniLM with dropout probabilities 0 in its config."""
    if row in NO_DROPOUT and cfg.model.init_from:
        from sentjax.testing import minilm_dir
        src = minilm_dir() if cfg.model.init_from == "minilm" else cfg.model.init_from
        dst = os.path.join(workroot, "_minilm_no_dropout")
        if not os.path.isdir(dst):
            shutil.copytree(src, dst)
            path = os.path.join(dst, "config.json")
            with open(path, encoding="utf-8") as f:
                hf = json.load(f)
            hf.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(hf, f, indent=2)
        cfg.model.init_from = dst
    elif row in NO_DROPOUT:
        cfg.model.encoder.hidden_dropout_prob = 0.0
        cfg.model.encoder.attention_probs_dropout_prob = 0.0
