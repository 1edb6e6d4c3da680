"""Bundled data integrity, readers on the real bundled files, and clear errors on bad input."""
from __future__ import annotations

import gzip
import hashlib
import os
import re

import numpy as np
import pytest

from sentjax.data import bundled
from sentjax.data import readers as R
from sentjax.data.readers import DataFormatError

DATASETS = ["commonvoice_en", "multi30k", "nli_cad", "sick", "snli_esnli", "sts12_16_senteval",
            "stsb_multi_mt", "stsbenchmark_senteval", "tatoeba_laser_v1", "wordnet_synonyms"]


# ----------------------------------------------------------------------------- bundled folder


def test_bundled_datasets_listed_and_documented():
    assert bundled.datasets() == DATASETS
    readme = open(os.path.join(bundled.ROOT, "README.md"), encoding="utf-8").read()
    for d in DATASETS:
        assert f"`{d}/`" in readme
        src = open(bundled.path(f"{d}/SOURCE.md"), encoding="utf-8").read()
        # a git repo @ commit, or (WordNet) a Debian package file @ sha256
        assert re.search(r"@ ([0-9a-f]{40}\b|sha256 [0-9a-f]{64})", src), f"{d}/SOURCE.md lacks 'repo @ commit'"
        assert "Licence" in src


def test_bundled_files_match_md5_in_source_md_and_size_limit():
    n = 0
    for d in DATASETS:
        rows = re.findall(r"^\| `([^`]+)` \| ([0-9a-f]{32}) \|$",
                          open(bundled.path(f"{d}/SOURCE.md"), encoding="utf-8").read(), re.M)
        on_disk = {os.path.relpath(os.path.join(r, f), bundled.path(d))
                   for r, _, fs in os.walk(bundled.path(d)) for f in fs} - {"SOURCE.md"}
        assert {f for f, _ in rows} == on_disk, d
        for rel, want in rows:
            full = bundled.path(f"{d}/{rel}")
            assert os.path.getsize(full) <= 5 * 2**20, f"{full} exceeds 5 MiB"
            raw = open(full, "rb").read()
            # md5s are of the originals: our own gzips are undone; multi30k was gzipped upstream.
            if rel.endswith(".gz") and d != "multi30k":
                raw = gzip.decompress(raw)
            assert hashlib.md5(raw).hexdigest() == want, full
            n += 1
    assert n > 350


def test_bundled_path_gz_twin_and_errors():
    assert bundled.path("stsb_multi_mt/stsb-en-train.csv").endswith("stsb-en-train.csv.gz")
    assert os.path.isfile(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    with pytest.raises(FileNotFoundError, match=r"stsb-en-test\.csv.*stsb-en-dev\.csv"):
        bundled.path("stsb_multi_mt/stsb-en-test.csv")
    with pytest.raises(FileNotFoundError, match="nli_cad"):
        bundled.path("nli/train.tsv")
    with pytest.raises(ValueError, match="relative path"):
        bundled.path("../setup.cfg")


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize("lang", R.STSB_LANGS)
def test_stsb_multi_mt_all_languages(lang):
    dev = R.read_sts_csv(bundled.path(f"stsb_multi_mt/stsb-{lang}-dev.csv"))
    train = R.read_sts_csv(bundled.path(f"stsb_multi_mt/stsb-{lang}-train.csv"))
    assert (len(dev), len(train)) == (1500, 5749)
    en = R.read_sts_csv(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    np.testing.assert_array_equal(dev.scores, en.scores)  # row i is the same pair in every language
    assert dev.scores.dtype == np.float64 and dev.scores.min() >= 0 and dev.scores.max() <= 5


def test_stsb_first_row_and_quoting():
    d = R.read_sts_csv(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    assert (d.sentences1[0], d.sentences2[0], d.scores[0]) == (
        "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0)
    assert any("," in s for s in d.sentences1)  # quoted commas survive


def test_stsbenchmark_senteval_same_pairs_as_stsb():
    dev = R.read_stsbenchmark_senteval(bundled.path("stsbenchmark_senteval/sts-dev.csv"))
    train = R.read_stsbenchmark_senteval(bundled.path("stsbenchmark_senteval/sts-train.csv"))
    assert (len(dev), len(train)) == (1500, 5749)
    ref = R.read_sts_csv(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))
    np.testing.assert_allclose(dev.scores, ref.scores)


def test_sick():
    trial = R.read_sick(bundled.path("sick/SICK_trial.txt"))
    train = R.read_sick(bundled.path("sick/SICK_train.txt"))
    assert (len(trial), len(train)) == (500, 4500)
    assert set(train.labels) == set(R.NLI_LABELS)
    assert trial.scores.min() >= 1 and trial.scores.max() <= 5
    assert trial.sentences1[0].startswith("The young boys are playing outdoors") and trial.scores[0] == 3.6
    assert trial.labels[0] == "contradiction"


SENTEVAL_COUNTS = {
    "STS12": {"MSRpar": 750, "MSRvid": 750, "SMTeuroparl": 459, "surprise.OnWN": 750, "surprise.SMTnews": 399},
    "STS13": {"FNWN": 189, "OnWN": 561, "headlines": 750},
    "STS14": {"OnWN": 750, "deft-forum": 450, "deft-news": 300, "headlines": 750, "images": 750, "tweet-news": 750},
    "STS15": {"answers-forums": 375, "answers-students": 750, "belief": 375, "headlines": 750, "images": 750},
    "STS16": {"answer-answer": 254, "headlines": 249, "plagiarism": 230, "postediting": 244, "question-question": 209},
}


@pytest.mark.parametrize("year", R.SENTEVAL_YEARS)
def test_senteval_sts_counts(year):
    d = R.read_senteval_sts(year)
    assert {k: len(v) for k, v in d.subsets.items()} == SENTEVAL_COUNTS[year]
    assert d.skipped == (["SMT"] if year == "STS13" else [])
    assert len(d) == {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186}[year]
    # the folder path gives the same thing as the year name
    assert len(R.read_senteval_sts(bundled.path(f"sts12_16_senteval/{year}-en-test"))) == len(d)


def test_snli_and_triplets():
    dev, test = R.read_snli_esnli(split="dev"), R.read_snli_esnli(split="test")
    assert (len(dev), len(test)) == (9842, 9824)
    assert np.bincount(dev.label_ids).tolist() == [3329, 3235, 3278]
    t = R.nli_triplets(dev)
    ent = {(p, h) for p, h, y in zip(dev.premises, dev.hypotheses, dev.labels) if y == "entailment"}
    con = {(p, h) for p, h, y in zip(dev.premises, dev.hypotheses, dev.labels) if y == "contradiction"}
    assert len(t) > 2500
    assert all((a, p) in ent and (a, n) in con for a, p, n in zip(t.anchors, t.positives, t.negatives))


@pytest.mark.parametrize("variant,counts", [("original", (1666, 200, 400)), ("revised_combined", (6664, 800, 1600)),
                                            ("all_combined", (8330, 1000, 2000))])
def test_nli_cad(variant, counts):
    got = tuple(len(R.read_nli_tsv(bundled.path(f"nli_cad/{variant}/{s}.tsv"))) for s in ("train", "dev", "test"))
    assert got == counts


def test_sentences_bitext_tatoeba():
    assert len(R.read_lines(bundled.path("commonvoice_en/sentence-collector.txt"))) == 49254
    p = R.read_parallel(bundled.path("multi30k/train.en.gz"), bundled.path("multi30k/train.de.gz"))
    assert len(p) == 29000
    assert len(R.read_parallel(bundled.path("multi30k/test_2017_mscoco.en.gz"),
                               bundled.path("multi30k/test_2017_mscoco.fr.gz"))) == 461
    langs = R.tatoeba_languages()
    assert len(langs) == 112 and "deu" in langs
    assert len(R.read_tatoeba("deu")) == 1000 and len(R.read_tatoeba("tzl")) == 104
    with pytest.raises(FileNotFoundError, match="ISO 639-3.*deu"):
        R.read_tatoeba("de")


def test_nli_triplets_constructed():
    pairs = R.NLIPairs(["p1", "p1", "p1", "p2", "p2", "p1", "p1", "p3"],
                       ["e1", "n1", "c1", "e2", "n2", "e1b", "c1b", "e3"],
                       ["entailment", "neutral", "contradiction", "entailment", "neutral", "entailment",
                        "contradiction", "entailment"])
    t = R.nli_triplets(pairs)
    assert (t.anchors, t.positives, t.negatives) == (["p1", "p1"], ["e1", "e1b"], ["c1", "c1b"])


def test_resolve_sts_data():
    assert R.resolve_sts_data("stsb-fr-dev") == (bundled.path("stsb_multi_mt/stsb-fr-dev.csv"), "stsb")
    assert R.resolve_sts_data("sick-trial")[1] == "sick"
    assert R.resolve_sts_data("sts12") == ("STS12", "senteval")
    # auto-detection from content for real paths
    assert R.resolve_sts_data(bundled.path("sick/SICK_trial.txt"))[1] == "sick"
    assert R.resolve_sts_data(bundled.path("stsbenchmark_senteval/sts-dev.csv"))[1] == "stsbenchmark"
    assert R.resolve_sts_data(bundled.path("stsb_multi_mt/stsb-en-dev.csv"))[1] == "stsb"
    with pytest.raises(FileNotFoundError, match="stsb-en-dev"):
        R.resolve_sts_data("stsb-en-test")


# ----------------------------------------------------------------------------- bad input


def _write(tmp_path, name, data: bytes | str) -> str:
    p = tmp_path / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return str(p)


def test_non_utf8_file_names_line_and_fix(tmp_path):
    p = _write(tmp_path, "latin1.csv", "a,b,1.0\nc,d,2.0\ncaf\xe9,e,3.0\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"latin1\.csv, line 3: not valid UTF-8.*iconv"):
        R.read_sts_csv(p)


def test_gz_read_transparently(tmp_path):
    p = _write(tmp_path, "s.csv.gz", gzip.compress(b'"x, y",b,1.5\nc,d,2\n'))
    d = R.read_sts_csv(p)
    assert d.sentences1 == ["x, y", "c"] and d.scores.tolist() == [1.5, 2.0]
    assert len(R.read_sts_csv(str(tmp_path / "s.csv"))) == 2  # name without .gz finds the twin


@pytest.mark.parametrize("content,pattern", [
    ("a,b,1.0\nc,d\n", r"bad\.csv, line 2: expected 3 comma-separated columns.*found 2"),
    ("a,b,1.0\nc,d,x,y\n", r"line 2: expected 3 .*found 4.*Quote sentences"),
    ("a,b,1.0\nc,d,high\n", r"line 2: score 'high' is not a number"),
    ("a,b,1.0\nc,d,7.5\n", r"line 2: score 7.5 is outside \[0, 5\]"),
    ("a,b,-1\n", r"line 1: score -1 is outside"),
    ("a,b,nan\n", r"line 1: score 'nan' is not a number"),
    ("sentence1,sentence2,score\na,b,1\n", r"line 1: the score column is 'score'.*no header row"),
    ("a,,1\n", r"line 1: sentence2 is empty"),
    ("", r"bad\.csv: the STS CSV file is empty"),
    ("\n \n", r"empty"),
])
def test_sts_csv_bad_rows(tmp_path, content, pattern):
    with pytest.raises(DataFormatError, match=pattern):
        R.read_sts_csv(_write(tmp_path, "bad.csv", content))


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.csv.*does not exist"):
        R.read_sts_csv(str(tmp_path / "nope.csv"))
    with pytest.raises(FileNotFoundError, match="SentEval STS folder"):
        R.read_senteval_sts(str(tmp_path / "STS99"))
    with pytest.raises(DataFormatError, match="is a folder"):
        R.read_lines(str(tmp_path))


def test_other_formats_bad_rows(tmp_path):
    sick_hdr = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    with pytest.raises(DataFormatError, match=r"line 2: relatedness_score 0.5 is outside \[1, 5\]"):
        R.read_sick(_write(tmp_path, "s.txt", sick_hdr + "1\ta\tb\t0.5\tNEUTRAL\n"))
    with pytest.raises(DataFormatError, match=r"line 2: NLI label 'MAYBE'"):
        R.read_sick(_write(tmp_path, "s.txt", sick_hdr + "1\ta\tb\t2.5\tMAYBE\n"))
    with pytest.raises(DataFormatError, match=r"line 1: header .* lacks column\(s\) \['relatedness_score'"):
        R.read_sick(_write(tmp_path, "s.txt", "pair_ID\tsentence_A\tsentence_B\n"))
    with pytest.raises(DataFormatError, match=r"line 1: expected 7 tab-separated columns"):
        R.read_stsbenchmark_senteval(_write(tmp_path, "b.csv", "genre  source  2012  1  3.0  a  b\n"))
    with pytest.raises(DataFormatError, match=r"line 3: expected 3 tab-separated columns"):
        R.read_nli_tsv(_write(tmp_path, "n.tsv", "sentence1\tsentence2\tgold_label\na\tb\tneutral\na b neutral\n"))
    nli = R.read_nli_tsv(_write(tmp_path, "n.tsv", "premise\thypothesis\tlabel\na\tb\tNeutral\nc\td\t-\n"))
    assert (nli.labels, nli.label_ids.tolist()) == (["neutral"], [1])


def test_parallel_length_mismatch(tmp_path):
    a, b = _write(tmp_path, "a.txt", "x\ny\nz\n"), _write(tmp_path, "b.txt", "X\nY\n")
    with pytest.raises(DataFormatError, match=r"a\.txt has 3 lines but .*b\.txt has 2"):
        R.read_parallel(a, b)
    c = _write(tmp_path, "c.txt", "X\n\nZ\n")
    p = R.read_parallel(a, c)  # a blank side drops the whole pair, keeping the alignment
    assert (p.src, p.tgt) == (["x", "z"], ["X", "Z"])
    assert R.read_lines(_write(tmp_path, "l.txt", "\ufeff one \n\n two\r\n")) == ["one", "two"]


def test_senteval_folder_errors(tmp_path):
    d = tmp_path / "STS12-en-test"
    d.mkdir()
    (d / "STS.input.x.txt").write_text("a\tb\nc\td\ne\tf\n", encoding="utf-8")
    (d / "STS.gs.x.txt").write_text("1\n\n4.5\n", encoding="utf-8")
    data = R.read_senteval_sts(str(d))
    assert data.year == "STS12" and data.subsets["x"].sentences1 == ["a", "e"]  # blank gold skipped
    (d / "STS.gs.x.txt").write_text("1\n2\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"STS\.gs\.x\.txt: 2 lines but .* has 3"):
        R.read_senteval_sts(str(d))
    (d / "STS.gs.x.txt").write_text("1\n2\n6\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"STS\.gs\.x\.txt, line 3: gold score 6 is outside"):
        R.read_senteval_sts(str(d))
    (d / "STS.input.y.txt").write_text("a\tb\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"without gold scores for subset\(s\) \['y'\]"):
        R.read_senteval_sts(str(d))
