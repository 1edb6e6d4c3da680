"""The objective registry: every objective is one module, built from its own config block only."""
import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.losses import registry
from sentjax.train import config_cli
from sentjax.train.objectives import make_objective

NAMES = registry.names()


def test_every_loss_module_is_registered():
    assert set(NAMES) == {"infonce", "softmax", "cosine", "cosent", "distill", "matryoshka", "multipos",
                          "margin_mse", "listwise_kl", "sigmoid", "multi", "mlm", "gist"}


@pytest.mark.parametrize("name", NAMES)
def test_objective_builds_from_its_defaults_and_round_trips(name):
    spec = registry.get(name)
    module = importlib.import_module(f"sentjax.losses.{name}")
    assert module.__doc__ and len(module.__doc__) > 200  # formula, paper, inputs
    for f in dataclasses.fields(spec.config):
        assert (f.default, f.default_factory) != (dataclasses.MISSING,) * 2, f"{name}.{f.name} needs a default"
    block = config_cli.objective_config(name)
    obj = make_objective(block)
    assert obj.name == name and set(obj.fields) >= {"anchor"}
    # hyperparameters round-trip: config block -> Config -> dict
    assert {"name": name, **dataclasses.asdict(obj.hparams)} == registry.defaults(name)
    rng = np.random.default_rng(0)
    d = 384  # matryoshka's default dims go up to all-MiniLM-L6-v2's 384
    cols = {c: jnp.asarray(rng.normal(size=(4, d)), jnp.float32) for c in obj.fields if c != "negative"}
    cols.update({"anchor": jnp.asarray(rng.normal(size=(4, d)), jnp.float32),
            "positive": jnp.asarray(rng.normal(size=(4, d)), jnp.float32),
            "label": jnp.asarray([0, 1, 2, 0]), "score": jnp.asarray([0.1, 0.9, 0.5, 0.3], jnp.float32),
            "teacher": jnp.asarray(rng.normal(size=(4, d)), jnp.float32)})
    if name == "mlm":  # per-example (CE sum, masked count) rows, built by sentjax.models.mlm_head.mlm_rows
        cols["mlm"] = jnp.asarray([[2.0, 1.0], [0.0, 0.0], [6.0, 2.0], [1.0, 1.0]], jnp.float32)
    if name in ("margin_mse", "listwise_kl"):  # score distillation: hard negatives + teacher scores [b, 1 + k]
        cols.update(negative=jnp.asarray(rng.normal(size=(4, d)), jnp.float32),
                    score=jnp.asarray(rng.normal(size=(4, 2)), jnp.float32))
    for c in obj.teacher_fields:  # a frozen teacher's (guide's) embeddings of the same rows
        if c in cols:
            cols[f"teacher:{c}"] = jnp.asarray(rng.normal(size=cols[c].shape), jnp.float32)
    params = {"head": obj.init_head(jax.random.key(0), d)} if obj.init_head else {}
    loss, metrics = obj.loss_fn(params, cols)
    assert np.isfinite(float(loss)) and isinstance(metrics, dict)


@pytest.mark.parametrize("name", NAMES)
def test_a_field_of_another_objective_is_refused(name):
    own = set(registry.defaults(name))
    foreign = next(k for other in NAMES for k in registry.defaults(other) if k not in own)
    with pytest.raises(config_cli.ConfigError, match=rf"objective '{name}' has no field '{foreign}'.*its fields are"):
        make_objective({**registry.defaults(name), foreign: 1})
    with pytest.raises(config_cli.ConfigError, match="Unknown objective 'triplet'.*infonce"):
        make_objective({"name": "triplet"})


def test_command_line_follows_the_objective(tmp_path):
    cfg_file = tmp_path / "cfg.py"
    cfg_file.write_text("from sentjax.configs.default import get_config\n")
    cfg, _ = config_cli.parse_config_args(["--config", str(cfg_file), "--config.objective.temperature=0.1"])
    assert make_objective(cfg.objective).hparams.temperature == 0.1
    # a field of another objective is not silently ignored any more
    with pytest.raises(config_cli.ConfigError, match="objective.scale"):
        config_cli.parse_config_args(["--config", str(cfg_file), "--config.objective.scale=10"])
    # switching objective resets the block to its defaults, whatever the order of the flags
    cfg, _ = config_cli.parse_config_args(["--config", str(cfg_file), "--config.objective.scale=10",
                                           "--config.objective.name=cosent"])
    assert cfg.objective.to_dict() == {"name": "cosent", "scale": 10.0}
    assert make_objective(cfg.objective).in_batch_negatives
