"""Prompts / instructions (E5, Wang et al., 2022, "Text Embeddings by Weakly-Supervised Contrastive
Pre-training"): every anchor is prefixed ``query: `` and every positive / hard negative ``passage: ``
before tokenization (``config.data.prompts``); the exported model keeps them as its ``query`` /
``document`` prompts (``query`` the default, so a plain ``encode`` and the evaluation embed as the
anchors were). Optionally the prompt's tokens are left out of the mean pooling
(``model.include_prompt=False``, sentence-transformers' ``include_prompt``).

Paper setting (``PAPER``): E5-base, CCPairs weakly-supervised pre-training then MS MARCO / NQ / NLI
fine-tuning with ``query: ``/``passage: `` prefixes, batch 32k (pre-training), mean pooling.
Reduced CPU run: all-MiniLM-L6-v2 (mean pooling), the supervised SimCSE setting of the README demo
(bundled NLI-CAD triplets, InfoNCE with hard negatives, T 0.05), 8 steps of 64, one seed:
  python experiments/run.py prompts
"""
from sentjax.configs import demo

TITLE = "Prompts: query: / passage: prefixes in supervised training (all-MiniLM-L6-v2, NLI-CAD)"
PAPER = {"model": "intfloat/e5-base", "batch": 32768, "steps": "20k pre-training + fine-tuning",
         "lr": 2e-5, "temperature": 0.01, "prompts": {"anchor": "query: ", "positive": "passage: "}}
PROMPTS = {"data.prompts.anchor": "query: ", "data.prompts.positive": "passage: ",
           "data.prompts.negative": "passage: "}


def get_config():
    """The README demo (MiniLM, mean pooling, max length 32, InfoNCE with hard negatives, NLI-CAD
    triplets) with E5's prompts on every column."""
    c = demo.get_config()
    c.workdir = "runs/prompts"
    c.data.prompts.anchor = "query: "
    c.data.prompts.positive = "passage: "
    c.data.prompts.negative = "passage: "
    return c


CPU = {"batch_size": 64, "total_steps": 8, "log_every": 1}
MAIN = "query: / passage: prompts"
ROWS = {
    MAIN: {},
    "no prompts": {"data.prompts.anchor": "", "data.prompts.positive": "", "data.prompts.negative": ""},
}
FULL_EVAL = []
# not run (time): model.include_prompt=False, the prompt's tokens left out of the pooling
NOT_RUN = {"query: / passage: prompts, prompt tokens not pooled": {"model.include_prompt": False}}

NOTES = """
The STS evaluation embeds both sentences of a pair under the ``query: `` prompt (the exported model's
default prompt; E5's convention for symmetric tasks); the no-prompt row and the baseline embed the bare
sentences. MiniLM was never trained with prompts, so at this scale (512 triplets) the rows measure
how much a new prefix perturbs a pretrained encoder rather than E5's gain from instructions at scale.
Untrained MiniLM (mean pooling, no prompt): STS-B dev 86.61, SICK-R trial 79.80 (section simcse_sup).
Over 3 seeds (0-2, 2026-12-03) the prompts cost 0.74 STS-B dev points at this budget: 85.82 ± 0.18 vs
86.56 ± 0.15 without, every prompt seed below every no-prompt seed; SICK-R is unchanged (80.16 vs 80.07, inside
the spread). Seed 0 reproduced the earlier single-seed run to every printed digit. Not run for lack of time on
the shared cores: the row with ``model.include_prompt=False`` (``NOT_RUN``).
"""
