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
