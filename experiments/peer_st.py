"""Peer comparison (issue 5, item 6; issue 16): the same run in sentjax and in sentence-transformers.

  python experiments/peer_st.py simcse_unsup --seeds 0,1,2
  python experiments/peer_st.py sbert_nli --seeds 0,1,2
  python experiments/peer_st.py gist --seeds 0,1,2 --threads 1        (recipes_distill's GIST row)
  python experiments/peer_st.py margin_mse --seeds 0,1,2 --threads 1  (recipes_distill's MarginMSE row)
  python experiments/peer_st.py matryoshka --seeds 0,1,2 --threads 1  (experiments/matryoshka.py's main row)
  python experiments/peer_st.py simcse_unsup --seeds 0 --smoke --out /tmp/o --workroot /tmp/w   (test)

``--threads N`` sets torch's CPU threads (default 2). On a machine whose cores are busy with other
jobs use ``--threads 1``: two spinning OpenMP threads on an oversubscribed CPU made an AdamW step of
MiniLM ~40x slower (4 s instead of 0.1 s) here, while one thread is unaffected.

For one row of an experiment module (``PEERS``: simcse_unsup: "None (dropout only = unsup. SimCSE)";
sbert_nli: ``sbert_nli.MAIN``, the (u, v, |u-v|) softmax row; gist / margin_mse: those rows of
``recipes_distill``; matryoshka: ``matryoshka.MAIN``) and each seed, both engines train
from one config, ``run.build_config(mod, row, seed, smoke, workroot)``, and are evaluated by one
function, ``run.evaluate_model`` (STS-B dev, SICK-R trial; Spearman x100 of cosine), plus for
sbert_nli the SNLI dev accuracy of the trained softmax head (``sbert_nli.extra_eval``) and for
matryoshka STS-B dev at every truncation 256..32 (``matryoshka.extra_eval``).

  sentjax                ``sentjax.train.train.train(cfg)``, the exported final model.
  sentence-transformers  an explicit PyTorch loop (CPU, ``torch.set_num_threads(2)``) over
                         ``Transformer -> Pooling [-> Dense(tanh)]`` and the ST loss module
                         (``make_st_loss``: ``MultipleNegativesRankingLoss(scale=1/T)``,
                         ``SoftmaxLoss``, ``GISTEmbedLoss``, ``MarginMSELoss``,
                         ``MatryoshkaLoss(MultipleNegativesRankingLoss)``): forward, backward, clip, AdamW
                         step, scheduler step; ``model.train()`` (GIST's guide stays in eval mode).

Matched exactly:
  * initial encoder weights: the model folder of ``cfg.model.init_from`` (all-MiniLM-L6-v2), or for a
    random init (recipes_distill's 2-layer width-128 student, every smoke run) sentjax's seeded initial
    encoder exported by ``sentjax.save`` to ``<workdir>_st_init`` and loaded by ST (``model_dir``);
    ``initial_check`` in peer.json is the largest |difference| between the two untrained
    encoders' embeddings of the first batch (float rounding, ~1e-6) and whether both tokenizers
    give the same token ids;
  * the loss: ``loss_check`` (also in ``initial_check``) evaluates sentjax's objective and the ST loss
    module on the first 8 rows of batch 0 with fresh models and dropout off; they agree to float32
    printing (smoke runs of gist, margin_mse, matryoshka: |diff| 0, tests/test_peer_st.py). The columns
    are (anchor, positive[, negative]) in that order for both. GIST: the guide (all-MiniLM-L6-v2) embeds
    the student's tokens in both (same vocabulary, so ST does not re-tokenize), and both mask a
    candidate when its guide score is > the guide's anchor-positive score minus the margin (absolute,
    0: GISTEmbedLoss's default rule, which sentjax's gist implements; the positive itself never), over
    the same blocks (ap, aa, pp, an). MarginMSE: ST gets the data's teacher scores [b, 2] in float32
    and takes the margin t(q, p) - t(q, n) itself, as sentjax does; student score = dot product of
    the unit-norm (Normalize) embeddings in both. Matryoshka: the sum, weights 1, of MNRL(scale 20)
    over the embeddings cut to 384..32 (ST re-normalises in cos_sim, sentjax in the inner InfoNCE);
  * the trainable heads' initial values: SimCSE's MLP (CLS -> Dense 384 -> tanh, training only)
    and the Sentence-BERT classifier are copied from sentjax's seeded init
    (``train.init_params``) into ``Dense(init_weight=...)`` / ``SoftmaxLoss.classifier``;
  * data and order: the sentjax ``Pipeline`` is rebuilt from the same config
    (``train.build_pipeline``) and step ``s`` of the torch loop gets the texts (and NLI labels)
    of ``pipeline.global_indices(s)``, in the same row order (``batch_texts``);
  * steps, batch size, max sequence length (truncation), pooling, loss (temperature 0.05 =
    scale 20; (u, v, |u-v|) concatenation, cross-entropy), AdamW (b1, b2, eps 1e-6, decoupled
    weight decay 0.01, none on biases / LayerNorm), the learning rate of every step (the table
    of ``sentjax.train.optim.linear_warmup_decay`` with ``warmup_steps_of``: the first update
    uses lr(0), as optax does), global-norm clipping at 1.0.
  Check (fresh models, dropout off, first batch of seed 0, batch 8): the loss of sentjax's
  objective and of the ST loss module agree to float32 printing (SimCSE 0.0089514,
  Sentence-BERT 1.0601233).
Not matched (cannot be):
  * dropout masks: JAX's threefry keys vs torch's Philox/MT generator (``torch.manual_seed(seed)``);
    with dropout (p = 0.1) on, the runs diverge from step 1, which is why the comparison is over
    seeds (the sentjax mean against the peer's seed spread) and not step by step;
  * float kernels: XLA CPU vs PyTorch (oneDNN / MKL) matmuls, softmax and layer norm round
    differently (~1e-6 relative per op);
  * torch's ``clip_grad_norm_`` scales by ``1 / (norm + 1e-6)``, optax by ``1 / norm``; torch's
    AdamW multiplies by ``1 - lr * wd`` before the Adam step, optax adds ``lr * wd * p`` to it (the
    same update, rounded differently);
  * padding: sentjax pads a batch to a length bucket (multiple of 8) and ST merges the anchor
    and positive columns into one forward padded to the longest text; masked, so only rounding;
  * smoke mode (``--smoke``): both sides start from run.py's tiny random encoder (sentjax's seeded
    init, exported for ST), 3 steps of batch 8 each, first 64 STS-B dev pairs: it checks the path
    and the start / loss agreement, not the numbers.

Outputs: ``<out>/peer.json`` (per-seed numbers, losses per step, wall times, versions),
``<out>/peer.md`` (the table) and, not in smoke mode and only with the default ``--out``, the
``<name>-peer`` section of ``experiments/RESULTS.md``. Defaults: ``--out experiments/results/<module>`` for a module's main row,
``experiments/results/<module>/peer_<name>`` for another row (``default_out``), ``--workroot
runs/peer/<name>``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
from typing import Any, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import run  # noqa: E402  (experiments/run.py)

# peer name -> (experiment module, row; None = the module's main row)
PEERS: dict[str, tuple[str, str | None]] = {
    "simcse_unsup": ("simcse_unsup", None),
    "sbert_nli": ("sbert_nli", None),
    "gist": ("recipes_distill", "GIST, guide all-MiniLM-L6-v2, T = 0.05"),
    "margin_mse": ("recipes_distill", "MarginMSE"),
    "matryoshka": ("matryoshka", None),
}
EXPERIMENTS = tuple(PEERS)
METRICS = ("stsb_dev", "sickr_trial", "snli_dev_acc")
ENGINES = ("sentjax", "sentence-transformers")


def main_row(mod) -> str:
    return getattr(mod, "MAIN", next(iter(mod.ROWS)))


def peer_of(name: str) -> tuple[Any, str]:
    """(experiment module, row) of peer ``name`` (a key of ``PEERS``)."""
    module, row = PEERS[name]
    mod = importlib.import_module(module)
    return mod, row or main_row(mod)


def default_out(name: str) -> str:
    """``experiments/results/<module>`` for a module's main row (beside run.py's results.json), else
    ``experiments/results/<module>/peer_<name>`` (two peers of one module must not share peer.json)."""
    module, row = PEERS[name]
    return os.path.join(HERE, "results", module) if row is None else os.path.join(HERE, "results", module,
                                                                                   f"peer_{name}")


# The reading of a finished comparison (written after looking at its numbers; ``--report`` puts it in
# the section). Empty for a peer that has not been run with 3 seeds.
READINGS: dict[str, str] = {
    "gist": (
        "Reading: on both metrics the sentjax mean lies inside the peer's seed spread, and the difference of means "
        "(-0.10 STS-B dev, +0.14 SICK-R) is smaller than either engine's seed std, so 3 seeds show no difference "
        "between sentjax's gist objective and GISTEmbedLoss in this setting. The masking rule is the same "
        "(absolute, margin 0: a candidate leaves the softmax when the guide scores it above the guide's "
        "anchor-positive score; the positive itself never), over the same blocks (anchor-positive, anchor-anchor, "
        "positive-positive, anchor-negative); with dropout off the two losses agree to 2.4e-7 on the first batch "
        "(start check). The sentjax side reproduces `run.py recipes_distill`'s GIST row seed for seed (65.89 / "
        "66.14 / 65.98); sentence-transformers' GIST reaches the same level (66.11), so the +2.45 that section "
        "reports for GIST over InfoNCE + hard negatives (63.56 ± 0.90, sentjax; an ST InfoNCE row was not run) is "
        "not owed to sentjax's GIST implementation. "
        "The first-step losses differ (dropout masks differ between the frameworks). Train seconds "
        "were measured with other jobs on the 2 cores (load average 8-10) and are not a speed comparison."),
    "margin_mse": (
        "Reading: on both metrics the sentjax mean lies inside the peer's seed spread (differences of means +0.25 "
        "STS-B dev, +0.24 SICK-R; Welch p ~0.8). This random 2-layer student is noisy across seeds (std 0.7-1.4 "
        "points), so 3 seeds would only show a difference of roughly 2 points or more; none is seen. With dropout "
        "off the two losses agree to 3e-8 on the first batch, so the teacher margins (ST takes t(q, p) - t(q, n) "
        "from the same [b, 2] float32 scores) and the dot-product scores of the unit-norm embeddings match. The "
        "sentjax side's seed 0 (59.69 / 57.54) is `run.py recipes_distill`'s one-seed MarginMSE row exactly. Train "
        "seconds were measured on a shared, loaded machine and are not a speed comparison."),
    "matryoshka": (
        "Reading: at every embedding size the two engines' means differ by 0.00-0.08 on STS-B dev and 0.10 on "
        "SICK-R (Welch p >= 0.42). The sentjax mean is inside the peer's seed spread at 384, 256, 128 and 32 "
        "dims and on SICK-R, and 0.01 below the peer's lowest seed at 64 dims (83.75 vs [83.76, 83.93]; "
        "difference of means -0.08, within either engine's seed std of 0.09-0.12): 3 seeds show no difference "
        "between the engines. With dropout off the two losses (the sum over the 5 truncations) agree to 2.4e-7 "
        "on the first batch. Caveat: 12 steps at lr 5e-5 from all-MiniLM-L6-v2 move STS-B dev little (the "
        "untrained model at max length 32, cut to the same sizes: 86.61 / 86.44 / 85.61 / 83.68 / 81.08, SICK-R "
        "79.80; section `matryoshka`): +0.0 to +0.3 on STS-B dev, +0.6 on SICK-R, so this shows that both engines "
        "make the same small update, not a large training effect. "
        "Train seconds were measured with other jobs on the 2 cores and are not a speed comparison."),
}


def metrics_of(mod) -> tuple[str, ...]:
    """The table's columns: METRICS with the module's ``EXTRA_METRICS`` (e.g. STS-B dev per truncation)
    after STS-B dev."""
    return (METRICS[0], *getattr(mod, "EXTRA_METRICS", ()), *METRICS[1:])


def metric_names(mod) -> dict[str, str]:
    return {**run.METRIC_NAMES, **getattr(mod, "METRIC_NAMES", {})}


# ----------------------------------------------------------------------------- data


def batch_texts(pipeline, step: int) -> dict[str, Any]:
    """The global batch of ``step`` as texts: ``{field: [str] * B}`` for the source's text fields in
    ``pipeline.global_indices(step)`` order (kind ``text``: ``positive`` = the anchor, or its
    augmented view exactly as ``Pipeline.batch`` builds it), plus ``label`` / ``score`` arrays."""
    src, epoch, idx = pipeline.global_indices(step)
    source = pipeline.sources[src]
    out: dict[str, Any] = {f: [source.columns[f][i] for i in idx] for f in source.text_fields}
    if source.kind == "text":
        out["positive"] = list(out["anchor"])
        if source.augment:
            from sentjax.data import augment
            fn = augment.parse_spec(source.augment)
            if fn is not None:
                out["positive"] = augment.augment_batch(out["anchor"], fn, pipeline.seed, epoch, step)
    for extra in ("label", "score"):
        if extra in source.columns:
            out[extra] = np.asarray(source.columns[extra])[idx]
    out["source"] = src
    return out


def model_dir(cfg, sj_model=None) -> str:
    """The folder both engines start from: ``cfg.model.init_from``, or (a random init: the distillation
    students, every smoke run) sentjax's seeded initial encoder ``sj_model`` exported by ``sentjax.save``
    to ``<cfg.workdir>_st_init`` as a Hugging Face / sentence-transformers folder, so ST loads the very
    same random weights (``initial_check`` measures it)."""
    from sentjax.models.bundled import resolve_bundled
    if cfg.model.init_from:
        return resolve_bundled(cfg.model.init_from, "model.init_from")
    if sj_model is None:
        raise ValueError("a random init (model.init_from='') needs sentjax's initial model to export.")
    import sentjax
    path = cfg.workdir.rstrip("/") + "_st_init"
    shutil.rmtree(path, ignore_errors=True)
    sentjax.save(sj_model, path)
    return path


def guide_dir(cfg) -> str:
    """GIST's frozen guide folder: ``objective.guide``, else ``model.init_from`` (sentjax's rule)."""
    from sentjax.models.bundled import resolve_bundled
    path = cfg.objective.guide or cfg.model.init_from
    if not path:
        raise ValueError("objective 'gist' needs objective.guide (or model.init_from) for the peer's guide.")
    return resolve_bundled(path, "objective.guide")


def make_st_loss(cfg, model, losses, SentenceTransformer, dim: int):
    """The sentence-transformers loss module of ``cfg.objective`` (the objectives the peer covers):

      infonce     MultipleNegativesRankingLoss(scale=1/T)  (plain: not symmetric, no hard-negative weight)
      softmax     SoftmaxLoss(concatenation flags of objective.concat)
      gist        GISTEmbedLoss(guide, temperature=T, margin_strategy, margin, contrast_anchors/positives);
                  the guide frozen and in eval mode (sentjax's guide is deterministic, no gradient)
      margin_mse  MarginMSELoss (similarity dot or cosine), labels = the data's teacher scores [b, 2]
                  from which ST takes the margin t(q, p) - t(q, n) (scores='data' only)
      matryoshka  MatryoshkaLoss(MultipleNegativesRankingLoss(scale=1/T), dims, weights) over an
                  infonce inner objective
    """
    o = cfg.objective
    name = o.name

    def mnrl(hp):
        if hp.symmetric or hp.hard_negative_weight or hp.learn_temperature:
            raise ValueError("the peer supports the plain (non-symmetric, unweighted, fixed-T) InfoNCE only.")
        return losses.MultipleNegativesRankingLoss(model, scale=1.0 / hp.temperature)

    if name == "infonce":
        return mnrl(o)
    if name == "softmax":
        return losses.SoftmaxLoss(model, dim, num_labels=o.num_labels, **_concat_flags(o.concat))
    if name == "gist":
        guide = SentenceTransformer(guide_dir(cfg), device="cpu")
        guide.eval()
        guide.requires_grad_(False)
        return losses.GISTEmbedLoss(model, guide=guide, temperature=o.temperature, margin_strategy=o.margin_strategy,
                                    margin=o.margin, contrast_anchors=o.contrast_anchors,
                                    contrast_positives=o.contrast_positives)
    if name == "margin_mse":
        if o.scores != "data":
            raise ValueError("the peer's MarginMSE reads precomputed teacher scores (objective.scores='data').")
        from sentence_transformers import util
        sim = util.pairwise_dot_score if o.similarity == "dot" else util.pairwise_cos_sim
        return losses.MarginMSELoss(model, similarity_fct=sim)
    if name == "matryoshka":
        inner = o.inner
        if inner.name != "infonce":
            raise ValueError("the peer's Matryoshka wraps InfoNCE (MultipleNegativesRankingLoss) only.")
        dims = list(o.dims)
        return losses.MatryoshkaLoss(model, mnrl(inner), matryoshka_dims=dims,
                                     matryoshka_weights=list(o.weights) or [1] * len(dims))
    raise ValueError(f"objective {name!r}: the peer covers {sorted(ST_LOSSES)}.")


ST_LOSSES = ("infonce", "softmax", "gist", "margin_mse", "matryoshka")


def st_labels(cfg, b: dict):
    """The ``labels`` argument of the ST loss for batch texts ``b`` (None where the loss takes none)."""
    import torch
    if cfg.objective.name == "softmax":
        return torch.tensor(b["label"], dtype=torch.long)
    if cfg.objective.name == "margin_mse":
        # [b, 2] raw teacher scores in float32 (as sentjax's pipeline gives them); ST takes the margin
        return torch.tensor(np.asarray(b["score"], np.float32))
    return None


def st_fields(b: dict, objective=None) -> list[str]:
    """The embedded columns in ST's order: (anchor, positive[, negative]), as sentjax's objectives;
    with ``objective``, only the columns it embeds (``objective.fields``)."""
    return [f for f in ("anchor", "positive", "negative") if f in b and (objective is None or f in objective.fields)]


# ----------------------------------------------------------------------------- sentence-transformers


def _st_imports():
    try:  # sentence-transformers >= 5.4 layout
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:  # older releases
        from sentence_transformers import losses, models
    from sentence_transformers import SentenceTransformer
    return SentenceTransformer, models, losses


class STEncoder:
    """``encode(texts, batch_size, show_progress)`` of a SentenceTransformer, for run.evaluate_model."""

    def __init__(self, model):
        self.model = model

    def encode(self, texts, batch_size: int = 128, show_progress: bool = False, **_):
        return self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=False,
                                 convert_to_numpy=True)


def _concat_flags(concat: Sequence[str]) -> dict:
    """SoftmaxLoss flags for a sentjax concat; ST's order is (u, v, |u-v|, u*v)."""
    concat = tuple(concat)
    flags = dict(concatenation_sent_rep="u" in concat, concatenation_sent_difference="|u-v|" in concat,
                 concatenation_sent_multiplication="u*v" in concat)
    order = (("u", "v") if flags["concatenation_sent_rep"] else ()) + \
        (("|u-v|",) if flags["concatenation_sent_difference"] else ()) + \
        (("u*v",) if flags["concatenation_sent_multiplication"] else ())
    if order != concat:
        raise ValueError(f"objective.concat={concat} has no SoftmaxLoss equivalent (ST concatenates in the "
                         "order u, v, |u-v|, u*v and always u with v).")
    return flags


def sentjax_initial(cfg):
    """sentjax's initial model and parameters for ``cfg`` (the seeded heads included)."""
    from sentjax.train.objectives import make_objective
    from sentjax.train.train import build_model, init_params
    model = build_model(cfg)
    objective = make_objective(cfg.objective)
    params = init_params(cfg, model, objective)
    return model, objective, params


def train_st(cfg, smoke: bool, log=print, threads: int = 2) -> dict:
    """Trains the sentence-transformers peer of ``cfg``; returns the model, loss module and logs."""
    import torch
    from sentjax.tokenization import Tokenizer
    from sentjax.train.optim import linear_warmup_decay, warmup_steps_of
    from sentjax.train.train import build_pipeline
    SentenceTransformer, models, losses = _st_imports()
    torch.set_num_threads(threads)
    t_start = time.time()
    if cfg.accum_steps != 1 or cfg.dtype != "float32":
        raise ValueError("the peer loop runs float32 without gradient accumulation.")
    sj_model, objective, sj_params = sentjax_initial(cfg)
    path = model_dir(cfg, sj_model)
    sj_params = {k: _to_np(v) for k, v in sj_params.items()}

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    transformer = models.Transformer(path, max_seq_length=cfg.model.max_length)
    dim = (transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension")
           else transformer.get_word_embedding_dimension())
    pooling = cfg.model.pooling
    mods = [transformer, models.Pooling(dim, "cls" if pooling == "cls_mlp" else pooling)]
    heads_copied = []
    if pooling == "cls_mlp":
        mlp = sj_params["model"].get("pooler", {}).get("mlp")
        kw = {}
        if mlp is not None and mlp["kernel"].shape == (dim, dim):
            kw = dict(init_weight=torch.tensor(mlp["kernel"].T.copy()), init_bias=torch.tensor(mlp["bias"].copy()))
            heads_copied.append("pooler MLP")
        mods.append(models.Dense(dim, dim, activation_function=torch.nn.Tanh(), **kw))
    if cfg.model.normalize:
        mods.append(models.Normalize())
    model = SentenceTransformer(modules=mods, device="cpu")

    name = cfg.objective.name
    loss_mod = make_st_loss(cfg, model, losses, SentenceTransformer, dim)
    if name == "softmax":
        head = sj_params.get("head")
        if head is not None and tuple(head["kernel"].shape) == tuple(loss_mod.classifier.weight.T.shape):
            with torch.no_grad():
                loss_mod.classifier.weight.copy_(torch.tensor(head["kernel"].T.copy()))
                loss_mod.classifier.bias.copy_(torch.tensor(head["bias"].copy()))
            heads_copied.append("softmax classifier")

    tokenizer = Tokenizer.from_dir(path, max_length=cfg.model.max_length)
    pipeline = build_pipeline(cfg, tokenizer, dedup=objective.in_batch_negatives)
    check = initial_check(cfg, sj_model, model, tokenizer, pipeline, smoke)
    check.update(loss_check(cfg, sj_model, objective, sj_params, model, loss_mod, pipeline))

    no_decay = lambda n: "bias" in n or "LayerNorm" in n  # noqa: E731  (HF convention = optim.decay_mask)
    named = [(n, p) for n, p in loss_mod.named_parameters() if p.requires_grad]
    o = cfg.optim
    opt = torch.optim.AdamW([{"params": [p for n, p in named if not no_decay(n)], "weight_decay": o.weight_decay},
                             {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
                            lr=o.lr, betas=(o.b1, o.b2), eps=o.eps)
    total = cfg.total_steps
    sched = linear_warmup_decay(o.lr, warmup_steps_of(o, total), total)
    lrs = [float(sched(t)) for t in range(total)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lrs[t] / o.lr if t < total else 0.0)
    params = [p for _, p in named]

    model.train()
    step_losses, t0 = [], time.time()
    for s in range(total):
        b = batch_texts(pipeline, s)
        features = [model.preprocess(b[f]) for f in st_fields(b, objective)]
        value = loss_mod(features, st_labels(cfg, b))
        opt.zero_grad(set_to_none=True)
        value.backward()
        if o.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, o.clip_norm)
        opt.step()
        scheduler.step()
        step_losses.append(float(value.detach()))
        if not np.isfinite(step_losses[-1]):
            raise FloatingPointError(f"sentence-transformers loss is {step_losses[-1]} at step {s}.")
    loop = time.time() - t0
    wall = time.time() - t_start
    log(f"  sentence-transformers: {total} steps in {loop:.1f} s ({wall:.1f} s with loading), "
        f"loss {step_losses[0]:.4f} -> {step_losses[-1]:.4f}")
    model.eval()
    if pooling == "cls_mlp" and not cfg.model.mlp_at_inference:
        ev = SentenceTransformer(modules=[m for i, m in enumerate(model) if i != 2], device="cpu")
    else:
        ev = model
    ev.eval()
    return {"model": ev, "loss_module": loss_mod, "losses": step_losses, "train_wall_s": wall,
            "loop_s": loop,
            "pairs_per_s": total * cfg.batch_size / max(loop, 1e-9), "lr_first_last": [lrs[0], lrs[-1]],
            "heads_copied": heads_copied, "initial_check": check}


def _to_np(tree):
    import jax
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def initial_check(cfg, sj_model, st_model, tokenizer, pipeline, smoke: bool) -> dict:
    """Same start? Token ids of the first batch under both tokenizers, and the largest |difference|
    between the untrained encoders' embeddings of it (both load the same weights: ``model_dir``)."""
    import torch
    b = batch_texts(pipeline, 0)
    texts = b["anchor"][:16]
    sj_ids = tokenizer.encode_ids(texts)
    st_feat = st_model.preprocess(texts)
    st_ids = [row[m.bool()].tolist() for row, m in zip(st_feat["input_ids"], st_feat["attention_mask"])]
    out: dict[str, Any] = {"same_token_ids": sj_ids == st_ids}
    # smoke runs too: ST starts from the export of sentjax's tiny random encoder (model_dir)
    was = st_model.training
    st_model.eval()
    with torch.no_grad():
        feats = st_model(dict(st_feat))
        # pre-MLP embedding (CLS / mean) of the ST side: the Pooling module's output
        x = feats["token_embeddings"]
        if cfg.model.pooling in ("cls", "cls_mlp"):
            st_emb = x[:, 0].numpy()
        else:
            m = st_feat["attention_mask"].unsqueeze(-1).float()
            st_emb = ((x * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
    st_model.train(was)
    import sentjax
    enc = sentjax.SentenceModel(sj_model.module.clone(mlp_at_inference=False, normalize=False),
                                sj_model.params, sj_model.tokenizer, sj_model.source_dir)
    sj_emb = np.asarray(enc.encode(texts, show_progress=False))
    out["max_abs_embedding_diff"] = float(np.max(np.abs(sj_emb - st_emb)))
    return out


def loss_check(cfg, sj_model, objective, sj_params, st_model, loss_mod, pipeline, rows: int = 8) -> dict:
    """The same loss? sentjax's objective (``objective.loss_fn`` on sentjax's embeddings of the first
    ``rows`` rows of batch 0, the guide's ``teacher:<column>`` embeddings added for GIST) and the ST loss
    module (``loss_mod(features, labels)``) on the same texts, both models fresh with dropout off
    (``model.eval()``; sentjax's ``encode`` is deterministic). Returns ``{"loss_sentjax", "loss_st",
    "loss_abs_diff"}``: they agree to float32 rounding when init, columns and loss rules match."""
    import torch
    import sentjax
    b = batch_texts(pipeline, 0)
    sub = {f: b[f][:rows] for f in st_fields(b, objective)}
    for extra in ("label", "score"):
        if extra in b:
            sub[extra] = np.asarray(b[extra])[:rows]
    # the training-time embedding: SimCSE's MLP is applied in training even when not at inference
    module = sj_model.module.clone(mlp_at_inference=True) if cfg.model.pooling == "cls_mlp" else sj_model.module
    enc = sentjax.SentenceModel(module, sj_params["model"], sj_model.tokenizer, sj_model.source_dir)
    emb: dict[str, Any] = {}
    for f in objective.fields:
        if f in sub:
            emb[f] = np.asarray(enc.encode(sub[f], show_progress=False), np.float32)
    if objective.teacher_fields:
        from sentjax.train.train import load_teacher
        guide = load_teacher(cfg, sj_model)
        for f in objective.teacher_fields:
            if f in sub:
                emb[f"teacher:{f}"] = np.asarray(guide.encode(sub[f], show_progress=False), np.float32)
    if "score" in sub:
        emb["score"] = np.asarray(sub["score"], np.float32)
    if "label" in sub:
        emb["label"] = np.asarray(sub["label"], np.int32)
    sj_loss = float(objective.loss_fn(sj_params, emb, None)[0])
    was = st_model.training
    st_model.eval()
    with torch.no_grad():
        st_loss = float(loss_mod([st_model.preprocess(sub[f]) for f in st_fields(sub)], st_labels(cfg, sub)))
    st_model.train(was)
    return {"loss_sentjax": sj_loss, "loss_st": st_loss, "loss_abs_diff": abs(sj_loss - st_loss),
            "loss_check_rows": rows}


# ----------------------------------------------------------------------------- one seed


def run_sentjax(mod, cfg, smoke: bool, log=print) -> dict:
    shutil.rmtree(cfg.workdir, ignore_errors=True)  # train() refuses to overwrite checkpoints
    r, info, _ = run.train_and_evaluate(mod, cfg, full=False, smoke=smoke)
    r.update(losses=[loss for _, loss in info["losses"]], train_wall_s=info["wall_s"],
             eval_wall_s=info["eval_wall_s"], pairs_per_s=info["pairs_per_s"])
    log(f"  sentjax: {cfg.total_steps} steps in {info['wall_s']:.1f} s; " + _short(r))
    return r


def run_st(mod, cfg, smoke: bool, log=print, threads: int = 2) -> dict:
    out = train_st(cfg, smoke, log, threads)
    enc = STEncoder(out["model"])
    t1 = time.time()
    r = run.evaluate_model(enc, full=False, smoke=smoke)
    if hasattr(mod, "extra_eval") and cfg.objective.name == "softmax":
        c = out["loss_module"].classifier
        head = {"kernel": c.weight.detach().numpy().T.copy(), "bias": c.bias.detach().numpy().copy()}
        r.update(mod.extra_eval(enc, {"state": {"params": {"head": head}}}, cfg, baseline=False))
    elif hasattr(mod, "extra_eval"):  # e.g. matryoshka: STS-B dev at each truncation
        r.update(mod.extra_eval(enc, None, cfg, baseline=False))
    r.update(losses=out["losses"], train_wall_s=out["train_wall_s"], eval_wall_s=time.time() - t1,
             loop_s=out["loop_s"], pairs_per_s=out["pairs_per_s"], heads_copied=out["heads_copied"],
             initial_check=out["initial_check"], lr_first_last=out["lr_first_last"])
    log("  sentence-transformers: " + _short(r))
    return r


def _short(r: dict) -> str:
    return ", ".join(f"{k} {r[k]:.2f}" for k in r if k in METRICS or k.startswith("stsb_dev_"))


# ----------------------------------------------------------------------------- report


def st_versions() -> str:
    import sentence_transformers
    import torch
    import transformers
    return (f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), transformers {transformers.__version__}")


def spread_check(results: dict, metric: str) -> dict | None:
    """Is the sentjax mean inside [min, max] of the peer's seeds? ``distance`` = 0 inside, else how far."""
    a = [r[metric] for r in results["sentjax"] if r.get(metric) is not None]
    b = [r[metric] for r in results["sentence-transformers"] if r.get(metric) is not None]
    if not a or not b:
        return None
    mean, lo, hi = float(np.mean(a)), float(np.min(b)), float(np.max(b))
    dist = 0.0 if lo <= mean <= hi else (lo - mean if mean < lo else mean - hi)
    out = {"sentjax_mean": mean, "peer_min": lo, "peer_max": hi, "peer_mean": float(np.mean(b)),
           "inside": dist == 0.0, "distance": dist}
    if len(a) >= 2 and len(b) >= 2 and (np.var(a) + np.var(b)) > 0:
        # The [min, max] of 3 seeds is a narrow band; Welch's t-test says whether the two means differ by
        # more than the seed noise of both engines (unequal variances, few seeds).
        from scipy import stats
        t = stats.ttest_ind(a, b, equal_var=False)
        out.update(welch_t=float(t.statistic), welch_p=float(t.pvalue))
    return out


def make_section(name: str, mod, row: str, results: dict, seeds, smoke: bool, cfg, cmd: str, total_s: float,
                 versions: str) -> str:
    metrics = [m for m in metrics_of(mod) if any(m in r for rs in results.values() for r in rs)]
    names = metric_names(mod)
    head = ("| engine | " + " | ".join(f"{names[m]} (mean ± std)" for m in metrics) + " | "
            + " | ".join(f"{names[m]} per seed" for m in metrics)
            + " | train s/seed | train pairs/s | eval s/seed |")
    lines = [head, "|" + "---|" * (2 * len(metrics) + 4)]
    for eng in ENGINES:
        rs = results[eng]
        per = [", ".join(f"{r[m]:.2f}" for r in rs if m in r) or "–" for m in metrics]
        lines.append(f"| {eng} | " + " | ".join(run.fmt([r.get(m) for r in rs]) for m in metrics) + " | "
                     + " | ".join(per) + f" | {run.fmt([r['train_wall_s'] for r in rs])} | "
                     f"{run.fmt([r.get('pairs_per_s') for r in rs])} | {run.fmt([r['eval_wall_s'] for r in rs])} |")
    verdict = []
    for m in metrics:
        c = spread_check(results, m)
        if c is None:
            continue
        where = ("inside" if c["inside"] else
                 f"OUTSIDE by {c['distance']:.2f} ({'below' if c['sentjax_mean'] < c['peer_min'] else 'above'})")
        welch = (f"; difference of means {c['sentjax_mean'] - c['peer_mean']:+.2f}, Welch's t-test p = "
                 f"{c['welch_p']:.2f}" if "welch_p" in c else "")
        verdict.append(f"{names[m]}: sentjax mean {c['sentjax_mean']:.2f} is {where} the peer's seed "
                       f"spread [{c['peer_min']:.2f}, {c['peer_max']:.2f}] (peer mean {c['peer_mean']:.2f}{welch})")
    n = len(seeds)
    if n < 3:
        verdict.append(f"only {n} seed(s): the spread of fewer than 3 seeds says little")
    sj0, st0 = results["sentjax"][0], results["sentence-transformers"][0]
    ic = st0.get("initial_check", {})
    checks = f"same token ids: {ic.get('same_token_ids')}"
    if "max_abs_embedding_diff" in ic:
        checks += f"; untrained embeddings max |diff| {ic['max_abs_embedding_diff']:.1e}"
    if "loss_sentjax" in ic:
        checks += (f"; loss on the first {ic['loss_check_rows']} rows of batch 0 (dropout off, fresh models): "
                   f"sentjax {ic['loss_sentjax']:.7f}, ST {ic['loss_st']:.7f} (|diff| {ic['loss_abs_diff']:.1e})")
    first = (f"first-step loss sentjax {sj0['losses'][0]:.4f} vs ST {st0['losses'][0]:.4f}, last "
             f"{sj0['losses'][-1]:.4f} vs {st0['losses'][-1]:.4f} (seed {seeds[0]})") if sj0.get("losses") else ""
    o = cfg.optim
    from sentjax.train.optim import warmup_steps_of
    setting = (f"{cfg.total_steps} steps x batch {cfg.batch_size}, lr {o.lr} (warm-up "
               f"{warmup_steps_of(o, cfg.total_steps)} steps, linear decay), AdamW eps {o.eps} wd {o.weight_decay}, "
               f"clip {o.clip_norm}, max length {cfg.model.max_length}, pooling {cfg.model.pooling}, objective "
               f"{cfg.objective.name}, data {list(cfg.data.datasets)}")
    return "\n".join([
        f"## Peer comparison: {row} in sentjax vs sentence-transformers ({name})", "",
        f"Command: `{cmd}` (total wall time {total_s / 60:.1f} min; seeds {list(seeds)})"
        + (" — SMOKE run (tiny random sentjax encoder, 64 STS-B pairs): checks the path, not the numbers"
           if smoke else "")
        + ".  ",
        f"Setting (both engines): {setting}. Heads copied from sentjax's init into ST: "
        f"{', '.join(st0.get('heads_copied') or []) or 'none'}.  ",
        f"Start check: {checks}; {first}.  ",
        f"Versions: {versions}.", "",
        "\n".join(lines), "",
        "Spearman x100 of cosine"
        + (f" (SNLI dev acc: the trained softmax head on the first "
           f"{32 if cfg.total_steps <= 3 else getattr(mod, 'SNLI_DEV_N', 2000)} SNLI dev pairs)"
           if "snli_dev_acc" in metrics else "")
        + "; mean ± std (ddof 1) over seeds. Train s: sentjax `train()` (loading, compilation, steps, export); "
        "ST: loading, the start check and the loop. Train pairs/s: the steps after the first (sentjax) / all "
        "steps (ST).  ",
        "; ".join(verdict) + ".", "",
        *([READINGS[name], ""] if READINGS.get(name) and not smoke else []),
        "Same initial weights, batches (texts and order) and hyperparameters, learning rate of every step; "
        "dropout masks and float kernels differ between the frameworks (see `experiments/peer_st.py`), so the "
        "runs are compared by their seed spreads, not step by step.",
    ])


def write_outputs(name, mod, row, results, seeds, smoke, cfg, cmd, total_s, out, results_md,
                  versions: str | None = None) -> str:
    """peer.json, peer.md and (not smoke) the RESULTS.md section; ``versions`` defaults to this process's."""
    versions = versions or f"{run.versions()}; {st_versions()}"
    section = make_section(name, mod, row, results, seeds, smoke, cfg, cmd, total_s, versions)
    checks = {m: spread_check(results, m) for m in metrics_of(mod)}
    with open(os.path.join(out, "peer.json"), "w", encoding="utf-8") as f:
        json.dump({"experiment": name, "row": row, "seeds": list(seeds), "smoke": smoke, "command": cmd,
                   "results": results, "spread_check": {k: v for k, v in checks.items() if v},
                   "total_wall_s": total_s, "versions": versions,
                   "machine": platform.platform()}, f, indent=1, default=float)
    with open(os.path.join(out, "peer.md"), "w", encoding="utf-8") as f:  # only peer.* of <out> are written
        f.write(section + "\n")
    if not smoke and results_md:
        run.update_results_md(results_md, f"{name}-peer", section)
    return section


def results_md_for(out: str | None, results_md: str | None) -> str:
    """The RESULTS.md to update: ``results_md`` if given ("" = none); else experiments/RESULTS.md only for
    the default output folder (``--out DIR`` is a side run: a timing or trial run must not replace the
    published section)."""
    if results_md is not None:
        return results_md
    return os.path.join(HERE, "RESULTS.md") if out is None else ""


# ----------------------------------------------------------------------------- main


def compare(name: str, seeds: Sequence[int] = (0, 1, 2), smoke: bool = False, out: str | None = None,
            workroot: str | None = None, results_md: str | None = None, log=print, threads: int = 2) -> dict:
    mod, row = peer_of(name)
    results_md = results_md_for(out, results_md)
    out = out or default_out(name)
    workroot = workroot or os.path.join(REPO, "runs", "peer", name)
    os.makedirs(out, exist_ok=True)
    cmd = (f"python experiments/peer_st.py {name} --seeds {','.join(map(str, seeds))}" + (" --smoke" if smoke else "")
           + (f" --threads {threads}" if threads != 2 else ""))
    results: dict[str, list[dict]] = {e: [] for e in ENGINES}
    t_all = time.time()
    section = ""
    for seed in seeds:
        cfg = run.build_config(mod, row, seed, smoke, workroot)
        log(f"[{name} peer] {row!r} seed {seed}")
        results["sentjax"].append({"seed": seed, **run_sentjax(mod, cfg, smoke, log)})
        results["sentence-transformers"].append({"seed": seed, **run_st(mod, cfg, smoke, log, threads)})
        # after every seed, so a stopped run still leaves its finished seeds
        section = write_outputs(name, mod, row, results, list(seeds)[:len(results["sentjax"])], smoke, cfg, cmd,
                                time.time() - t_all, out, results_md)
    return {"results": results, "section": section, "out": out}


def report(name: str, out: str | None = None, results_md: str | None = None) -> str:
    """Rewrites peer.md and the RESULTS.md section from ``out/peer.json`` (no training)."""
    results_md = results_md_for(out, results_md)
    out = out or default_out(name)
    path = os.path.join(out, "peer.json")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} does not exist; run `python experiments/peer_st.py {name}` first.")
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    mod, _ = peer_of(name)
    seeds = saved["seeds"][:len(saved["results"]["sentjax"])]
    cfg = run.build_config(mod, saved["row"], seeds[0], saved["smoke"], os.path.join(REPO, "runs", "peer", name))
    return write_outputs(name, mod, saved["row"], saved["results"], seeds, saved["smoke"], cfg, saved["command"],
                         saved["total_wall_s"], out, results_md, saved.get("versions"))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="experiments/peer_st.py", description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=EXPERIMENTS)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--smoke", action="store_true", help="tiny sentjax model, 3 steps of batch 8, 64 STS pairs")
    p.add_argument("--out", default=None, help="output folder (default experiments/results/<name>; with another "
                   "folder experiments/RESULTS.md is left unchanged)")
    p.add_argument("--workroot", default=None, help="run folders (default runs/peer/<name>)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads (default 2; 1 is much faster on an oversubscribed machine)")
    p.add_argument("--report", action="store_true",
                   help="no training: rewrite peer.md and the RESULTS.md section from peer.json (RESULTS.md only "
                        "with the default --out)")
    a = p.parse_args(argv)
    if a.report:
        print(report(a.name, a.out))
        return 0
    seeds = run.parse_seeds(p, a.seeds)
    if a.threads < 1:
        p.error("--threads must be >= 1")
    res = compare(a.name, seeds, a.smoke, a.out, a.workroot, threads=a.threads)
    print(res["section"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
