"""Hard-negative mining on a planted corpus whose cosines to the query are known: rank window,
absolute and relative margin vs the positive, the positive's duplicates and the query itself
removed, judged non-relevant documents kept, 8 devices = 1; the CLI writes triplets the trainer reads."""
import hashlib

import jax
import numpy as np
import pytest

from sentjax.data import ir
from sentjax.data.mining import MiningConfig, mine_hard_negatives

# (doc id, text, cosine to query "q"); the corpus order is shuffled below so ranks != corpus order
PLANTED = [("self", "the query", 1.0), ("dup", "the positive", 0.99), ("unl", "unlabelled", 0.97),
           ("pos", "the positive", 0.95), ("n94", "n94", 0.94), ("n91", "n91", 0.91), ("n85", "n85", 0.85),
           ("n80", "n80", 0.80), ("n70", "n70", 0.70), ("n60", "n60", 0.60), ("n50", "n50", 0.50),
           ("n40", "n40", 0.40)]


def planted():
    order = np.random.default_rng(0).permutation(len(PLANTED))
    docs = [PLANTED[i] for i in order]
    # query e0; doc at cosine c: [c, sqrt(1 - c^2), 0]; a second query e2 with its own positive
    emb = np.array([[c, np.sqrt(1 - c * c), 0.0] for _, _, c in docs] + [[0.0, 0.3, 1.0]])
    corpus = {d: t for d, t, _ in docs} | {"pos2": "second positive"}
    task = ir.RetrievalTask({"q": "the query", "q2": "other"}, corpus,
                            {"q": {"pos": 1, "n85": 0}, "q2": {"pos2": 1}})
    q_emb = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return task, q_emb, emb


def negatives(cfg, **kw):
    task, q, d = planted()
    rows, stats = mine_hard_negatives(task, q, d, cfg, **kw)
    return [r["neg_id"] for r in rows if r["qid"] == "q"], rows, stats


def test_rank_window_margin_and_duplicates():
    # ranks (0-based): self 0, dup 1, unl 2, pos 3, n94 4, n91 5, n85 6, n80 7, n70 8, n60 9, n50 10, n40 11
    # absolute 0.05: a negative scores <= 0.90; self, dup (the positive's text) and pos are never negatives;
    # n85 is judged non-relevant (0) and stays a candidate
    assert negatives(MiningConfig((0, 50), 0.05, False, 4))[0] == ["n85", "n80", "n70", "n60"]
    assert negatives(MiningConfig((7, 50), 0.05, False, 4))[0] == ["n80", "n70", "n60", "n50"]
    assert negatives(MiningConfig((0, 9), 0.05, False, 4))[0] == ["n85", "n80", "n70"]  # ends at rank 8
    # margin 0: still never above the positive (unl, 0.97, is a likely unlabelled positive)
    assert negatives(MiningConfig((0, 50), 0.0, False, 2))[0] == ["n94", "n91"]
    assert negatives(MiningConfig((5, 50), 0.0, False, 2))[0] == ["n91", "n85"]
    # relative 0.1: <= 0.95 * 0.9 = 0.855; relative 0.2: <= 0.76
    assert negatives(MiningConfig((0, 50), 0.1, True, 3))[0] == ["n85", "n80", "n70"]
    assert negatives(MiningConfig((0, 50), 0.2, True, 2))[0] == ["n70", "n60"]


def test_rows_scores_stats_and_eight_devices():
    cfg = MiningConfig((0, 50), 0.05, False, 4)
    ids, rows, stats = negatives(cfg)
    r = rows[0]
    assert (r["query"], r["positive"], r["negative"], r["rank"]) == ("the query", "the positive", "n85", 6)
    assert r["pos_score"] == pytest.approx(0.95, abs=1e-6) and r["neg_score"] == pytest.approx(0.85, abs=1e-6)
    # q2's positive scores 1/sqrt(1.09) = 0.958; everything else (<= 0.29) is far enough below it
    q2 = [x["neg_id"] for x in rows if x["qid"] == "q2"]
    assert len(q2) == 4 and "pos2" not in q2
    assert stats == {"pairs": 2, "rows": 8, "short": 0}
    mesh = jax.make_mesh((8,), ("data",))
    assert negatives(cfg, mesh=mesh, corpus_block=1)[1] == rows


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="START:END"):
        MiningConfig((5, 5))
    with pytest.raises(ValueError, match="num_negatives"):
        MiningConfig(num_negatives=0)
    with pytest.raises(ValueError, match="< 1 when relative"):
        MiningConfig(margin=1.0, relative=True)
    task, q, d = planted()
    with pytest.raises(ValueError, match="embed task.qrels' queries"):
        mine_hard_negatives(task, q[:1], d)


def _bow(texts):
    out = np.zeros((len(texts), 64))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 64] += 1.0
    return out + 1e-3


def test_cli_writes_triplets_the_trainer_reads(tmp_path, capsys, monkeypatch):
    from sentjax import cli
    from sentjax.data.sources import load_source
    from tiny import make_tiny_workspace
    ws = make_tiny_workspace(str(tmp_path / "ws"))
    sents = open(ws.sentences).read().split("\n")[:60]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in zip(sents[:20], sents[20:40])))
    extra = tmp_path / "extra.txt"
    extra.write_text("\n".join(sents[40:]) + "\n")
    monkeypatch.setattr(cli, "load_encoder", lambda model, batch_size: _bow)
    out = tmp_path / "mined.tsv"
    assert cli.main(["mine", "--model", "x", "--pairs", str(pairs), "--corpus", str(extra), "--range", "2:30",
                     "--margin", "0.02", "--num-negatives", "3", "--out", str(out)]) == 0
    assert "(query, positive) pairs from 40 documents" in capsys.readouterr().out
    src = load_source(f"triplets:{out}")
    assert src.kind == "triplets" and 0 < len(src) <= 60
    a, p, n = (src.columns[k] for k in ("anchor", "positive", "negative"))
    assert all(x != y for x, y in zip(p, n)) and set(a) <= set(sents[:20])
    assert cli.main(["mine", "--model", "x", "--pairs", str(pairs), "--range", "30:2", "--out", str(out)]) == 2
    assert "START:END" in capsys.readouterr().err
    assert cli.main(["mine", "--model", "x", "--out", str(out)]) == 2
    assert "pass one of --data" in capsys.readouterr().err
