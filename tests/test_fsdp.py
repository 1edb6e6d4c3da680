"""FSDP / ZeRO-3: parameters and AdamW state sharded over 8 fake CPU devices give the replicated
step's loss, gradients and updated parameters (InfoNCE with global negatives, with and without
GradCache, shard_map and jit engines); every large leaf is really split; checkpoints restore onto
4 devices and continue as the uninterrupted run."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sentjax.configs.default import get_config
from sentjax.errors import ConfigError
from sentjax.losses import make_column_loss
from sentjax.models.config import EncoderConfig
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.parallel.sharding import fsdp_spec, param_shardings, param_specs, resolve_rules
from sentjax.train import step as step_lib
from sentjax.train.optim import make_optimizer

B, L = 16, 8
MIN_SIZE = 512  # the tiny encoder's weight matrices (>= 32 x 32) are sharded, its vectors are not
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def need_devices():
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices: tests/conftest.py sets them up")


@functools.lru_cache(maxsize=None)
def setup():
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.1,
                        attention_probs_dropout_prob=0.1)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens():
        ids = rng.integers(5, 100, (B, L)).astype(np.int32)
        mask = (np.arange(L)[None, :] < rng.integers(3, L + 1, B)[:, None]).astype(np.int32)
        return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": np.zeros((B, L), np.int32)}
    batches = [{"anchor": tokens(), "positive": tokens()} for _ in range(4)]
    params = module.init(jax.random.key(1), {k: jnp.asarray(v) for k, v in batches[0]["anchor"].items()})["params"]
    params = jax.tree.map(np.asarray, params)  # host copies: the train step donates its device state
    # The trainer's optimizer (clipping, AdamW with the decay mask, eps 1e-6). Adam's first steps
    # are about lr * sign(g): a gradient entry near eps with a float32 rounding difference (the jit
    # engine's XLA partitioning sums in another order under FSDP) moves its parameter by up to
    # ~lr/4 more, so lr is kept at a fine-tuning size (1e-4) where that stays far below 1e-5 of
    # the parameters; the gradient itself is compared through AdamW's first moment.
    opt = get_config().optim
    opt.lr, opt.warmup_steps = 1e-4, 0
    tx, _ = make_optimizer(opt, total_steps=10)
    return embed_fn(module), params, batches, tx


@functools.lru_cache(maxsize=None)  # one compile per configuration for the whole file
def make_step(n_devices, method, chunk, fsdp):
    """(jitted train step, grad fn, state shardings, param shardings) of the tiny model on the
    first ``n_devices`` devices (a mesh is not a stable cache key: its hash changes per instance)."""
    mesh = make_mesh(n_devices)
    embed, params, _, tx = setup()
    loss = make_column_loss("infonce", temperature=0.05)
    backend = {"shard_map": "shard_map", "jit": "none"}[method]
    grad_fn = make_grad_fn(embed, loss, mesh=mesh if backend == "shard_map" else None, backend=backend,
                           gradcache_chunk=chunk)
    ps = param_shardings(params, mesh, resolve_rules("fsdp"), min_size=MIN_SIZE) if fsdp else None
    state = step_lib.init_state(params, tx, 0)
    shardings = step_lib.state_sharding(state, mesh, tx, ps)
    step = step_lib.jit_train_step(step_lib.make_train_step(grad_fn, tx, param_sharding=ps), mesh, shardings)
    return step, grad_fn, shardings, ps


def fresh_state(shardings):
    _, params, _, tx = setup()
    return jax.device_put(step_lib.init_state(params, tx, 0), shardings)


def run(step, state, mesh, steps):
    _, _, batches, _ = setup()
    losses = []
    for s in steps:
        batch = jax.device_put(batches[s], step_lib.batch_sharded(mesh))
        state, m = step(state, batch, step_lib.step_rng(state["rng"], s))
        losses.append(float(m["loss"]))
    return state, losses


def max_rel(got, want):
    """Tree-wise max over leaves of max|got - want| / max|want|, a leaf's scale floored at 1e-2 of
    the tree's: the attention key bias has an exactly-zero gradient (softmax is shift-invariant),
    so its AdamW state and updates hold only rounding noise (about lr * 1e-13 / eps)."""
    want = jax.tree.map(lambda w: np.asarray(w, np.float64), want)
    floor = 1e-2 * max(float(np.max(np.abs(w), initial=0.0)) for w in jax.tree.leaves(want))
    errs = jax.tree.map(lambda g, w: float(np.max(np.abs(np.asarray(g, np.float64) - w), initial=0.0))
                        / max(float(np.max(np.abs(w), initial=0.0)), floor), got, want)
    return max(jax.tree.leaves(errs))


def assert_sharded(tree, shardings, n):
    """Every leaf placed as asked; each of >= MIN_SIZE elements split n ways, one shard per device."""
    big = 0
    for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(tree), jax.tree.leaves(shardings)):
        assert x.sharding.is_equivalent_to(s, x.ndim), (path, x.sharding, s)
        shards = x.addressable_shards
        assert len(shards) == n
        if x.size >= MIN_SIZE:
            big += 1
            assert "data" in x.sharding.spec, (jax.tree_util.keystr(path), x.shape, x.sharding.spec)
            d = list(x.sharding.spec).index("data")
            want = x.shape[:d] + (x.shape[d] // n,) + x.shape[d + 1:]
            assert all(sh.data.shape == want for sh in shards), (path, [sh.data.shape for sh in shards])
            assert len({sh.device for sh in shards}) == n
            # the shards are disjoint pieces: together they hold each element once
            assert sum(sh.data.size for sh in shards) == x.size
        else:
            assert x.sharding.is_fully_replicated
    assert big > 0
    return big


def test_fsdp_spec_and_rules():
    assert fsdp_spec((100, 32), 8, min_size=512) == P(None, "data")  # 100 is not divisible by 8
    assert fsdp_spec((64, 32), 8, min_size=512) == P("data")        # largest divisible dimension
    assert fsdp_spec((32,), 8, min_size=512) == P()                  # small: replicated
    assert fsdp_spec((99, 7), 8, min_size=1) == P()                  # nothing divisible: replicated
    assert fsdp_spec((64, 32), 1, min_size=1) == P()
    params = {"emb": np.zeros((64, 32)), "dense": {"kernel": np.zeros((32, 64)), "bias": np.zeros(64)}}
    rules = resolve_rules("rules", ((r"kernel$", (None, "data")), ("emb", "replicated"), (".*", "fsdp")))
    specs = param_specs(params, rules, 8, min_size=1)
    assert specs == {"emb": P(), "dense": {"kernel": P(None, "data"), "bias": P("data")}}
    with pytest.raises(ConfigError, match="does not divide"):
        param_specs({"w": np.zeros((6, 6))}, resolve_rules("rules", ((".*", ("data",)),)), 4)
    with pytest.raises(ConfigError, match="use one of"):
        resolve_rules("zero3")
    with pytest.raises(ConfigError, match="param_sharding=rules"):
        resolve_rules("fsdp", ((".*", "fsdp"),))
    with pytest.raises(ConfigError, match="bad regex"):
        resolve_rules("rules", (("(", "fsdp"),))
    with pytest.raises(ConfigError, match="must be 'replicated', 'fsdp'"):
        resolve_rules("rules", ((".*", "zero"),))


@pytest.mark.parametrize("method,chunk", [
    ("shard_map", None), ("shard_map", 1),
    # the jit engine (XLA partitions the global-batch step around the sharded parameters): the
    # slowest compile of the file, -m slow
    pytest.param("jit", 4, marks=pytest.mark.slow)], ids=["shard_map", "shard_map-gradcache", "jit-gradcache"])
def test_fsdp_step_equals_replicated(method, chunk):
    """Two steps with dropout: loss, gradient (AdamW's first moment after step 1 is 0.1 x the
    clipped gradient), updated parameters and optimizer state of FSDP = the replicated step. The
    reference is always the replicated shard_map step without GradCache (GradCache's per-row
    dropout keys make it equal to it: tests/test_parallel_grads.py), one compile for all cases."""
    mesh = make_mesh(8)
    _, params, _, _ = setup()
    rep_step, _, rep_sh, _ = make_step(8, "shard_map", None, fsdp=False)
    fsdp_step, _, fsdp_sh, ps = make_step(8, method, chunk, fsdp=True)
    want, got = fresh_state(rep_sh), fresh_state(fsdp_sh)
    assert_sharded(got["params"], ps, 8)
    assert_sharded(got["opt_state"], fsdp_sh["opt_state"], 8)
    if method == "shard_map" and chunk is None:
        # ZeRO-3's collectives in the compiled step: parameters all-gathered, the gradient
        # reduce-scattered onto the shards (not all-reduced and then sliced)
        _, _, batches, _ = setup()
        hlo = fsdp_step.lower(got, jax.device_put(batches[0], step_lib.batch_sharded(mesh)),
                              step_lib.step_rng(got["rng"], 0)).compile().as_text()
        assert " all-gather(" in hlo and " reduce-scatter(" in hlo
    for s in range(2):
        want, want_loss = run(rep_step, want, mesh, [s])
        got, got_loss = run(fsdp_step, got, mesh, [s])
        np.testing.assert_allclose(got_loss, want_loss, rtol=TOL)
        assert_sharded(got["params"], fsdp_sh["params"], 8)
        assert_sharded(got["opt_state"], fsdp_sh["opt_state"], 8)
        g, w = step_lib.to_host(got), step_lib.to_host(want)
        if s == 0:
            mu = lambda t: t["opt_state"][1][0].mu  # noqa: E731 (chain(clip, adamw): adam's state)
            assert max_rel(mu(g), mu(w)) < TOL
            assert max(float(np.max(np.abs(x))) for x in jax.tree.leaves(mu(w))) > 1e-4  # a real gradient
        assert max_rel(g["params"], w["params"]) < TOL
        assert max_rel(g["opt_state"], w["opt_state"]) < TOL
    # the parameters did move (a step that changed nothing would pass the comparisons above)
    assert max_rel(step_lib.to_host(got["params"]), params) > 1e-3


def test_checkpoint_8_to_4_devices_resumes_exactly(tmp_path):
    """Save the FSDP state on 8 devices, restore it sharded onto 4 (a sub-mesh), continue: equals
    the uninterrupted 8-device run, and the restored leaves are split 4 ways."""
    from sentjax.train.checkpoint import Checkpointer
    mesh8, mesh4 = make_mesh(8), make_mesh(4)
    step8, _, sh8, _ = make_step(8, "shard_map", None, fsdp=True)
    step4, _, sh4, _ = make_step(4, "shard_map", None, fsdp=True)
    want, want_losses = run(step8, fresh_state(sh8), mesh8, range(4))

    state, first = run(step8, fresh_state(sh8), mesh8, range(2))
    ckpt = Checkpointer(str(tmp_path / "ckpt"), async_save=False)
    ckpt.save(2, state, {"step": 2})
    ckpt.wait()
    restored, data = ckpt.restore(fresh_state(sh4))  # the target: 4-device FSDP shardings
    ckpt.close()
    assert data["step"] == 2 and int(step_lib.to_host(restored["step"])) == 2
    assert_sharded(restored["params"], sh4["params"], 4)
    assert_sharded(restored["opt_state"], sh4["opt_state"], 4)
    assert max_rel(step_lib.to_host(restored["params"]), step_lib.to_host(state["params"])) == 0.0
    got, rest = run(step4, restored, mesh4, range(2, 4))
    np.testing.assert_allclose(first + rest, want_losses, rtol=TOL)
    assert max_rel(step_lib.to_host(got["params"]), step_lib.to_host(want["params"])) < TOL
    assert max_rel(step_lib.to_host(got["opt_state"]), step_lib.to_host(want["opt_state"])) < TOL


@pytest.mark.parametrize("overrides,match", [
    ({"parallel.param_sharding": "fsdp", "gradient.method": "pmap"}, "gradient.method='pmap'"),
    ({"parallel.param_sharding": "zero3"}, "use one of"),
    ({"parallel.param_sharding": "rules"}, "needs parallel.rules"),
    ({"parallel.param_sharding": "fsdp", "parallel.fsdp_min_size": -1}, "fsdp_min_size"),
])
def test_unsupported_combinations_refused(tmp_path, overrides, match):
    from sentjax.train.train import train
    from tiny import tiny_config
    with pytest.raises(ConfigError, match=match):
        train(tiny_config(str(tmp_path), **overrides), progress=False)


@pytest.mark.slow
def test_trainer_fsdp_preempted_on_8_resumed_on_4_equals_replicated(tmp_path, monkeypatch):
    """The whole trainer: an FSDP run on 8 devices stopped (SIGTERM path) after step 2, resumed
    with --resume on mesh.data=4, ends on the parameters of an uninterrupted replicated run."""
    import itertools

    from sentjax.train import train as train_mod
    from tiny import tiny_config
    common = {"total_steps": 4, "checkpoint.every_steps": 2}
    fsdp = {"parallel.param_sharding": "fsdp", "parallel.fsdp_min_size": MIN_SIZE}
    want = train_mod.train(tiny_config(str(tmp_path / "rep"), **common, **{"mesh.data": 8}), progress=False)
    c8 = tiny_config(str(tmp_path / "fsdp"), **common, **fsdp, **{"mesh.data": 8})
    stops = itertools.count()
    with monkeypatch.context() as m:
        m.setattr(train_mod._Stop, "everywhere", classmethod(lambda cls: next(stops) >= 1))
        first = train_mod.train(c8, progress=False)
    assert first["preempted_at"] == 2
    state = first["state"]
    assert assert_sharded(state["params"], jax.tree.map(lambda x: x.sharding, state["params"]), 8) > 0
    c4 = tiny_config(str(tmp_path / "fsdp"), **common, **fsdp, **{"mesh.data": 4})
    got = train_mod.train(c4, resume=True, progress=False)
    assert int(step_lib.to_host(got["state"]["step"])) == 4
    assert assert_sharded(got["state"]["opt_state"], jax.tree.map(lambda x: x.sharding, got["state"]["opt_state"]), 4)
    assert max_rel(step_lib.to_host(got["state"]["params"]), step_lib.to_host(want["state"]["params"])) < 2e-5
    assert max_rel(step_lib.to_host(got["state"]["params"]), step_lib.to_host(first["state"]["params"])) > 1e-5
