"""The persistent compilation cache: where it lives, and that a warm run gives the same numbers."""
import pytest
import os
import subprocess

from test_faults import REPO, assert_same_state, cmd, write_config

from sentjax import compile_cache


def test_where_the_cache_lives(monkeypatch, tmp_path):
    for var in (compile_cache.ENV, "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache.resolve("auto") == str(tmp_path / ".cache" / "sentjax" / "jax")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.resolve("auto") == str(tmp_path / "xdg" / "sentjax" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jaxdir"))
    assert compile_cache.resolve("auto") == str(tmp_path / "jaxdir")
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.resolve("auto") == str(tmp_path / "mine")
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.resolve("auto") is None
    # the config key wins over the environment
    assert compile_cache.resolve(str(tmp_path / "cfg")) == str(tmp_path / "cfg")
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.resolve("off") is None


def _run(cfg, cache):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_DEFAULT_MATMUL_PRECISION="highest",
               PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env[compile_cache.ENV] = cache
    out = subprocess.run(cmd(cfg), env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_training_fills_the_cache_and_a_warm_run_is_bitwise_equal(tmp_path):
    cache = tmp_path / "cache"
    runs = [tmp_path / f"run{i}" for i in range(3)]
    cfgs = [write_config(tmp_path / f"cfg{i}.py", w) for i, w in enumerate(runs)]
    _run(cfgs[0], str(cache))
    cold = set(os.listdir(cache))
    assert cold, "the first run wrote no compiled program"
    _run(cfgs[1], str(cache))
    assert set(os.listdir(cache)) == cold  # every program of the second run came from the cache
    assert_same_state(str(runs[0]), str(runs[1]))
    _run(cfgs[2], "off")
    assert set(os.listdir(cache)) == cold
    assert_same_state(str(runs[0]), str(runs[2]))
