"""The layer rules of the code base, checked on the source (this docstring is their reference; distill/__init__.py
and the README's layout section summarise them).

1. Layers. ``distill.core`` is at the bottom. The generic layers are ordered core < data < objective < train <
   evaluate < report: a module imports only its own layer and lower ones. The domain packages import only core
   and the generic layers they need, and never each other: ``students`` and ``compress`` -> core, data (the task
   kinds: a head class, an ONNX signature); ``teachers`` -> core, data, objective, train (fine-tuning runs the one
   training loop, caching shards it).
   ``distill.pipeline``, ``distill.cli``, ``distill.__main__`` and the
   package root ``distill`` (its lazy re-exports) are on top and may import anything.
2. No import cycles between modules, counting every import: top-level, inside functions, and the
   ``importlib.import_module`` targets (``distill/__init__.py``'s ``_EXPORTS``).
3. One owner per heavy backend (``BACKEND_OWNERS``): only the owner imports it, so everything else stays light
   and a backend can be swapped in one place.
4. No relative imports.
5. ``distill --help`` loads neither torch nor any heavy backend.

Each check reads every import of every module with ``ast``. ``KNOWN_VIOLATIONS`` lists the few breaches left from
before these rules, each with the developer who removes it; the lead deletes the entry after merging the fix
(``test_known_violations_are_still_there`` fails once an entry is stale).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "teachers", "students", "compress")

GENERIC = ("core", "data", "objective", "train", "evaluate", "report")  # bottom to top
DOMAIN = {  # domain package -> the generic layers it may import (besides itself)
    "students": {"core", "data"},
    "compress": {"core", "data"},
    "teachers": {"core", "data", "objective", "train"},
}
TOP = ("distill.pipeline", "distill.cli", "distill.__main__")

# third-party backend -> the modules (or packages) allowed to import it
BACKEND_OWNERS = {
    "onnxruntime": ("compress.quantize", "compress.measure"),
    "onnx": ("compress.quantize", "compress.measure"),
    "torch_pruning": ("compress.prune",),
    "matplotlib": ("distill.report.plots",),
    "rich": ("distill.core.console",),
    "evaluate": ("distill.evaluate",),
    "accelerate": ("distill.core.dist",),
}

# (importer, imported, rule) breaches that predate these rules; each names who removes it and how (none left)
KNOWN_VIOLATIONS: set[tuple[str, str, str]] = set()


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _modules() -> dict[str, Path]:
    """Every module of the four packages (the metric scripts ``evaluate`` loads by path are not imported)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "metrics" not in path.relative_to(ROOT / pkg).parts:
                found[_name(path)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str | None:
    """The layer of one of our modules: a generic layer, a domain package, or ``top``; None if unplaced."""
    if module == "distill" or any(module == t or module.startswith(t + ".") for t in TOP):
        return "top"
    parts = module.split(".")
    if parts[0] in DOMAIN:
        return parts[0]
    if parts[0] == "distill" and parts[1] in GENERIC:
        return parts[1]
    return None


def _allowed(layer: str) -> set[str]:
    if layer == "top":
        return {"top", *GENERIC, *DOMAIN}
    if layer in DOMAIN:
        return {layer, *DOMAIN[layer]}
    return set(GENERIC[: GENERIC.index(layer) + 1])


def _import_module_targets(tree: ast.Module) -> Iterator[str]:
    """Module names passed to ``import_module``: string literals, or the values of the dict it indexes."""
    dicts = {t.id: node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and isinstance(node.value, ast.Dict)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) != "import_module":
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            yield arg.value
        elif isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name) and arg.value.id in dicts:
            yield from (v.value for v in dicts[arg.value.id].values if isinstance(v, ast.Constant))


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, level) for every import in the file, wherever it sits; ``from pkg import sub`` names
    the submodule when ``sub`` is one of ours. Level > 0 is a relative import."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, 0) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            yield from ((s, node.level) for s in subs) if subs else [(base, node.level)]
    yield from ((name, 0) for name in _import_module_targets(tree))


def _ours(target: str) -> str | None:
    """The module of ours that ``target`` names (itself or its closest known parent), or None if third-party."""
    if target.split(".")[0] not in PACKAGES:
        return None
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {name: sorted({t for t in (_ours(i) for i, _ in _imports(path)) if t and t != name})
         for name, path in MODULES.items()}


def _violations() -> set[tuple[str, str, str]]:
    found = set()
    for name, path in MODULES.items():
        layer = _layer(name)
        for target, level in _imports(path):
            ours = _ours(target)
            if level:
                found.add((name, target, "relative"))
            elif ours and _layer(ours) not in _allowed(layer):
                found.add((name, ours, "layer"))
            top = target.split(".")[0]
            if top in BACKEND_OWNERS and not any(name == o or name.startswith(o + ".") for o in BACKEND_OWNERS[top]):
                found.add((name, target, "backend"))
    return found


VIOLATIONS = _violations()


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_follow_the_layers(name):
    bad = sorted((target, rule) for who, target, rule in VIOLATIONS - KNOWN_VIOLATIONS if who == name)
    allowed = ", ".join(sorted(_allowed(_layer(name))))
    assert not bad, f"{name} ({_layer(name)}, may import {allowed}; backends: see BACKEND_OWNERS) imports {bad}"


def test_known_violations_are_still_there():
    """An entry fixed on main is deleted from KNOWN_VIOLATIONS, so the list only ever shrinks."""
    assert KNOWN_VIOLATIONS - VIOLATIONS == set()


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_hidden_cycle():
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_import_module_strings_are_seen():
    assert {"distill.pipeline", "distill.train.loop"} <= set(GRAPH["distill"])


def test_heavy_backends_load_lazily():
    code = ("import sys, distill, teachers, students, compress, distill.cli\n"
            "from distill.cli import build_parser; build_parser().format_help()\n"
            "heavy = [m for m in ('torch_pruning', 'onnxruntime', 'onnx', 'optimum', 'evaluate') if m in sys.modules]\n"
            "print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_help_loads_no_torch():
    code = ("import sys\nfrom distill.cli import build_parser; build_parser().format_help()\n"
            "print([m for m in ('torch', 'transformers', 'torch_pruning', 'onnxruntime', 'onnx', 'optimum', "
            "'evaluate', 'matplotlib', 'accelerate', 'datasets') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_help_shows_a_worked_example():
    res = subprocess.run([sys.executable, "-c", "import sys; from distill.cli import main; main(['--help'])"],
                         capture_output=True, text=True, cwd=ROOT)
    assert "distill run" in res.stdout
