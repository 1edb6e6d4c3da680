"""Data parallelism with exact global in-batch negatives: mesh helpers, gradient engine
(shard_map / pmap / single device), GradCache, per-row dropout keys and the non-finite guard."""
from sentjax.parallel.finite import all_finite, guarded_update, select_if_finite
from sentjax.parallel.global_grads import BACKENDS, embed_columns, make_grad_fn
from sentjax.parallel.mesh import check_columns, make_mesh, split_for_pmap

__all__ = ["make_grad_fn", "embed_columns", "BACKENDS", "make_mesh", "check_columns", "split_for_pmap",
           "all_finite", "guarded_update", "select_if_finite"]
