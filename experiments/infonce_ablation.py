"""InfoNCE temperature and batch-size ablation on the unsupervised SimCSE setting
(Gao et al., 2021, Table D.1 for the temperature; batch sizes through GradCache).

  l_i = -log exp(cos(h_i, h_i+)/T) / sum_{j<B} exp(cos(h_i, h_j+)/T)     h [batch, dim]
T scales the logits: small T sharpens the softmax on the hardest negatives, T = 1 makes every
negative count almost equally (and the loss stays near log B). B is the number of in-batch negatives.

Paper setting (``PAPER``): as unsupervised SimCSE (BERT-base, batch 64, lr 3e-5, 1M Wikipedia
sentences), T in {0.001, 0.01, 0.05, 0.1, 1}; batch sizes 64..512. Large global batches (up to
4096 and beyond) run with ``--config.gradient.gradcache_chunk=N`` (and ``objective.impl="tiled"``
for memory-tiled logits) on accelerators.
Reduced CPU run: all-MiniLM-L6-v2, bundled Common Voice, 1,024 sentences per row:
  python experiments/run.py infonce_ablation
"""
from simcse_unsup import CV, get_config as _unsup_config  # noqa: F401  (same setting, other rows)

TITLE = "InfoNCE temperature and batch size (unsup. SimCSE setting, all-MiniLM-L6-v2, Common Voice)"
PAPER = {"model": "bert-base-uncased", "batch": "64 (and 128..512 / 4096 via GradCache)", "steps": 15625,
         "lr": 3e-5, "temperature": "0.001 .. 1"}


def get_config():
    return _unsup_config()


CPU = {"total_steps": 16, "log_every": 1}
ROWS = {
    "T = 0.05, batch 64": {},
    "T = 0.01, batch 64": {"objective.temperature": 0.01},
    "T = 0.1, batch 64": {"objective.temperature": 0.1},
    "T = 0.5, batch 64": {"objective.temperature": 0.5},
    "T = 1.0, batch 64": {"objective.temperature": 1.0},
    "T = 0.05, batch 16, 64 steps": {"batch_size": 16, "total_steps": 64},
    "T = 0.05, batch 256 (GradCache, chunk 64), 4 steps": {"batch_size": 256, "total_steps": 4,
                                                          "gradient.gradcache_chunk": 64},
    "T = 0.05, batch 256 (GradCache, chunk 64), 16 steps": {"batch_size": 256, "gradient.gradcache_chunk": 64},
    "T = 0.05, batch 1024 (GradCache, chunk 64), 1 step": {"batch_size": 1024, "total_steps": 1,
                                                          "gradient.gradcache_chunk": 64},
    "T = 0.05, batch 4096 (GradCache, chunk 64), 1 step": {"batch_size": 4096, "total_steps": 1,
                                                          "gradient.gradcache_chunk": 64},
}
FULL_EVAL = []
BASELINES = {"MiniLM untrained, CLS pooling (as evaluated)": {"pooling": "cls"}}
SMOKE = {}
NOTES = """
Every row sees 1,024 sentences except "batch 256, 16 steps" (4,096: the same number of updates as
batch 64, with 4x the negatives) and the batch-4096 row (one step of 4,096); the other batch rows
trade steps for negatives (64 steps of 16, 16 of 64, 4 of 256, 1 of 1,024) and are not an
equal-steps comparison: at lr 3e-5 a single step moves the encoder little, so the one-step rows show
that batches of 1,024 and 4,096 run on 2 CPU cores through GradCache (the gradient equals the direct
one, tests/test_gradcache.py) more than they measure the effect of the batch size. STS12-16 are not
run for these rows.
"""
