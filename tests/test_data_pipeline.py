"""Input pipeline: order is f(seed, step), process slices tile the global batch, no duplicate
texts in a contrastive batch, mixing, bucketed padding, clear errors for bad data."""
import numpy as np
import pytest

from sentjax.data.pipeline import Pipeline
from sentjax.data.sources import DataError, Source, load_source, nli_to_triplets, read_tsv
from sentjax.tokenization import Tokenizer


def test_order_is_pure_function_of_seed_and_step(ws, tok):
    src = load_source(f"text:{ws.sentences}")
    a = Pipeline([src], tok, 16, seed=3, process_index=0, process_count=1)
    b = Pipeline([src], tok, 16, seed=3, process_index=0, process_count=1)
    steps = [40, 0, 7, 40, 19]  # out of order, repeated, across epochs (256 / 16 = 16 per epoch)
    for s in steps:
        np.testing.assert_array_equal(a.global_indices(s)[2], b.global_indices(s)[2])
        for k in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(a.batch(s)["anchor"][k], b.batch(s)["anchor"][k])
    assert a.global_indices(20)[1] == 1  # step 20 is in the second epoch
    c = Pipeline([src], tok, 16, seed=4, process_index=0, process_count=1)
    assert not np.array_equal(a.global_indices(0)[2], c.global_indices(0)[2])
    # one epoch visits each example at most once
    epoch0 = np.concatenate([a.global_indices(s)[2] for s in range(16)])
    assert len(set(epoch0.tolist())) == len(epoch0)


def test_process_slices_tile_global_batch_with_one_length(ws, tok):
    src = load_source(f"sts:{ws.sts}")
    full = Pipeline([src], tok, 8, seed=0, dedup=False, process_index=0, process_count=1).batch(2)
    parts = [Pipeline([src], tok, 8, seed=0, dedup=False, process_index=p, process_count=2).batch(2)
             for p in range(2)]
    for field in ("anchor", "positive"):
        joined = np.concatenate([p[field]["input_ids"] for p in parts])
        np.testing.assert_array_equal(joined, full[field]["input_ids"])
        assert full[field]["input_ids"].shape[1] % 8 == 0  # bucketed
    np.testing.assert_allclose(np.concatenate([p["score"] for p in parts]), full["score"])


def test_no_duplicate_text_in_contrastive_batch(tmp_path, tok):
    path = tmp_path / "dups.txt"
    # 4 distinct sentences, each repeated 8 times: naive batches of 4 would collide
    path.write_text("\n".join(["the cat runs", "a dog eats", "the man sings", "a bird reads"] * 8) + "\n")
    src = load_source(f"text:{path}")
    p = Pipeline([src], tok, 4, seed=0, process_index=0, process_count=1)
    for s in range(12):
        idx = p.global_indices(s)[2]
        texts = [src.columns["anchor"][i] for i in idx]
        assert len(set(texts)) == len(texts), texts
    with pytest.raises(DataError, match="duplicates"):
        Pipeline([src], tok, 5, seed=0, process_index=0, process_count=1).global_indices(0)


def test_mixing_round_robin_and_proportional(ws, tok):
    a, b = load_source(f"text:{ws.sentences}"), load_source(f"pairs:{ws.sts}".replace("pairs:", "sts:"))
    rr = Pipeline([a, b], tok, 8, seed=0, dedup=False, process_index=0, process_count=1)
    assert [rr.locate(s) for s in range(4)] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    pr = Pipeline([a, b], tok, 8, seed=0, weights=(3, 1), dedup=False, process_index=0, process_count=1)
    locs = [pr.locate(s) for s in range(2000)]  # crosses a block boundary
    share = np.mean([src == 0 for src, _ in locs])
    assert 0.7 < share < 0.8
    for d in (0, 1):  # each source's batches are consumed in order 0, 1, 2, ...
        ks = [k for src, k in locs if src == d]
        assert ks == list(range(len(ks)))
    fresh = Pipeline([a, b], tok, 8, seed=0, weights=(3, 1), dedup=False, process_index=0, process_count=1)
    assert fresh.locate(1999) == locs[1999]  # resume mid-run: same answer without history


def test_nli_readers_and_triplets(ws):
    nli = read_tsv(ws.nli, "nli")
    assert set(np.unique(nli.columns["label"]).tolist()) == {0, 1, 2}
    tri = nli_to_triplets(Source("x", "nli", {"anchor": ["p", "p", "q"], "positive": ["e", "c", "e2"],
                                              "label": np.array([0, 2, 0])}))
    assert tri.columns == {"anchor": ["p"], "positive": ["e"], "negative": ["c"]}


def test_bad_data_errors(tmp_path, tok, ws):
    with pytest.raises(DataError, match="does not exist"):
        load_source(f"text:{tmp_path / 'missing.txt'}")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_source(f"text:{tmp_path / 'empty.txt'}")
    (tmp_path / "bad.tsv").write_text("a\tb\nx\ty\n")
    with pytest.raises(DataError, match="missing column"):
        load_source(f"sts:{tmp_path / 'bad.tsv'}")
    with pytest.raises(DataError, match="kind:path"):
        load_source("sentences.txt")
    with pytest.raises(DataError, match="fewer than one global batch"):
        Pipeline([load_source(f"sts:{ws.sts}")], tok, 64, seed=0, process_index=0, process_count=1)


def test_sources_come_from_the_readers():
    """One reader per format: pipeline sources equal sentjax.data.readers' records."""
    from sentjax.data import bundled, readers
    sts = load_source("sts:stsb-en-dev")
    ref = readers.read_sts_csv(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    assert sts.kind == "sts" and sts.columns["anchor"] == ref.sentences1
    np.testing.assert_allclose(sts.columns["score"], ref.scores / 5.0, rtol=1e-6)
    sick = load_source("sts:bundled/sick/SICK_trial.txt")
    assert 0.0 <= sick.columns["score"].min() and sick.columns["score"].max() <= 1.0  # (s - 1) / 4
    tri = load_source("nli-triplets:bundled/nli_cad/all_combined/train.tsv")
    rt = readers.nli_triplets(readers.read_nli_tsv(bundled.path("nli_cad/all_combined/train.tsv")))
    assert (tri.columns["anchor"], tri.columns["positive"], tri.columns["negative"]) == \
        (rt.anchors, rt.positives, rt.negatives)
    par = load_source("parallel:bundled/multi30k/val.en|bundled/multi30k/val.de")
    rp = readers.read_parallel(bundled.path("multi30k/val.en"), bundled.path("multi30k/val.de"))
    assert par.columns == {"anchor": rp.src, "positive": rp.tgt}
    text = load_source("text:bundled/commonvoice_en/jf99.txt")
    assert text.columns["anchor"] == readers.read_lines(bundled.path("commonvoice_en/jf99.txt"))


def test_reader_errors_are_data_errors(tmp_path):
    (tmp_path / "bad.tsv").write_text("sentence1\tsentence2\tgold_label\nA\tB\tmaybe\n")
    with pytest.raises(DataError, match="line 2.*maybe"):
        load_source(f"nli:{tmp_path / 'bad.tsv'}")
    with pytest.raises(DataError, match="No bundled data file"):
        load_source("text:bundled/commonvoice_en/nope.txt")


def test_text_spec_joins_several_files(tmp_path):
    from sentjax.data.sources import load_source
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("three\n\nfour\n")
    src = load_source(f"text:{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}")
    assert src.columns["anchor"] == ["one", "two", "three", "four"]


def test_text_fields_share_one_padded_length(ws, tok):
    """One length per batch (the longest text of any field): a pair batch compiles one of
    max_length / 8 shapes, not their square."""
    src = load_source(f"sts:{ws.sts}")
    p = Pipeline([src], tok, 8, seed=0, dedup=False, process_index=0, process_count=1)
    for s in range(6):
        b = p.batch(s)
        la, lp = b["anchor"]["input_ids"].shape[1], b["positive"]["input_ids"].shape[1]
        idx = p.global_indices(s)[2]
        longest = max(len(x) for f in ("anchor", "positive")
                      for x in tok.encode_ids([src.columns[f][i] for i in idx]))
        assert la == lp == min(16, -(-longest // 8) * 8)
        # padding changes nothing but the pad columns
        ids = tok.encode_ids([src.columns["positive"][i] for i in idx])
        for row, x in zip(b["positive"]["input_ids"], ids):
            assert list(row[:len(x)]) == x and not row[len(x):].any()


def test_teacher_tokenizer_adds_teacher_anchor(ws, tok):
    """Distillation into another vocabulary: the teacher's tokens of each anchor ride along."""
    teacher_tok = Tokenizer.from_dir(ws.tokenizer, max_length=12, bucket_multiple=4)
    src = load_source(f"parallel:{ws.sentences}|{ws.sentences}")
    p = Pipeline([src], tok, 8, seed=1, dedup=False, process_index=1, process_count=2,
                 teacher_tokenizer=teacher_tok)
    b = p.batch(3)
    idx = p.global_indices(3)[2][4:]
    want = teacher_tok([src.columns["anchor"][i] for i in idx], length=b["teacher_anchor"]["input_ids"].shape[1])
    for k in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(b["teacher_anchor"][k], want[k])
    assert b["teacher_anchor"]["input_ids"].shape[1] % 4 == 0
    assert "teacher_anchor" not in Pipeline([src], tok, 8, seed=1, dedup=False, process_index=0,
                                            process_count=1).batch(3)


def test_parallel_sts_rows_are_aligned():
    from sentjax.data import readers
    src = load_source("parallel-sts:stsb-en-dev|stsb-de-dev")
    en = readers.read_sts_csv(readers.resolve_sts_data("stsb-en-dev")[0])
    de = readers.read_sts_csv(readers.resolve_sts_data("stsb-de-dev")[0])
    n = len(en.sentences1)
    assert src.kind == "parallel" and len(src) == 2 * n
    assert src.columns["anchor"][5] == en.sentences1[5] and src.columns["positive"][5] == de.sentences1[5]
    assert src.columns["anchor"][n + 7] == en.sentences2[7] and src.columns["positive"][n + 7] == de.sentences2[7]


def test_parallel_sts_errors(tmp_path):
    with pytest.raises(DataError, match="SRC\\|TGT"):
        load_source("parallel-sts:stsb-en-dev")
    short = tmp_path / "short.csv"
    short.write_text("Ein Mann.,Eine Frau.,2.0\n")
    with pytest.raises(DataError, match="equal row counts"):
        load_source(f"parallel-sts:stsb-en-dev|{short}")
