"""Unsupervised SimCSE (Gao et al., 2021): a sentence and itself under two dropout masks.

Paper setting: BERT-base, CLS + MLP pooling at train time only, batch 64, lr 3e-5,
temperature 0.05, 1M Wikipedia sentences, 1 epoch, no warm-up. Here the data default is the
bundled unlabelled sentences; point --config.data.datasets at a bigger file for real runs:
  sentjax train --config experiments/simcse_unsup.py --config.model.init_from=bert-base-uncased \
      --config.data.datasets=text:wiki1m_for_simcse.txt --config.total_steps=15625
"""
from sentjax.train.train import default_config


def get_config():
    c = default_config()
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
    c.data.datasets = ("text:bundled/commonvoice_en/jf99.txt",)
    c.eval.sts_file = "stsb-dev"
    c.eval.every_steps = 125
    c.checkpoint.every_steps = 125
    return c
