"""``sentjax encode``: the output file equals ``SentenceModel.encode`` of the input records, for every
input and output format, chunked or not, with prompts and normalisation; bad input is refused naming
the line, and a failed run leaves no output file behind."""
import gzip
import json
import os

import jax
import numpy as np
import pytest

import sentjax
from sentjax import cli
from sentjax.data.embedding_output import open_writer
from sentjax.models.config import EncoderConfig

PROMPTS = {"query": "query: ", "passage": "passage: the "}


@pytest.fixture(scope="module")
def model_dir(ws, tok, tmp_path_factory):
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    folder = sentjax.save(sentjax.init_model(cfg, tok, jax.random.key(0)), tmp_path_factory.mktemp("m") / "tiny")
    path = os.path.join(folder, "config_sentence_transformers.json")
    with open(path, encoding="utf-8") as f:
        st_cfg = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**st_cfg, "prompts": PROMPTS}, f)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return sentjax.load(model_dir)


@pytest.fixture(scope="module")
def texts(ws):
    with open(ws.sentences, encoding="utf-8") as f:
        lines = f.read().splitlines()[:37]
    # unknown words, non-ASCII, commas/quotes (CSV quoting), a long text (truncated to 16 tokens)
    return lines + ["Émigré naïve café, \"quoted\"", "the cat, the dog", " ".join(["a big red car"] * 12)]


def encode_cli(*args) -> int:
    return cli.main(["encode", "--no-progress", *map(str, args)])


def read_output(path) -> np.ndarray:
    path = str(path)
    if path.endswith(".npy"):
        return np.load(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        return load_file(path)["embeddings"]
    import pyarrow.parquet as pq
    col = pq.read_table(path)["embedding"].combine_chunks()
    return col.flatten().to_numpy().reshape(len(col), -1)


def write_input(path, texts, column="text"):
    path = str(path)
    opener = gzip.open if path.endswith(".gz") else open
    kind = path.removesuffix(".gz").rsplit(".", 1)[1]
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        if kind == "txt":
            f.write("".join(t + ("\r\n" if i % 5 == 0 else "\n") for i, t in enumerate(texts)))
        elif kind == "jsonl":
            f.write("".join(json.dumps({"id": i, column: t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
        elif kind == "tsv":
            f.write(f"id\t{column}\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts)))
        else:
            import csv
            w = csv.writer(f)
            w.writerow(["id", column])
            w.writerows([i, t] for i, t in enumerate(texts))
    return path


def test_txt_to_npy_equals_model_encode_exactly(model_dir, model, texts, tmp_path):
    src, out = write_input(tmp_path / "in.txt", texts), tmp_path / "sub" / "emb.npy"
    assert encode_cli("--model", model_dir, "--input", src, "--output", out, "--batch-size", 8) == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(texts), 32)
    np.testing.assert_array_equal(got, model.encode(texts, batch_size=8))
    assert not os.path.exists(str(out) + ".partial")


@pytest.mark.parametrize("inp, outp", [("in.jsonl", "emb.safetensors"), ("in.csv", "emb.parquet"),
                                        ("in.tsv.gz", "emb.npy"), ("in.txt.gz", "emb.safetensors")])
def test_streamed_chunks_equal_model_encode(model_dir, model, texts, tmp_path, inp, outp):
    if outp.endswith(".parquet"):
        pytest.importorskip("pyarrow")
    src = write_input(tmp_path / inp, texts, column="body")
    chunk = 7  # 40 records: five full chunks and a short one
    args = ("--model", model_dir, "--input", src, "--output", tmp_path / outp, "--chunk-size", chunk)
    assert encode_cli(*args, *(() if inp.startswith("in.txt") else ("--column", "body"))) == 0
    got = read_output(tmp_path / outp)
    want = np.concatenate([model.encode(texts[i:i + chunk]) for i in range(0, len(texts), chunk)])
    np.testing.assert_array_equal(got, want)  # chunk by chunk: the very same calls
    np.testing.assert_allclose(got, model.encode(texts), rtol=0, atol=2e-6)  # whole file: packing only


def test_safetensors_header_metadata_and_torch(model_dir, model, texts, tmp_path):
    from safetensors import safe_open
    out = tmp_path / "emb.safetensors"
    assert encode_cli("--model", model_dir, "--input", write_input(tmp_path / "in.txt", texts), "--output", out,
                      "--normalize", "--prompt-name", "query") == 0
    with safe_open(str(out), "np") as f:
        meta = f.metadata()
    assert meta == {"model": model_dir, "normalized": "true", "prompt_name": "query", "sentjax": sentjax.__version__}
    torch_st = pytest.importorskip("safetensors.torch")
    np.testing.assert_array_equal(torch_st.load_file(str(out))["embeddings"].numpy(), read_output(out))
    assert (os.path.getsize(out) - 8 - int.from_bytes(open(out, "rb").read(8), "little")) == len(texts) * 32 * 4


def test_normalize_and_prompts(model_dir, model, texts, tmp_path):
    src = write_input(tmp_path / "in.txt", texts)
    run = lambda name, *extra: (encode_cli("--model", model_dir, "--input", src, "--output",
                                           tmp_path / f"{name}.npy", *extra), np.load(tmp_path / f"{name}.npy"))[1]
    norm = run("norm", "--normalize")
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(norm, model.encode(texts, normalize=True))
    q = run("q", "--prompt-name", "query")
    np.testing.assert_array_equal(q, model.encode(["query: " + t for t in texts]))
    assert not np.allclose(q, model.encode(texts), atol=1e-3)  # the prompt changes the embeddings


def test_default_prompt_and_no_prompt(model_dir, model, texts, tmp_path):
    import shutil
    folder = str(tmp_path / "with_default")
    shutil.copytree(model_dir, folder)
    path = os.path.join(folder, "config_sentence_transformers.json")
    cfg = json.load(open(path, encoding="utf-8"))
    json.dump({**cfg, "default_prompt_name": "passage"}, open(path, "w", encoding="utf-8"))
    src = write_input(tmp_path / "in.txt", texts[:9])
    assert encode_cli("--model", folder, "--input", src, "--output", tmp_path / "d.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), model.encode(["passage: the " + t for t in texts[:9]]))
    assert encode_cli("--model", folder, "--input", src, "--output", tmp_path / "n.npy", "--prompt-name", "") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "n.npy"), model.encode(texts[:9]))


def _fails(capsys, tmp_path, *args) -> str:
    out = tmp_path / "out.npy"
    assert encode_cli(*args, *(() if "--output" in args else ("--output", out))) == 2
    assert not os.path.exists(out) and not os.path.exists(str(out) + ".partial")  # nothing half-written
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_bad_input_is_named_by_line(model_dir, texts, tmp_path, capsys):
    m = ("--model", model_dir, "--chunk-size", 2)  # chunks are written before the bad line is reached
    p = tmp_path / "empty.txt"
    p.write_text("a cat\nthe dog\n\nthe man\n", encoding="utf-8")
    err = _fails(capsys, tmp_path, *m, "--input", p)
    assert err.startswith("error:") and "empty.txt, line 3: empty line" in err
    p = tmp_path / "blank.txt"
    p.write_text("a cat\nthe dog\n   \t\n", encoding="utf-8")
    assert "line 3: empty line" in _fails(capsys, tmp_path, *m, "--input", p)
    p = tmp_path / "latin1.txt"
    p.write_bytes("a cat\nthe dog\nthe man\ncafé\n".encode("latin-1"))
    err = _fails(capsys, tmp_path, *m, "--input", p)
    assert "latin1.txt, line 4: not valid UTF-8" in err and "iconv" in err
    p = tmp_path / "bad.csv"
    p.write_bytes(b"id,text\n1,a cat\n2,\xff\xfe dog\n")
    assert "bad.csv, line 3: not valid UTF-8" in _fails(capsys, tmp_path, *m, "--input", p)
    p = tmp_path / "empty_field.jsonl"
    p.write_text('{"text": "a cat"}\n{"text": "the dog"}\n{"text": "the man"}\n{"text": ""}\n', encoding="utf-8")
    assert "empty_field.jsonl, line 4: empty field 'text'" in _fails(capsys, tmp_path, *m, "--input", p)


def test_missing_column_and_bad_records(model_dir, tmp_path, capsys):
    m = ("--model", model_dir)
    p = tmp_path / "in.csv"
    p.write_text("id,sentence\n1,a cat\n", encoding="utf-8")
    err = _fails(capsys, tmp_path, *m, "--input", p)
    assert "in.csv, line 1: no column 'text' in the header ['id', 'sentence']; pass --column" in err
    p = tmp_path / "in.tsv"
    p.write_text("id\ttext\n1\ta cat\n2\tthe\tdog\n", encoding="utf-8")
    assert "in.tsv, line 3: 3 tab-separated columns, the header has 2" in _fails(capsys, tmp_path, *m, "--input", p)
    p = tmp_path / "multi.csv"  # a quoted text spanning two lines: the next record starts on line 4
    p.write_text('id,text\n1,"a cat\nthe dog"\n2,a,b\n', encoding="utf-8")
    assert "multi.csv, line 4: 3 columns, the header has 2" in _fails(capsys, tmp_path, *m, "--input", p)
    p = tmp_path / "in.jsonl"
    p.write_text('{"text": "a cat"}\n{"body": "the dog"}\n', encoding="utf-8")
    err = _fails(capsys, tmp_path, *m, "--input", p)
    assert "in.jsonl, line 2: no field 'text' (fields: 'body'); pass --column NAME" in err
    p.write_text('{"text": "a cat"}\n{"text": "the dog"\n', encoding="utf-8")
    assert "in.jsonl, line 2: not valid JSON" in _fails(capsys, tmp_path, *m, "--input", p)
    p.write_text('{"text": "a cat"}\n{"text": 3}\n', encoding="utf-8")
    assert "line 2: field 'text' is a JSON int, expected a string" in _fails(capsys, tmp_path, *m, "--input", p)
    p = tmp_path / "header_only.csv"
    p.write_text("id,text\n", encoding="utf-8")
    assert "no texts to encode" in _fails(capsys, tmp_path, *m, "--input", p)


def test_unknown_extensions_prompt_names_and_files(model_dir, texts, tmp_path, capsys):
    src = write_input(tmp_path / "in.txt", texts[:3])
    err = _fails(capsys, tmp_path, "--model", model_dir, "--input", tmp_path / "in.docx")
    assert "unknown input extension '.docx'" in err and ".jsonl" in err
    err = _fails(capsys, tmp_path, "--model", model_dir, "--input", src, "--output", tmp_path / "out.h5")
    assert "unknown output extension '.h5'" in err and ".safetensors" in err and not os.path.exists(tmp_path / "out.h5")
    err = _fails(capsys, tmp_path, "--model", model_dir, "--input", src, "--prompt-name", "qeury")
    assert "--prompt-name 'qeury' is not a prompt" in err and "available: 'passage', 'query'" in err
    assert "does not exist" in _fails(capsys, tmp_path, "--model", model_dir, "--input", tmp_path / "nope.txt")
    assert "--chunk-size must be >= 1" in _fails(capsys, tmp_path, "--model", model_dir, "--input", src,
                                                 "--chunk-size", 0)


def test_failed_run_keeps_the_previous_output(model_dir, texts, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    good = write_input(tmp_path / "good.txt", texts[:5])
    assert encode_cli("--model", model_dir, "--input", good, "--output", out) == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_text("a cat\n\n", encoding="utf-8")
    assert encode_cli("--model", model_dir, "--input", bad, "--output", out) == 2
    assert out.read_bytes() == before and not os.path.exists(str(out) + ".partial")


def test_npy_header_is_rewritten_in_place(tmp_path):
    """Streaming .npy/.safetensors headers keep their length from 0 rows to any row count."""
    for name in ("a.npy", "a.safetensors"):
        w = open_writer(tmp_path / name, 3)
        start = w._data_start
        for n in (0, 1, 10**6, 10**19):
            assert len(w._header(n)) == start, (name, n)
        w.write(np.arange(6, dtype=np.float32).reshape(2, 3))
        w.close()
        np.testing.assert_array_equal(read_output(tmp_path / name), np.arange(6, dtype=np.float32).reshape(2, 3))


def test_prompts_match_sentence_transformers(tmp_path):
    """The saved prompts and default_prompt_name mean what they mean in sentence-transformers."""
    import shutil
    st = pytest.importorskip("sentence_transformers")
    from sentjax.testing import minilm_dir
    if minilm_dir() is None:
        pytest.skip("needs the `models` extra")
    folder = str(tmp_path / "minilm")
    shutil.copytree(minilm_dir(), folder, copy_function=os.symlink)
    path = os.path.join(folder, "config_sentence_transformers.json")
    cfg = json.load(open(path, encoding="utf-8"))
    os.remove(path)
    json.dump({**cfg, "prompts": {"query": "query: ", "doc": "Represent this sentence: "},
               "default_prompt_name": "doc"}, open(path, "w", encoding="utf-8"))
    texts = ["A man is playing a guitar.", "Ein Mann spielt Gitarre.", "short", "Émigré café, \"quoted\""]
    src = write_input(tmp_path / "in.csv", texts)
    ref = st.SentenceTransformer(folder, device="cpu")
    assert encode_cli("--model", folder, "--input", src, "--output", tmp_path / "q.npy", "--prompt-name", "query") == 0
    want = ref.encode(texts, convert_to_numpy=True, prompt_name="query")
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), want, atol=1e-5)
    # no name: the default prompt, as sentence-transformers resolves it (its encode() would prepend the same)
    from sentjax.encode import resolve_prompt
    assert resolve_prompt(folder, None) == (ref.default_prompt_name, ref.prompts[ref.default_prompt_name])
    assert resolve_prompt(folder, "") == (None, "")


def test_prompt_left_out_of_pooling_when_the_model_says_so(model_dir, model, texts, tmp_path):
    """include_prompt: false in the Pooling config: the CLI leaves the prompt's tokens out of the
    pooling, as the model's own encode does (and sentence-transformers)."""
    import shutil
    folder = str(tmp_path / "no_prompt_pooling")
    shutil.copytree(model_dir, folder)
    path = os.path.join(folder, "1_Pooling", "config.json")
    cfg = json.load(open(path, encoding="utf-8"))
    json.dump({**cfg, "include_prompt": False}, open(path, "w", encoding="utf-8"))
    src = write_input(tmp_path / "in.txt", texts[:9])
    assert encode_cli("--model", folder, "--input", src, "--output", tmp_path / "x.npy", "--prompt-name", "query") == 0
    got = np.load(tmp_path / "x.npy")
    np.testing.assert_array_equal(got, sentjax.load(folder).encode(texts[:9], prompt_name="query"))
    assert not np.allclose(got, model.encode(["query: " + t for t in texts[:9]]), atol=1e-4)
