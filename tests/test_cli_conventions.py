"""CLI conventions: ``--version``, ``python -m sentjax``, an example in every ``--help``, one
``--log-level`` for the ``sentjax`` logger, and no ``print`` in library code."""
import argparse
import ast
import logging
import os
import subprocess
import sys

import pytest

from sentjax import cli, logs
from sentjax._version import __version__

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# print() is for the user's terminal: the CLI's own output and error lines. Everything else logs.
PRINT_ALLOWED = {
    "sentjax/cli.py": None,  # any function
    "sentjax/train/train.py": {"main"},  # sentjax train's help, "error: ..." lines and JSON summary
    "sentjax/data/augment.py": {"<module>"},  # its `python -m` table rebuild script
    "sentjax/parallel/distributed.py": {"exit_now_if_multiprocess"},  # the last line before os._exit
    "sentjax/plot.py": {"main_args"},  # sentjax plot's list of the files it wrote
}


def _commands(parser: argparse.ArgumentParser, path=()):
    yield path, parser
    for name, child in cli.subparsers(parser).items():
        yield from _commands(child, (*path, name))


def test_every_help_has_an_example(capsys):
    seen = []
    for path, p in _commands(cli.build_parser()):
        if path and path[0] in cli.PASSTHROUGH:  # they parse their own arguments
            assert cli.main([*path, "--help"]) == 0
            text = capsys.readouterr().out
        else:
            text = p.format_help()
        assert "Example:\n  sentjax " in text, f"sentjax {' '.join(path)} --help has no example:\n{text}"
        seen.append(" ".join(path))
    assert {"", "encode", "train", "demo", "eval", "eval sts"} <= set(seen), seen


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sentjax {__version__}"


def test_python_dash_m_sentjax():
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-m", "sentjax", "--version"], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"sentjax {__version__}", out.stderr
    out = subprocess.run([sys.executable, "-m", "sentjax", "encode", "--model", "m", "--input", "x.docx",
                          "--output", "y.npy"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith("error: x.docx: unknown input")


def test_log_level_before_or_after_the_command(capsys):
    logger = logging.getLogger("sentjax")
    try:
        for argv in (["--log-level", "debug", "eval", "sts", "--help"], ["eval", "sts", "--help", "--log-level=ERROR"]):
            with pytest.raises(SystemExit):
                cli.main(argv)
        assert logger.level == logging.ERROR
        with pytest.raises(SystemExit) as e:
            cli.main(["--log-level", "loud", "eval"])
        assert e.value.code == 2 and "invalid choice: 'loud'" in capsys.readouterr().err
        logs.configure("warning")
        logging.getLogger("sentjax.train.train").info("hidden")
        logging.getLogger("sentjax.train.train").warning("shown")
        logs.configure("info")
        logging.getLogger("sentjax.encode").info("wrote it")
        assert capsys.readouterr() == ("", "warning: shown\nwrote it\n")  # logs: stderr only, stdout stays clean
    finally:
        logs.configure("info")


def _prints(path: str):
    tree = ast.parse(open(os.path.join(REPO, path), encoding="utf-8").read())
    where = {}

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and func == "<module>" \
                else func
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                where.setdefault(f, []).append(child.lineno)
            visit(child, f)

    visit(tree, "<module>")
    return where


def test_library_code_logs_instead_of_printing():
    bad = []
    for root, _, files in os.walk(os.path.join(REPO, "sentjax")):
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, name), REPO).replace(os.sep, "/")
            allowed = PRINT_ALLOWED.get(rel, set())
            for func, lines in _prints(rel).items():
                if allowed is not None and func not in allowed:
                    bad.append(f"{rel}:{lines[0]} in {func}()")
    assert not bad, "print() in library code; use logging.getLogger(__name__):\n" + "\n".join(bad)
