"""Multi-dataset training (sentjax/data/mixture.py): proportions, round robin, one dataset per batch,
no text twice in a global batch, resume = uninterrupted order, process rows, config errors, trainer."""
import json
import os

import numpy as np
import pytest

from sentjax.data.mixture import (MixedPipeline, batch_shares, build_mixture_pipeline, mixture_weights,
                                  parse_sources)
from sentjax.data.pipeline import Pipeline
from sentjax.data.sources import load_source
from sentjax.errors import ConfigError


@pytest.fixture(scope="module")
def files(ws, tmp_path_factory):
    """pairs (96 rows) and triplets (64 rows) whose texts overlap: planted cross-dataset duplicates."""
    d = tmp_path_factory.mktemp("multi")
    s = open(ws.sentences, encoding="utf-8").read().split("\n")[:256]
    pairs = d / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\n" + "".join(f"{s[i]}\t{s[i + 100]}\n" for i in range(96)))
    tri = d / "tri.tsv"  # anchors 0..63 are also pair anchors; positives are pair positives of other rows
    tri.write_text("sent0\tsent1\thard_neg\n" + "".join(f"{s[i]}\t{s[(i + 5) % 96 + 100]}\t{s[i + 200]}\n"
                                                        for i in range(56)))
    pairs2 = d / "pairs2.tsv"  # same columns as pairs, half of its rows identical to pairs' rows
    pairs2.write_text("sentence1\tsentence2\n" + "".join(
        f"{s[i]}\t{s[i + 100]}\n" if i % 2 else f"{s[i + 150]}\t{s[i + 50]}\n" for i in range(48)))
    return {"pairs": f"pairs:{pairs}", "tri": f"triplets:{tri}", "pairs2": f"pairs:{pairs2}"}


def _data(sources, sampling="proportional", homogeneous=True):
    return {"sources": tuple(sources), "sampling": sampling, "homogeneous": homogeneous}


def _batch_texts(pipe, step):
    t = pipe.texts(step)
    return [x for f in ("anchor", "positive", "negative") if f in t for x in t[f]]


def test_proportional_by_weight_and_by_size(files, tok):
    p = build_mixture_pipeline(_data([{"spec": files["pairs"], "weight": 3.0}, {"spec": files["tri"], "weight": 1.0}]),
                               tok, 8, seed=0, dedup=True, process_index=0, process_count=1)
    steps = 4000
    share = np.mean([p.locate(s)[0] == 0 for s in range(steps)])
    assert abs(share - 0.75) < 5 * np.sqrt(0.75 * 0.25 / steps), share
    by_size = build_mixture_pipeline(_data([files["pairs"], files["tri"]]), tok, 8, seed=0, dedup=True,
                                     process_index=0, process_count=1)
    expected = 96 / (96 + 56)
    share = np.mean([by_size.locate(s)[0] == 0 for s in range(steps)])
    assert abs(share - expected) < 5 * np.sqrt(expected * (1 - expected) / steps), share
    # each source walks through its own epochs: the k-th pairs batch of the run is that source's k-th batch
    ks = [k for src, k in (by_size.locate(s) for s in range(200)) if src == 0]
    assert ks == list(range(len(ks)))


def test_round_robin_order_and_homogeneous_batches(files, tok):
    p = build_mixture_pipeline(_data([files["pairs"], files["tri"], files["pairs2"]], "round_robin"), tok, 8,
                               seed=1, dedup=True, process_index=0, process_count=1)
    assert [p.locate(s) for s in range(7)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2)]
    assert p.source_names == ["pairs", "tri", "pairs2"]
    for s in range(6):
        src, _, idx = p.global_indices(s)
        b = p.batch(s)
        # one dataset per batch: every row an example of that source, the batch has exactly its columns
        assert idx.max() < len(p.sources[src])
        assert ("negative" in b) == (src == 1)
        assert p.draws(s) == {src: 8}
        texts = _batch_texts(p, s)
        assert len(set(texts)) == len(texts)


def test_mixed_batches_shares_and_no_global_duplicates(files, tok):
    p = build_mixture_pipeline(_data([{"spec": files["pairs"], "weight": 1.0}, {"spec": files["pairs2"], "weight": 1.0}],
                                     homogeneous=False), tok, 16, seed=0, dedup=True, process_index=0, process_count=1)
    assert isinstance(p, MixedPipeline) and list(p.shares) == [8, 8]
    a, b = (load_source(files[k]) for k in ("pairs", "pairs2"))
    n_dup = 0
    for s in range(40):
        _, _, idx = p.global_indices(s)
        assert np.all(idx[:8] < len(a)) and np.all(idx[8:] >= len(a))  # 8 rows of each source, in order
        texts = _batch_texts(p, s)
        assert len(set(texts)) == len(texts), s  # no text twice anywhere in the global batch
        # without the cross-source replacement the planted duplicates would collide
        naive = {t for i in p.part_orders[0].batch(s)[1] for t in (a.columns["anchor"][i], a.columns["positive"][i])}
        n_dup += any({b.columns["anchor"][i], b.columns["positive"][i]} & naive for i in p.part_orders[1].batch(s)[1])
    assert n_dup > 0  # the test data did plant collisions that the mixture removed
    assert p.draws(3) == {0: 8, 1: 8}


def test_batch_shares_largest_remainder():
    assert list(batch_shares([0.5, 0.3, 0.2], 10)) == [5, 3, 2]
    assert list(batch_shares([1, 1, 1], 8)) == [3, 3, 2]
    with pytest.raises(ConfigError, match="no row"):
        batch_shares([100, 1], 8)


@pytest.mark.parametrize("homogeneous", [True, False])
def test_resume_in_the_middle_equals_uninterrupted(files, tok, homogeneous):
    srcs = [files["pairs"], files["pairs2"]] if not homogeneous else [files["pairs"], files["tri"], files["pairs2"]]

    def run(start, stop):
        p = build_mixture_pipeline(_data(srcs, homogeneous=homogeneous), tok, 8, seed=5, dedup=True,
                                   process_index=0, process_count=1)
        with p.iterate(start, stop, prefetch=2) as it:
            return {s: b for s, b in it}

    full, resumed = run(0, 14), run(9, 14)
    assert sorted(resumed) == list(range(9, 14))
    for s, b in resumed.items():
        assert sorted(b) == sorted(full[s])
        for col in b:
            if isinstance(b[col], dict):
                for k in b[col]:
                    np.testing.assert_array_equal(b[col][k], full[s][col][k])
            else:
                np.testing.assert_array_equal(b[col], full[s][col])


def test_process_rows_tile_the_mixed_global_batch(files, tok):
    data = _data([files["pairs"], files["pairs2"]], homogeneous=False)
    full = build_mixture_pipeline(data, tok, 8, seed=2, dedup=True, process_index=0, process_count=1)
    parts = [build_mixture_pipeline(data, tok, 8, seed=2, dedup=True, process_index=i, process_count=2) for i in range(2)]
    for s in (0, 3, 11):
        fb, pb = full.batch(s), [q.batch(s) for q in parts]
        for col in ("anchor", "positive"):
            np.testing.assert_array_equal(np.concatenate([b[col]["input_ids"] for b in pb]), fb[col]["input_ids"])
            assert pb[0][col]["input_ids"].shape == pb[1][col]["input_ids"].shape  # one padded length


def test_config_errors(files, tok):
    with pytest.raises(ConfigError, match="sampling"):
        parse_sources([files["pairs"]], "random")
    with pytest.raises(ConfigError, match="empty"):
        parse_sources([], "proportional")
    for w in (0, -1.0, float("nan"), "2"):
        with pytest.raises(ConfigError, match="weight must be a number > 0"):
            parse_sources([{"spec": files["pairs"], "weight": w}], "proportional")
    with pytest.raises(ConfigError, match="every entry or to none"):
        parse_sources([{"spec": files["pairs"], "weight": 1.0}, files["tri"]], "proportional")
    with pytest.raises(ConfigError, match="round_robin"):
        parse_sources([{"spec": files["pairs"], "weight": 1.0}], "round_robin")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_sources([{"spec": files["pairs"], "weigth": 1.0}], "proportional")
    with pytest.raises(ConfigError, match="used twice"):
        parse_sources([files["pairs"], files["pairs"]], "proportional")
    with pytest.raises(ConfigError, match="needs a 'spec'"):
        parse_sources([{"weight": 1.0}], "proportional")
    # mixed batches need one column set
    with pytest.raises(ConfigError, match="same columns"):
        build_mixture_pipeline(_data([files["pairs"], files["tri"]], homogeneous=False), tok, 8, 0, True,
                               process_index=0, process_count=1)
    # an objective that cannot take a source's columns is refused before training
    from sentjax.train.objectives import make_objective
    with pytest.raises(ConfigError, match="'pairs'.*softmax"):
        build_mixture_pipeline(_data([files["pairs"], files["tri"]]), tok, 8, 0, True,
                               objective=make_objective({"name": "softmax"}), process_index=0, process_count=1)
    ok = build_mixture_pipeline(_data([files["pairs"], files["tri"]]), tok, 8, 0, True,
                                objective=make_objective({"name": "infonce"}), process_index=0, process_count=1)
    assert isinstance(ok, Pipeline) and not isinstance(ok, MixedPipeline)
    assert mixture_weights(parse_sources([files["pairs"], files["tri"]], "round_robin"), ok.sources, "round_robin") == ()


def test_validate_config_refuses_bad_sources(tmp_path):
    from tiny import tiny_config

    from sentjax.train.config_cli import apply_overrides
    from sentjax.train.train import validate_config
    c = tiny_config(str(tmp_path))
    for overrides, match in [({"data.sampling": "shuffle"}, "sampling"),
                             ({"data.sources": ({"spec": "pairs:x", "weight": 0},)}, "weight"),
                             ({"data.sources": ("pairs:x",), "data.weights": (1.0,)}, "own 'weight'")]:
        with pytest.raises(ConfigError, match=match):
            validate_config(apply_overrides(c, overrides))


@pytest.mark.slow  # ~35 s on 2 loaded cores; the order and logging parts are pinned by the tests above
def test_trainer_two_sources_logs_the_dataset_of_each_step(tmp_path, files):
    from tiny import tiny_config

    from sentjax.train.train import train
    c = tiny_config(str(tmp_path), **{"data.sources": (files["pairs"], {"spec": files["tri"], "name": "nli"}),
                                      "data.sampling": "round_robin", "total_steps": 4, "batch_size": 8,
                                      "checkpoint.every_steps": 4, "evals.sts_dev.every_steps": 0})
    s = train(c, progress=False)
    rows = [json.loads(x) for x in open(os.path.join(c.workdir, "metrics.jsonl"), encoding="utf-8")]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["data_source"] for r in steps] == [0.0, 1.0, 0.0, 1.0]  # round robin, one dataset per step
    assert [(r["data_pairs"], r["data_nli"]) for r in steps] == [(1.0, 0.0), (0.0, 1.0)] * 2
    assert all(np.isfinite(r["loss"]) for r in steps)
    card = open(os.path.join(s["final_model"], "README.md"), encoding="utf-8").read()
    assert files["tri"].split(":", 1)[1] in card


def test_one_source_list_equals_the_single_dataset_path(files, tok):
    """data.sources = (X,) trains on exactly the batches of data.datasets = (X,)."""
    one = build_mixture_pipeline(_data([files["tri"]]), tok, 8, seed=4, dedup=True, process_index=0, process_count=1)
    old = Pipeline([load_source(files["tri"])], tok, 8, seed=4, process_index=0, process_count=1)
    for s in range(0, 30, 3):  # across epochs (56 // 8 = 7 batches per epoch)
        np.testing.assert_array_equal(one.global_indices(s)[2], old.global_indices(s)[2])


def test_process_rows_tile_the_homogeneous_global_batch(files, tok):
    data = _data([files["pairs"], files["tri"]], "round_robin")
    full = build_mixture_pipeline(data, tok, 8, seed=2, dedup=True, process_index=0, process_count=1)
    parts = [build_mixture_pipeline(data, tok, 8, seed=2, dedup=True, process_index=i, process_count=2) for i in range(2)]
    for s in (0, 1, 5):
        fb, pb = full.batch(s), [q.batch(s) for q in parts]
        assert sorted(fb) == sorted(pb[0]) == sorted(pb[1])
        for col in fb:
            np.testing.assert_array_equal(np.concatenate([b[col]["input_ids"] for b in pb]), fb[col]["input_ids"])
