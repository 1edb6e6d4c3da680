"""experiments/bench/profile_step.py: the per-thunk split of a real (tiny) training step."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "bench"))


def test_profile_of_a_tiny_step_puts_every_kind_of_work_in_its_bucket(tmp_path):
    import profile_step
    from sentjax.train.train import build_model
    from tiny import tiny_config
    c = tiny_config(str(tmp_path))
    model = build_model(c)
    texts = open(os.path.join(str(tmp_path), "sentences.txt")).read().splitlines()
    r = profile_step.profile(8, 2, str(tmp_path / "trace"), model=model, texts=texts)
    b = r["buckets_ms"]
    assert set(b) == set(profile_step.BUCKETS)
    # the step has all of these: projections, attention products, LayerNorm, GELU, dropout bits, AdamW
    for kind in ("matmul-dense", "matmul-attention", "layernorm", "gelu", "dropout-rng", "optimizer"):
        assert b[kind] > 0, (kind, b)
    assert r["thunk_ms"] == pytest.approx(sum(b.values()))
    assert r["thunk_ms"] <= 2.5 * r["step_ms"]  # thunks on <= 2 threads per step, never more
    # re-analysing the saved folder gives the same split (the results file can be rebuilt offline)
    again = profile_step.analyse(str(tmp_path / "trace"))
    assert again["buckets_ms"] == b
    text = profile_step.report(r, str(tmp_path / "report.md"))
    assert "| matmul-dense |" in text and open(tmp_path / "report.md").read() == text
