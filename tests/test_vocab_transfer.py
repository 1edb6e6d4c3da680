"""Vocabulary transfer (the multilingual distillation student): each new row is the teacher row
(or mean of rows) its surface string maps to, special tokens map to their counterparts, and the
student saves / loads like any model."""
import numpy as np
import pytest

from sentjax.testing import minilm_dir, multilingual_tokenizer_dir
from sentjax.tokenization import Tokenizer

pytestmark = pytest.mark.skipif(minilm_dir() is None or multilingual_tokenizer_dir() is None,
                                reason="needs the models and multilingual extras")


@pytest.fixture(scope="module")
def toks():
    return (Tokenizer.from_dir(minilm_dir(), max_length=32),
            Tokenizer.from_dir(multilingual_tokenizer_dir(), max_length=32))


def test_rows_follow_the_teacher_pieces(toks):
    from sentjax.models.vocab_transfer import transferred_embeddings
    teacher, student = toks
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(teacher.backend.get_vocab_size(), 8)).astype(np.float32)
    new, counts = transferred_embeddings(emb, teacher, student)
    t, s = teacher.backend, student.backend
    assert new.shape == (250002, 8)
    assert sum(counts.values()) == 250002 and counts["special"] == 5
    for sp, tp in (("<s>", "[CLS]"), ("</s>", "[SEP]"), ("<pad>", "[PAD]"), ("<unk>", "[UNK]")):
        np.testing.assert_array_equal(new[s.token_to_id(sp)], emb[t.token_to_id(tp)])
    # a word-start piece that is one teacher word: that row (teacher lower-cases)
    np.testing.assert_array_equal(new[s.token_to_id("\u2581House")], emb[t.token_to_id("house")])
    # a continuation piece: the teacher's ## piece
    np.testing.assert_array_equal(new[s.token_to_id("ing")], emb[t.token_to_id("##ing")])
    # a word the teacher splits: the mean of its pieces
    piece = "\u2581Schwierigkeiten"
    ids = t.encode("Schwierigkeiten", add_special_tokens=False).ids
    assert len(ids) > 1 and s.token_to_id(piece) is not None
    np.testing.assert_allclose(new[s.token_to_id(piece)], emb[ids].mean(0), rtol=1e-6)
    # a script the teacher does not know: its [UNK] row
    thai = next(i for i in range(1000, 250000) if all("\u0e00" <= ch <= "\u0e7f" for ch in s.id_to_token(i)))
    if all(j == t.token_to_id("[UNK]") for j in t.encode(s.id_to_token(thai), add_special_tokens=False).ids):
        np.testing.assert_array_equal(new[thai], emb[t.token_to_id("[UNK]")])


def test_student_keeps_layers_and_round_trips(tmp_path):
    import jax

    import sentjax
    from sentjax.models.vocab_transfer import transfer_vocabulary
    teacher = sentjax.load(minilm_dir(), max_length=32)
    student, _ = transfer_vocabulary(teacher, multilingual_tokenizer_dir())
    assert student.config.vocab_size == 250002 and student.config.pad_token_id == 1
    for name, sub in teacher.params["encoder"].items():
        if name != "embeddings":
            same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                                sub, student.params["encoder"][name])
            assert all(jax.tree.leaves(same)), name
    for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
        for a, b in zip(jax.tree.leaves(teacher.params["encoder"]["embeddings"][name]),
                        jax.tree.leaves(student.params["encoder"]["embeddings"][name])):
            np.testing.assert_array_equal(a, b)
    texts = ["Ein Mann spielt Flöte.", "A man plays the flute.", ""]
    sentjax.save(student, tmp_path / "student")
    back = sentjax.load(str(tmp_path / "student"))
    np.testing.assert_allclose(back.encode(texts), student.encode(texts), atol=1e-5)
    # the transfer starts near the teacher on English (same layers, matching word rows), far nearer
    # than the same student with random word rows
    en = ["A man plays the flute.", "The cat sits on the mat.", "Stock markets fell sharply today.",
          "Two children are playing in the park."]
    t = teacher.encode(en, normalize=True)
    near = float(np.mean(np.sum(t * student.encode(en, normalize=True), 1)))
    emb = student.params["encoder"]["embeddings"]["word_embeddings"]["embedding"]
    rand = np.random.default_rng(0).normal(0, np.std(emb), emb.shape).astype(np.float32)
    student.params["encoder"]["embeddings"]["word_embeddings"]["embedding"] = rand
    student.__post_init__()
    far = float(np.mean(np.sum(t * student.encode(en, normalize=True), 1)))
    assert near > 0.6 and near > far + 0.3, (near, far)


def test_missing_tokenizer_folder(tmp_path):
    import sentjax
    from sentjax.models.vocab_transfer import transfer_vocabulary
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        transfer_vocabulary(sentjax.load(minilm_dir(), max_length=16), str(tmp_path))
