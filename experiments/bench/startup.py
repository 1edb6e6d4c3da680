"""Time to the first training step: ``sentjax train`` (cold and warm compile cache) vs sentence-transformers.

Workload: the README's demo (all-MiniLM-L6-v2, supervised SimCSE on the bundled NLI-CAD triplets,
batch 32, max length 32) without its STS evaluation. Each run is a fresh process timed from launch
to the end of its first optimizer step:
- sentjax: ``python -m sentjax.train.train --config sentjax/configs/demo.py`` until ``metrics.jsonl``
  holds step 1 (written after the step's metrics reach the host), then killed;
- sentence-transformers: a script that imports torch and sentence-transformers, loads the same
  model folder, and takes one MultipleNegativesRankingLoss + AdamW step on the same 32 triplets
  (the lightest way to train with it: no Trainer, no datasets). It imports nothing of sentjax.
Cold = an empty compile cache; warm = the same command again (a new workdir) with the cache the cold
run filled. Each timed run is preceded by one untimed run of the same kind, so the OS file cache is
warm for both libraries.

  python experiments/bench/startup.py [--repeats 2] [--out experiments/bench/results/startup.md]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BATCH, MAX_LEN, TEMP, LR = 32, 32, 0.05, 5e-5

ST_CHILD = r"""
import json, sys
job = json.load(open(sys.argv[1]))
import torch
torch.set_num_threads(2)
from sentence_transformers import SentenceTransformer, losses
model = SentenceTransformer(job["model"], device="cpu")
model.max_seq_length = job["max_len"]
model.train()
loss_fn = losses.MultipleNegativesRankingLoss(model, scale=1 / job["temp"])
opt = torch.optim.AdamW(model.parameters(), lr=job["lr"], fused=True)
feats = [model.tokenize(job[c]) for c in ("anchor", "positive", "negative")]
loss = loss_fn(feats, None)
opt.zero_grad()
loss.backward()
opt.step()
print("FIRST_STEP_DONE", float(loss), flush=True)
"""


def _env(cache: str | None) -> dict:
    env = dict(common.child_env(2), PYTHONUNBUFFERED="1")
    env.pop("XLA_FLAGS", None)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if cache is not None:
        env["SENTJAX_COMPILE_CACHE"] = cache
    return env


def time_sentjax(cache: str, workdir: str, timeout: float = 600.0) -> float:
    """Seconds from launch until ``metrics.jsonl`` holds step 1."""
    cmd = [sys.executable, "-m", "sentjax.train.train", "--config", os.path.join(REPO, "sentjax/configs/demo.py"),
           f"--config.workdir={workdir}", "--config.total_steps=2", "--config.log_every=1",
           "--config.evals.sts_dev.every_steps=0", "--config.best_metric=", "--no_progress"]
    metrics = os.path.join(workdir, "metrics.jsonl")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(cache), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        while time.perf_counter() - t0 < timeout:
            if os.path.exists(metrics):
                with open(metrics, encoding="utf-8") as f:
                    if any(json.loads(line).get("step") == 1 for line in f if line.strip().endswith("}")):
                        return time.perf_counter() - t0
            if proc.poll() is not None:
                raise RuntimeError(f"sentjax exited ({proc.returncode}) before step 1:\n{proc.stderr.read()[-3000:]}")
            time.sleep(0.02)
        raise RuntimeError("sentjax: no step 1 within the timeout")
    finally:
        proc.kill()
        proc.wait()


def time_st(job_file: str) -> float:
    """Seconds from launch until the sentence-transformers script has taken its first step."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ST_CHILD, job_file], env=_env(None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("FIRST_STEP_DONE"):
            dt = time.perf_counter() - t0
            proc.wait()
            return dt
    proc.wait()
    raise RuntimeError(f"sentence-transformers child failed:\n{proc.stderr.read()[-3000:]}")


def st_job(tmp: str) -> str:
    from sentjax.data.sources import load_source
    from sentjax.models.bundled import minilm_dir
    from sentjax.configs.demo import NLI_TRIPLETS
    cols = load_source(NLI_TRIPLETS).columns
    job = {"model": minilm_dir(), "max_len": MAX_LEN, "temp": TEMP, "lr": LR,
           **{c: list(cols[c][:BATCH]) for c in ("anchor", "positive", "negative")}}
    path = os.path.join(tmp, "st_job.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(job, f)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each kind (the best is reported)")
    ap.add_argument("--out", default=None, help="append the markdown report to this file")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sentjax-startup-") as tmp:
        job = st_job(tmp)
        run = iter(range(10_000))
        wd = lambda: os.path.join(tmp, f"run{next(run)}")  # noqa: E731
        time_st(job)  # untimed: page cache
        st = min(time_st(job) for _ in range(a.repeats))
        cold = []
        for i in range(a.repeats):
            cache = os.path.join(tmp, f"cache{i}")
            if i == 0:
                time_sentjax(os.path.join(tmp, "cache-untimed"), wd())  # untimed: page cache
            cold.append(time_sentjax(cache, wd()))
        warm = min(time_sentjax(os.path.join(tmp, "cache0"), wd()) for _ in range(a.repeats))
        off = min(time_sentjax("off", wd()) for _ in range(a.repeats))
    m = common.machine()
    lines = [
        f"## Time to the first training step, {time.strftime('%Y-%m-%d')} (`python experiments/bench/startup.py`)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + f". Best of {a.repeats} per row.",
        "",
        "| run | seconds to step 1 | minus sentence-transformers |",
        "|---|---|---|",
        f"| sentence-transformers (import, load MiniLM, one MNRL + AdamW step) | {st:.1f} | |",
        f"| sentjax, cold compile cache | {min(cold):.1f} | {min(cold) - st:+.1f} s |",
        f"| sentjax, warm compile cache | {warm:.1f} | {warm - st:+.1f} s |",
        f"| sentjax, cache off | {off:.1f} | {off - st:+.1f} s |",
        "",
    ]
    print("\n".join(lines))
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
