"""Layering of the package, read from the source (AST): no forbidden direction, no import cycle.

Lower layers never import higher ones (function-level imports count: a lazy import is still a
dependency), so each part can be read, tested and replaced on its own:

    errors, ops  <-  losses, parallel, data, eval  <-  models  <-  train  <-  cli / experiments
"""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "sentjax")

FORBIDDEN = {  # importer package -> packages / modules it must not import
    "sentjax.losses": ("sentjax.models", "sentjax.train", "sentjax.api", "sentjax.data", "sentjax.eval"),
    "sentjax.models": ("sentjax.train", "sentjax.losses", "sentjax.api", "sentjax.eval"),
    "sentjax.data": ("sentjax.train", "sentjax.eval", "sentjax.api"),
    "sentjax.eval": ("sentjax.train",),
    "sentjax.parallel": ("sentjax.train", "sentjax.models", "sentjax.api"),
    "sentjax.errors": ("sentjax",),
    # exact top-k: array code only, shared by the retrieval evaluator and the hard-negative miner
    "sentjax.search": ("sentjax.models", "sentjax.train", "sentjax.data", "sentjax.eval", "sentjax.losses"),
}


def modules() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                out[name.removesuffix(".__init__")] = path
    return out


def imports_of(path: str, name: str, known: set[str]) -> set[str]:
    """Every sentjax module ``path`` imports, at any depth of the file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod when it exists
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "sentjax")
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for t in imports_of(path, name, known) if t in known} for name, path in mods.items()}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_forbidden_direction():
    bad = []
    for mod, targets in graph().items():
        for importer, banned in FORBIDDEN.items():
            if _under(mod, importer):
                bad += [f"{mod} -> {t}" for t in targets for b in banned
                        if _under(t, b) and not _under(t, importer)]
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_library_does_not_import_test_helpers():
    bad = [m for m, targets in graph().items() if "sentjax.testing" in targets and m != "sentjax.testing"]
    assert not bad, f"production modules import sentjax.testing: {bad}"


def test_no_import_cycle():
    g = graph()
    # package __init__ files that only re-export their own submodules are the package itself
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
