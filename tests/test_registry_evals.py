"""The evaluator registry and locked configs: every evaluator type is built from its config, gives
the config back, refuses a field of another type (listing its own), and returns the metrics it
declares; a key the config does not have is refused from the command line, from
``experiments/run.py`` and from code that runs after the config is loaded."""
import dataclasses
import hashlib
import os
import sys
import types

import ml_collections
import numpy as np
import pytest

from sentjax.eval.evaluators import EVALUATORS, build_evaluators, eval_config
from sentjax.registry import ConfigError
from sentjax.train import config_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = EVALUATORS.names()


def test_the_four_evaluators_are_registered():
    assert set(TYPES) >= {"sts", "senteval", "nli", "tatoeba"}


@pytest.mark.parametrize("name", TYPES)
def test_built_from_its_config_and_round_trips(name):
    ev = EVALUATORS.build({"type": name})
    assert EVALUATORS.build(EVALUATORS.to_config(ev)) == ev
    fields = {f.name: f for f in dataclasses.fields(ev)}
    assert EVALUATORS.fields(name) == ["type", *fields]
    # every field changed from its default survives config -> evaluator -> config
    changed = {}
    for k, f in fields.items():
        v = getattr(ev, k)
        changed[k] = (not v if isinstance(v, bool) else v + 3 if isinstance(v, int) else
                      v + "x" if isinstance(v, str) else tuple(v)[:1])
    ev2 = EVALUATORS.build({"type": name, **changed})
    assert EVALUATORS.to_config(ev2) == {"type": name, **changed}
    # the ConfigDict a config file holds (config.evals.<name>) builds the same evaluator
    cfg = ml_collections.ConfigDict({"evals": {"x": eval_config(name, **changed)}})
    assert build_evaluators(cfg.evals) == {"x": ev2}


@pytest.mark.parametrize("name", TYPES)
def test_a_field_of_another_evaluator_is_an_error_listing_the_valid_ones(name):
    own = set(EVALUATORS.fields(name))
    foreign = next(f for other in TYPES for f in EVALUATORS.fields(other) if f not in own)
    with pytest.raises(ConfigError) as e:
        build_evaluators({"mine": {"type": name, foreign: 1}})
    msg = str(e.value)
    assert msg.startswith("evals.mine: ") and repr(foreign) in msg and f"evaluator {name!r}" in msg
    assert all(f in msg for f in own), msg


def test_unknown_type_and_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match=r"evals.x: Unknown evaluator type 'stss'; choose one of .*'sts'"):
        build_evaluators({"x": {"type": "stss"}})
    with pytest.raises(ConfigError, match="needs a 'type'"):
        build_evaluators({"x": {"data": "stsb-dev"}})
    with pytest.raises(ConfigError, match="every_steps must be >= 0"):
        EVALUATORS.build({"type": "sts", "every_steps": -1})


def _hash_encoder(texts):
    """A deterministic bag-of-words encoder (no model): shared words -> similar vectors."""
    out = np.zeros((len(texts), 64))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    return out + 1e-3


def test_each_evaluator_returns_the_metrics_it_declares(tmp_path):
    from tiny import make_tiny_workspace
    ws = make_tiny_workspace(str(tmp_path / "ws"))
    head = {"kernel": np.random.default_rng(0).normal(size=(3 * 64, 3)), "bias": np.zeros(3)}
    cases = {"sts": {"data": ws.sts}, "senteval": {"years": ("STS12",)}, "nli": {"data": ws.nli, "limit": 20},
             "tatoeba": {"langs": ("deu",)}, "sts_dims": {"data": ws.sts, "dims": (64, 8)},
             "retrieval": {"data": "bundled:stsb-retrieval", "limit": 20}}
    assert set(cases) == set(TYPES), "a new evaluator needs a case here"
    for name, fields in cases.items():
        ev = EVALUATORS.build({"type": name, **fields})
        out = ev(_hash_encoder, head)
        assert tuple(out) == ev.metric_names(), name
        assert all(np.isfinite(v) for v in out.values()), (name, out)
    sts = EVALUATORS.build({"type": "sts", "data": ws.sts})(_hash_encoder)
    assert sts["spearman"] > 20  # shared words really drive the tiny STS scores
    with pytest.raises(ConfigError, match="classifier head"):
        EVALUATORS.build({"type": "nli", "data": ws.nli})(_hash_encoder, None)


def test_best_metric_must_be_produced_by_a_running_evaluator(tmp_path):
    from sentjax.train.train import Evals
    from tiny import tiny_config
    c = tiny_config(str(tmp_path), **{"evals.sts_dev.every_steps": 2, "best_metric": "sts_dev_accuracy"})
    with pytest.raises(ConfigError, match=r"best_metric='sts_dev_accuracy'.*sts_dev_spearman"):
        Evals(c, None, None, None)


def test_an_evaluator_with_a_head_picks_the_best_model_during_training(tmp_path):
    """The trainer runs any evaluator type: here NLI accuracy of the softmax head it trains, which
    also names best_model/."""
    import json

    from sentjax.train.train import train
    from tiny import make_tiny_workspace, tiny_config
    ws = make_tiny_workspace(str(tmp_path / "ws"))
    c = tiny_config(str(tmp_path / "ws"), **{
        "objective.name": "softmax", "data.datasets": (f"nli:{ws.nli}",), "total_steps": 4,
        "evals.sts_dev.type": "nli", "evals.sts_dev.data": ws.nli, "evals.sts_dev.every_steps": 2,
        "best_metric": "sts_dev_accuracy"})
    s = train(c, progress=False)
    rows = [json.loads(line) for line in open(os.path.join(c.workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "sts_dev_accuracy" in r] == [0, 2, 4]
    assert s["best_metric"] == "sts_dev_accuracy" and s["best_step"] in (0, 2, 4)
    assert s["best_value"] == max(r["sts_dev_accuracy"] for r in rows if "sts_dev_accuracy" in r)
    assert 0.0 <= s["sts_dev_accuracy"] <= 100.0 and "sts_dev_accuracy_start" in s
    assert os.path.isfile(os.path.join(s["best_model"], "model.safetensors"))


# ----------------------------------------------------------------------------- locked configs


def test_new_key_refused_from_the_command_line(capsys):
    from sentjax.train.train import main
    simcse = os.path.join(REPO, "experiments", "simcse_unsup.py")
    for new in ("--config.new_key=1", "--config.evals.tatoeba.type=tatoeba", "--config.evals.sts_dev.langs=deu"):
        assert main(["--config", simcse, new]) == 2
        err = capsys.readouterr().err
        assert "Unknown config key" in err and "evals.sts_dev.every_steps" in err, err  # valid keys listed


def test_new_key_refused_from_experiments_run_and_after_loading(tmp_path):
    sys.path.insert(0, os.path.join(REPO, "experiments"))
    import run
    from sentjax.configs import default
    mod = types.SimpleNamespace(get_config=default.get_config, ROWS={"ok": {"optim.lr": 1e-3}, "bad": {"optim.lr_new": 1.0}})
    cfg = run.build_config(mod, "ok", 0, False, str(tmp_path))
    assert cfg.optim.lr == 1e-3 and cfg.evals.sts_dev.every_steps == 0
    with pytest.raises(ConfigError, match=r"Unknown config key 'optim.lr_new'.*Did you mean --config.optim.lr"):
        run.build_config(mod, "bad", 0, False, str(tmp_path))
    with pytest.raises(AttributeError, match="locked"):
        cfg.model.new_field = 1  # e.g. an experiment's prepare() hook
    with pytest.raises(ConfigError, match="expected a int"):
        config_cli.apply_overrides(cfg, {"batch_size": "big"})
