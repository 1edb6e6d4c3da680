"""The prefetching iterator yields exactly ``Pipeline.batch(s)`` from any start step; simulated
processes each tokenize only their rows, agree on one padded length through a key-value store and
together rebuild the single-process global batch; the prefetch thread stops on early exit and on
errors; ``sentjax/data`` has no import cycle."""
import ast
import gc
import os
import threading

import numpy as np
import pytest

from sentjax.data.pipeline import KVLengthSync, Pipeline, process_rows
from sentjax.data.sources import DataError, load_source
from sentjax.tokenization import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MemoryStore:
    """An in-process key-value store with the interface of the coordination service's."""

    def __init__(self):
        self.data, self.cv = {}, threading.Condition()

    def set(self, key, value):
        with self.cv:
            self.data[key] = value
            self.cv.notify_all()

    def get(self, key, timeout_ms):
        with self.cv:
            if not self.cv.wait_for(lambda: key in self.data, timeout_ms / 1000):
                raise TimeoutError(key)
            return self.data[key]

    def delete(self, key):
        with self.cv:
            del self.data[key]


class CountingTokenizer:
    """Counts the texts a pipeline tokenizes."""

    def __init__(self, tok):
        self.tok, self.texts = tok, 0
        self.max_length, self.bucket_multiple = tok.max_length, tok.bucket_multiple

    def encode_ids(self, texts):
        texts = list(texts)
        self.texts += len(texts)
        return self.tok.encode_ids(texts)

    def pad(self, ids, length=None):
        return self.tok.pad(ids, length)


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            for kk in a[k]:
                np.testing.assert_array_equal(a[k][kk], b[k][kk], err_msg=f"{k}.{kk}")
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("sentjax-prefetch") and t.is_alive()]


def test_iterate_yields_batch_of_every_step_from_any_start(ws, tok):
    sources = [load_source(f"text+crop=0.2:{ws.sentences}"), load_source(f"sts:{ws.sts}")]
    ref = Pipeline(sources, tok, 8, seed=5, weights=(2, 1), process_index=0, process_count=1)
    want = {s: ref.batch(s) for s in range(40)}
    for start in (0, 3, 17):
        for prefetch in (0, 1, 3):
            # a fresh pipeline: what a run resumed at `start` sees
            fresh = Pipeline(sources, tok, 8, seed=5, weights=(2, 1), process_index=0, process_count=1)
            got = list(fresh.iterate(start, 40, prefetch=prefetch))
            assert [s for s, _ in got] == list(range(start, 40))
            for s, b in got:
                _assert_batches_equal(b, want[s])
    # transform runs on each batch (in the thread); no stop: an endless stream
    with ref.iterate(5, prefetch=2, transform=lambda b: b["anchor"]["input_ids"].shape) as it:
        assert [next(it) for _ in range(3)] == [(s, want[s]["anchor"]["input_ids"].shape) for s in (5, 6, 7)]
    assert not _prefetch_threads()


@pytest.mark.parametrize("rows_of", ["blocks", "interleaved"])
def test_process_slices_rebuild_the_global_batch(ws, tok, rows_of):
    """P simulated processes in P threads: each tokenizes only its B/P rows, they agree on the
    padded lengths through the store, and their rows are the single-process global batch's."""
    B, P, steps = 16, 4, range(6)
    teacher = Tokenizer.from_dir(ws.tokenizer, max_length=12, bucket_multiple=4)
    src = [load_source(f"sts:{ws.sts}"), load_source(f"text:{ws.sentences}")]
    full = Pipeline(src, tok, B, seed=2, dedup=False, process_index=0, process_count=1, teacher_tokenizer=teacher)
    if rows_of == "blocks":
        rows = [np.arange(p * B // P, (p + 1) * B // P) for p in range(P)]
    else:  # as a mesh whose devices interleave the processes would place them
        rows = [np.sort(np.concatenate([np.arange(p * 2, p * 2 + 2), np.arange(8 + p * 2, 8 + p * 2 + 2)]))
                for p in range(P)]
    store = MemoryStore()
    toks = [CountingTokenizer(tok) for _ in range(P)]
    pipes = [Pipeline(src, toks[p], B, seed=2, dedup=False, process_index=p, process_count=P, rows=rows[p],
                      teacher_tokenizer=teacher, length_sync=KVLengthSync(store, p, P, prefix="t"))
             for p in range(P)]
    got, errors = [None] * P, []

    def run(p):
        try:
            got[p] = list(pipes[p].iterate(steps.start, steps.stop, prefetch=2))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(p,)) for p in range(P)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and all(g is not None for g in got), errors
    n_fields = {0: 2, 1: 1}  # sts: anchor + positive; text: anchor (positive = the same ids)
    for p in range(P):
        assert toks[p].texts == sum(n_fields[full.locate(s)[0]] * B // P for s in steps)  # its rows only
    for i, s in enumerate(steps):
        want = full.batch(s)
        for p in range(P):
            step, b = got[p][i]
            assert step == s
            for f, v in want.items():
                if isinstance(v, dict):
                    for k in v:  # same padded length everywhere, and this process's rows
                        np.testing.assert_array_equal(b[f][k], v[k][rows[p]], err_msg=f"{s} {p} {f}.{k}")
                else:
                    np.testing.assert_array_equal(b[f], v[rows[p]])
    # at most the keys of the last two agreements are left per process
    assert 0 < len(store.data) <= 2 * P


def test_length_agreement_refuses_different_steps():
    store = MemoryStore()
    a, b = KVLengthSync(store, 0, 2, prefix="x"), KVLengthSync(store, 1, 2, prefix="x")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("b", b(3, (9, 0))))
    t.start()
    assert a(3, (12, 4)) == (12, 4)
    t.join(10)
    assert out["b"] == (12, 4)
    def other():
        with pytest.raises(DataError, match="same steps"):
            b(5, (1, 1))
        out["raised"] = True

    t = threading.Thread(target=other)
    t.start()
    with pytest.raises(DataError, match="same steps"):
        a(4, (1, 1))
    t.join(10)
    assert out.get("raised")


def test_process_rows_follow_the_sharding():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    np.testing.assert_array_equal(process_rows(NamedSharding(mesh, PartitionSpec("data")), 16), np.arange(16))

    class TwoOfEight:  # what process 1 of 4 sees when the mesh interleaves processes
        def addressable_devices_indices_map(self, shape):
            return {"d2": (slice(4, 6),), "d6": (slice(12, 14),), "d6'": (slice(12, 14),)}
    np.testing.assert_array_equal(process_rows(TwoOfEight(), 16), [4, 5, 12, 13])


def test_prefetch_thread_stops_on_break_close_and_errors(ws, tok):
    p = Pipeline([load_source(f"text:{ws.sentences}")], tok, 8, seed=0, process_index=0, process_count=1)
    # break out of a for loop over an endless stream: dropping the iterator stops its thread
    it = p.iterate(0, prefetch=2)
    thread = it._thread
    for s, _ in it:
        if s == 2:
            break
    del it
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    # an exception in the loop body inside `with`
    with pytest.raises(KeyError):
        with p.iterate(0, prefetch=3) as it:
            for s, _ in it:
                raise KeyError(s)
    assert not it.alive
    # an error while building a batch surfaces in next(), naming the step, and stops the thread

    calls = []

    def bad(b):
        calls.append(1)
        if len(calls) == 4:
            raise ValueError("broken batch")
        return b

    it = p.iterate(10, prefetch=2, transform=bad)
    assert [next(it)[0] for _ in range(3)] == [10, 11, 12]
    with pytest.raises(ValueError, match="broken batch") as e:
        next(it)
    assert "step 13" in " ".join(getattr(e.value, "__notes__", []))
    assert not it.alive
    with pytest.raises(StopIteration):
        next(it)
    assert not _prefetch_threads()


def _data_imports() -> dict[str, set[str]]:
    """sentjax.data module -> the sentjax modules it imports (module level or inside functions)."""
    root = os.path.join(REPO, "sentjax", "data")
    graph = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), REPO)[:-3].replace(os.sep, ".")
            mod = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
            deps = set()
            with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    deps |= {a.name for a in node.names if a.name.startswith("sentjax")}
                elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sentjax"):
                    deps.add(node.module)
                    deps |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
            graph[mod] = deps
    return {m: {d for d in deps if d in graph and d != m} | {d for d in deps if d not in graph}
            for m, deps in graph.items()}


def test_no_import_cycle_in_data_package():
    graph = _data_imports()
    assert {"sentjax.data.sources", "sentjax.data.pipeline", "sentjax.data.readers",
            "sentjax.data.tfds_builders"} <= set(graph)
    for m, deps in graph.items():
        assert not any(d.startswith("sentjax.train") for d in deps), f"{m} imports the trainer: {deps}"
    inner = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(inner[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [m, d]))
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in sorted(inner):
        if m not in state:
            visit(m, [])


_WORKER = """
import sys
import numpy as np
import jax
port, pid, tok_dir, sts, out = sys.argv[1:]
jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(pid), initialization_timeout=120)
from sentjax.data.pipeline import KVLengthSync, Pipeline
from sentjax.data.sources import load_source
from sentjax.tokenization import Tokenizer
tok = Tokenizer.from_dir(tok_dir, max_length=16)
texts = []
encode = tok.encode_ids
tok.encode_ids = lambda t: (texts.append(len(t)), encode(t))[1]
p = Pipeline([load_source("sts:" + sts)], tok, 8, seed=1, dedup=False)
assert isinstance(p._sync(), KVLengthSync), p._sync()
got = {}
for s, b in p.iterate(0, 6, prefetch=2):
    got[f"{s}_anchor"], got[f"{s}_positive"] = b["anchor"]["input_ids"], b["positive"]["input_ids"]
np.savez(out, tokenized=sum(texts), **got)
jax.distributed.shutdown()
"""


def test_two_real_processes_agree_through_the_coordination_service(ws, tok, tmp_path):
    """Two JAX processes (jax.distributed on localhost): each tokenizes its 4 rows of 8, the
    lengths are agreed through the coordination service, the halves are the global batch."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), ws.tokenizer, ws.sts,
                               str(tmp_path / f"out{i}.npz")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    full = Pipeline([load_source(f"sts:{ws.sts}")], tok, 8, seed=1, dedup=False, process_index=0, process_count=1)
    halves = [np.load(tmp_path / f"out{i}.npz") for i in range(2)]
    for h in halves:
        assert int(h["tokenized"]) == 6 * 2 * 4  # 6 steps x 2 fields x its 4 rows
    for s in range(6):
        want = full.batch(s)
        for f in ("anchor", "positive"):
            np.testing.assert_array_equal(np.concatenate([h[f"{s}_{f}"] for h in halves]), want[f]["input_ids"])
