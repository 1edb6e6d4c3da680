"""Discrete text augmentations for SimCSE's Table 1 ablation (Gao et al., 2021, Sec. 3).

Unsupervised SimCSE makes the positive of a sentence x by encoding x twice under two dropout
masks. Table 1 of the paper compares that with discrete augmentations of the positive view
x+ = aug(x) (dropout stays on unless the row says "w/o dropout"):

  crop k%            keep one random contiguous span of round((1 - k) * n) of the n words
  word deletion k%   delete round(k * n) randomly chosen words
  delete one word    delete exactly one randomly chosen word
  synonym            replace round(k * n) words that have a WordNet synonym by it
  mask k%            replace round(k * n) words by the tokenizer's mask token

"Words" are whitespace tokens. Every function is pure: ``(text, rng, ...) -> text`` with an
explicit ``numpy.random.Generator``; :func:`row_rng` derives that generator from
(seed, epoch, step, row), so a resumed or multi-process run draws the same augmentation.
Sentences keep at least one word (an empty positive would be an empty embedding).

MLM 15% in the paper replaces words by a BERT MLM head's samples; all-MiniLM-L6-v2 ships
without an MLM head, so ``mask`` keeps only the masking half (the tokens stay ``[MASK]``).
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Sequence

import numpy as np

SPEC_HELP = ("augmentation spec: 'none', 'crop=K', 'delete=K', 'delete_one', 'synonym=K', 'mask=K' "
             "(K a share in [0, 1), e.g. 'crop=0.1')")


def row_rng(seed: int, epoch: int, step: int, row: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, step, row)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, step, row, 0x5EED]))


def _count(n: int, share: float) -> int:
    """round(share * n) with Python's round-half-even replaced by round-half-up (stable counts)."""
    return int(np.floor(share * n + 0.5))


def _check_share(share: float, name: str) -> float:
    if not 0.0 <= share < 1.0:
        raise ValueError(f"{name} share must be in [0, 1), got {share}; e.g. 0.1 for 10%.")
    return float(share)


def crop(text: str, rng: np.random.Generator, share: float) -> str:
    """Keep a random contiguous span of max(1, n - round(share * n)) of the n words."""
    _check_share(share, "crop")
    words = text.split()
    n = len(words)
    keep = max(1, n - _count(n, share))
    start = int(rng.integers(0, n - keep + 1)) if n else 0
    return " ".join(words[start:start + keep])


def word_deletion(text: str, rng: np.random.Generator, share: float) -> str:
    """Delete round(share * n) of the n words (at most n - 1), positions drawn without replacement."""
    _check_share(share, "delete")
    words = text.split()
    n = len(words)
    k = min(_count(n, share), max(n - 1, 0))
    drop = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
    return " ".join(w for i, w in enumerate(words) if i not in drop)


def delete_one_word(text: str, rng: np.random.Generator) -> str:
    """Delete exactly one random word (a one-word sentence is kept as is)."""
    words = text.split()
    if len(words) <= 1:
        return " ".join(words)
    i = int(rng.integers(0, len(words)))
    return " ".join(words[:i] + words[i + 1:])


def mask_words(text: str, rng: np.random.Generator, share: float, mask_token: str = "[MASK]") -> str:
    """Replace round(share * n) random words by ``mask_token`` (BERT's masking, no prediction)."""
    _check_share(share, "mask")
    words = text.split()
    n = len(words)
    k = _count(n, share)
    for i in (rng.choice(n, size=k, replace=False) if k else []):
        words[int(i)] = mask_token
    return " ".join(words)


# ----------------------------------------------------------------------------- WordNet

WORDNET_HELP = ("Reading a WordNet database needs its files (index.noun, data.noun, ...): install them with "
                "`apt-get install wordnet-base` (Debian/Ubuntu: /usr/share/wordnet) or point $WNHOME / "
                "$SENTJAX_WORDNET at a folder holding them. Without one, synonym replacement uses the "
                "bundled WordNet 3.0 table.")
# The synonym table load_synonyms() derives from WordNet 3.0 (Debian wordnet-base 1:3.0-37), shipped so
# that synonym replacement runs offline with the package alone; see its SOURCE.md and LICENSE.
BUNDLED_SYNONYMS = "wordnet_synonyms/synonyms.tsv.gz"


def wordnet_dir() -> str:
    """The WordNet dict folder: $SENTJAX_WORDNET, $WNHOME(/dict), or /usr/share/wordnet."""
    cands = [os.environ.get("SENTJAX_WORDNET", "")]
    if os.environ.get("WNHOME"):
        cands += [os.environ["WNHOME"], os.path.join(os.environ["WNHOME"], "dict")]
    cands.append("/usr/share/wordnet")
    for d in cands:
        if d and os.path.isfile(os.path.join(d, "index.noun")):
            return d
    raise FileNotFoundError(f"No WordNet database found (looked in {[c for c in cands if c]}). {WORDNET_HELP}")


@functools.lru_cache(maxsize=4)
def load_synonyms(root: str | None = None) -> dict[str, tuple[str, ...]]:
    """lemma -> synonyms from its most frequent sense per part of speech (WordNet's first
    synset in index.<pos>), single words only, lower-cased, the lemma itself excluded.

    ``root``: a WordNet dict folder to read; ``None`` reads $SENTJAX_WORDNET / $WNHOME when set,
    else the bundled table (the same mapping, derived from WordNet 3.0)."""
    if root is None and (os.environ.get("SENTJAX_WORDNET") or os.environ.get("WNHOME")):
        root = wordnet_dir()
    if root is None:
        from sentjax.data import bundled
        return read_synonym_table(bundled.path(BUNDLED_SYNONYMS))
    return read_wordnet_synonyms(root)


def read_wordnet_synonyms(root: str) -> dict[str, tuple[str, ...]]:
    """:func:`load_synonyms` from the database files in ``root``."""
    if not os.path.isfile(os.path.join(root, "index.noun")):
        raise FileNotFoundError(f"{root} holds no WordNet database (index.noun is missing). {WORDNET_HELP}")
    out: dict[str, list[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(os.path.join(root, f"index.{pos}"), encoding="latin-1") as idx, \
                open(os.path.join(root, f"data.{pos}"), "rb") as data:
            for line in idx:
                if line.startswith(" "):
                    continue  # licence header
                f = line.split()
                lemma, p_cnt = f[0], int(f[3])
                if "_" in lemma:
                    continue
                offset = int(f[6 + p_cnt])  # first synset = most frequent sense
                data.seek(offset)
                rec = data.readline().decode("latin-1").split()
                w_cnt = int(rec[3], 16)
                for j in range(w_cnt):
                    w = rec[4 + 2 * j].split("(")[0].lower()  # adjectives may carry "(a)" markers
                    if w != lemma and "_" not in w:
                        lst = out.setdefault(lemma, [])
                        if w not in lst:
                            lst.append(w)
    return {k: tuple(v) for k, v in out.items()}


def write_synonym_table(path: str, synonyms: dict[str, Sequence[str]]) -> None:
    """Writes ``lemma<TAB>syn1 syn2 ...`` lines (gzip, reproducible bytes), the synonyms in order."""
    import gzip
    text = "".join(f"{k}\t{' '.join(v)}\n" for k, v in synonyms.items())
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0,
                                                filename="") as f:
        f.write(text.encode("utf-8"))


def read_synonym_table(path: str) -> dict[str, tuple[str, ...]]:
    """The inverse of :func:`write_synonym_table`."""
    import gzip
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            lemma, sep, syns = line.rstrip("\n").partition("\t")
            if not sep or not syns:
                raise ValueError(f"{path} line {n} is not 'lemma<TAB>synonyms': {line[:80]!r}")
            out[lemma] = tuple(syns.split(" "))
    return out


def synonym_replace(text: str, rng: np.random.Generator, share: float,
                    synonyms: dict[str, Sequence[str]] | None = None) -> str:
    """Replace round(share * n) words that have a synonym (fewer if fewer have one) by a random
    synonym; case of the first letter is kept, trailing punctuation too."""
    _check_share(share, "synonym")
    syn = load_synonyms() if synonyms is None else synonyms
    words = text.split()
    cands = []
    for i, w in enumerate(words):
        core = w.strip(".,;:!?\"'").lower()
        if core in syn:
            cands.append(i)
    k = min(_count(len(words), share), len(cands))
    for i in (rng.choice(cands, size=k, replace=False) if k else []):
        i = int(i)
        w = words[i]
        core = w.strip(".,;:!?\"'")
        opts = syn[core.lower()]
        new = opts[int(rng.integers(0, len(opts)))]
        if core[:1].isupper():
            new = new[:1].upper() + new[1:]
        words[i] = w.replace(core, new, 1)
    return " ".join(words)


# ----------------------------------------------------------------------------- specs


def parse_spec(spec: str, mask_token: str = "[MASK]") -> Callable[[str, np.random.Generator], str] | None:
    """'crop=0.1' -> ``f(text, rng)``; 'none' / '' -> None (positive = the sentence itself)."""
    spec = (spec or "none").strip()
    name, _, arg = spec.partition("=")
    try:
        share = float(arg) if arg else None
    except ValueError:
        raise ValueError(f"Bad {SPEC_HELP}: {spec!r} has a non-numeric share.") from None
    if name == "none" and share is None:
        return None
    if name == "delete_one" and share is None:
        return delete_one_word
    fns = {"crop": crop, "delete": word_deletion, "synonym": synonym_replace,
           "mask": functools.partial(mask_words, mask_token=mask_token)}
    if name not in fns or share is None:
        raise ValueError(f"Bad {SPEC_HELP}: got {spec!r}.")
    _check_share(share, name)
    if name == "synonym":
        load_synonyms()  # fail now (a missing database) rather than at the first batch
    fn = fns[name]
    return lambda text, rng: fn(text, rng, share)


def augment_batch(texts: Sequence[str], fn: Callable[[str, np.random.Generator], str], seed: int,
                  epoch: int, step: int, row_offset: int = 0) -> list[str]:
    """``[fn(t, row_rng(seed, epoch, step, row_offset + i)) for i, t in enumerate(texts)]``."""
    return [fn(t, row_rng(seed, epoch, step, row_offset + i)) for i, t in enumerate(texts)]


if __name__ == "__main__":  # python -m sentjax.data.augment WORDNET_DIR OUT.tsv.gz: rebuild the table
    import sys
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m sentjax.data.augment WORDNET_DICT_DIR OUT.tsv.gz")
    table = read_wordnet_synonyms(sys.argv[1])
    write_synonym_table(sys.argv[2], table)
    print(f"{sys.argv[2]}: {len(table)} lemmas, {sum(map(len, table.values()))} synonyms")
