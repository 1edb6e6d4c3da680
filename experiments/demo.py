"""README main job: unsupervised SimCSE from all-MiniLM-L6-v2 on bundled Common Voice
sentences, a few minutes on 2 CPU cores; STS-B dev Spearman before/after; exports the model.

  sentjax train --config experiments/demo.py
"""
from sentjax.train.train import default_config


def get_config():
    c = default_config()
    c.workdir = "runs/demo"
    c.model.init_from = "minilm"
    c.model.pooling = "mean"
    c.model.max_length = 32
    c.objective.name = "infonce"
    c.objective.temperature = 0.05
    c.batch_size = 32
    c.total_steps = 30
    c.log_every = 5
    c.optim.lr = 1e-5
    c.optim.warmup_steps = 6
    c.data.datasets = ("text:bundled/commonvoice_en/jf99.txt",)
    c.eval.sts_file = "stsb-dev"
    c.eval.every_steps = 15
    c.eval.batch_size = 128
    c.checkpoint.every_steps = 30
    return c
