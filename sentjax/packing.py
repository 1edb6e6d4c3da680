"""Sequence packing: several sentences per row with block-diagonal attention.

Real sentences are short (the benchmark file: mean 24 tokens, 11 to 96), so padding every
sentence to its batch's longest wastes a third of the compute. Packing concatenates
sentences into rows of ``row_length`` tokens; each sentence keeps its own positions
(restarting at 0, or at pad+1 for RoBERTa) and attends only to itself, so its embedding is
exactly the unpacked one (``tests/test_packing.py``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pack_rows(lengths: Sequence[int], row_length: int, max_segments: int) -> list[list[int]]:
    """First-fit-decreasing bin packing: indices of the sentences that go in each row.

    Every length must be <= row_length. Rows hold at most ``max_segments`` sentences.
    """
    lengths = np.asarray(lengths)
    if lengths.size and lengths.max() > row_length:
        raise ValueError(f"a sentence of {lengths.max()} tokens does not fit a row of {row_length}.")
    order = np.argsort(-lengths, kind="stable")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = int(lengths[i])
        for r, room in enumerate(free):
            if room >= n and len(rows[r]) < max_segments:
                rows[r].append(int(i))
                free[r] -= n
                break
        else:
            rows.append([int(i)])
            free.append(row_length - n)
    return rows


def packed_batch(ids: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], row_length: int,
                 max_segments: int, num_rows: int, pad_token_id: int = 0,
                 position_offset: int = 0, prompt_lengths: Sequence[int] | None = None
                 ) -> dict[str, np.ndarray]:
    """Builds the arrays of one packed batch.

    Args:
      ids: token ids of every sentence.
      rows: for each row, indices into ``ids`` (from ``pack_rows``).
      num_rows: rows in the batch (extra rows are padding, to keep shapes static).
      position_offset: first position id (pad_token_id + 1 for RoBERTa-style models).
      prompt_lengths: per sentence, prompt tokens to leave out of the pooling (include_prompt=False).
    Returns: input_ids, attention_mask, token_type_ids, position_ids, segment_ids
      ``[num_rows, row_length]`` and segment_starts ``[num_rows, max_segments]`` (and with
      ``prompt_lengths``, prompt_length ``[num_rows, max_segments]``), all int32.
    """
    shape = (num_rows, row_length)
    out = {"input_ids": np.full(shape, pad_token_id, np.int32),
           "attention_mask": np.zeros(shape, np.int32),
           "token_type_ids": np.zeros(shape, np.int32),
           "position_ids": np.full(shape, max(position_offset - 1, 0), np.int32),
           "segment_ids": np.zeros(shape, np.int32),
           "segment_starts": np.zeros((num_rows, max_segments), np.int32)}
    if prompt_lengths is not None:
        out["prompt_length"] = np.zeros((num_rows, max_segments), np.int32)
    for r, row in enumerate(rows):
        pos = 0
        for s, i in enumerate(row):
            n = len(ids[i])
            out["input_ids"][r, pos:pos + n] = ids[i]
            out["attention_mask"][r, pos:pos + n] = 1
            out["position_ids"][r, pos:pos + n] = np.arange(n) + position_offset
            out["segment_ids"][r, pos:pos + n] = s + 1
            out["segment_starts"][r, s] = pos
            if prompt_lengths is not None:
                out["prompt_length"][r, s] = prompt_lengths[i]
            pos += n
    return out


# ----------------------------------------------------------------------------- train-step columns
# A packed *column* (what the train step embeds) is a packed batch whose rows are split over
# ``num_blocks`` devices, plus ``unpack_index`` ``[n]``: example i of a device's block is segment
# slot ``unpack_index[i]`` (= row * max_segments + slot) of that device's ``[rows, k, dim]`` output.
# Every leaf's first dimension is a multiple of num_blocks, so ``P("data")`` hands each device its
# own rows and its own indices.

PACKED_KEYS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "segment_ids",
               "segment_starts")


def rows_ladder(needed: int, multiple: int = 1) -> int:
    """Packed rows per device for a block that needs ``needed`` rows: the smallest ladder value
    >= needed, ``multiple`` times one of 1..4, 5, 6, 7, 8, 10, 12, 14, 16, 20, ... (four steps per
    doubling): a run compiles at most ~4 log2(batch) shapes per column, and the padding rows are
    under a quarter of the packed ones (a power-of-two ladder would waste up to half)."""
    units = -(-max(needed, 1) // multiple)
    step = 1 << max(units.bit_length() - 3, 0)
    return multiple * -(-units // step) * step


def _lengths(tokens: dict) -> np.ndarray:
    mask = np.asarray(tokens["attention_mask"])
    lengths = mask.sum(1)
    if np.any(mask != (np.arange(mask.shape[1])[None] < lengths[:, None])):
        raise ValueError("packing needs right-padded token batches (attention_mask 1...1 0...0 per row).")
    if "token_type_ids" in tokens and np.any(np.asarray(tokens["token_type_ids"])):
        raise ValueError("packing supports single-sentence columns only (token_type_ids must be 0); "
                         "set --config.data.packing=false for sentence-pair inputs.")
    return lengths


def pack_column(tokens: dict, num_blocks: int, row_length: int, max_segments: int,
                position_offset: int = 0, pad_token_id: int = 0, rows_multiple: int = 1) -> dict:
    """A padded token batch ``[N, L]`` (N = num_blocks * n) -> a packed column (see above).

    Each block of n consecutive examples (one device's rows) is packed first-fit-decreasing into
    ``rows_ladder(max needed rows over blocks, rows_multiple)`` rows of ``row_length`` tokens; every
    block gets that many rows (equal shapes on every device). A sentence is never dropped or cut:
    one longer than ``row_length`` raises.
    """
    ids_all = np.asarray(tokens["input_ids"])
    n_all = ids_all.shape[0]
    if n_all % num_blocks:
        raise ValueError(f"{n_all} rows do not split into {num_blocks} equal device blocks.")
    lengths = _lengths(tokens)
    if lengths.max(initial=0) > row_length:
        raise ValueError(f"a sentence of {lengths.max()} tokens does not fit a packed row of {row_length}; "
                         f"set --config.data.packing_row_length >= --config.model.max_length.")
    n = n_all // num_blocks
    blocks = []
    for b in range(num_blocks):
        sl = slice(b * n, (b + 1) * n)
        blocks.append(([ids_all[i, :lengths[i]] for i in range(b * n, (b + 1) * n)],
                       pack_rows(lengths[sl], row_length, max_segments)))
    num_rows = rows_ladder(max(len(rows) for _, rows in blocks), rows_multiple)
    parts, index = [], np.zeros(n_all, np.int32)
    for b, (ids, rows) in enumerate(blocks):
        parts.append(packed_batch(ids, rows, row_length, max_segments, num_rows, pad_token_id,
                                  position_offset))
        for r, row in enumerate(rows):
            for s, i in enumerate(row):
                index[b * n + i] = r * max_segments + s
    out = {k: np.concatenate([p[k] for p in parts]) for k in PACKED_KEYS}
    out["unpack_index"] = index
    return out
