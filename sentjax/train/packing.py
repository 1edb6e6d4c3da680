"""``config.data.packing``: the text columns of each step packed into rows (``sentjax.packing``).

Each device's rows of a column are packed first-fit-decreasing into ``rows_ladder(...)`` rows of
``packing_row_length`` tokens (a row count from a fixed ladder, four steps per doubling, times the
GradCache chunk), so a run compiles one step per ladder value used, whatever the sentence lengths. The step unpacks the encoder's
``[rows, k, dim]`` output to ``[n, dim]`` in the original order (``sentjax.parallel.packed``), so
with dropout off its loss and gradients are the padded step's (``tests/test_packing_train.py``).
With dropout on, the dropout keys are per packed row: same distribution, different sample.
"""
from __future__ import annotations

from typing import Callable

import jax
import ml_collections

from sentjax.errors import ConfigError

__all__ = ["check_packing", "row_length", "make_packer"]


def row_length(c: ml_collections.ConfigDict) -> int:
    """Tokens per packed row: ``data.packing_row_length``, 0 = ``model.max_length``."""
    return int(c.data.packing_row_length) or int(c.model.max_length)


def check_packing(c: ml_collections.ConfigDict, objective) -> None:
    """Refuses the combinations packing does not support (ConfigError naming the fix)."""
    if not c.data.packing:
        return
    off = "or set --config.data.packing=false"
    if c.gradient.method != "shard_map":
        raise ConfigError(f"data.packing needs gradient.method='shard_map' (got {c.gradient.method!r}): "
                          f"packed rows are split per device; set --config.gradient.method=shard_map {off}.")
    if c.accum_steps > 1:
        raise ConfigError(f"data.packing with accum_steps={c.accum_steps} is not supported; use GradCache "
                          f"(--config.gradient.gradcache_chunk=N, N packed rows per chunk) {off}.")
    if objective.needs_teacher:
        raise ConfigError(f"data.packing with objective {c.objective.name!r} is not supported: the teacher "
                          f"embeds the padded anchors; {off.replace('or ', '')}.")
    if jax.process_count() > 1:
        raise ConfigError(f"data.packing runs in one process (got {jax.process_count()}): the processes would "
                          f"have to agree on the packed row count each step; {off.replace('or ', '')}.")
    if c.data.packing_row_length and c.data.packing_row_length < c.model.max_length:
        raise ConfigError(f"data.packing_row_length={c.data.packing_row_length} is shorter than "
                          f"model.max_length={c.model.max_length}: a long sentence would not fit a row. Set "
                          f"--config.data.packing_row_length=0 (= max_length) or >= {c.model.max_length}.")
    if not c.model.include_prompt and any(c.data.prompts.values()):
        # The pooling would need each packed segment's prompt length (packed_batch(prompt_lengths=)),
        # which pack_column does not carry yet: refuse rather than pool the prompt tokens.
        raise ConfigError("data.packing with model.include_prompt=false and data.prompts is not supported "
                          f"yet; set --config.model.include_prompt=true {off}.")
    if c.data.packing_max_segments < 1:
        raise ConfigError(f"data.packing_max_segments must be >= 1, got {c.data.packing_max_segments}.")


def make_packer(c: ml_collections.ConfigDict, objective, config, pad_token_id: int,
                num_devices: int) -> Callable[[dict], dict]:
    """``batch -> batch`` with the objective's text columns packed (identity without packing).

    ``config``: the encoder config (its ``position_offset``); ``num_devices``: devices of the mesh.
    """
    if not c.data.packing:
        return lambda batch: batch
    from sentjax.packing import pack_column
    length, segments = row_length(c), int(c.data.packing_max_segments)
    multiple = int(c.gradient.gradcache_chunk) or 1
    offset = int(getattr(config, "position_offset", 0))

    def pack(batch: dict) -> dict:
        return {k: pack_column(v, num_devices, length, segments, offset, pad_token_id, multiple)
                if k in objective.fields and isinstance(v, dict) else v for k, v in batch.items()}
    return pack
