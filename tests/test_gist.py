"""GISTEmbed (sentjax/losses/gist.py): float64 NumPy reference, sentence-transformers' GISTEmbedLoss
on the same embeddings (value and gradient), the positive is never masked, refusals, the
1-vs-8-device gradient through the train step's guide path with and without GradCache, and one
whole-trainer run on the tiny workspace."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.errors import ConfigError
from sentjax.losses.gist import gist_loss
from sentjax.models.config import EncoderConfig
from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
from sentjax.parallel import make_grad_fn, make_mesh
from sentjax.train import train as train_lib
from sentjax.train.objectives import GRADIENT_METHODS, make_objective
from test_parallel_grads import rel_err


def rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def lse(x):
    m = np.max(x)
    return m + np.log(np.sum(np.exp(x - m)))


def ref_gist(a, p, n, ga, gp, gn, t, strategy, margin, contrast_anchors=True, contrast_positives=True):
    """Loop-per-anchor float64 reference of the module doc: (loss, accuracy, masked fraction)."""
    a, p, ga, gp = (unit(x.astype(np.float64)) for x in (a, p, ga, gp))
    b = a.shape[0]
    n_rows = [] if n is None else list(unit(n.astype(np.float64)).reshape(-1, a.shape[1]))
    gn_rows = [] if gn is None else list(unit(gn.astype(np.float64)).reshape(-1, ga.shape[1]))
    losses, hits, masked, total = [], 0, 0, 0
    for i in range(b):
        g_pos = ga[i] @ gp[i]
        thr = g_pos - (margin if strategy == "absolute" else abs(g_pos) * margin)
        kept = [(a[i] @ p[i] / t, True)]  # (logit, is the positive)
        cands = [(a[i] @ p[j], ga[i] @ gp[j]) for j in range(b) if j != i]
        if contrast_anchors:
            cands += [(a[i] @ a[j], ga[i] @ ga[j]) for j in range(b) if j != i]
        if contrast_positives:
            cands += [(p[i] @ p[j], gp[i] @ gp[j]) for j in range(b) if j != i]
        cands += [(a[i] @ x, ga[i] @ g) for x, g in zip(n_rows, gn_rows)]
        for s, g in cands:
            total += 1
            if g > thr:
                masked += 1
            else:
                kept.append((s / t, False))
        logits = np.array([x for x, _ in kept])
        losses.append(lse(logits) - logits[0])
        hits += int(np.argmax(logits) == 0)
    return np.mean(losses), hits / b, masked / total


def f32(x):
    return None if x is None else jnp.asarray(x, jnp.float32)


def case_embeddings(k, seed=0, b=7, d=6, dg=5):
    a, p = rand(seed, b, d), rand(seed + 1, b, d)
    p[:4] = a[:4] + 0.3 * p[:4]  # some pairs close, some not
    ga, gp = rand(seed + 2, b, dg), rand(seed + 3, b, dg)
    gp[:3] = ga[:3] + 0.2 * gp[:3]  # the guide rates some positives high, some low
    n = rand(seed + 4, b, k, d) if k else None
    gn = rand(seed + 5, b, k, dg) if k else None
    return a, p, n, ga, gp, gn


@pytest.mark.parametrize("strategy,margin", [("absolute", 0.0), ("absolute", 0.3), ("relative", 0.5)])
@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("contrast", [(True, True), (False, False), (True, False)])
def test_vs_float64_numpy(strategy, margin, k, contrast):
    emb = case_embeddings(k)
    loss, met = gist_loss(*map(f32, emb), temperature=0.05, margin_strategy=strategy, margin=margin,
                          contrast_anchors=contrast[0], contrast_positives=contrast[1])
    want, acc, masked = ref_gist(*emb, 0.05, strategy, margin, *contrast)
    assert 0.0 < masked < 1.0  # the guide removes some candidates and keeps others
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(met["accuracy"]) == pytest.approx(acc)
    assert float(met["masked"]) == pytest.approx(masked)


def test_positive_is_never_masked_and_masking_changes_the_loss():
    a, p, n, ga, gp, gn = case_embeddings(1)
    # a guide that rates every candidate above every positive (g(a, p) = 0, the rest 0 or 1, margin
    # 0.5): only the positives stay -> loss 0
    e1, e2 = np.eye(ga.shape[1])[[0] * len(ga)], np.eye(ga.shape[1])[[1] * len(ga)]
    loss, met = gist_loss(*map(f32, (a, p, n, e1, e2)), f32(e1[:, None]), temperature=0.05, margin=0.5)
    assert float(loss) == 0.0 and float(met["accuracy"]) == 1.0 and float(met["masked"]) == 1.0
    # a guide that masks nothing (each positive at the top): InfoNCE over [ap | aa | pp | an]
    same = np.ones_like(ga)
    plain, met = gist_loss(*map(f32, (a, p, n)), f32(same), f32(same), f32(-np.ones_like(gn)),
                           temperature=0.05, margin=0.0)
    guided, _ = gist_loss(*map(f32, (a, p, n, ga, gp, gn)), temperature=0.05)
    assert float(met["masked"]) == 0.0 and float(guided) < float(plain) - 1e-3


def test_equals_sentence_transformers_gistembedloss(monkeypatch):
    torch = pytest.importorskip("torch")
    ge = pytest.importorskip("sentence_transformers.sentence_transformer.losses.gist_embed")
    for strategy, margin, k, contrast in [("absolute", 0.0, 1, (True, True)), ("relative", 0.4, 1, (True, False)),
                                          ("absolute", 0.2, 0, (False, True))]:
        emb = case_embeddings(k, seed=3, b=8, d=16, dg=12)
        st = ge.GISTEmbedLoss.__new__(ge.GISTEmbedLoss)
        torch.nn.Module.__init__(st)  # GISTEmbedLoss.__init__ needs two real models; set its fields
        st.model, st.guide, st.temperature = "student", "guide", 0.05
        st.similarity_fct, st.cross_entropy_loss = torch.nn.CosineSimilarity(dim=-1), torch.nn.CrossEntropyLoss()
        st.must_retokenize, st.margin_strategy, st.margin = False, strategy, margin
        st.contrast_anchors, st.contrast_positives, st.gather_across_devices = *contrast, False
        a, p, n, ga, gp, gn = emb
        student = [torch.tensor(x, dtype=torch.float32, requires_grad=True)
                   for x in (a, p) + ((n[:, 0],) if k else ())]
        guide = [torch.tensor(x, dtype=torch.float32) for x in (ga, gp) + ((gn[:, 0],) if k else ())]
        monkeypatch.setattr(ge, "embed_columns", lambda model, feats: {"student": student, "guide": guide}[model])
        want = st([{} for _ in student], None)
        want.backward()
        kw = dict(temperature=0.05, margin_strategy=strategy, margin=margin, contrast_anchors=contrast[0],
                  contrast_positives=contrast[1])
        guide_args = tuple(map(f32, (ga, gp, gn)))

        def loss(a, p, n):
            return gist_loss(a, p, n, *guide_args, **kw)[0]
        got, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(*map(f32, (a, p, n)))
        assert abs(float(got) - want.item()) < 1e-5
        for g, w in zip(grads, student):
            w = w.grad.numpy().reshape(np.shape(g))
            np.testing.assert_allclose(np.asarray(g), w, atol=1e-5 * max(1.0, np.abs(w).max()))


def test_bad_input_and_configs_are_refused_clearly():
    a, p, n, ga, gp, gn = map(f32, case_embeddings(2))
    with pytest.raises(ValueError, match="margin_strategy='linear'"):
        gist_loss(a, p, n, ga, gp, gn, margin_strategy="linear")
    with pytest.raises(ValueError, match="student and the guide, or of neither"):
        gist_loss(a, p, n, ga, gp, None)
    with pytest.raises(ValueError, match="guide embedded 3 anchors for the student's 7"):
        gist_loss(a, p, n, ga[:3], gp[:3], gn[:3])
    with pytest.raises(ConfigError, match="objective 'gist'.*margin_strategy='linear'"):
        make_objective({"name": "gist", "margin_strategy": "linear"})
    with pytest.raises(ConfigError, match="objective 'gist'.*margin must be >= 0"):
        make_objective({"name": "gist", "margin": -0.1})
    with pytest.raises(KeyError, match="needs a 'teacher:anchor' column"):
        make_objective({"name": "gist"}).loss_fn({}, {"anchor": a, "positive": p})
    obj = make_objective({"name": "gist", "use_hard_negatives": False})
    assert obj.needs_teacher and obj.in_batch_negatives and obj.teacher_fields == ("anchor", "positive")


def test_a_guide_with_another_vocabulary_is_refused(ws, tok):
    from types import SimpleNamespace
    from tokenizers import Tokenizer as Backend, models
    from sentjax.tokenization import Tokenizer
    other = Tokenizer(Backend(models.WordPiece({"[PAD]": 0, "[UNK]": 1, "x": 2}, unk_token="[UNK]")))
    obj = make_objective({"name": "gist"})
    with pytest.raises(ConfigError, match="the frozen guide reads the student's tokens.*another vocabulary"):
        train_lib.check_teacher_vocabulary(obj, SimpleNamespace(tokenizer=other), SimpleNamespace(tokenizer=tok))
    train_lib.check_teacher_vocabulary(obj, SimpleNamespace(tokenizer=tok), SimpleNamespace(tokenizer=tok))


# ------------------------------------------------------------------- 1 vs 8 devices, GradCache

N_DEV, B, L, K = 8, 16, 8, 2
HP = dict(temperature=0.05, margin_strategy="absolute", margin=0.0)


@functools.lru_cache(maxsize=None)
def setup():
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    module = SentenceEncoderModule(cfg, pooling="mean")
    rng = np.random.default_rng(0)

    def tokens(n):
        ids = rng.integers(5, 100, (n, L)).astype(np.int32)
        mask = (np.arange(L)[None, :] < rng.integers(3, L + 1, n)[:, None]).astype(np.int32)
        return {"input_ids": jnp.asarray(ids * mask), "attention_mask": jnp.asarray(mask),
                "token_type_ids": jnp.zeros((n, L), jnp.int32)}
    batch = {"anchor": tokens(B), "positive": tokens(B), "negative": tokens(B * K)}
    student = module.init(jax.random.key(1), batch["anchor"])["params"]
    guide = module.init(jax.random.key(2), batch["anchor"])["params"]
    return embed_fn(module), {"model": student}, guide, batch


@functools.lru_cache(maxsize=None)
def reference():
    """One device, written directly: the student's gradient with the guide's embeddings fixed."""
    embed, params, guide, batch = setup()
    g = {c: embed(guide, batch[c]) for c in batch}

    def loss(p):
        e = {c: embed(p["model"], batch[c]) for c in batch}
        return gist_loss(e["anchor"], e["positive"], e["negative"].reshape(B, K, -1), g["anchor"], g["positive"],
                         g["negative"].reshape(B, K, -1), **HP)
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def train_step_grads(engine, chunk):
    """The train step's path: train.objective_grads adds the guide's teacher:<column> embeddings."""
    embed, params, guide, batch = setup()
    objective = make_objective({"name": "gist", **HP})
    mesh = make_mesh(N_DEV)
    column_grads = make_grad_fn(functools.partial(train_lib._embed_params, embed), objective.loss_fn, mesh=mesh,
                                backend=GRADIENT_METHODS.get(engine, engine), gradcache_chunk=chunk)
    calls = []

    def guide_embed(tokens):
        calls.append(tokens["input_ids"].shape)  # at trace time: one call per column and step
        return train_lib._frozen_embed(embed, guide, tokens)
    f = functools.partial(train_lib.objective_grads, column_grads, objective, guide_embed)
    if engine == "jit":  # the train step's jit: replicated parameters, the batch sharded on "data"
        from jax.sharding import NamedSharding, PartitionSpec as P
        batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
        params = jax.device_put(params, NamedSharding(mesh, P()))
    out = f(params, batch, None) if engine == "pmap" else jax.jit(f)(params, batch, None)
    return out, calls


@pytest.mark.parametrize("engine", ["shard_map", "pmap", "jit"])
@pytest.mark.parametrize("gradcache", [False, True], ids=["plain", "gradcache"])
def test_8_devices_equal_one_device(engine, gradcache):
    if jax.device_count() < N_DEV:
        pytest.skip("needs 8 (fake) devices; see tests/conftest.py")
    (want_loss, want_met), want = reference()
    assert 0.1 < float(want_met["masked"]) < 0.9  # the guide's masks matter in this case
    ((loss, metrics), grads), calls = train_step_grads(engine, 1 if gradcache else None)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
    assert float(metrics["masked"]) == pytest.approx(float(want_met["masked"]))
    assert float(metrics["nonfinite"]) == 0.0
    assert rel_err(grads, want) < 1e-5
    # the guide embeds the whole batch once per step, not once per GradCache chunk
    assert sorted(calls) == sorted([(B, L), (B, L), (B * K, L)])


# ------------------------------------------------------------------- whole trainer


@pytest.mark.slow  # ~40-80 s on 2 shared cores; the step's math is pinned by the tests above
def test_trainer_runs_gist_with_a_saved_guide(tmp_path, ws):
    import sentjax
    from tiny import tiny_config
    guide_model = train_lib.build_model(tiny_config(str(tmp_path / "g")))
    guide_dir = sentjax.save(guide_model, str(tmp_path / "guide"))
    c = tiny_config(str(tmp_path / "run"), **{
        "objective.name": "gist", "objective.guide": guide_dir,
        "objective.temperature": 0.05, "total_steps": 2, "batch_size": 8, "checkpoint.every_steps": 2})
    s = train_lib.train(c, progress=False)
    assert np.isfinite(s["final"]["loss"]) and 0.0 <= s["final"]["masked"] <= 1.0
    readme = open(os.path.join(s["final_model"], "README.md")).read()
    assert "guide (frozen)" in readme and "2402.16829" in readme
