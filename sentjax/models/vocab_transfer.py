"""Give a pretrained encoder a new vocabulary: the student of multilingual distillation.

Reimers & Gurevych (2020) distil an English teacher into a student with a multilingual vocabulary
(XLM-R). With no multilingual weights offline, the student here is the teacher's transformer under
a new word-embedding matrix ``[V_new, H]``, initialised so that the student starts where the
teacher is wherever the two vocabularies agree:

    E_new[t] = mean_{w in teacher_pieces(surface(t))} E_teacher[w]

``surface(t)`` is the SentencePiece piece without its word-start mark "▁"; a piece that does not
start a word maps to the teacher's ``##`` continuation piece when there is one; special tokens map
to their counterparts (<s> -> [CLS], </s> -> [SEP], <pad> -> [PAD], <unk> -> [UNK], <mask> -> [MASK]);
a piece the teacher only knows as [UNK] gets the [UNK] row. Everything else (position and token-type
embeddings, all layers, the pooler) is copied. This is the "vocabulary transfer" initialisation
(cf. WECHSEL, Minixhofer et al., 2022, and FOCUS, Dobler & de Melo, 2023, which use smarter
similarity-weighted means); distillation then trains all parameters.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from flax import traverse_util

from sentjax.models.api import SentenceModel
from sentjax.models.registry import get_encoder
from sentjax.tokenization import Tokenizer

__all__ = ["transfer_vocabulary", "transferred_embeddings", "SPECIAL_MAP"]

SPECIAL_MAP = {"<s>": "[CLS]", "</s>": "[SEP]", "<pad>": "[PAD]", "<unk>": "[UNK]", "<mask>": "[MASK]"}
_WORD_START = "\u2581"  # SentencePiece's "▁"


def transferred_embeddings(teacher_emb: np.ndarray, teacher_tok: Tokenizer, student_tok: Tokenizer
                           ) -> tuple[np.ndarray, dict]:
    """``[V_teacher, H] -> [V_student, H]`` initial student word embeddings (float32) and counts
    ``{"exact": n, "composed": n, "unknown": n, "special": n}`` of how rows were made."""
    t_back, s_back = teacher_tok.backend, student_tok.backend
    unk = t_back.token_to_id("[UNK]")
    if unk is None:
        raise ValueError("the teacher tokenizer has no [UNK] token; vocabulary transfer expects a "
                         "WordPiece (BERT-style) teacher.")
    norm = t_back.normalizer
    v_new = s_back.get_vocab_size()
    out = np.empty((v_new, teacher_emb.shape[1]), np.float32)
    counts = {"exact": 0, "composed": 0, "unknown": 0, "special": 0}
    pieces, rows = [], []
    for i in range(v_new):
        tok = s_back.id_to_token(i)
        if tok in SPECIAL_MAP and t_back.token_to_id(SPECIAL_MAP[tok]) is not None:
            out[i] = teacher_emb[t_back.token_to_id(SPECIAL_MAP[tok])]
            counts["special"] += 1
            continue
        word_start = tok.startswith(_WORD_START)
        text = tok.replace(_WORD_START, " ").strip()
        if not word_start and text:
            cont = "##" + (norm.normalize_str(text) if norm is not None else text)
            j = t_back.token_to_id(cont)
            if j is not None:
                out[i] = teacher_emb[j]
                counts["exact"] += 1
                continue
        pieces.append(text)
        rows.append(i)
    for i, enc in zip(rows, t_back.encode_batch(pieces, add_special_tokens=False)):
        ids = [j for j in enc.ids if j != unk]
        if not ids:
            out[i] = teacher_emb[unk]
            counts["unknown"] += 1
        else:
            out[i] = teacher_emb[ids].mean(axis=0)
            counts["exact" if len(ids) == 1 else "composed"] += 1
    return out, counts


def transfer_vocabulary(model: SentenceModel, tokenizer_dir: str, max_length: int | None = None
                        ) -> tuple[SentenceModel, dict]:
    """The model with ``tokenizer_dir``'s vocabulary (a folder holding ``tokenizer.json``) and
    transferred word embeddings; returns ``(student, counts)`` (see ``transferred_embeddings``)."""
    if not os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
        raise FileNotFoundError(f"{tokenizer_dir} has no tokenizer.json; pass the folder of the new "
                                "vocabulary's tokenizer (e.g. sentjax.models.bundled.multilingual_tokenizer_dir()).")
    tok = Tokenizer.from_dir(tokenizer_dir, max_length=max_length or model.tokenizer.max_length)
    path = get_encoder(model.config.model_type).word_embeddings
    flat = traverse_util.flatten_dict(model.params["encoder"])
    new_emb, counts = transferred_embeddings(np.asarray(flat[path], np.float32), model.tokenizer, tok)
    cfg = dataclasses.replace(model.config, vocab_size=int(new_emb.shape[0]), pad_token_id=tok.pad_token_id)
    params = dict(model.params, encoder=traverse_util.unflatten_dict({**flat, path: new_emb}))
    student = SentenceModel(model.module.clone(config=cfg), params, tok, tokenizer_dir,
                            prompts=model.prompts, default_prompt_name=model.default_prompt_name)
    return student, counts
