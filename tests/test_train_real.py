"""A short REAL run: all-MiniLM-L6-v2, degraded by Gaussian noise, trained a few steps with
supervised SimCSE on bundled NLI-CAD triplets through the full train loop. The loss must fall
and STS-B dev Spearman (a fixed 160-pair subset) must rise. Starting from a degraded model
makes the rise reliable: the pretrained MiniLM is already near its STS-B optimum."""
import json
import os

import jax
import numpy as np
import pytest

from sentjax.testing import minilm_dir

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(minilm_dir() is None, reason="all-MiniLM-L6-v2 (models extra) not installed")]

NOISE = 0.5     # x per-tensor std, on every kernel: STS-B dev falls from ~87 to ~70
N_DEV = 160


def _degraded_model(path: str) -> str:
    import sentjax
    model = sentjax.load(minilm_dir(), max_length=32)
    leaves, tree = jax.tree.flatten_with_path(model.params)
    keys = jax.random.split(jax.random.key(1234), len(leaves))
    out = []
    for (kpath, x), k in zip(leaves, keys):
        x = np.asarray(x, np.float32)
        if str(getattr(kpath[-1], "key", "")) == "kernel":
            x = x + NOISE * x.std() * np.asarray(jax.random.normal(k, x.shape), np.float32)
        out.append(x)
    return sentjax.save(model, path, params=jax.tree.unflatten(tree, out))


def _dev_subset(path: str) -> str:
    from sentjax.data import readers
    dev = readers.read_stsbenchmark_senteval(readers.resolve_sts_data("stsbenchmark-dev")[0])
    idx = np.linspace(0, len(dev) - 1, N_DEV).astype(int)  # spread over all genres/scores
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence1\tsentence2\tscore\n")
        for i in idx:
            f.write(f"{dev.sentences1[i]}\t{dev.sentences2[i]}\t{dev.scores[i]}\n")
    return path


@pytest.mark.slow
def test_short_real_run_loss_falls_and_sts_rises(tmp_path):
    from sentjax.configs.demo import get_config
    from sentjax.train.train import train
    c = get_config()
    c.workdir = str(tmp_path / "run")
    c.model.init_from = _degraded_model(str(tmp_path / "degraded"))
    c.mesh.data = 1
    c.batch_size = 16
    c.total_steps = 6
    c.log_every = 2
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 0
    c.evals.sts_dev.data = _dev_subset(str(tmp_path / "dev.tsv"))
    c.evals.sts_dev.every_steps = 6
    c.evals.sts_dev.batch_size = 64
    c.checkpoint.every_steps = 6
    c.checkpoint.async_save = False
    s = train(c, progress=False)
    rows = [json.loads(x) for x in open(os.path.join(c.workdir, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]  # means over 2-step windows
    print("losses", losses, "spearman", s["sts_dev_spearman_start"], "->", s["sts_dev_spearman"])
    assert len(losses) == 3
    assert losses[-1] < 0.9 * losses[0], losses
    assert s["sts_dev_spearman"] > s["sts_dev_spearman_start"] + 0.5
    assert os.path.isfile(os.path.join(s["best_model"], "model.safetensors"))
