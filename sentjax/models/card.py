"""Model cards: the ``README.md`` of an exported sentence-transformers folder.

Laid out like sentence-transformers' own cards (YAML front matter with ``library_name`` /
``pipeline_tag`` / ``base_model``, then model details, usage, training, evaluation, versions,
citation). :func:`render` takes the model and, for a trained model, a :class:`TrainingCard` that the
trainer fills from the run's config, data pipeline and ``metrics.jsonl``
(``sentjax.train.model_card``); ``sentjax.save`` without one writes the minimal card (model details,
usage, versions). The card is plain data in, text out: nothing here reads a clock, so the same run
gives the same card.
"""
from __future__ import annotations

import dataclasses
import math
import platform
from importlib import metadata
from typing import Any, Sequence

import numpy as np

__all__ = ["TrainingCard", "EvalRow", "DataRow", "render", "versions"]

# The packages whose versions decide what a model computes or how it loads.
VERSION_PACKAGES = ("sentjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tokenizers",
                    "transformers", "sentence-transformers", "torch")

_POOLING_TEXT = {"mean": "mean of the token embeddings (padding excluded)",
                 "cls": "the [CLS] token's embedding",
                 "cls_mlp": "the [CLS] token's embedding through SimCSE's tanh MLP (exported as a Dense module)",
                 "max": "element-wise max over the token embeddings"}


@dataclasses.dataclass(frozen=True)
class DataRow:
    """One training data source: its config name, kind (``sentjax.data.sources``), examples, weight."""
    name: str
    kind: str
    examples: int
    weight: float | None = None   # mixing proportion; None: round robin


@dataclasses.dataclass(frozen=True)
class EvalRow:
    """One evaluation metric over a run: the first, last and best value (all metrics are
    higher-is-better) and their steps."""
    metric: str
    first: float
    first_step: int
    final: float
    final_step: int
    best: float
    best_step: int


@dataclasses.dataclass(frozen=True)
class TrainingCard:
    """What a training run adds to its exported model's card.

    Attributes:
      base_model: what training started from (a hub id, a folder, or "random initialisation").
      base_model_id: the Hugging Face hub id of the base model for the YAML ``base_model`` key, or "".
      checkpoint: which checkpoint this folder is, e.g. "final (step 6 of 6)".
      datasets: the training data sources.
      objective: the objective's name.
      objective_hparams: its hyperparameters (the fields of ``sentjax.losses.<name>.Config``).
      hyperparameters: ``(name, value)`` rows (batch size, steps, devices, optimizer, ...), in order.
      evaluation: one row per metric of every evaluator that ran.
      best_metric: the metric that picks ``best_model/`` ("" when none).
      citations: BibTeX entries (the objective's, GradCache's when used).
    """
    base_model: str
    checkpoint: str
    datasets: Sequence[DataRow]
    objective: str
    objective_hparams: dict[str, Any]
    hyperparameters: Sequence[tuple[str, Any]]
    evaluation: Sequence[EvalRow] = ()
    best_metric: str = ""
    citations: Sequence[str] = ()
    base_model_id: str = ""


def versions() -> list[tuple[str, str]]:
    """``(package, version)`` of Python and of :data:`VERSION_PACKAGES` that are installed."""
    out = [("python", platform.python_version())]
    for name in VERSION_PACKAGES:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            if name == "sentjax":  # a source checkout that was never pip-installed
                from sentjax._version import __version__
                out.append((name, __version__))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (tuple, list)):
        return ", ".join(_fmt(x) for x in v) if v else "()"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(x).replace("|", "\\|") for x in row) + " |" for row in rows]
    return lines


def _count_params(params: Any) -> int:
    import jax
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def _exported_params(module: Any, params: Any) -> Any:
    # SimCSE's MLP is saved (as 2_Dense) only when it is kept at inference.
    keep_mlp = module.pooling == "cls_mlp" and module.mlp_at_inference
    return {k: v for k, v in params.items() if k != "pooler" or keep_mlp}


def _pooling(module: Any) -> str:
    if module.pooling == "cls_mlp" and not module.mlp_at_inference:
        return ("`cls`: the [CLS] token's embedding (SimCSE's MLP was trained on top of it and dropped at "
                "inference, so it is not in this folder)")
    return f"`{module.pooling}`: {_POOLING_TEXT.get(module.pooling, module.pooling)}"


def _details(model: Any, params: Any) -> list[str]:
    cfg, module = model.config, model.module
    arch = [("model type", cfg.model_type)]
    for key, label in (("num_hidden_layers", "layers"), ("hidden_size", "hidden size"),
                       ("num_attention_heads", "attention heads"), ("intermediate_size", "feed-forward size"),
                       ("vocab_size", "vocabulary")):
        if hasattr(cfg, key):
            arch.append((label, getattr(cfg, key)))
    arch.append(("parameters", f"{_count_params(_exported_params(module, params)):,}"))
    return [
        "## Model details", "",
        f"- **Architecture:** {', '.join(f'{k} {v}' for k, v in arch)}",
        f"- **Maximum sequence length:** {model.tokenizer.max_length} tokens",
        f"- **Pooling:** {_pooling(module)}",
        f"- **Output:** {model.dim}-dimensional embeddings"
        + (", L2-normalised" if module.normalize else " (not normalised)"),
        "- **Similarity function:** cosine", "",
    ]


def _usage() -> list[str]:
    return [
        "## Usage", "",
        "### sentence-transformers", "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        'model = SentenceTransformer("path/to/this/folder", device="cpu")',
        'embeddings = model.encode(["A man plays a guitar.", "Someone is playing music."])',
        "print(model.similarity(embeddings, embeddings))",
        "```", "",
        "### sentjax", "",
        "```python",
        "import sentjax",
        'model = sentjax.load("path/to/this/folder")',
        'embeddings = model.encode(["A man plays a guitar.", "Someone is playing music."])  # np [n, dim]',
        "```", "",
    ]


def _training(t: TrainingCard) -> list[str]:
    lines = ["## Training", "", f"- **Base model:** {t.base_model}", f"- **This folder:** {t.checkpoint}", "",
             "### Data", ""]
    lines += _table(("dataset", "kind", "examples", "weight"),
                    [(d.name, d.kind, d.examples, "round robin" if d.weight is None else d.weight)
                     for d in t.datasets])
    lines += ["", "### Objective", "", f"`{t.objective}` (`sentjax/losses/{t.objective}.py`)", ""]
    lines += _table(("hyperparameter", "value"), sorted(t.objective_hparams.items()))
    lines += ["", "### Hyperparameters", ""]
    lines += _table(("setting", "value"), t.hyperparameters)
    lines.append("")
    return lines


def _evaluation(t: TrainingCard) -> list[str]:
    lines = ["## Evaluation", ""]
    if not t.evaluation:
        return lines + ["No evaluator ran during training (`config.evals.*.every_steps` were 0).", ""]
    lines += ["Every evaluator of the run's config (`config.evals`), as logged in `metrics.jsonl` "
              "(x100; higher is better). *start*: the first evaluation (before training when "
              "`at_start`), *final*: the last, *best*: the highest.", ""]
    rows = [(f"**{r.metric}**" if r.metric == t.best_metric else r.metric, f"{r.first:.2f}", r.first_step,
             f"{r.final:.2f}", r.final_step, f"{r.best:.2f}", r.best_step) for r in t.evaluation]
    lines += _table(("metric", "start", "at step", "final", "at step", "best", "at step"), rows)
    if t.best_metric:
        lines += ["", f"`best_model/` is the checkpoint with the highest **{t.best_metric}**."]
    lines.append("")
    return lines


def _front_matter(t: TrainingCard | None) -> list[str]:
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity", "tags:",
             "- sentence-transformers", "- sentence-similarity", "- feature-extraction", "- sentjax"]
    if t is not None and t.base_model_id:
        lines.append(f"base_model: {t.base_model_id}")
    return lines + ["---", ""]


def render(model: Any, params: Any = None, training: TrainingCard | None = None, source: str = "") -> str:
    """The card of ``model`` (a ``SentenceModel``) with ``params`` (default: its own), as Markdown.

    ``training``: the run that produced it (None: a minimal card of model details, usage and
    versions); ``source``: where an untrained model came from, shown in the minimal card."""
    params = model.params if params is None else params
    title = f"sentjax {model.config.model_type} sentence encoder"
    lines = _front_matter(training) + [f"# {title}", ""]
    what = (f"A sentence-embedding model trained with sentjax (JAX/Flax) and saved "
            f"as a [sentence-transformers](https://www.sbert.net) folder: it maps sentences to "
            f"{model.dim}-dimensional vectors for semantic similarity, search and clustering.")
    if training is None:
        what = (f"A sentence-embedding model saved by `sentjax.save` as a sentence-transformers folder"
                + (f" (from `{source}`)" if source else "") + f": it maps sentences to {model.dim}-dimensional "
                "vectors. It was not trained by a sentjax run, so this card has no training section.")
    lines += [what, ""]
    lines += _details(model, params) + _usage()
    if training is not None:
        lines += _training(training) + _evaluation(training)
    lines += ["## Versions", ""] + _table(("package", "version"), versions()) + [""]
    if training is not None and training.citations:
        lines += ["## Citation", "", "```bibtex", *"\n\n".join(c.strip() for c in training.citations).splitlines(),
                  "```", ""]
    return "\n".join(lines)
