"""mteb 2.x through sentjax: local tasks from bundled STS-B dev run through the adapter and score what
sentjax's own evaluators score on the same data (STS: ``sentjax.eval.sts``; retrieval: nDCG@10 from
ir_measures on sentjax's embeddings), and the exported sentence-transformers folder run by mteb's own
wrapper scores the same as the adapter, with and without prompts. A tiny random encoder with the
all-MiniLM-L6-v2 tokenizer keeps it fast (the scores are low, but every sentence embeds differently)."""
import json
import os

import jax
import numpy as np
import pytest

from sentjax.testing import minilm_dir

mteb = pytest.importorskip("mteb")
pytest.importorskip("sentence_transformers")
ir_measures = pytest.importorskip("ir_measures")
if minilm_dir() is None:
    pytest.skip("the all-MiniLM-L6-v2 tokenizer (models extra) is not installed", allow_module_level=True)

import sentjax  # noqa: E402
from sentjax.data import readers  # noqa: E402
from sentjax.errors import ConfigError  # noqa: E402
from sentjax.eval import mteb_adapter, mteb_tasks  # noqa: E402
from sentjax.eval.sts import encode_unique, evaluate_sts  # noqa: E402

STS_PAIRS, RET_PAIRS = 200, 400
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An exported tiny model (2 layers, hidden 64, MiniLM's 30522-word tokenizer)."""
    from sentjax.models.bert import EncoderConfig
    from sentjax.tokenization import Tokenizer
    tok = Tokenizer.from_dir(minilm_dir(), max_length=64)
    cfg = EncoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    return sentjax.save(sentjax.init_model(cfg, tok, jax.random.key(0)), str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def prompted(folder, tmp_path_factory):
    """The same weights with e5-style prompts in config_sentence_transformers.json."""
    import shutil
    out = str(tmp_path_factory.mktemp("prompted") / "model")
    shutil.copytree(folder, out)
    path = os.path.join(out, "config_sentence_transformers.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**cfg, "prompts": PROMPTS}, f)
    return out


@pytest.fixture(scope="module")
def model(folder):
    return sentjax.load(folder)


def _tasks():
    return [mteb_tasks.sts_task("stsb-en-dev", STS_PAIRS), mteb_tasks.retrieval_task("stsb-en-dev", RET_PAIRS)]


def _run(m, tasks=None):
    return mteb_adapter.main_scores(mteb_adapter.run_mteb(m, tasks or _tasks(), show_progress=False))


@pytest.fixture(scope="module")
def adapter_scores(model):
    return _run(mteb_adapter.MTEBEncoder(model))


def _ndcg10(encode_fn, queries, corpus, qrels) -> float:
    """nDCG@10 by ir_measures, cosine (float64) over the whole corpus."""
    q_ids, d_ids = list(queries), list(corpus)
    emb = encode_unique(encode_fn, [queries[i] for i in q_ids] + [corpus[i] for i in d_ids])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb[:len(q_ids)] @ emb[len(q_ids):].T
    run = [ir_measures.ScoredDoc(q, d, float(sims[i, j])) for i, q in enumerate(q_ids) for j, d in enumerate(d_ids)]
    rels = [ir_measures.Qrel(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    measure = ir_measures.nDCG @ 10
    return float(ir_measures.calc_aggregate([measure], rels, run)[measure])


def test_adapter_matches_sentjax_evaluators(model, adapter_scores):
    sts, ret = (t.metadata.name for t in _tasks())
    d = readers.read_sts("stsb-en-dev")
    own = evaluate_sts(lambda x: model.encode(x), d.sentences1[:STS_PAIRS], d.sentences2[:STS_PAIRS],
                       d.scores[:STS_PAIRS])
    assert adapter_scores[sts]["main_score"] == pytest.approx(own["spearman"] / 100, abs=1e-4)
    ndcg = _ndcg10(lambda x: model.encode(x), *mteb_tasks.retrieval_split("stsb-en-dev", RET_PAIRS))
    assert 0.05 < ndcg < 0.99  # neither degenerate nor perfect, so a wrong ranking would show
    assert adapter_scores[ret]["main_score"] == pytest.approx(ndcg, abs=1e-4)


def test_exported_folder_in_mteb_without_adapter(folder, adapter_scores):
    """mteb's SentenceTransformerEncoderWrapper (PyTorch) on the exported folder: the same scores."""
    from sentence_transformers import SentenceTransformer
    st = _run(SentenceTransformer(folder, device="cpu"))
    assert set(st) == set(adapter_scores)
    for task in st:
        assert st[task]["main_score"] == pytest.approx(adapter_scores[task]["main_score"], abs=1e-4), task


def test_prompts_match_sentence_transformers(prompted, adapter_scores):
    """Query / document prompts from the folder: adapter == sentence-transformers route, and the
    prompts change the retrieval score (so they were applied)."""
    from sentence_transformers import SentenceTransformer
    task = mteb_tasks.retrieval_task("stsb-en-dev", RET_PAIRS)
    name = task.metadata.name
    enc = mteb_adapter.MTEBEncoder(sentjax.load(prompted))
    assert enc.prompts == PROMPTS and enc.mteb_model_meta.use_instructions
    ours = _run(enc, [task])[name]["main_score"]
    st = _run(SentenceTransformer(prompted, device="cpu"), [mteb_tasks.retrieval_task("stsb-en-dev", RET_PAIRS)])
    assert ours == pytest.approx(st[name]["main_score"], abs=1e-4)
    assert abs(ours - adapter_scores[name]["main_score"]) > 1e-3


def test_resolve_prompt_order():
    """mteb's key order (task-query, task, type-query, type, query), then sentence-transformers'
    fallbacks (document/passage/corpus) and default_prompt_name."""
    from mteb.types import PromptType
    meta = mteb_tasks.retrieval_task("stsb-en-dev", 20).metadata
    name = meta.name
    full = {f"{name}-query": "a", name: "b", "Retrieval-query": "c", "Retrieval": "d", "query": "e",
            "passage": "f", "other": "g"}
    order = [f"{name}-query", name, "Retrieval-query", "Retrieval", "query"]
    for i, key in enumerate(order):
        prompts = {k: v for k, v in full.items() if k not in order[:i]}
        assert mteb_adapter.resolve_prompt(prompts, None, meta, PromptType.query) == full[key]
    assert mteb_adapter.resolve_prompt({"passage": "f", "corpus": "x"}, None, meta, PromptType.document) == "f"
    assert mteb_adapter.resolve_prompt({"other": "g", "query": "e"}, "other", meta, None) == "g"
    assert mteb_adapter.resolve_prompt({"other": "g"}, "other", meta, PromptType.document) == "g"
    assert mteb_adapter.resolve_prompt({"query": ""}, "other", meta, PromptType.query) == ""
    assert mteb_adapter.resolve_prompt({}, None, meta, PromptType.query) == ""


def test_meta_and_refusals(model, folder, prompted):
    enc = mteb_adapter.MTEBEncoder(model)
    meta = enc.mteb_model_meta
    n = sum(np.size(x) for x in jax.tree.leaves(model.params))
    assert (meta.embed_dim, meta.n_parameters, meta.max_tokens) == (64, n, 64)
    assert meta.name == f"sentjax/{os.path.basename(folder)}" and len(meta.revision) == 12
    assert mteb_adapter.MTEBEncoder(sentjax.load(folder)).mteb_model_meta.revision == meta.revision
    assert isinstance(enc, mteb.models.EncoderProtocol)
    with pytest.raises(ConfigError, match="similarity_fn_name 'manhattan'"):
        mteb_adapter.MTEBEncoder(model, similarity_fn_name="manhattan")
    with pytest.raises(ConfigError, match="default_prompt_name 'x'"):
        mteb_adapter.MTEBEncoder(model, prompts={"query": "q: "}, default_prompt_name="x")
    pool = os.path.join(prompted, "1_Pooling", "config.json")
    with open(pool, encoding="utf-8") as f:
        pool_cfg = json.load(f)
    with open(pool, "w", encoding="utf-8") as f:
        json.dump({**pool_cfg, "include_prompt": False}, f)
    try:
        with pytest.raises(ConfigError, match="include_prompt=false"):
            mteb_adapter.MTEBEncoder(sentjax.load(prompted))
    finally:
        with open(pool, "w", encoding="utf-8") as f:
            json.dump(pool_cfg, f)
    meta_t = mteb_tasks.sts_task("stsb-en-dev", 4).metadata
    with pytest.raises(TypeError, match="embed text only"):
        enc.encode([{"image": [0]}], task_metadata=meta_t, hf_split="test", hf_subset="default")
    with pytest.raises(ValueError, match="Unknown mteb task"):
        mteb_adapter.get_tasks(["NoSuchTask"])
    bench = mteb_adapter.benchmark_tasks("MTEB(eng, v2)")  # task list only: nothing is downloaded
    assert {"STS", "Retrieval"} <= {t.metadata.type for t in bench}
    with pytest.raises(ValueError, match="local-sts:<data>"):
        mteb_tasks.local_task("local-sts:")
    with pytest.raises(ValueError, match="no query"):
        mteb_tasks.retrieval_task("stsb-en-dev", 2, min_score=5.1)


def test_cli_mteb(folder, tmp_path, capsys):
    """``sentjax eval mteb``: the printed scores are the adapter's, the results land in --output, and
    a public task offline fails with a message that says what to do."""
    from sentjax import cli
    tasks = ["local-sts:stsb-en-dev@60", "local-retrieval:stsb-en-dev@60"]
    out = tmp_path / "results"
    assert cli.main(["eval", "mteb", "--model", folder, "--tasks", ",".join(tasks), "--output", str(out),
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    direct = _run(mteb_adapter.MTEBEncoder(sentjax.load(folder)), mteb_adapter.get_tasks(tasks))
    assert set(printed["tasks"]) == set(direct)
    for t in direct:
        assert printed["tasks"][t]["main_score"] == pytest.approx(direct[t]["main_score"], abs=1e-12)
    files = [f for _, _, fs in os.walk(out) for f in fs]
    assert {f"{t}.json" for t in direct} <= set(files)
    assert cli.main(["eval", "mteb", "--model", folder]) == 2
    assert "--tasks A,B or --benchmark NAME" in capsys.readouterr().err
    assert cli.main(["eval", "mteb", "--model", folder, "--benchmark", "NoSuchBenchmark"]) == 2
    assert "Unknown mteb benchmark 'NoSuchBenchmark'" in capsys.readouterr().err
    # conftest sets HF_HUB_OFFLINE=1: the public task's download fails at once
    assert cli.main(["eval", "mteb", "--model", folder, "--tasks", "STSBenchmark"]) == 2
    assert "local-sts:<data>" in capsys.readouterr().err


def test_prompts_of_a_0_transformer_folder(tmp_path):
    """An older sentence-transformers layout (weights in 0_Transformer/): the prompts come from the folder above."""
    root = tmp_path / "m"
    (root / "0_Transformer").mkdir(parents=True)
    (root / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer",
                                                    "type": "sentence_transformers.models.Transformer"}]))
    (root / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}))
    assert mteb_adapter._st_root(str(root / "0_Transformer")) == str(root)
    assert mteb_adapter._st_config(mteb_adapter._st_root(str(root / "0_Transformer")))["prompts"] == PROMPTS
    assert mteb_adapter._st_root(str(root)) == str(root)
    other = root / "unlisted"  # under a modules.json that does not name it: its own root
    other.mkdir()
    assert mteb_adapter._st_root(str(other)) == str(other)
