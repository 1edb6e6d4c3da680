"""Supervised SimCSE (Gao et al., 2021, Sec. 5): NLI (premise, entailment, contradiction) triplets,
the hard-negative weight, and a batch-size ablation through GradCache.

  l_i = -log e^{cos(h_i, h_i+)/T} / sum_j (e^{cos(h_i, h_j+)/T} + alpha^{1[i=j]} e^{cos(h_i, h_j-)/T})
h = pooled embeddings [batch, dim]; positives h+ = entailment, hard negatives h- = contradiction of
every example in the (global) batch. ``objective.hard_negative_weight`` is log(alpha) (it is added to
the logit of each anchor's own hard negative): alpha = 1 -> 0.0, alpha = 2 -> 0.693.
GradCache (Gao et al., 2021b; ``gradient.gradcache_chunk``) computes the exact gradient of a large
contrastive batch in chunks: batch 256 / 1024 below on a 2-core CPU with the memory of a chunk of 64.

Paper setting (``PAPER``): BERT-base, SNLI + MNLI triplets (275k), batch 512, lr 5e-5, 3 epochs,
T 0.05, max length 32, CLS + MLP pooler at train and test time; hard-negative weight alpha = 1.
Reduced CPU run: all-MiniLM-L6-v2 (mean pooling, its own), bundled NLI-CAD triplets, 1,024 triplets
per row (16 steps of 64, 4 of 256, 1 of 1024):  python experiments/run.py simcse_sup
"""
from sentjax.configs import demo

TITLE = "Supervised SimCSE: hard-negative weight and GradCache batch size (all-MiniLM-L6-v2, NLI-CAD)"
PAPER = {"model": "bert-base-uncased", "batch": 512, "steps": "3 epochs of 275k triplets (~1.6k)",
         "lr": 5e-5, "temperature": 0.05, "max_length": 32, "alpha": 1.0}
TRIPLETS = demo.NLI_TRIPLETS


def get_config():
    """The README demo's setting (sentjax/configs/demo.py: MiniLM, mean pooling, max length 32, InfoNCE
    T 0.05 with the contradictions as hard negatives, lr 5e-5, NLI-CAD triplets) at the paper's batch."""
    c = demo.get_config()
    c.workdir = "runs/simcse_sup"
    c.objective.hard_negative_weight = 0.0
    c.batch_size = 512
    c.total_steps = 1600
    c.log_every = 10
    c.optim.warmup_steps = 0
    c.evals.sts_dev.every_steps = 125
    c.evals.sts_dev.batch_size = 64
    c.checkpoint.every_steps = 125
    c.checkpoint.max_to_keep = 2
    return c


CPU = {"batch_size": 64, "total_steps": 16, "log_every": 1}
MAIN = "hard negatives, alpha = 1, batch 64"
ROWS = {
    MAIN: {},
    "no hard negatives, batch 64": {"objective.use_hard_negatives": False},
    "hard negatives, alpha = 2, batch 64": {"objective.hard_negative_weight": 0.6931471805599453},
    "batch 256 (GradCache, chunk 64), 4 steps": {"batch_size": 256, "total_steps": 4,
                                                 "gradient.gradcache_chunk": 64},
    "batch 1024 (GradCache, chunk 64), 1 step": {"batch_size": 1024, "total_steps": 1,
                                                 "gradient.gradcache_chunk": 64},
}
FULL_EVAL = [MAIN]
BASELINES = {"MiniLM untrained (mean pooling)": {"pooling": "mean"}}
SMOKE = {}

NOTES = """
Each row sees the same 1,024 triplets, so the GradCache rows take 4 and 1 updates instead of 16: at this
scale the batch-size rows measure "fewer, larger steps", not the paper's equal-epoch comparison, and
they show that batches of 256 and 1,024 triplets (3,072 sentences) run on 2 CPU cores. The GradCache
gradient equals the direct one (tests/test_gradcache.py). Mean pooling is kept because MiniLM was
trained with it (the paper's CLS + MLP would start from an untrained MLP).
"""
