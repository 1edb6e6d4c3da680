"""Per-column prompts of a training run (``config.data.prompts``), e.g. E5's ``query: `` / ``passage: ``.

Each text column's prompt is prepended to its texts before tokenization (``Pipeline``); the trained
model is exported with them as named prompts, ``anchor`` -> ``"query"`` and ``positive`` (and
``negative``, which must match it) -> ``"document"``: sentence-transformers' own names (it adds an
empty ``"document"`` prompt otherwise, which ``encode_document`` would pick before a ``"passage"``),
so ``encode(texts, prompt_name="query")`` here and sentence-transformers' ``encode_query`` /
``encode_document`` apply what training applied. ``"query"`` is also the default prompt (a plain
``encode(texts)`` embeds as the anchors were, and as the evaluations during training do). With
``model.include_prompt=False`` each prompted column's token batch also carries ``prompt_length``
``[rows]`` so the pooling leaves the prompt's tokens out, as at inference.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from sentjax.data.sources import KIND_FIELDS
from sentjax.errors import ConfigError

COLUMNS = ("anchor", "positive", "negative")
EXPORT_NAMES = {"anchor": "query", "positive": "document"}


def column_prompts(prompts: Mapping[str, Any] | None, sources: Sequence[Any] = ()) -> dict[str, str]:
    """The non-empty prompts of ``config.data.prompts``, checked: known column names, strings, a
    negative prompt equal to the positive one (a passage is a passage), and only columns that some
    dataset has. Raises ConfigError saying what to change."""
    prompts = dict(prompts or {})
    unknown = sorted(set(prompts) - set(COLUMNS))
    if unknown:
        raise ConfigError(f"data.prompts: unknown column(s) {unknown}; the text columns are {list(COLUMNS)}.")
    bad = {k: v for k, v in prompts.items() if not isinstance(v, str)}
    if bad:
        raise ConfigError(f"data.prompts: prompts must be strings, got {bad}.")
    out = {k: v for k, v in prompts.items() if v}
    has_neg = any("negative" in KIND_FIELDS.get(s.kind, ()) for s in sources)
    if ("negative" in out or has_neg) and out.get("negative", "") != out.get("positive", ""):
        raise ConfigError(f"data.prompts: negative {out.get('negative', '')!r} differs from positive "
                          f"{out.get('positive', '')!r}; hard negatives are passages too and the exported "
                          "model has one document prompt: set data.prompts.negative to the positive's.")
    if sources:
        present = {f for s in sources for f in KIND_FIELDS.get(s.kind, ())}
        # kind "text" trains anchor against its own (augmented) copy, the positive column
        present |= {"positive"} if any(s.kind == "text" for s in sources) else set()
        unused = sorted(set(out) - present)
        if unused:
            raise ConfigError(f"data.prompts: {unused} set but no dataset has such a column "
                              f"(they have {sorted(present)}); clear it or add a dataset that has it.")
    return out


def exported_prompts(prompts: Mapping[str, str]) -> dict[str, str]:
    """Column prompts -> the model's named prompts (``{"query": ..., "document": ...}``)."""
    return {EXPORT_NAMES[c]: p for c, p in prompts.items() if c in EXPORT_NAMES}
