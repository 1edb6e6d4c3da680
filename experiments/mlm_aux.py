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

Weight w = 0.1 (``MLM_WEIGHT``): the MLM cross-entropy of this fresh head starts near 10 nats (about
ln 30522), about 5x the InfoNCE loss of the first step, so w = 0.1 puts the two terms on the same scale at the
start (an auxiliary term, not the main objective); it is also the weight of the docs' example. Both terms
share the global-norm gradient clip (1.0), so a large MLM gradient also shrinks the contrastive update.

Paper setting (``PAPER``): LaBSE (Feng et al., 2022) pre-trains with MLM/TLM and then trains the translation
ranking loss; contrastive + MLM in one step is e.g. the auxiliary-MLM ablation of SimCSE (Gao et al. 2021,
Appendix: "MLM auxiliary objective", lambda = 0.1, BERT-base, which lowered STS). Reduced CPU run: the README
demo's setting (all-MiniLM-L6-v2, bundled NLI-CAD triplets, batch 32, lr 5e-5, 10% warm-up, max length 32)
with the same data order, steps and seed in both rows:

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
(observations written after the run)
"""
