"""GradCache benchmark (issue 3): peak memory and pairs/s of InfoNCE steps at global batch 64, 512
and 4096, with and without caching, next to sentence-transformers' MultipleNegativesRankingLoss and
CachedMultipleNegativesRankingLoss, in one run. The engines and the table live in ``train.py``;
this entry point runs its GradCache matrix and writes ``results/gradcache.md``.

  python experiments/bench/gradcache.py                  # full matrix (~45 min on 2 cores)
  python experiments/bench/gradcache.py --max-batch 512  # without the batch-4096 rows
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402

if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gradcache.md")
    sys.argv = [sys.argv[0], "--gradcache", "--steps", "2", "--out", out] + sys.argv[1:]
    train.main()
