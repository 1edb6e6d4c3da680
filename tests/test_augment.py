"""SimCSE Table 1 augmentations do what their names say, deterministically, and reach the pipeline."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sentjax.data import augment
from sentjax.data.pipeline import Pipeline
from sentjax.data.sources import DataError, load_source
from sentjax.testing import minilm_dir

SENT = " ".join(f"w{i}" for i in range(20))  # 20 distinct words: positions are recoverable


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


@pytest.mark.parametrize("share", [0.1, 0.2, 0.3])
def test_crop_keeps_stated_share_as_one_span(share):
    words = SENT.split()
    starts = set()
    for row in range(50):
        out = augment.crop(SENT, augment.row_rng(0, 0, 0, row), share).split()
        assert len(out) == round((1 - share) * 20)
        i = words.index(out[0])
        assert out == words[i:i + len(out)]  # contiguous
        starts.add(i)
    assert len(starts) > 1  # the span position is random


@pytest.mark.parametrize("share", [0.1, 0.2, 0.3])
def test_word_deletion_deletes_stated_share(share):
    words = SENT.split()
    kept_sets = set()
    for row in range(50):
        out = augment.word_deletion(SENT, augment.row_rng(0, 0, 0, row), share).split()
        assert len(words) - len(out) == round(share * 20)
        assert _is_subsequence(out, words)  # order kept, only deletions
        kept_sets.add(tuple(out))
    assert len(kept_sets) > 10


def test_delete_one_word_and_short_sentences():
    out = augment.delete_one_word(SENT, augment.row_rng(1, 0, 0, 0)).split()
    assert len(out) == 19 and _is_subsequence(out, SENT.split())
    rng = augment.row_rng(0, 0, 0, 0)
    assert augment.delete_one_word("alone", rng) == "alone"
    assert augment.word_deletion("a b", rng, 0.9) != ""  # never empties a sentence
    assert len(augment.crop("a b c", rng, 0.9).split()) == 1


def test_mask_and_synonym_counts():
    out = augment.mask_words(SENT, augment.row_rng(0, 0, 0, 0), 0.15).split()
    assert sum(w == "[MASK]" for w in out) == 3
    syn = {"w1": ("one",), "w2": ("two", "deux"), "w3": ("three",)}
    out = augment.synonym_replace(SENT, augment.row_rng(0, 0, 0, 0), 0.1, syn).split()
    changed = [(a, b) for a, b in zip(SENT.split(), out) if a != b]
    assert len(changed) == 2 and all(b in syn[a] for a, b in changed)
    # fewer candidates than the share asks for: replaces all of them, nothing else
    out = augment.synonym_replace(SENT, augment.row_rng(0, 0, 0, 0), 0.5, syn).split()
    assert sum(a != b for a, b in zip(SENT.split(), out)) == 3


def _fake_wordnet(root):
    """A two-synset WordNet in the database format: index.<pos> names the lemma's synset offsets
    (most frequent first), data.<pos> holds the synsets at those byte offsets."""
    header = "  1 This is a licence header line\n"
    s1 = "{off} 05 n 03 car 0 auto 0 motor_car 0 000 | a motor vehicle\n"
    s2 = "{off} 05 n 02 car 0 gondola 0 000 | a cable car\n"
    a = len(header)
    b = a + len(s1.format(off=f"{a:08d}"))
    (root / "data.noun").write_text(header + s1.format(off=f"{a:08d}") + s2.format(off=f"{b:08d}"))
    (root / "index.noun").write_text(header + f"car n 2 0 2 0 {b:08d} {a:08d}\n"  # gondola sense first
                                     f"auto n 1 0 1 0 {a:08d}\nmotor_car n 1 0 1 0 {a:08d}\n")
    for pos in ("verb", "adj", "adv"):
        (root / f"index.{pos}").write_text(header)
        (root / f"data.{pos}").write_text(header)


def test_wordnet_reader_takes_the_first_sense_and_single_words(tmp_path, monkeypatch):
    _fake_wordnet(tmp_path)
    syn = augment.read_wordnet_synonyms(str(tmp_path))
    assert syn == {"car": ("gondola",), "auto": ("car",)}  # motor_car: multi-word, skipped both ways
    augment.write_synonym_table(str(tmp_path / "t.tsv.gz"), syn)
    assert augment.read_synonym_table(str(tmp_path / "t.tsv.gz")) == syn
    monkeypatch.setenv("SENTJAX_WORDNET", str(tmp_path))  # a user's own database wins over the table
    augment.load_synonyms.cache_clear()
    try:
        assert augment.load_synonyms() == syn
    finally:
        augment.load_synonyms.cache_clear()
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        augment.read_wordnet_synonyms(str(tmp_path / "nowhere"))


def test_bundled_synonym_table(monkeypatch):
    monkeypatch.delenv("SENTJAX_WORDNET", raising=False)
    monkeypatch.delenv("WNHOME", raising=False)
    augment.load_synonyms.cache_clear()
    syn = augment.load_synonyms()
    assert len(syn) == 44648 and sum(map(len, syn.values())) == 101509  # as SOURCE.md states
    assert syn["car"] == ("auto", "automobile", "machine", "motorcar") and syn["big"] == ("large",)
    assert all(" " not in w and "_" not in w and w != k for k, v in syn.items() for w in v)
    installed = "/usr/share/wordnet"
    if os.path.isfile(os.path.join(installed, "index.noun")):  # the table is that database, derived
        assert augment.read_wordnet_synonyms(installed) == syn


def test_determinism_depends_on_seed_epoch_step_row():
    f = augment.parse_spec("delete=0.3")
    texts = [SENT] * 8
    a = augment.augment_batch(texts, f, seed=3, epoch=1, step=5)
    assert a == augment.augment_batch(texts, f, seed=3, epoch=1, step=5)
    assert len(set(a)) > 1  # rows differ
    for other in [dict(seed=4, epoch=1, step=5), dict(seed=3, epoch=2, step=5), dict(seed=3, epoch=1, step=6)]:
        assert augment.augment_batch(texts, f, **other) != a


def test_bad_specs():
    assert augment.parse_spec("none") is None and augment.parse_spec("") is None
    for bad in ["crop", "crop=x", "crop=1.5", "shuffle=0.1", "delete_one=0.2"]:
        with pytest.raises(ValueError, match="spec|share"):
            augment.parse_spec(bad)
    with pytest.raises(DataError, match="crop=K"):
        load_source("text+crop:bundled/commonvoice_en/jf99.txt")


@pytest.mark.skipif(minilm_dir() is None, reason="needs the models extra (MiniLM tokenizer)")
def test_pipeline_augments_only_the_positive_view():
    from sentjax.tokenization import Tokenizer
    tok = Tokenizer.from_dir(minilm_dir(), max_length=32)
    plain = Pipeline([load_source("text:bundled/commonvoice_en/jf99.txt")], tok, 16, seed=0)
    spec = "text+delete=0.3:bundled/commonvoice_en/jf99.txt"
    aug = Pipeline([load_source(spec)], tok, 16, seed=0)
    b0, b1 = plain.batch(2), aug.batch(2)
    np.testing.assert_array_equal(b0["anchor"]["input_ids"], b1["anchor"]["input_ids"])
    np.testing.assert_array_equal(b0["positive"]["input_ids"], b0["anchor"]["input_ids"])
    n_anchor = b1["anchor"]["attention_mask"].sum(1)
    n_pos = b1["positive"]["attention_mask"].sum(1)
    assert np.all(n_pos <= n_anchor) and np.any(n_pos < n_anchor)
    again = Pipeline([load_source(spec)], tok, 16, seed=0).batch(2)  # a fresh (resumed) pipeline
    np.testing.assert_array_equal(again["positive"]["input_ids"], b1["positive"]["input_ids"])
    # two processes see the rows of one global batch
    halves = [Pipeline([load_source(spec)], tok, 16, seed=0, process_index=p, process_count=2).batch(2)
              for p in range(2)]
    glued = np.concatenate([h["positive"]["input_ids"] for h in halves])
    np.testing.assert_array_equal(glued, b1["positive"]["input_ids"])


def test_dropout_only_makes_two_different_views():
    from sentjax.models.config import EncoderConfig
    from sentjax.models.sentence_model import SentenceEncoderModule, embed_fn
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    module = SentenceEncoderModule(cfg, pooling="cls_mlp", normalize=False, mlp_at_inference=False)
    ids = jax.random.randint(jax.random.key(0), (4, 12), 1, 100)
    batch = {"input_ids": ids, "attention_mask": jnp.ones_like(ids)}
    params = module.init(jax.random.key(1), batch)["params"]
    embed = embed_fn(module)
    v1 = embed(params, batch, jax.random.key(2))
    v2 = embed(params, batch, jax.random.key(3))
    assert float(jnp.min(jnp.linalg.norm(v1 - v2, axis=-1))) > 1e-3  # every row has two views
    np.testing.assert_array_equal(np.asarray(embed(params, batch, jax.random.key(2))), np.asarray(v1))
    np.testing.assert_array_equal(np.asarray(embed(params, batch, None)), np.asarray(embed(params, batch, None)))
