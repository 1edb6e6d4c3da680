"""Score distillation with the frozen teacher in the step (margin_mse / listwise_kl, scores='teacher'):
equal to the loss on scores precomputed with the same teacher, the in-batch candidates against a
float64 NumPy reference, refusals, and the 1-vs-8-device gradient through the train step's teacher
path with and without GradCache."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.losses.margin_mse import candidate_scores
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.train import train as train_lib
from sentjax.train.objectives import GRADIENT_METHODS, make_objective
from test_gist import B, K, L, setup
from test_parallel_grads import rel_err

NAMES = ("margin_mse", "listwise_kl")
KW = {"margin_mse": {}, "listwise_kl": {"temperature": 0.5, "teacher_temperature": 0.2}}


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def columns(b=6, k=2, d=5, dt=4, seed=0):
    names = ("anchor", "positive", "negative")
    rows = (b, b, b * k)
    e = {n: jnp.asarray(rand(seed + i, r, d), jnp.float32) for i, (n, r) in enumerate(zip(names, rows))}
    e.update({f"teacher:{n}": jnp.asarray(rand(seed + 10 + i, r, dt), jnp.float32)
              for i, (n, r) in enumerate(zip(names, rows))})
    return e


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("name", NAMES)
def test_in_step_teacher_equals_precomputed_scores(name, similarity):
    """The in-step scores are the data layout [t(q,p), t(q,n_1), ...]: loss and gradient identical."""
    e = columns()
    b, k = 6, 2
    t = candidate_scores(e["teacher:anchor"], e["teacher:positive"],
                         e["teacher:negative"].reshape(b, k, -1), similarity)  # "precomputed beforehand"
    in_step = make_objective({"name": name, "scores": "teacher", "similarity": similarity, **KW[name]})
    data = make_objective({"name": name, "similarity": similarity, **KW[name]})
    assert in_step.teacher_fields == ("anchor", "positive", "negative") and not data.teacher_fields
    student = {c: e[c] for c in ("anchor", "positive", "negative")}

    def grads(obj, extra):
        return jax.value_and_grad(lambda s: obj.loss_fn({}, {**s, **extra})[0])(student)
    got, g_got = grads(in_step, {c: v for c, v in e.items() if c.startswith("teacher:")})
    want, g_want = grads(data, {"score": t})
    assert float(got) == float(want)
    for c in student:
        np.testing.assert_array_equal(np.asarray(g_got[c]), np.asarray(g_want[c]))


def np_in_batch(e, name, similarity, t_s=1.0, t_t=1.0):
    """float64: every query against all B (1 + k) candidates (positives, then negatives anchor-major)."""
    def sims(prefix):
        x = {c: np.asarray(e[prefix + c], np.float64) for c in ("anchor", "positive", "negative")}
        if similarity == "cosine":
            x = {c: v / np.linalg.norm(v, axis=1, keepdims=True) for c, v in x.items()}
        return x["anchor"] @ np.concatenate([x["positive"], x["negative"]]).T
    s, t = sims(""), sims("teacher:")
    b, c = s.shape
    losses = []
    for i in range(b):
        if name == "margin_mse":
            losses += [((s[i, i] - s[i, j]) - (t[i, i] - t[i, j])) ** 2 for j in range(c) if j != i]
        else:
            lp = t[i] / t_t - np.log(np.sum(np.exp(t[i] / t_t)))
            lq = s[i] / t_s - np.log(np.sum(np.exp(s[i] / t_s)))
            losses.append(t_s ** 2 * np.sum(np.exp(lp) * (lp - lq)))
    return np.mean(losses)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("name", NAMES)
def test_in_batch_candidates_vs_float64_numpy(name, similarity):
    e = columns(seed=3)
    obj = make_objective({"name": name, "scores": "teacher", "candidates": "in_batch", "similarity": similarity,
                          **KW[name]})
    assert obj.in_batch_negatives  # couples the batch: accumulation is refused for it
    loss, _ = obj.loss_fn({}, e)
    want = np_in_batch(e, name, similarity, *((0.5, 0.2) if name == "listwise_kl" else ()))
    assert float(loss) == pytest.approx(want, rel=1e-5)
    own, _ = make_objective({"name": name, "scores": "teacher", "similarity": similarity, **KW[name]}).loss_fn({}, e)
    assert abs(float(own) - want) > 1e-3  # in-batch candidates really change the loss


def test_refusals_are_clear():
    with pytest.raises(ConfigError, match="candidates='in_batch' needs objective.scores='teacher'"):
        make_objective({"name": "margin_mse", "candidates": "in_batch"})
    with pytest.raises(ConfigError, match="objective.scores='model'"):
        make_objective({"name": "listwise_kl", "scores": "model"})
    with pytest.raises(ConfigError, match="objective.candidates='all'"):
        make_objective({"name": "listwise_kl", "scores": "teacher", "candidates": "all"})
    e = columns()
    with pytest.raises(KeyError, match="margin_mse loss needs a 'teacher:anchor' column"):
        make_objective({"name": "margin_mse", "scores": "teacher"}).loss_fn({}, {"anchor": e["anchor"],
                                                                              "positive": e["positive"],
                                                                              "negative": e["negative"]})
    assert not make_objective({"name": "margin_mse"}).needs_teacher  # precomputed scores: no model loaded


# ------------------------------------------------------------------- 1 vs 8 devices, GradCache

CASES = {f"{n}-{c}": dict(name=n, scores="teacher", candidates=c, similarity="cosine", **KW[n])
         for n in NAMES for c in ("own", "in_batch")}


@functools.lru_cache(maxsize=None)
def reference(case):
    """One device, written directly: for 'own' the loss on scores precomputed with the teacher (the
    data path), for 'in_batch' the loss function on the whole batch."""
    embed, params, teacher, batch = setup()
    g = {c: embed(teacher, batch[c]) for c in batch}
    hp = CASES[case]
    obj = make_objective(hp)
    data = make_objective({k: v for k, v in hp.items() if k not in ("scores", "candidates")})
    t = candidate_scores(g["anchor"], g["positive"], g["negative"].reshape(B, K, -1), "cosine")

    def loss(p):
        e = {c: embed(p["model"], batch[c]) for c in batch}
        if hp["candidates"] == "own":
            return data.loss_fn(p, {**e, "score": t})[0]
        return obj.loss_fn(p, {**e, **{f"teacher:{c}": v for c, v in g.items()}})[0]
    return jax.jit(jax.value_and_grad(loss))(params)


def step_grads(case, engine, chunk):
    embed, params, teacher, batch = setup()
    obj = make_objective(CASES[case])
    mesh = make_mesh(8)
    column_grads = make_grad_fn(functools.partial(train_lib._embed_params, embed), obj.loss_fn, mesh=mesh,
                                backend=GRADIENT_METHODS.get(engine, engine), gradcache_chunk=chunk)
    f = functools.partial(train_lib.objective_grads, column_grads, obj,
                          functools.partial(train_lib._frozen_embed, embed, teacher))
    if engine == "jit":  # the train step's jit: replicated parameters, the batch sharded on "data"
        from jax.sharding import NamedSharding, PartitionSpec as P
        batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
        params = jax.device_put(params, NamedSharding(mesh, P()))
    return f(params, batch, None) if engine == "pmap" else jax.jit(f)(params, batch, None)


# every case x engine once, GradCache on in half of them per engine (each row compiles the tiny
# encoder twice); the losses' own engine x GradCache matrix is test_score_distill.py's
@pytest.mark.parametrize("case,engine,gradcache", [
    ("margin_mse-own", "shard_map", False), ("margin_mse-in_batch", "shard_map", True),
    ("listwise_kl-own", "shard_map", True), ("listwise_kl-in_batch", "shard_map", False),
    ("margin_mse-own", "pmap", True), ("margin_mse-in_batch", "pmap", False),
    ("listwise_kl-own", "pmap", True), ("listwise_kl-in_batch", "pmap", True),
    ("margin_mse-own", "jit", True), ("margin_mse-in_batch", "jit", False),
    ("listwise_kl-own", "jit", False), ("listwise_kl-in_batch", "jit", True)])
def test_8_devices_equal_one_device(case, engine, gradcache):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    want_loss, want = reference(case)
    (loss, metrics), grads = step_grads(case, engine, 1 if gradcache else None)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < 1e-5


# ------------------------------------------------------------------- whole trainer


@pytest.mark.slow  # ~40-80 s on 2 shared cores; the step's math is pinned by the tests above
def test_trainer_runs_margin_mse_with_the_teacher_in_the_step(tmp_path, ws):
    import sentjax
    from tiny import tiny_config
    teacher_dir = sentjax.save(train_lib.build_model(tiny_config(str(tmp_path / "t"))), str(tmp_path / "teacher"))
    sents = open(ws.sentences).read().split("\n")[:48]
    (tmp_path / "tri.tsv").write_text("sent0\tsent1\thard_neg\n" + "".join(
        f"{sents[i]}\t{sents[(i + 1) % 48]}\t{sents[(i + 7) % 48]}\n" for i in range(48)))  # no score column
    c = tiny_config(str(tmp_path / "run"), **{
        "data.datasets": (f"triplets:{tmp_path / 'tri.tsv'}",), "objective.name": "margin_mse",
        "objective.scores": "teacher", "objective.teacher": teacher_dir, "objective.candidates": "in_batch",
        "total_steps": 2, "batch_size": 8, "checkpoint.every_steps": 2})
    s = train_lib.train(c, progress=False)
    assert np.isfinite(s["final"]["loss"]) and s["final"]["loss"] > 0
    c = tiny_config(str(tmp_path / "run2"), **{"objective.name": "margin_mse", "objective.scores": "teacher",
                                                "objective.teacher": teacher_dir, "objective.candidates": "in_batch",
                                                "accum_steps": 2})
    with pytest.raises(ConfigError, match="accum_steps=2 with objective 'margin_mse'"):
        train_lib.train(c, progress=False)
