"""Mesh helpers and batch-shape checks for data-parallel training over one named axis."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

__all__ = ["make_mesh", "column_rows", "check_columns", "split_for_pmap"]


def make_mesh(num_devices: int | None = None, axis_name: str = "data", devices=None) -> jax.sharding.Mesh:
    """1-D ``jax.make_mesh`` over the first ``num_devices`` devices (None: all), Auto axis type.

    Auto axes let unsharded host arrays enter ``jax.shard_map`` / ``jax.jit`` without an explicit
    ``jax.reshard`` (``make_mesh`` defaults to Explicit axes, see JAX-NOTES).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"asked for a mesh of {num_devices} devices but {len(devices)} are visible.")
    return jax.make_mesh((n,), (axis_name,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n])


def column_rows(column: Any) -> int:
    """Rows of a column: a token batch (dict of ``[n, L]`` arrays) or an array ``[n, ...]``."""
    if isinstance(column, Mapping) and "unpack_index" in column:
        # packed column (sentjax.parallel.packed): its examples are the entries of the index
        packed = {k: v for k, v in column.items() if k != "unpack_index"}
        column_rows(packed)
        return int(np.shape(column["unpack_index"])[0])
    leaves = list(column.values()) if isinstance(column, Mapping) else [column]
    shapes = {tuple(np.shape(x))[:1] for x in leaves if x is not None}
    if len(shapes) != 1 or not next(iter(shapes)):
        raise ValueError(f"all arrays of a column must share their first (batch) dimension, got shapes "
                         f"{[np.shape(x) for x in leaves if x is not None]}.")
    return next(iter(shapes))[0]


def check_columns(columns: Mapping[str, Any], num_devices: int = 1, chunk: int | None = None) -> int:
    """Validates the row counts of ``columns`` and returns the global batch size ``B``.

    ``B`` is the smallest column's row count; every column must hold a multiple of it (``k`` rows
    per example, anchor-major, e.g. ``negative`` with ``B * k`` rows). ``B`` must split evenly over
    the devices, and a GradCache ``chunk`` must divide the per-device batch ``B / num_devices``.
    """
    if not columns:
        raise ValueError("columns is empty: pass e.g. {'anchor': tokens, 'positive': tokens}.")
    rows = {name: column_rows(c) for name, c in columns.items()}
    b = min(rows.values())
    bad = {k: r for k, r in rows.items() if r % b}
    if bad or b == 0:
        raise ValueError(f"columns have different batch sizes {rows}: every column needs the same number "
                         f"of examples B={b} (or k*B rows, k per example, anchor-major, for negatives).")
    if b % num_devices:
        raise ValueError(f"global batch {b} is not divisible by the {num_devices} devices: each device needs "
                         f"the same number of examples; use a batch size that is a multiple of "
                         f"{num_devices}, e.g. {max(num_devices, b // num_devices * num_devices)}.")
    packed = {k: c for k, c in columns.items() if isinstance(c, Mapping) and "unpack_index" in c}
    if chunk is not None and packed:
        # with packing a GradCache chunk counts packed rows (sentjax.packing.pack_column rows_multiple)
        for name, c in packed.items():
            n_rows = np.shape(c["input_ids"])[0]
            local = n_rows // num_devices
            if n_rows % num_devices or not isinstance(chunk, int) or chunk < 1 or local % chunk:
                raise ValueError(f"gradcache_chunk={chunk} must divide the {local} packed rows per device of "
                                 f"column {name!r}; pack with rows_multiple={chunk}.")
    if chunk is not None and any(isinstance(c, Mapping) and k not in packed for k, c in columns.items()):
        local = b // num_devices
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1 or local % chunk:
            raise ValueError(f"gradcache_chunk={chunk!r} must be a positive int dividing the per-device batch "
                             f"{local} (global batch {b} over {num_devices} devices); divisors: "
                             f"{[d for d in range(1, local + 1) if local % d == 0]}.")
    return b


def split_for_pmap(tree: Any, num_devices: int) -> Any:
    """``[n, ...]`` leaves -> ``[num_devices, n / num_devices, ...]`` (device-major rows) for ``jax.pmap``."""
    return jax.tree.map(lambda x: x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:]), tree)
