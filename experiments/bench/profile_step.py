"""Where a training step's time goes: a jax.profiler trace of the compiled step, split by kind of work.

Workload: the step of ``train.py`` (all-MiniLM-L6-v2, batch 64, max length 32, InfoNCE, AdamW, dropout
on), one device. The trace's per-thunk events (XLA:CPU runs one thunk per fusion / custom call /
copy) are joined with the compiled HLO: each event is put in one bucket from the operations it
fuses and the JAX source line they came from:

  matmul-dense     dot in a Dense layer (QKV, output, FFN projections) and their gradients
  matmul-attention the score and context products (bert.py's attention einsums) and their gradients
  softmax          the attention softmax (forward and backward)
  gelu             the exact-erf GELU of the FFN (forward and backward)
  layernorm        LayerNorm (forward and backward)
  dropout-rng      random-bit generation for dropout (threefry hashes, per-row key folding)
  dropout-apply    mask compare / select / scale
  optimizer        the AdamW update (optax)
  loss             InfoNCE, pooling, normalisation
  copy/transpose   layout copies, transposes, broadcasts not fused into a consumer
  other            everything else (bias adds and residuals fused alone, reductions, ...)

  python experiments/bench/profile_step.py                 # MiniLM, batch 64; writes results/profile-step.md
  python experiments/bench/profile_step.py --prng rbg      # the same step with jax_default_prng_impl=rbg
  python experiments/bench/profile_step.py --dtype bfloat16 # bfloat16 compute, float32 parameters

The split is a ratio inside one run, so it holds on a busy machine better than a throughput does;
the absolute step time is printed for reference only.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

MAX_LEN, LR, TEMP = 32, 2e-5, 0.05
BUCKETS = ("matmul-dense", "matmul-attention", "softmax", "gelu", "layernorm", "dropout-rng", "dropout-apply",
           "optimizer", "loss", "copy/transpose", "other")

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(")
_COMP = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) [^=]*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_META = re.compile(r'op_name="([^"]*)"(?: source_file="([^"]*)")?(?: source_line=(\d+))?')


def parse_hlo(text: str) -> tuple[dict, dict]:
    """Compiled HLO text -> ({instruction: (opcode, called computation, [(op_name, file, line)])},
    {computation: [(opcode, op_name, file, line)]})."""
    instrs, comps, comp = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m:
            comp = m.group(1)
            continue
        m = _INSTR.match(line)
        if not m or comp is None:
            continue
        name, opcode = m.groups()
        meta = _META.search(line)
        op_name, src, lineno = (meta.group(1), meta.group(2) or "", int(meta.group(3) or 0)) if meta else ("", "", 0)
        calls = _CALLS.search(line)
        instrs[name] = (opcode, calls.group(1) if calls else None, (op_name, src, lineno))
        comps[comp].append((opcode, op_name, src, lineno))
    return instrs, comps


def _body(comps: dict, comp: str | None) -> list:
    """The operations of a fused computation (opcode, op_name, file, line)."""
    return list(comps.get(comp, [])) if comp else []


_RNG = ("threefry", "_bernoulli", "_uniform", "random_bits", "row_keys", "column_key", "rng-bit-generator")
_LAYOUT = {"copy", "transpose", "broadcast", "bitcast", "reshape", "parameter", "tuple", "get-tuple-element",
           "slice", "concatenate", "dynamic-slice", "dynamic-update-slice", "constant", "iota"}


def classify(name: str, instrs: dict, comps: dict) -> str:
    """The bucket of one thunk, from the opcodes it fuses and their JAX name stacks (``op_name``:
    Flax module path + primitive, e.g. ``.../encoder/layer_3/intermediate/dense/dot_general``)."""
    if name not in instrs:
        return "other"
    opcode, called, meta = instrs[name]
    ops = [(opcode,) + meta] + _body(comps, called)
    opcodes = {o[0] for o in ops}
    names = [o[1] for o in ops if o[1]]
    text = " ".join(names)
    if "dot" in opcodes or "convolution" in opcodes:
        return "matmul-attention" if "attention/self/dot_general" in text else "matmul-dense"
    if any(r in text for r in _RNG) or "rng-bit-generator" in opcodes:
        return "dropout-rng"
    if "Dropout" in text:
        return "dropout-apply"
    if "LayerNorm" in text:
        return "layernorm"
    if "/intermediate/" in text:
        return "gelu"  # the exact-erf GELU and the bias add fused with it
    if opcodes <= _LAYOUT:
        return "copy/transpose"
    if "attention/self/" in text:
        return "softmax"  # scale, mask bias, max, exp, sum, divide
    if "SentenceEncoderModule" not in text and names:
        # optax's update is traced at the step's top level: jit(step)/<primitive>
        if all(n.count("/") == 1 and n.startswith("jit(step)/") for n in names):
            return "optimizer"
        return "loss"
    if "pooler" in text:
        return "loss"
    return "other"


def build_step(batch: int, model=None, texts: list[str] | None = None, dtype: str = "float32"):
    """The jitted step (state donated), its state and one batch; ``model``: a SentenceModel
    (default all-MiniLM-L6-v2 at max length 32), ``texts``: default the frozen benchmark sentences."""
    import jax
    import optax
    import sentjax
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sentjax.losses import make_column_loss
    from sentjax.models.sentence_model import embed_fn
    from sentjax.parallel.global_grads import make_grad_fn
    from sentjax.testing import minilm_dir
    model = model or sentjax.load(minilm_dir(), max_length=MAX_LEN, dtype=dtype)
    mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    rows, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    grad_fn = make_grad_fn(embed_fn(model.module), make_column_loss("infonce", temperature=TEMP),
                           mesh=mesh, backend="shard_map")
    tx = optax.adamw(LR)

    def step(params, opt_state, columns, rng):
        (loss, _), grads = grad_fn(params, columns, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    params = jax.device_put(model.params, rep)
    opt_state = jax.device_put(tx.init(params), rep)
    texts = (texts or common.read_sentences())[:batch]
    tok = model.tokenizer(texts, length=min(MAX_LEN, model.tokenizer.max_length))
    tok = jax.device_put({k: v for k, v in tok.items() if k != "token_type_ids"}, rows)
    return step, params, opt_state, {"anchor": tok, "positive": tok}


def profile(batch: int, steps: int, trace_dir: str, model=None, texts: list[str] | None = None,
            dtype: str = "float32") -> dict:
    """Compiles and runs the step under the profiler; writes the trace, the compiled HLO and the
    step times to ``trace_dir`` and returns :func:`analyse` of it."""
    import jax
    os.makedirs(trace_dir, exist_ok=True)
    step, params, opt_state, columns = build_step(batch, model, texts, dtype)
    key = jax.random.key(0)
    t = time.perf_counter()
    compiled = step.lower(params, opt_state, columns, key).compile()
    compile_s = time.perf_counter() - t
    with open(os.path.join(trace_dir, "step.hlo.txt"), "w") as f:
        f.write(compiled.as_text())
    params, opt_state, loss = step(params, opt_state, columns, jax.random.fold_in(key, 0))
    loss.block_until_ready()
    times = []
    with jax.profiler.trace(trace_dir):
        for i in range(steps):
            t = time.perf_counter()
            params, opt_state, loss = step(params, opt_state, columns, jax.random.fold_in(key, i + 1))
            loss.block_until_ready()
            times.append(time.perf_counter() - t)
    with open(os.path.join(trace_dir, "run.json"), "w") as f:
        json.dump({"batch": batch, "steps": steps, "step_ms": 1e3 * statistics.median(times), "compile_s": compile_s,
                   "prng": str(jax.config.jax_default_prng_impl), "dtype": dtype}, f)
    return analyse(trace_dir)


def analyse(trace_dir: str) -> dict:
    """Buckets the per-thunk events of the trace in ``trace_dir`` (see the module docstring)."""
    from jax.profiler import ProfileData
    with open(os.path.join(trace_dir, "run.json")) as f:
        run = json.load(f)
    with open(os.path.join(trace_dir, "step.hlo.txt")) as f:
        instrs, comps = parse_hlo(f.read())
    steps = run["steps"]
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    data = ProfileData.from_file(path)
    per_bucket: dict[str, float] = collections.defaultdict(float)
    per_thunk: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if line.name == "python":
                continue  # the caller; the thunks run on the client and Eigen worker threads
            for ev in line.events:
                if ev.name not in instrs or instrs[ev.name][0] in ("while", "call", "conditional"):
                    continue  # executor bookkeeping, or a control-flow thunk whose body is timed itself
                per_thunk[ev.name] += ev.duration_ns / 1e6 / steps
                per_bucket[classify(ev.name, instrs, comps)] += ev.duration_ns / 1e6 / steps
    total = sum(per_bucket.values())
    top = sorted(per_thunk.items(), key=lambda kv: -kv[1])[:15]
    return dict(run, thunk_ms=total, buckets_ms={b: per_bucket.get(b, 0.0) for b in BUCKETS},
                top_thunks=[(n, ms, classify(n, instrs, comps)) for n, ms in top])


def report(r: dict, out: str | None) -> str:
    import subprocess
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["# Where the training step's time goes (XLA:CPU trace)", "",
             f"Command: `python experiments/bench/profile_step.py --batch {r['batch']} --steps {r['steps']}"
             f"{' --prng ' + r['prng'] if r['prng'] != 'threefry2x32' else ''}"
             f"{' --dtype ' + r.get('dtype', 'float32') if r.get('dtype', 'float32') != 'float32' else ''}`  ",
             "Workload: all-MiniLM-L6-v2, max length 32, InfoNCE + AdamW, dropout on, 1 device (the step of "
             "train.py).  ", f"Machine: {json.dumps(common.machine())}  ", f"Load at the end: `{load}`.", "",
             f"Step {r['step_ms']:.0f} ms (median of {r['steps']}), compile {r['compile_s']:.1f} s; "
             f"thunks account for {r['thunk_ms']:.0f} ms; dropout PRNG: `{r['prng']}`; compute dtype "
             f"`{r.get('dtype', 'float32')}`.", "",
             "| bucket | ms / step | share |", "|---|---|---|"]
    for b, ms in sorted(r["buckets_ms"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {b} | {ms:.1f} | {100 * ms / max(r['thunk_ms'], 1e-9):.1f}% |")
    lines += ["", "Largest thunks:", "", "| thunk | ms / step | bucket |", "|---|---|---|"]
    lines += [f"| `{n}` | {ms:.1f} | {b} |" for n, ms, b in r["top_thunks"]]
    text = "\n".join(lines) + "\n"
    if out:
        with open(out, "w") as f:
            f.write(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prng", default=None, help="jax_default_prng_impl: threefry2x32 (default), rbg, unsafe_rbg")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    p.add_argument("--out", default=None, help="results file (default results/profile-step[-PRNG][-bfloat16].md)")
    p.add_argument("--trace-dir", default=None, help="where the trace and HLO go (default: a new temporary folder)")
    p.add_argument("--analyse", default=None, metavar="TRACE_DIR", help="re-analyse an earlier run's folder, no run")
    a = p.parse_args()
    import jax
    if a.prng:
        jax.config.update("jax_default_prng_impl", a.prng)
    if a.analyse:
        r = analyse(a.analyse)
    else:
        trace_dir = a.trace_dir or tempfile.mkdtemp(prefix="sentjax-profile-")
        os.makedirs(trace_dir, exist_ok=True)
        print(f"trace and HLO: {trace_dir}", file=sys.stderr)
        r = profile(a.batch, a.steps, trace_dir, dtype=a.dtype)
    suffix = (f"-{a.prng}" if a.prng and a.prng != "threefry2x32" else "") + ("-bfloat16" if a.dtype != "float32" else "")
    print(report(r, a.out or os.path.join(common.HERE, "results", f"profile-step{suffix}.md")))


if __name__ == "__main__":
    main()
