"""A 65,536-pair global batch on one CPU machine: GradCache (encoder memory of one chunk) plus the
memory-tiled InfoNCE (no 65,536 x 65,536 logits). Issue 6's end-to-end check.

The encoder is small and randomly initialised (hidden 64, 2 layers, MiniLM's 30,522-token
vocabulary) so that one step fits in minutes on 2 cores; with all-MiniLM-L6-v2 the same config
needs ~1 h per step here, and is the setting to use on an accelerator
(``--config.model.init_from=minilm``). Sentences: bundled Common Voice + Multi30k English
captions (83k unique lines, so a 65,536 batch has no duplicate text).

  sentjax train --config experiments/large_batch_65k.py
"""
from sentjax.configs import default


def get_config():
    c = default.get_config()
    c.workdir = "runs/large_batch_65k"
    c.model.init_from = ""
    c.model.tokenizer = "minilm"          # the bundled all-MiniLM-L6-v2 tokenizer
    c.model.encoder.vocab_size = 30522
    c.model.encoder.hidden_size = 64
    c.model.encoder.num_hidden_layers = 2
    c.model.encoder.num_attention_heads = 4
    c.model.encoder.intermediate_size = 256
    c.model.encoder.max_position_embeddings = 64
    c.model.max_length = 32
    c.mesh.data = 1
    c.batch_size = 65536
    c.total_steps = 2
    c.log_every = 1
    c.gradient.method = "shard_map"
    c.gradient.gradcache_chunk = 2048     # rows embedded at a time (per device, per column)
    c.objective.name = "infonce"
    c.objective.impl = "tiled"
    c.objective.tile_size = 4096
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 1
    c.data.datasets = ("text:bundled/commonvoice_en/sentence-collector.txt,"
                       "bundled/multi30k/train.en.gz",)
    c.checkpoint.every_steps = 2
    return c
