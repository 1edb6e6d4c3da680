"""Prompts / instructions: encode(prompt_name=...), include_prompt=False pooling (vs float64 NumPy,
packed vs padded), the sentence-transformers round trip, and per-column prompts in training data."""
import json
import os

import jax
import numpy as np
import pytest

import sentjax
from sentjax.errors import ConfigError
from sentjax.models.pooling import Pooler

PROMPTS = {"query": "the red query: ", "passage": "a big passage: "}
TEXTS = ["the cat plays in the park", "a dog runs", "", "the man reads a book today now",
         "green " * 30, "a bird sings loudly in the garden"]


@pytest.fixture(scope="module")
def model(tok):
    from sentjax.models.bert import EncoderConfig
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    m = sentjax.init_model(cfg, tok, jax.random.key(0))
    m.module = m.module.clone(include_prompt=False)
    return sentjax.SentenceModel(m.module, m.params, tok, prompts=PROMPTS, default_prompt_name="query")


# ----------------------------------------------------------------------------- pooling


def _np_pool(h, mask, plen, mode):
    out = []
    for i in range(h.shape[0]):
        keep = mask[i].astype(bool) & (np.arange(h.shape[1]) >= plen[i])
        if mode == "mean":
            out.append(h[i][keep].sum(0) / max(keep.sum(), 1e-9))
        elif mode == "max":
            out.append(h[i][keep].max(0) if keep.any() else np.full(h.shape[2], -1e9))
        else:
            out.append(h[i][np.argmax(keep)] if keep.any() else h[i][0])
    return np.stack(out)


@pytest.mark.parametrize("mode", ["mean", "max", "cls"])
def test_exclude_prompt_padded_and_packed_vs_numpy(mode):
    """Prompt tokens are left out of the pooled tokens, padded and packed alike (float64 reference);
    a sentence truncated inside its prompt pools nothing (mean: zeros, cls: its first token)."""
    rng = np.random.default_rng(0)
    lengths, plen = np.array([7, 3, 5, 2]), np.array([3, 3, 0, 4])
    h = rng.normal(size=(4, 8, 5))
    mask = (np.arange(8)[None] < lengths[:, None]).astype(np.int32)
    pool = Pooler(mode, include_prompt=False)
    padded = np.asarray(pool.apply({}, h, mask, prompt_length=plen))
    ref = _np_pool(h, mask, plen, mode)
    if mode != "max":
        np.testing.assert_allclose(padded, ref, atol=1e-5)
    else:
        np.testing.assert_allclose(padded[:3], ref[:3], atol=1e-5)  # row 3 has nothing left
    assert not np.allclose(padded, np.asarray(Pooler(mode).apply({}, h, mask, prompt_length=plen)))
    # the same sentences packed: rows [0, 1] and [2, 3] of length 16, two segment slots each
    packed_h, seg, starts, pl = np.zeros((2, 16, 5)), np.zeros((2, 16), np.int32), np.zeros((2, 2), np.int32), \
        np.zeros((2, 2), np.int32)
    for i in range(4):
        r, s = divmod(i, 2)
        at = 0 if s == 0 else lengths[i - 1]
        packed_h[r, at:at + lengths[i]] = h[i, :lengths[i]]
        seg[r, at:at + lengths[i]] = s + 1
        starts[r, s], pl[r, s] = at, plen[i]
    packed = np.asarray(pool.apply({}, packed_h, (seg > 0).astype(np.int32), segment_ids=seg,
                                   segment_starts=starts, prompt_length=pl)).reshape(4, 5)
    np.testing.assert_allclose(packed, padded, atol=1e-5)


def test_prompt_length_as_sentence_transformers_counts(tok):
    # [CLS] the red [UNK] [UNK] ([SEP] dropped): the prompt alone, less its trailing special token
    assert tok.prompt_length("the red query: ") == 5
    assert tok.prompt_length("") == 0


# ----------------------------------------------------------------------------- encode


def test_encode_prompts_packed_equals_padded_and_default(model):
    q = model.encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(model.encode(TEXTS, prompt_name="query", packing=False), q, atol=1e-5)
    np.testing.assert_allclose(model.encode(TEXTS), q, atol=1e-6)  # default_prompt_name = query
    np.testing.assert_allclose(model.encode(TEXTS, prompt="the red query: "), q, atol=1e-6)
    p = model.encode(TEXTS, prompt_name="passage")
    assert np.abs(p - q).max() > 1e-3
    bare = model.encode(TEXTS, prompt="")
    np.testing.assert_allclose(bare, model.encode(TEXTS, prompt="", packing=False), atol=1e-5)
    # include_prompt=False pools only the text's tokens: [CLS]+prompt are out, but attended to
    inc = sentjax.SentenceModel(model.module.clone(include_prompt=True), model.params, model.tokenizer,
                                prompts=PROMPTS)
    assert np.abs(inc.encode(TEXTS, prompt_name="query") - q).max() > 1e-3


def test_encode_prompt_errors(model):
    with pytest.raises(ValueError, match=r"'nope'.*\['passage', 'query'\]"):
        model.encode(TEXTS, prompt_name="nope")
    with pytest.raises(ValueError, match="not both"):
        model.encode(TEXTS, prompt_name="query", prompt="x: ")
    with pytest.raises(ValueError, match="default_prompt_name 'doc'"):
        sentjax.SentenceModel(model.module, model.params, model.tokenizer, prompts=PROMPTS,
                              default_prompt_name="doc")


# ----------------------------------------------------------------------------- round trip


def test_round_trip_with_sentence_transformers(model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    out = sentjax.save(model, tmp_path / "prompted")
    with open(os.path.join(out, "config_sentence_transformers.json")) as f:
        saved = json.load(f)
    assert saved["prompts"] == PROMPTS and saved["default_prompt_name"] == "query"
    ref = st.SentenceTransformer(out, device="cpu")
    # sentence-transformers adds its empty default "document" prompt
    assert {k: ref.prompts[k] for k in PROMPTS} == PROMPTS and ref[1].include_prompt is False
    for name in ("query", "passage"):
        np.testing.assert_allclose(ref.encode(TEXTS, prompt_name=name, convert_to_numpy=True),
                                   model.encode(TEXTS, prompt_name=name), atol=1e-5)
    np.testing.assert_allclose(ref.encode(TEXTS, convert_to_numpy=True), model.encode(TEXTS), atol=1e-5)
    back = sentjax.load(out)
    assert back.prompts == PROMPTS and back.default_prompt_name == "query"
    assert back.module.include_prompt is False
    np.testing.assert_allclose(back.encode(TEXTS, prompt_name="passage"),
                               model.encode(TEXTS, prompt_name="passage"), atol=1e-6)

    # a folder that sentence-transformers writes (its own pooling config format) loads with its prompts
    ref.prompts = {"q": "the small q: ", "d": "a green d: "}
    ref.default_prompt_name = "d"
    ref[1].include_prompt = True
    st_dir = str(tmp_path / "from_st")
    ref.save(st_dir)
    ours = sentjax.load(st_dir)
    assert ours.prompts == ref.prompts and ours.default_prompt_name == "d"
    assert ours.module.include_prompt is True
    for name in ("q", "d"):
        np.testing.assert_allclose(ours.encode(TEXTS, prompt_name=name),
                                   ref.encode(TEXTS, prompt_name=name, convert_to_numpy=True), atol=1e-5)


# ----------------------------------------------------------------------------- training data


def test_pipeline_prepends_column_prompts(tok, ws):
    from sentjax.data.pipeline import Pipeline
    from sentjax.data.sources import load_source
    src = load_source(f"pairs:{ws.sts}")
    pipe = Pipeline([src], tok, 8, seed=0, prompts={"anchor": "the red query: ", "positive": "a big passage: "},
                    prompt_lengths=True, process_index=0, process_count=1)
    texts, batch = pipe.texts(3), pipe.batch(3)
    for col, prompt in (("anchor", "the red query: "), ("positive", "a big passage: ")):
        want = tok.pad(tok.encode_ids([prompt + t for t in texts[col]]), batch[col]["input_ids"].shape[1])
        np.testing.assert_array_equal(batch[col]["input_ids"], want["input_ids"])
        np.testing.assert_array_equal(batch[col]["prompt_length"], np.full(8, tok.prompt_length(prompt)))
    plain = Pipeline([src], tok, 8, seed=0, process_index=0, process_count=1).batch(3)
    assert "prompt_length" not in plain["anchor"]
    assert plain["anchor"]["input_ids"].shape[1] < batch["anchor"]["input_ids"].shape[1]


def test_training_batch_pools_as_encode(model, tok, ws):
    """What the step embeds for a prompted column equals encode(prompt_name=...) of its texts."""
    from sentjax.data.pipeline import Pipeline
    from sentjax.data.sources import load_source
    from sentjax.models.sentence_model import embed_fn
    pipe = Pipeline([load_source(f"pairs:{ws.sts}")], tok, 8, seed=0, process_index=0, process_count=1,
                    prompts={"anchor": PROMPTS["query"], "positive": PROMPTS["passage"]}, prompt_lengths=True)
    texts, batch = pipe.texts(0), pipe.batch(0)
    for col, name in (("anchor", "query"), ("positive", "passage")):
        got = np.asarray(embed_fn(model.module)(model.params, batch[col]))
        np.testing.assert_allclose(got, model.encode(texts[col], prompt_name=name), atol=1e-5)


def test_prompt_config_errors(ws, tmp_path):
    from sentjax.data.prompts import column_prompts
    from sentjax.data.sources import load_source
    from tiny import tiny_config
    with pytest.raises(ConfigError, match=r"data\.prompts\.anchor"):
        tiny_config(str(tmp_path), **{"data.prompts.query": "query: "})
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['query'\]"):
        column_prompts({"query": "query: "})
    with pytest.raises(ConfigError, match="set data.prompts.negative"):
        column_prompts({"anchor": "q: ", "positive": "p: ", "negative": "n: "})
    with pytest.raises(ConfigError, match=r"\['negative'\] set but no dataset"):
        column_prompts({"positive": "p: ", "negative": "p: "}, [load_source(f"pairs:{ws.sts}")])
    assert column_prompts({"anchor": "q: ", "positive": ""}) == {"anchor": "q: "}


@pytest.mark.slow
def test_trained_with_prompts_exports_them(ws, tmp_path):
    """A run with per-column prompts and include_prompt=False exports a folder that
    sentence-transformers reads with those prompts and encodes as sentjax does."""
    st = pytest.importorskip("sentence_transformers")
    from sentjax.train.train import train
    from tiny import tiny_config
    c = tiny_config(str(tmp_path), **{"data.datasets": (f"pairs:{ws.sts}",), "total_steps": 2,
                                      "checkpoint.every_steps": 2, "data.prompts.anchor": "the red query: ",
                                      "data.prompts.positive": "a big passage: ", "model.include_prompt": False,
                                      "evals.sts_dev.every_steps": 2, "evals.sts_dev.data": ws.sts})
    summary = train(c, progress=False)
    out = summary["final_model"]
    ours = sentjax.load(out)
    assert ours.prompts == {"query": "the red query: ", "document": "a big passage: "}
    assert ours.module.include_prompt is False and ours.default_prompt_name == "query"
    ref = st.SentenceTransformer(out, device="cpu")
    np.testing.assert_allclose(ref.encode_query(TEXTS, convert_to_numpy=True),
                               ours.encode(TEXTS, prompt_name="query"), atol=1e-5)
    np.testing.assert_allclose(ref.encode_document(TEXTS, convert_to_numpy=True),
                               ours.encode(TEXTS, prompt_name="document"), atol=1e-5)
    # the evaluation during training encoded under the query prompt, as encode(prompt_name="query") does
    from sentjax.eval.evaluators import build_evaluators
    sts = build_evaluators(c.evals)["sts_dev"]
    want = sts(lambda texts: ours.encode(list(texts), prompt_name="query"))
    bare = sts(lambda texts: ours.encode(list(texts), prompt=""))
    assert summary["sts_dev_spearman"] == pytest.approx(want["spearman"], abs=1e-3)
    assert abs(want["pearson"] - bare["pearson"]) > 1e-3


def test_experiment_rows_are_valid_configs():
    """experiments/prompts.py: every row (run or not) builds a config whose prompts fit its data."""
    import importlib.util
    from sentjax.data.prompts import column_prompts
    from sentjax.data.sources import load_source
    from sentjax.train.config_cli import apply_overrides
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "prompts.py")
    spec = importlib.util.spec_from_file_location("exp_prompts", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = {}
    for row, overrides in {**mod.ROWS, **mod.NOT_RUN}.items():
        c = apply_overrides(mod.get_config(), {**mod.CPU, **overrides})
        got[row] = column_prompts(dict(c.data.prompts), [load_source(s) for s in c.data.datasets])
    assert got[mod.MAIN] == {"anchor": "query: ", "positive": "passage: ", "negative": "passage: "}
    assert got["no prompts"] == {}


def test_mteb_adapter_does_not_prompt_twice(model):
    """The mteb adapter resolves the prompt itself; the model's default prompt must not come on top."""
    pytest.importorskip("mteb")
    from sentjax.eval import mteb_tasks
    from sentjax.eval.mteb_adapter import MTEBEncoder
    inc = sentjax.SentenceModel(model.module.clone(include_prompt=True), model.params, model.tokenizer,
                                prompts={"query": "the red query: ", "document": ""}, default_prompt_name="query")
    meta = mteb_tasks.retrieval_task("stsb-en-dev", 20).metadata
    from mteb.types import PromptType
    enc = MTEBEncoder(inc, prompts=inc.prompts, default_prompt_name="query")
    got = enc.encode([{"text": TEXTS}], task_metadata=meta, hf_split="test", hf_subset="default",
                     prompt_type=PromptType.document)
    np.testing.assert_allclose(got, inc.encode(TEXTS, prompt=""), atol=1e-6)
    got = enc.encode([{"text": TEXTS}], task_metadata=meta, hf_split="test", hf_subset="default",
                     prompt_type=PromptType.query)
    np.testing.assert_allclose(got, inc.encode(TEXTS, prompt_name="query"), atol=1e-6)
