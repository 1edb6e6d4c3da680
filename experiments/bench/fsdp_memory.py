"""FSDP memory (issue 14 item 4): per-device bytes of parameters + AdamW state, replicated vs
``parallel.param_sharding='fsdp'``, on 1 / 2 / 4 / 8 devices, for random models shaped like
all-MiniLM-L6-v2 and BERT-base.

The numbers are measured, not computed: the train state (``sentjax.train.step.init_state`` with the
trainer's optimizer, ``make_optimizer``) is created directly in its shardings by a jit-compiled init
and, for every device, the bytes of its ``addressable_shards`` are summed. Replicated, every device
holds the whole state whatever the device count, so it is measured once (on one device). Prints the
Markdown table and writes it to ``results/fsdp-memory.md``.

  python experiments/bench/fsdp_memory.py                    # both models, 1/2/4/8 fake CPU devices
  python experiments/bench/fsdp_memory.py --models minilm    # one model
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from tqdm import tqdm  # noqa: E402

from sentjax.configs.default import get_config  # noqa: E402
from sentjax.models.config import EncoderConfig  # noqa: E402
from sentjax.models.sentence_model import SentenceEncoderModule  # noqa: E402
from sentjax.parallel.mesh import make_mesh  # noqa: E402
from sentjax.parallel.sharding import DEFAULT_MIN_SIZE, param_shardings, resolve_rules  # noqa: E402
from sentjax.train import step as step_lib  # noqa: E402
from sentjax.train.optim import make_optimizer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = {  # config.json shapes of the Hugging Face checkpoints (random weights)
    "minilm": ("all-MiniLM-L6-v2", dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                                        num_attention_heads=12, intermediate_size=1536,
                                        max_position_embeddings=512)),
    "bert-base": ("BERT-base", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                    num_attention_heads=12, intermediate_size=3072,
                                    max_position_embeddings=512)),
}
MIB = 2 ** 20


def per_device_bytes(state) -> dict:
    """{device: bytes of every state shard it holds}."""
    out: dict = {}
    for leaf in jax.tree.leaves(state):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


def measure(shape: dict, n: int, fsdp: bool) -> tuple[int, int, int, int]:
    """(max, min bytes per device, parameter count, sharded parameter leaves) on ``n`` devices."""
    mesh = make_mesh(n)
    module = SentenceEncoderModule(EncoderConfig(**shape), pooling="mean")
    tokens = {k: jnp.ones((1, 8), jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    tx, _ = make_optimizer(get_config().optim, total_steps=100)

    def init():
        params = {"model": module.init(jax.random.key(0), tokens)["params"]}
        return step_lib.init_state(params, tx, 0)
    abstract = jax.eval_shape(init)
    ps = param_shardings(abstract["params"], mesh, resolve_rules("fsdp")) if fsdp else None
    shardings = step_lib.state_sharding(abstract, mesh, tx, ps)
    state = jax.jit(init, out_shardings=shardings)()
    jax.block_until_ready(state)
    used = per_device_bytes(state)
    assert len(used) == n
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    sharded = sum(not x.sharding.is_fully_replicated for x in jax.tree.leaves(state["params"]))
    del state
    return max(used.values()), min(used.values()), n_params, sharded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4, 8])
    p.add_argument("--out", default=os.path.join(HERE, "results", "fsdp-memory.md"))
    args = p.parse_args(argv)
    if max(args.devices) > jax.device_count():
        p.error(f"--devices {max(args.devices)} but {jax.device_count()} are visible.")
    lines = ["# FSDP: per-device parameter + AdamW state memory", "",
             "Measured by `python experiments/bench/fsdp_memory.py` (sum of `addressable_shards` bytes per "
             f"device; {jax.device_count()} fake CPU devices, jax {jax.__version__}). State = float32 parameters, "
             "AdamW mu and nu, counters (`init_state` with the trainer's optimizer). FSDP: "
             f"`parallel.param_sharding='fsdp'`, `fsdp_min_size={DEFAULT_MIN_SIZE}` elements; "
             "\"max/min\": the fullest and emptiest device. Replicated holds the whole state on every "
             "device at any device count.", "",
             "| model | params | devices | replicated MiB/device | FSDP MiB/device (max / min) | FSDP / replicated | 1/N |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    jobs = [(m, n) for m in args.models for n in args.devices]
    rep: dict = {}
    for model, n in tqdm(jobs, desc="states", file=sys.stderr):
        name, shape = MODELS[model]
        if model not in rep:
            rep[model] = measure(shape, 1, fsdp=False)[0]
        hi, lo, n_params, sharded = measure(shape, n, fsdp=True)
        lines.append(f"| {name} | {n_params / 1e6:.1f}M | {n} | {rep[model] / MIB:.1f} | {hi / MIB:.1f} / "
                     f"{lo / MIB:.1f} | {hi / rep[model]:.3f} | {1 / n:.3f} |")
    lines += ["", f"Sharded (FSDP): every weight matrix and the word / position embedding tables; "
              "biases, LayerNorm vectors and the 2-row token-type table (< fsdp_min_size elements) stay "
              "replicated, which is the gap above 1/N."]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
