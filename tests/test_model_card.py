"""Model cards of exported models, ``sentjax plot`` and the TensorBoard scalars, from one real short
run (the tiny encoder, 6 steps on 8 fake devices, an STS evaluation every 2 steps)."""
import glob
import json
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import sentjax
from sentjax import cli
from sentjax.losses import registry
from sentjax.train.train import train
from tiny import tiny_config

SENTENCES = ["the cat plays in the park", "a dog runs fast", "the man reads a book in the house today",
             "zebra words outside the vocabulary", ""]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("card"))
    c = tiny_config(root, **{"evals.sts_dev.every_steps": 2, "best_metric": "sts_dev_spearman"})
    c.evals.sts_dev.data = os.path.join(root, "sts.tsv")
    s = train(c, progress=False)
    rows = [json.loads(line) for line in open(os.path.join(c.workdir, "metrics.jsonl"), encoding="utf-8")]
    return c, s, rows


def _card(folder):
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
        return f.read()


def _table_row(card, first_cell):
    for line in card.splitlines():
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in the card")


# ----------------------------------------------------------------------------- model card


def test_final_model_card_has_every_field(run):
    c, s, rows = run
    card = _card(s["final_model"])
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    # base model, architecture, pooling
    assert f"random initialisation (`config.model.encoder`), tokenizer `{c.model.tokenizer}`" in card
    assert f"model type bert, layers {c.model.encoder.num_hidden_layers}, hidden size 32, attention heads 4, feed-forward size 64, vocabulary 100" in card
    n_params = sum(np.size(x) for x in __import__("jax").tree.leaves(sentjax.load(s["final_model"]).params))
    assert f"parameters {n_params:,}" in card
    assert "**Pooling:** `mean`" in card and "32-dimensional embeddings (not normalised)" in card
    # data sources and sizes
    assert _table_row(card, c.data.datasets[0])[1:] == ["text", "256", "round robin"]
    # objective, its hyperparameters and citation
    assert "`infonce` (`sentjax/losses/infonce.py`)" in card
    assert _table_row(card, "temperature")[1] == "0.05" and _table_row(card, "symmetric")[1] == "False"
    assert "Representation Learning with Contrastive Predictive Coding" in card and "{SimCSE}" in card
    assert "```bibtex" in card
    # batch, steps, devices
    assert _table_row(card, "batch size (global)")[1] == "16"
    assert _table_row(card, "batch size per device")[1] == "2"
    assert _table_row(card, "training steps")[1] == "6 of 6"
    assert _table_row(card, "devices")[1] == "8 x cpu, 1 process"
    assert _table_row(card, "peak learning rate")[1] == "0.001"
    # versions and usage
    import jax
    assert _table_row(card, "jax")[1] == jax.__version__ and _table_row(card, "sentjax")[1] == sentjax.__version__
    assert 'SentenceTransformer("path/to/this/folder"' in card and 'sentjax.load("path/to/this/folder")' in card


def test_card_evaluation_table_matches_metrics_log(run):
    """Start, final and best of every evaluator metric, recomputed here from metrics.jsonl."""
    c, s, rows = run
    card = _card(s["final_model"])
    for metric in ("sts_dev_spearman", "sts_dev_pearson"):
        points = [(r["step"], r[metric]) for r in rows if metric in r]
        assert [p[0] for p in points] == [0, 2, 4, 6]
        best = max(points, key=lambda p: (p[1], -p[0]))
        want = [f"{points[0][1]:.2f}", "0", f"{points[-1][1]:.2f}", "6", f"{best[1]:.2f}", str(best[0])]
        label = f"**{metric}**" if metric == c.best_metric else metric
        assert _table_row(card, label)[1:] == want, metric
    assert s["best_step"] == max(((r["step"], r["sts_dev_spearman"]) for r in rows if "sts_dev_spearman" in r),
                                 key=lambda p: (p[1], -p[0]))[0]


def test_best_model_card_names_its_step(run):
    c, s, rows = run
    card = _card(os.path.join(c.workdir, "best_model"))
    when = f"after step {s['best_step']} of 6" if s["best_step"] else "at step 0 of 6 (before training)"
    assert f"`best_model/`: the parameters {when}, the highest sts_dev_spearman ({s['best_value']:.4g})" in card
    # its evaluation table stops at the exported step
    assert _table_row(card, "**sts_dev_spearman**")[4] == str(s["best_step"])


def test_resumed_run_writes_the_same_card(run, tmp_path):
    """The evaluation table comes from metrics.jsonl, so a run interrupted after step 4 and resumed
    writes the card of the uninterrupted run, byte for byte (the resume itself is exact)."""
    c, s, _ = run
    c2 = c.copy_and_resolve_references()
    c2.workdir = str(tmp_path / "resumed")
    shutil.copytree(c.workdir, c2.workdir, ignore=shutil.ignore_patterns("final_model", "plots"))
    shutil.rmtree(os.path.join(c2.workdir, "checkpoints", "6"))
    s2 = train(c2, resume=True, progress=False)
    assert _card(s2["final_model"]) == _card(s["final_model"])


def test_sentence_transformers_loads_the_export_with_identical_embeddings(run):
    st = pytest.importorskip("sentence_transformers")
    _, s, _ = run
    ours = sentjax.load(s["final_model"]).encode(SENTENCES)
    model = st.SentenceTransformer(s["final_model"], device="cpu")
    theirs = model.encode(SENTENCES, convert_to_numpy=True)
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


def test_save_without_training_writes_a_minimal_card(run, tmp_path):
    _, s, _ = run
    model = sentjax.load(s["final_model"])
    card = _card(sentjax.save(model, tmp_path / "copy"))
    assert "## Model details" in card and "## Usage" in card and "## Versions" in card
    assert "(from `final_model`)" in card and "## Training" not in card and "## Evaluation" not in card


@pytest.mark.parametrize("mlp_at_inference", [True, False])
def test_card_counts_and_describes_what_the_folder_holds(tok, tmp_path, mlp_at_inference):
    """SimCSE's MLP: described and counted only when it is exported (2_Dense)."""
    import jax
    from safetensors.numpy import load_file
    from sentjax.models.bert import EncoderConfig
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = sentjax.init_model(cfg, tok, jax.random.key(0), pooling="cls_mlp", normalize=True,
                               mlp_at_inference=mlp_at_inference)
    out = sentjax.save(model, tmp_path / "m")
    card = _card(out)
    saved = sum(v.size for f in glob.glob(os.path.join(out, "**", "*.safetensors"), recursive=True)
                for v in load_file(f).values())
    assert f"parameters {saved:,}" in card
    assert os.path.isdir(os.path.join(out, "2_Dense")) == mlp_at_inference
    assert ("SimCSE's tanh MLP" in card) == mlp_at_inference and ("not in this folder" in card) != mlp_at_inference
    assert "32-dimensional embeddings, L2-normalised" in card


def test_base_model_and_its_hub_id(run, tmp_path):
    from ml_collections import ConfigDict
    from sentjax.models.card import TrainingCard, render
    from sentjax.train.model_card import base_model

    def m(**kw):
        return ConfigDict({"init_from": "", "tokenizer": "tok", "vocab_from": "", **kw})
    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    assert base_model(m(init_from="minilm")) == (f"{minilm} (the bundled copy of the `models` extra)", minilm)
    assert base_model(m(init_from="org/model")) == ("org/model", "org/model")
    os.makedirs(tmp_path / "org" / "local")
    local = str(tmp_path / "org" / "local")
    assert base_model(m(init_from=local)) == (f"`{local}`", "")
    assert base_model(m(init_from="minilm", vocab_from="multilingual"))[0].endswith(
        "moved to the vocabulary of `multilingual` (sentjax.models.vocab_transfer)")
    model = sentjax.load(run[1]["final_model"])
    t = TrainingCard(base_model="org/model", base_model_id="org/model", checkpoint="x", datasets=(),
                     objective="cosine", objective_hparams={}, hyperparameters=())
    front = render(model, training=t).split("\n---\n")[0]
    assert "\nbase_model: org/model" in front and "library_name: sentence-transformers" in front
    assert "base_model:" not in render(model)


def test_every_objective_brings_its_citation():
    for name in registry.names():
        bib = registry.citation(name)
        assert re.match(r"@\w+\{[\w-]+,", bib) and "title" in bib and "year" in bib, name
        assert bib.count("{") == bib.count("}"), name


# ----------------------------------------------------------------------------- curves


def _events(logdir):
    """``{tag: [(step, value)]}`` of TensorBoard event files (TFRecord framing: u64 length, u32 crc,
    payload, u32 crc), parsed with tensorboardX's own protobufs."""
    from tensorboardX.proto import event_pb2
    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data, pos = open(path, "rb").read(), 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_has_the_same_scalars_as_metrics_jsonl(run):
    c, _, rows = run
    want = {}
    for r in rows:
        for k, v in r.items():
            if k != "step":
                want.setdefault(k, []).append((r["step"], v))
    got = _events(os.path.join(c.workdir, "tensorboard"))
    assert {"loss", "lr", "grad_norm", "sts_dev_spearman", "sts_dev_pearson"} <= set(want)
    assert set(got) == set(want)
    for tag, points in want.items():
        assert [p[0] for p in got[tag]] == [p[0] for p in points], tag
        np.testing.assert_allclose([p[1] for p in got[tag]], [p[1] for p in points], rtol=1e-6, err_msg=tag)


def test_plot_writes_a_png_per_scalar(run, tmp_path, capsys):
    from matplotlib.image import imread
    c, _, _ = run
    out = str(tmp_path / "plots")
    assert cli.main(["plot", c.workdir, "--out", out]) == 0
    names, printed = sorted(os.listdir(out)), capsys.readouterr().out
    for want in ("loss.png", "lr.png", "grad_norm.png", "eval_sts_dev_spearman.png", "eval_sts_dev_pearson.png"):
        assert want in names and want in printed, want
    for name in names:
        path = os.path.join(out, name)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", name
        img = imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.01, name  # not blank


def test_plot_without_metrics_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no metrics.jsonl" in err and "workdir" in err
    assert cli.main(["plot", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "metrics.jsonl").write_text("")
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no metric rows" in capsys.readouterr().err


def test_metrics_log_does_not_import_torch_and_torch_still_imports_after(tmp_path):
    # tensorboardX imports torch (~0.9 s of start-up) for a type alias only; MetricsLog hides it.
    pytest.importorskip("torch")
    code = (
        "import sys\n"
        "from sentjax.train.workdir import MetricsLog\n"
        f"log = MetricsLog({str(tmp_path)!r})\n"
        "log.write(1, {'loss': 0.5})\n"
        "log.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import torch\n"
        "assert torch.ones(2).sum().item() == 2.0\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    assert _events(os.path.join(str(tmp_path), "tensorboard")) == {"loss": [(1, 0.5)]}
