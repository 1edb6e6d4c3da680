"""Config files + command-line overrides: values apply, bad keys fail with the valid ones listed."""
import os

import pytest

from sentjax.train import config_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMCSE = os.path.join(REPO, "experiments", "simcse_unsup.py")


def test_overrides_apply_with_types():
    cfg, rest = config_cli.parse_config_args(
        ["--config", SIMCSE, "--config.batch_size=128", "--config.optim.lr", "1e-4",
         "--config.model.normalize=true", "--config.data.datasets=text:a.txt,text:b.txt", "--resume"])
    assert cfg.batch_size == 128 and isinstance(cfg.batch_size, int)
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.model.normalize is True
    assert tuple(cfg.data.datasets) == ("text:a.txt", "text:b.txt")
    assert rest == ["--resume"]


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(config_cli.ConfigError) as e:
        config_cli.parse_config_args(["--config", SIMCSE, "--config.batch_szie=8"])
    msg = str(e.value)
    assert "batch_szie" in msg and "Did you mean --config.batch_size" in msg
    assert "optim.lr" in msg and "model.pooling" in msg  # the valid keys are listed


def test_nested_unknown_and_group_and_type_errors():
    with pytest.raises(config_cli.ConfigError, match="optim.lr"):
        config_cli.parse_config_args(["--config", SIMCSE, "--config.optim.learning_rate=1"])
    with pytest.raises(config_cli.ConfigError, match="is a group"):
        config_cli.parse_config_args(["--config", SIMCSE, "--config.optim=1"])
    with pytest.raises(config_cli.ConfigError, match="expected a int"):
        config_cli.parse_config_args(["--config", SIMCSE, "--config.batch_size=big"])


def test_missing_config_file_and_missing_flag(tmp_path):
    with pytest.raises(config_cli.ConfigError, match="does not exist"):
        config_cli.parse_config_args(["--config", str(tmp_path / "nope.py")])
    with pytest.raises(config_cli.ConfigError, match="No config given"):
        config_cli.parse_config_args(["--config.batch_size=2"])


@pytest.mark.parametrize("name", ["simcse_unsup", "demo", "sbert_nli", "simcse_sup", "distill"])
def test_experiment_configs_load(name):
    path = os.path.join(REPO, "experiments", f"{name}.py")
    if not os.path.isfile(path):
        pytest.skip(f"{name} config not written")
    cfg = config_cli.load_config_file(path)
    from sentjax.losses import registry
    from sentjax.configs.default import get_config as default_config

    def keys(c):  # the objective block holds its own objective's fields
        return {k for k in config_cli.valid_keys(c) if not k.startswith("objective.")}
    assert keys(cfg) == keys(default_config())
    assert set(config_cli.valid_keys(cfg.objective)) == set(registry.defaults(cfg.objective.name))


def test_cli_train_forwards_and_lists_valid_keys(capsys):
    from sentjax import cli
    assert cli.main(["train", "--config", SIMCSE, "--config.batch_szie=8"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean --config.batch_size" in err and "optim.lr" in err
    assert cli.main(["train", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out
    assert cli.main(["demo", "--config.nope=1"]) == 2
    assert "Unknown config key 'nope'" in capsys.readouterr().err


def test_bundled_model_names_resolve_or_say_which_extra(monkeypatch):
    from sentjax.models import bundled as testing
    from sentjax.train import config_cli
    from sentjax.train.train import resolve_bundled
    assert resolve_bundled("/some/model", "model.init_from") == "/some/model"
    monkeypatch.setattr(testing, "minilm_dir", lambda: "/pkg/minilm")
    assert resolve_bundled("minilm", "objective.teacher") == "/pkg/minilm"
    monkeypatch.setattr(testing, "minilm_dir", lambda: None)
    monkeypatch.setattr(testing, "multilingual_tokenizer_dir", lambda: None)
    with pytest.raises(config_cli.ConfigError, match=r"objective.teacher='minilm' needs the models extra"):
        resolve_bundled("minilm", "objective.teacher")
    with pytest.raises(config_cli.ConfigError, match=r"sentjax\[multilingual\]"):
        resolve_bundled("multilingual", "model.vocab_from")


def test_objective_impl_tiled_only_where_a_tiled_kernel_exists(tmp_path):
    """objective.impl x objective.name: every accepted pair is in the gradient matrices
    (test_parallel_grads.py, test_gradcache.py); impl is a field only of the objectives with a tiled
    kernel, so asking another objective for it is refused at config time (it used to run its dense
    loss silently)."""
    from sentjax.losses import IMPLS, TILED_LOSSES
    from sentjax.train.objectives import OBJECTIVES, make_objective
    from tiny import tiny_config
    from sentjax.train.train import train
    for name in OBJECTIVES:
        for impl in IMPLS:
            cfg = config_cli.objective_config(name) if name in TILED_LOSSES else None
            if name in TILED_LOSSES:
                cfg.impl = impl
                assert callable(make_objective(cfg).loss_fn)
            else:
                with pytest.raises(config_cli.ConfigError, match=rf"objective '{name}' has no field 'impl'"):
                    make_objective({"name": name, "impl": impl})
    cfg = config_cli.objective_config("infonce")
    cfg.impl = "blocked"
    with pytest.raises(config_cli.ConfigError, match="objective.impl='blocked'"):
        make_objective(cfg)
    # refused by the trainer before any model is built or step compiled
    with pytest.raises(config_cli.ConfigError, match="'cosine' has no field 'impl'"):
        train(tiny_config(str(tmp_path), **{"objective.name": "cosine", "objective.impl": "tiled"}),
              progress=False)


@pytest.mark.parametrize("key,value,match", [("checkpoint.every_steps", 0, "checkpoint.every_steps must be positive"),
                                             ("log_every", 0, "log_every must be positive"),
                                             ("dtype", "float16", "dtype must be")])
def test_validate_config_refuses_values_that_would_fail_mid_run(key, value, match):
    from sentjax.configs import default
    from sentjax.train.config_cli import apply_overrides
    from sentjax.train.train import validate_config
    with pytest.raises(config_cli.ConfigError, match=match):
        validate_config(apply_overrides(default.get_config(), {key: value}))
