"""Score distillation objectives (margin_mse, listwise_kl) against teacher scores in the data.

float64 NumPy references (loss and gradient w.r.t. the embeddings), sentence-transformers'
MarginMSELoss / DistillKLDivLoss (torch, CPU) on the same embeddings, the 1-vs-8-device training
gradient under every engine with and without GradCache, and the scored-triplets data path.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from sentjax.data import sources
from sentjax.data.pipeline import Pipeline
from sentjax.errors import ConfigError
from sentjax.losses import make_column_loss
from sentjax.losses.listwise_kl import listwise_kl_loss
from sentjax.losses.margin_mse import margin_mse_loss
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.parallel.dropout_keys import row_keys
from sentjax.parallel.global_grads import BACKENDS
from sentjax.train import objectives as train_objectives
from toy import random_tokens, toy_embed

NAMES = ("margin_mse", "listwise_kl")


def embeddings(b=6, k=3, d=5, seed=0):
    rng = np.random.default_rng(seed)
    q, p = rng.normal(size=(b, d)), rng.normal(size=(b, d))
    n = rng.normal(size=(b, k, d))
    t = rng.normal(size=(b, k + 1)) * 2
    return q, p, n, t


# ------------------------------------------------------------------ float64 NumPy references


def np_scores(q, p, n, similarity="dot"):
    if similarity == "cosine":
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
        q, p, n = unit(q), unit(p), unit(n)
    return np.concatenate([np.sum(q * p, -1)[:, None], np.einsum("bd,bkd->bk", q, n)], axis=1)


def np_margin_mse(q, p, n, t, similarity="dot"):
    """Loss and (dot) gradients w.r.t. q, p, n; ``t`` raw teacher scores [b, k + 1]."""
    s = np_scores(q, p, n, similarity)
    b, c = s.shape
    err = (s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])
    g = 2 * err / (b * (c - 1))  # dL / d margin
    dq = np.einsum("bk,bkd->bd", g, p[:, None, :] - n)
    dp = g.sum(1)[:, None] * q
    dn = -g[:, :, None] * q[:, None, :]
    return np.mean(err ** 2), (dq, dp, dn)


def np_listwise_kl(q, p, n, t, t_s=1.0, t_t=1.0, similarity="dot"):
    s = np_scores(q, p, n, similarity)
    b = s.shape[0]

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))
    log_q, log_p = log_softmax(s / t_s), log_softmax(t / t_t)
    pt = np.exp(log_p)
    loss = t_s ** 2 * np.sum(pt * (log_p - log_q)) / b
    g = t_s * (np.exp(log_q) - pt) / b  # dL / ds
    cands = np.concatenate([p[:, None, :], n], axis=1)
    dq = np.einsum("bc,bcd->bd", g, cands)
    dc = g[:, :, None] * q[:, None, :]
    return loss, (dq, dc[:, 0], dc[:, 1:])


def jax_grads(loss_fn, q, p, n, t, **kw):
    f = lambda q, p, n: loss_fn(q, p, n, jnp.asarray(t, jnp.float32), **kw)[0]  # noqa: E731
    args = [jnp.asarray(x, jnp.float32) for x in (q, p, n)]
    return jax.value_and_grad(f, argnums=(0, 1, 2))(*args)


@pytest.mark.parametrize("layout", ["raw", "margins"])
def test_margin_mse_matches_float64_numpy(layout):
    q, p, n, t = embeddings()
    want, want_g = np_margin_mse(q, p, n, t)
    labels = t if layout == "raw" else t[:, :1] - t[:, 1:]
    got, got_g = jax_grads(margin_mse_loss, q, p, n, labels)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-6 * np.abs(w).max())


def test_margin_mse_one_negative_takes_a_margin_vector_and_cosine():
    q, p, n, t = embeddings(k=1)
    margin = t[:, 0] - t[:, 1]
    loss, _ = margin_mse_loss(*(jnp.asarray(x, jnp.float32) for x in (q, p, n, margin)))
    np.testing.assert_allclose(float(loss), np_margin_mse(q, p, n, t)[0], rtol=1e-5)
    loss, _ = margin_mse_loss(*(jnp.asarray(x, jnp.float32) for x in (q, p, n, t)), similarity="cosine")
    np.testing.assert_allclose(float(loss), np_margin_mse(q, p, n, t, "cosine")[0], rtol=1e-5)


@pytest.mark.parametrize("temps", [(1.0, 1.0), (2.0, 0.5), (0.05, 0.05)], ids=["T1", "Ts2-Tt0.5", "T0.05"])
def test_listwise_kl_matches_float64_numpy(temps):
    q, p, n, t = embeddings()
    t_s, t_t = temps
    want, want_g = np_listwise_kl(q, p, n, t, t_s, t_t)
    got, got_g = jax_grads(listwise_kl_loss, q, p, n, t, student_temperature=t_s, teacher_temperature=t_t)
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
    for g, w in zip(got_g, want_g):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    cos, _ = listwise_kl_loss(*(jnp.asarray(x, jnp.float32) for x in (q, p, n, t)), temperature=0.1,
                              similarity="cosine")
    np.testing.assert_allclose(float(cos), np_listwise_kl(q, p, n, t, 0.1, 0.1, "cosine")[0], rtol=1e-4)


def test_listwise_kl_teacher_probability_underflow_is_zero_not_nan():
    q, p, n, t = embeddings()
    t[:, 1] = -1e4  # exp underflows to exactly 0 in float32: 0 * log 0 must count as 0
    loss, grads = jax_grads(listwise_kl_loss, q, p, n, t)
    assert np.isfinite(float(loss)) and all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    np.testing.assert_allclose(float(loss), np_listwise_kl(q, p, n, t)[0], rtol=1e-4)


# ------------------------------------------------------------------ sentence-transformers (torch)


@pytest.mark.parametrize("similarity", ["dot", "cosine"])
@pytest.mark.parametrize("name", NAMES)
def test_equals_sentence_transformers(name, similarity):
    torch = pytest.importorskip("torch")
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    from sentence_transformers.util import pairwise_cos_sim, pairwise_dot_score
    q, p, n, t = embeddings(b=8, k=2, d=16, seed=1)
    sim = {"dot": pairwise_dot_score, "cosine": pairwise_cos_sim}[similarity]
    if name == "margin_mse":
        st = st_losses.MarginMSELoss(None, similarity_fct=sim)
        kw = dict(similarity=similarity)
        fn = margin_mse_loss
    else:
        st = st_losses.DistillKLDivLoss(None, similarity_fct=sim, student_temperature=0.5, teacher_temperature=2.0)
        kw = dict(similarity=similarity, student_temperature=0.5, teacher_temperature=2.0)
        fn = listwise_kl_loss
    tq, tp = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (q, p))
    tn = [torch.tensor(n[:, j], dtype=torch.float32, requires_grad=True) for j in range(n.shape[1])]
    want = st.compute_loss_from_embeddings([tq, tp, *tn], torch.tensor(t, dtype=torch.float32))
    want.backward()
    got, (gq, gp, gn) = jax_grads(fn, q, p, n, t, **kw)
    np.testing.assert_allclose(float(got), want.item(), rtol=1e-5, atol=1e-6)
    want_n = np.stack([x.grad.numpy() for x in tn], axis=1)
    for g, w in ((gq, tq.grad.numpy()), (gp, tp.grad.numpy()), (gn, want_n)):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-5 * np.abs(w).max())


# ------------------------------------------------------------------ bad input, bad config


def test_bad_scores_and_configs_are_refused_clearly():
    q, p, n, t = (jnp.asarray(x, jnp.float32) for x in embeddings(b=4, k=2))
    with pytest.raises(ValueError, match=r"do not fit 4 queries with 2 negative\(s\).*\[4, 3\]"):
        margin_mse_loss(q, p, n, t[:, 0])  # a margin vector needs k = 1
    with pytest.raises(ValueError, match=r"expected \(4, 3\).*t\(q, positive\)"):
        listwise_kl_loss(q, p, n, t[:, :2])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        listwise_kl_loss(q, p, n, t, temperature=0.0)
    for name in NAMES:
        loss_fn = make_column_loss(name)
        with pytest.raises(KeyError, match=f"the {name} loss needs a 'negative' column"):
            loss_fn({}, {"anchor": q, "positive": p, "score": t})
        with pytest.raises(ValueError, match="negative column of \\[b \\* k, dim\\] rows for the 4 anchors"):
            loss_fn({}, {"anchor": q, "positive": p, "negative": n.reshape(8, -1)[:5], "score": t})
        with pytest.raises(ConfigError, match="similarity='l2'.*dot"):
            train_objectives.make_objective({"name": name, "similarity": "l2"})
    with pytest.raises(ConfigError, match="teacher_temperature must be > 0, or 0"):
        train_objectives.make_objective({"name": "listwise_kl", "teacher_temperature": -1.0})


# ------------------------------------------------------------------ 1 vs 8 devices, every engine


B, L, V, D, K = 16, 6, 50, 8, 2




@functools.lru_cache(maxsize=None)
def toy_data():
    rng = np.random.default_rng(0)

    def tokens(n):
        return random_tokens(rng, n, L, V)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"emb": jax.random.normal(k1, (V, D)), "w": jax.random.normal(k2, (D, D)) / 3}
    cols = {"anchor": tokens(B), "positive": tokens(B), "negative": tokens(B * K),
            "score": jnp.asarray(rng.normal(size=(B, K + 1)) * 3, jnp.float32)}
    return params, cols


CASES = {  # name -> (objective block, direct single-device loss of (q, p, n [B, K, d], scores))
    "margin_mse": ({"name": "margin_mse"}, lambda q, p, n, s: margin_mse_loss(q, p, n, s)[0]),
    "listwise_kl": ({"name": "listwise_kl", "temperature": 2.0, "teacher_temperature": 0.5},
                    lambda q, p, n, s: listwise_kl_loss(q, p, n, s, temperature=2.0, teacher_temperature=0.5)[0]),
}
ENGINES = tuple(BACKENDS) + tuple(m for m in train_objectives.GRADIENT_METHODS if m not in BACKENDS)
GC_CHUNK = {"shard_map": 1, "pmap": 1, "none": 4, "jit": 4}


@functools.lru_cache(maxsize=None)
def reference(case):
    """Single device, written directly with the per-row dropout keys of dropout_keys."""
    params, cols = toy_data()
    rng = jax.random.key(3)

    def emb(p, column):
        n = cols[column]["input_ids"].shape[0]
        keys = row_keys(rng, column, 0, n)
        return jax.vmap(lambda t, k: toy_embed(p, jax.tree.map(lambda x: x[None], t), k)[0])(cols[column], keys)

    def loss(p):
        return CASES[case][1](emb(p, "anchor"), emb(p, "positive"), emb(p, "negative").reshape(B, K, D),
                              cols["score"])
    return jax.jit(jax.value_and_grad(loss))(params)


def rel_err(got, want):
    return max(jax.tree.leaves(jax.tree.map(
        lambda g, w: float(jnp.max(jnp.abs(g - w)) / jnp.maximum(jnp.max(jnp.abs(w)), 1e-30)), got, want)))


def test_every_score_objective_is_in_the_matrix():
    assert {CASES[c][0]["name"] for c in CASES} == set(NAMES)
    assert set(NAMES) <= set(train_objectives.OBJECTIVES)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_engine_equals_single_device(case, gradcache, engine):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake) devices")
    params, cols = toy_data()
    want_loss, want = reference(case)
    objective = train_objectives.make_objective(CASES[case][0])
    mesh = make_mesh(8)
    backend = train_objectives.GRADIENT_METHODS.get(engine, engine)
    f = make_grad_fn(toy_embed, objective.loss_fn, mesh=mesh, backend=backend,
                     gradcache_chunk=GC_CHUNK[engine] if gradcache else None)
    if engine == "jit":  # the train step's jit: replicated parameters, the batch sharded on "data"
        rep = NamedSharding(mesh, P())
        f = jax.jit(f, in_shardings=(rep, NamedSharding(mesh, P("data")), rep), out_shardings=rep)
    elif engine != "pmap":
        f = jax.jit(f)
    (loss, metrics), grads = f(params, train_objectives.select_columns(objective, cols), jax.random.key(3))
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < 1e-5


# ------------------------------------------------------------------ data: scored triplets


def write_scored(path, rows):
    path.write_text("sent0\tsent1\thard_neg\tpos_score\tneg_score\n" +
                    "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return str(path)


def test_scored_triplets_travel_with_the_batch(tmp_path, tok):
    rows = [(f"query {i}", f"positive text {i}", f"negative text {i}", 0.5 + i / 100, 0.1 - i / 100)
            for i in range(12)]
    src = sources.load_source("scored-triplets:" + write_scored(tmp_path / "s.tsv", rows))
    assert src.kind == "scored" and src.columns["score"].shape == (12, 2)
    pipe = Pipeline([src], tok, 8, seed=0, process_index=0, process_count=1)
    batch = pipe.batch(0)
    texts = pipe.texts(0)
    assert batch["negative"]["input_ids"].shape[0] == 8 and batch["score"].shape == (8, 2)
    for i, idx in enumerate(texts["indices"]):  # each row's scores are its own triplet's
        np.testing.assert_allclose(batch["score"][i], rows[idx][3:], rtol=1e-6)
        assert texts["anchor"][i] == rows[idx][0] and texts["negative"][i] == rows[idx][2]
    objective = train_objectives.make_objective({"name": "listwise_kl"})
    assert set(train_objectives.select_columns(objective, batch)) == {"anchor", "positive", "negative", "score"}


def test_scored_triplets_bad_rows_are_named(tmp_path):
    bad = write_scored(tmp_path / "bad.tsv", [("q", "p", "n", 0.5, "high")])
    with pytest.raises(sources.DataError, match=r"row 1 after the header: neg_score is 'high', not a finite"):
        sources.load_source("scored-triplets:" + bad)
    (tmp_path / "nohead.tsv").write_text("sent0\tsent1\thard_neg\nq\tp\tn\n")
    with pytest.raises(sources.DataError, match=r"missing column\(s\) \['pos_score', 'neg_score'\]"):
        sources.load_source(f"scored-triplets:{tmp_path / 'nohead.tsv'}")
