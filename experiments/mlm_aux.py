"""Supervised SimCSE with and without an auxiliary MLM term on the same batch's anchor texts.

  L = L_InfoNCE(h, h+, h-)                               (row 1, the demo's objective)
  L = L_InfoNCE(h, h+, h-) + w * L_MLM(anchors)          (row 2, ``objective.name=multi``)

h = mean-pooled embeddings [batch, dim] of the anchors (NLI premises), h+ the entailment and h- the
contradiction hypotheses; InfoNCE over the batch with the contradictions as hard negatives, T = 0.05.
L_MLM is the mean cross-entropy over the masked tokens of the anchors [batch, length] (15% of the
non-special tokens, 80/10/10 [MASK]/random/kept; ``sentjax/losses/mlm.py``), predicted by a BERT MLM head
whose decoder is tied to the word embeddings (docs/multi_objective.md). all-MiniLM-L6-v2 ships no
``cls.predictions.*`` weights, so the head's transform (dense + LayerNorm) and its output bias start from
their initialisation (normal(0.02), zeros; as transformers initialises BertForMaskedLM). The head is
``params["mlm_head"]``, trained at the encoder's lr (``optim.head_lr_mult`` scales only ``params["head"]``).

Weight w = 0.1 (``MLM_WEIGHT``): the default ``mlm_weight`` of SimCSE's own trainer (princeton-nlp/SimCSE
``train.py --do_mlm``), also the docs' example. Measured here (seed 0, step 1, the same batch in both rows):
the fresh head's cross-entropy is 10.85 nats (ln 30522 = 10.33) and the InfoNCE term 0.24, so the weighted
MLM term (1.09) is about 4x the contrastive one at the start; w = 0.1 is not small for this objective.
Both terms share the global-norm gradient clip (1.0) and every step is clipped in both rows (gradient
norm 2.4-9.9 over the 240 steps; mean 5.7 without, 6.0 with the MLM term), so the MLM gradient also takes a
share of each clipped contrastive update.

Paper setting (``PAPER``): supervised SimCSE (Gao et al., 2021) with its optional auxiliary MLM term
(``--do_mlm``, weight 0.1) at BERT-base scale; LaBSE (Feng et al., 2022) combines MLM / TLM pre-training with a
translation ranking loss. Reduced CPU run: the README demo's setting (all-MiniLM-L6-v2, bundled NLI-CAD
triplets, 40 steps of batch 32, lr 5e-5, 10% warm-up, max length 32) with the same data order, steps and seed
in both rows:

  python experiments/run.py mlm_aux --seeds 0,1,2
"""
from sentjax.configs import demo

TITLE = "Contrastive with and without an MLM term (supervised SimCSE, all-MiniLM-L6-v2, NLI-CAD, batch 32)"
PAPER = {"model": "bert-base-uncased", "batch": 512, "steps": "3 epochs of 275k NLI triplets",
         "lr": 5e-5, "temperature": 0.05, "mlm weight": 0.1, "mlm rate": 0.15}
MLM_WEIGHT = 0.1


def get_config():
    """The README demo (sentjax/configs/demo.py): MiniLM, mean pooling, InfoNCE T 0.05 with the contradictions
    as hard negatives, batch 32, 40 steps, lr 5e-5, NLI-CAD triplets."""
    c = demo.get_config()
    c.workdir = "runs/mlm_aux"
    return c


CPU = {"log_every": 1}
MAIN = "InfoNCE + hard negatives"
WITH_MLM = f"InfoNCE + hard negatives + {MLM_WEIGHT:g} MLM (anchors, 15%)"
ROWS = {
    MAIN: {},
    WITH_MLM: {"objective.name": "multi", "objective.terms": (
        {"name": "infonce", "weight": 1.0, "temperature": 0.05, "use_hard_negatives": True},
        {"name": "mlm", "weight": MLM_WEIGHT, "source": "mlm", "mask_rate": 0.15})},
}
FULL_EVAL: list[str] = []  # STS12-16 on one seed of one row would not compare the rows
BASELINES = {"MiniLM untrained (mean pooling)": {"pooling": "mean"}}
SMOKE: dict = {}
TABLES = {"STS (Spearman x100) and the loss terms": [
    "stsb_dev", "sickr_trial", "infonce_last", "mlm_first", "mlm_last", "final_loss", "wall_s"]}
METRIC_NAMES = {"infonce_last": "InfoNCE term, last 5 steps", "mlm_first": "MLM CE, first 5 steps",
                "mlm_last": "MLM CE, last 5 steps", "final_loss": "total loss, last step"}
WINDOW = 5  # steps averaged for the loss columns: one step's loss is one batch's


def extra_eval(model, summary, cfg, baseline):
    """The InfoNCE term (``loss`` of the plain row, ``loss_infonce`` of the multi row) over the last WINDOW
    steps and the MLM cross-entropy over the first / last WINDOW steps, from the run's metrics.jsonl. Both
    rows see the same batches, so the InfoNCE columns compare the contrastive fit directly."""
    if baseline or cfg is None:
        return {}
    from run import read_metrics  # experiments/ is on sys.path under run.py
    logs = [m for m in read_metrics(cfg.workdir) if "loss" in m]
    out = {}
    key = "loss_infonce" if any("loss_infonce" in m for m in logs) else "loss"
    vals = [m[key] for m in logs]
    if vals:
        out["infonce_last"] = sum(vals[-WINDOW:]) / len(vals[-WINDOW:])
    mlm = [m["loss_mlm"] for m in logs if "loss_mlm" in m]
    if mlm:
        out["mlm_first"] = sum(mlm[:WINDOW]) / len(mlm[:WINDOW])
        out["mlm_last"] = sum(mlm[-WINDOW:]) / len(mlm[-WINDOW:])
    return out


NOTES = """
Both rows train on the same 1,280 triplets in the same order for a given seed (the first step's InfoNCE loss is
identical in the two rows); seeds 0, 1, 2. Reading (paired by seed, MLM row minus plain row):

- STS-B dev: -0.13, +0.03, -0.01 (mean -0.04); the plain row's own seed spread is 0.10. No effect is visible.
- SICK-R trial: -0.09, -0.14, -0.13 (mean -0.12), lower in all three seeds, but smaller than either row's seed
  spread (0.20 / 0.21); three paired seeds do not establish it (all three negative has chance 1/8 under no effect).
- The InfoNCE term over the last 5 steps is 0.01 higher with the MLM term in all three seeds (the same batches):
  the MLM gradient takes part of each clipped update, so the contrastive fit is marginally worse.
- The MLM head does learn: its cross-entropy falls from 10.45 to 7.13 nats in 40 steps (fresh transform and bias,
  decoder tied to the word embeddings; the all-MiniLM-L6-v2 folder has no MLM-head weights), at about 1.6x the
  training time on this loaded machine.

So at this budget an auxiliary MLM term at weight 0.1 neither helps nor measurably hurts STS; if anything it costs
~0.1 SICK-R. The budget is small: 40 steps move STS-B dev only +0.2 over the untrained model, which bounds any
effect an auxiliary term can have; a larger run (or a model that ships its MLM head, e.g. bert-base-uncased) is
needed to see whether an MLM term changes STS at all. Train s/run is wall time on a shared 2-core machine (load average 8-10), not a speed comparison.

Not run: a multilingual TLM row (anchor + translation joined, on the distill experiment's Multi30k). MiniLM's
vocabulary is English, so TLM needs the distill student under the XLM-R vocabulary, whose 250,002-word logits
cost about 8x MiniLM's per token, and its contrastive half is bitext retrieval, not this SimCSE comparison; with
each MLM run taking 8-12 min here it did not fit the session.
"""
