"""Test fixture: a tiny offline workspace (WordPiece tokenizer, sentences, STS pairs, NLI pairs)
and a config that trains a tiny random encoder on it in seconds.

``make_tiny_workspace(dir)`` writes ``tokenizer/tokenizer.json`` (vocab < 100 so it fits the
tiny random encoder), ``sentences.txt``, ``sts.tsv``, ``nli.tsv``; ``tiny_config(dir, **overrides)``
is the full config. Tests import it as ``tiny`` (pytest puts ``tests/`` on ``sys.path``; the
subprocess tests add it to ``PYTHONPATH``).
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

WORDS = ("a the cat dog man woman child plays runs eats sleeps sings reads ball food book song "
         "in on park house street red big small happy sad today now fast slowly green blue "
         "kitchen garden loudly quietly bird fish car bike").split()


def _atomic_write(path: str, text: str) -> None:
    # Several processes of one multi-process test write the same workspace: never expose a
    # half-written file to a reader.
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_tokenizer(path: str) -> str:
    """Whitespace WordPiece tokenizer with [PAD]=0 and BERT post-processing."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(WORDS))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    os.makedirs(path, exist_ok=True)
    _atomic_write(os.path.join(path, "tokenizer.json"), tok.to_str())
    _atomic_write(os.path.join(path, "vocab.txt"), "\n".join(vocab) + "\n")
    return path


def _sentence(rng: np.random.Generator) -> str:
    subj = rng.choice(["the cat", "a dog", "the man", "a woman", "the child", "a bird"])
    verb = rng.choice(["plays", "runs", "eats", "sleeps", "sings", "reads"])
    rest = rng.choice(["in the park", "in the house", "on the street", "in the garden", "today",
                       "now", "fast", "slowly", "loudly", "quietly"])
    return f"{subj} {verb} {rest}"


def make_tiny_workspace(path: str, n_sentences: int = 256, seed: int = 0) -> ml_collections.ConfigDict:
    """Writes the files; returns config overrides (a partial ConfigDict) to merge."""
    rng = np.random.default_rng(seed)  # fixture text only; no training randomness comes from here
    os.makedirs(path, exist_ok=True)
    tok_dir = write_tokenizer(os.path.join(path, "tokenizer"))
    sents = sorted({_sentence(rng) for _ in range(n_sentences * 4)})[:n_sentences]
    _atomic_write(os.path.join(path, "sentences.txt"), "\n".join(sents) + "\n")
    sts = ["sentence1\tsentence2\tscore"]
    for i in range(48):
        a, b = sents[i], sents[(i * 7 + 3) % len(sents)]
        shared = len(set(a.split()) & set(b.split()))
        sts.append(f"{a}\t{b}\t{min(5.0, shared * 1.0):.1f}")
    _atomic_write(os.path.join(path, "sts.tsv"), "\n".join(sts) + "\n")
    labels = ["entailment", "neutral", "contradiction"]
    nli = ["premise\thypothesis\tlabel"]
    for i in range(96):
        nli.append(f"{sents[i]}\t{sents[(i + 1 + i % 3) % len(sents)]}\t{labels[i % 3]}")
    _atomic_write(os.path.join(path, "nli.tsv"), "\n".join(nli) + "\n")
    return ml_collections.ConfigDict({"tokenizer": tok_dir, "sentences": os.path.join(path, "sentences.txt"),
                                      "sts": os.path.join(path, "sts.tsv"), "nli": os.path.join(path, "nli.tsv")})


def tiny_config(path: str, **overrides) -> ml_collections.ConfigDict:
    """A complete config training the tiny encoder with unsupervised SimCSE on the workspace;
    ``overrides``: ``{"dotted.key": value}`` (``sentjax.train.config_cli.apply_overrides``)."""
    from sentjax.configs.default import get_config
    from sentjax.train import config_cli
    ws = make_tiny_workspace(path)
    c = get_config()
    c.workdir = os.path.join(path, "run")
    c.model.tokenizer = ws.tokenizer
    c.model.max_length = 16
    # one layer (Flax's examples test on 1-layer configs): every trainer test compiles its step, and
    # the step's program grows with the layer count; what the tests check does not need a second one
    c.model.encoder.num_hidden_layers = 1
    c.data.datasets = (f"text:{ws.sentences}",)
    c.batch_size = 16
    c.total_steps = 6
    c.log_every = 1
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 2
    c.checkpoint.every_steps = 3
    return config_cli.apply_overrides(c, overrides)
