"""The layer rules of DEVELOPERS.md, checked on the source: imports flow one way, heavy backends load lazily."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "teachers", "students", "compress")
TOP = {"distill.pipeline", "distill.cli", "distill.__main__", "distill.preflight"}


def _layer(module: str) -> str:
    if module.startswith("distill.core"):
        return "core"
    if module in TOP:
        return "top"
    if module.startswith("distill"):
        return "engine"
    return module.split(".")[0]


# which layers each layer may import from this repository
ALLOWED = {
    "core": {"core"},
    "engine": {"core", "engine"},
    "teachers": {"core", "engine", "teachers"},
    "students": {"core", "engine", "students"},
    "compress": {"core", "engine", "compress"},
    "top": {"core", "engine", "teachers", "students", "compress", "top"},
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "metrics" in path.parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            yield name, path


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_import_direction(name, path):
    mine = _layer(name)
    bad = []
    for target in _imports(path):
        if target.split(".")[0] not in PACKAGES:
            continue
        if target == "distill":
            target = "distill.__init__"
        if _layer(target) not in ALLOWED[mine]:
            bad.append(target)
    assert not bad, f"{name} ({mine}) must not import {bad}"


def test_heavy_backends_load_lazily():
    code = ("import sys, distill, teachers, students, compress, distill.cli\n"
            "from distill.cli import build_parser; build_parser().format_help()\n"
            "heavy = [m for m in ('torch_pruning', 'onnxruntime', 'onnx', 'optimum', 'evaluate') if m in sys.modules]\n"
            "print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_help_shows_a_worked_example():
    res = subprocess.run([sys.executable, "-c", "import sys; from distill.cli import main; main(['--help'])"],
                         capture_output=True, text=True, cwd=ROOT)
    assert "distill run" in res.stdout
