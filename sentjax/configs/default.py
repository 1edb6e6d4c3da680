"""Every key a run understands, with its default. Config files start from ``get_config()`` and change
values; nothing adds a key later (``sentjax.train.config_cli`` locks the config)."""
from __future__ import annotations

import ml_collections

from sentjax.eval.evaluators import eval_config
from sentjax.losses import registry


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "runs/default"
    c.total_steps = 100
    c.batch_size = 64                 # global: examples per step, all processes and devices
    c.accum_steps = 1                 # micro-batches per step (objectives without in-batch negatives)
    c.dtype = "float32"               # compute dtype; "bfloat16" keeps float32 master parameters
    c.log_every = 10
    c.compile_cache = "auto"          # persistent XLA cache: "auto" (SENTJAX_COMPILE_CACHE, else ~/.cache/sentjax/jax), a folder, or "off"
    c.nonfinite_limit = 10            # stop after this many skipped (non-finite) steps
    c.mesh = ml_collections.ConfigDict({"data": -1})   # devices on the data axis (-1: all)
    c.model = ml_collections.ConfigDict({
        "init_from": "",              # model folder / hub id / "minilm"; "" = random init
        "tokenizer": "",              # tokenizer folder for a random init ("minilm": the bundled one)
        "encoder": ml_collections.ConfigDict({"vocab_size": 100, "hidden_size": 32,
                                               "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "intermediate_size": 64, "max_position_embeddings": 64,
                                               "hidden_dropout_prob": 0.1,
                                               "attention_probs_dropout_prob": 0.1}),
        "pooling": "mean", "normalize": False, "mlp_at_inference": True, "max_length": 64,
        # tokenizer folder whose vocabulary replaces init_from's ("multilingual": the XLM-R one of
        # the multilingual extra); word embeddings are transferred (sentjax.models.vocab_transfer)
        "vocab_from": "",
        # False: prompt tokens are left out of the pooling (sentence-transformers' include_prompt)
        "include_prompt": True,
        # LoRA (sentjax/models/lora.py, docs/lora.md): rank > 0 trains only low-rank adapters on the
        # dense projections named by targets (e.g. ("query", "value"), ("q_proj", "v_proj")); the
        # base stays frozen, out of the optimizer and out of the checkpoints. rank 0: off.
        "lora": ml_collections.ConfigDict({"rank": 0, "alpha": 16.0, "dropout": 0.0, "targets": ()}),
    })
    # the objective's own fields (sentjax.losses.<name>.Config); --config.objective.name=X resets them
    c.objective = ml_collections.ConfigDict(registry.defaults("infonce"))
    # method: "shard_map" (explicit all-gather of candidates), "pmap", or "jit" (global-batch loss,
    # XLA picks the collectives); gradcache_chunk > 0: GradCache with that many rows per chunk/device.
    c.gradient = ml_collections.ConfigDict({"method": "shard_map", "gradcache_chunk": 0})
    # Parameter + optimizer-state placement (sentjax/parallel/sharding.py, docs/fsdp.md): "replicated",
    # "fsdp" (ZeRO-3: every parameter of >= fsdp_min_size elements split over the data axis), or
    # "rules" (parallel.rules: ((regex, "fsdp" | "replicated" | (axis or None, ...)), ...), first match wins).
    c.parallel = ml_collections.ConfigDict({"param_sharding": "replicated", "rules": (),
                                            "fsdp_min_size": 2 ** 16})
    c.optim = ml_collections.ConfigDict({
        "lr": 3e-5, "warmup_steps": -1, "warmup_ratio": 0.1, "weight_decay": 0.01,
        "b1": 0.9, "b2": 0.999, "eps": 1e-6, "clip_norm": 1.0,
        # learning-rate multiplier of params["head"], the objective's own parameters (softmax classifier,
        # a learned temperature / SigLIP's t' and b): they start far from their optimum while the
        # encoder is pretrained (CLIP / SigLIP train them at the model's pre-training lr)
        "head_lr_mult": 1.0,
    })
    c.data = ml_collections.ConfigDict({"datasets": ("text:bundled/commonvoice_en/jf99.txt",),
                                        "weights": (), "dedup": True})
    # Multi-dataset training (sentjax/data/mixture.py; docs/train.md): non-empty sources replace
    # datasets / weights. Entries: "kind:path" or {"spec": "kind:path", "weight": 2.0, "name": "nli"}.
    # sampling: "proportional" (by weight, else by size) or "round_robin"; homogeneous: one dataset
    # per global batch (False: every batch holds a fixed share of each dataset's rows).
    c.data.sources = ()
    c.data.sampling = "proportional"
    c.data.homogeneous = True
    # Sequence packing in the train step (sentjax/train/packing.py): each device's sentences packed
    # into rows of packing_row_length tokens (0: model.max_length), at most packing_max_segments each.
    c.data.packing = False
    c.data.packing_row_length = 0
    c.data.packing_max_segments = 16
    # per-column prompts prepended at tokenization, e.g. anchor="query: ", positive="passage: "
    # (exported as the model's "query" / "passage" prompts; sentjax.data.prompts)
    c.data.prompts = ml_collections.ConfigDict({"anchor": "", "positive": "", "negative": ""})
    # Evaluations during training, by name (sentjax.eval.evaluators: sts, senteval, nli, tatoeba);
    # each logs <name>_<metric>. every_steps = 0: not run. A config file adds others.
    c.evals = ml_collections.ConfigDict()
    c.evals.sts_dev = eval_config("sts", data="stsb-dev", every_steps=0)
    c.best_metric = "sts_dev_spearman"  # picks best_model/ (higher is better); "": none
    c.checkpoint = ml_collections.ConfigDict({"every_steps": 50, "max_to_keep": 2, "async_save": True})
    c.export = ml_collections.ConfigDict({"best_model": True})
    return c
