"""The demo data shipped inside the package: ``--data sst2-demo`` works offline from any install."""

import hashlib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from distill.core.errors import ConfigError, DataError
from distill.data import load_splits
from distill.data.demo import DEMOS, HERE, resolve_data, resolve_demo
from distill.data.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
DEV_SHA256 = "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"  # GLUE SST-2 dev.tsv


def test_sst2_demo_is_the_documented_sample():
    root = DEMOS.get("sst2-demo").path
    train = (root / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert train[0] == "sentence\tlabel" and len(train) == 2001
    assert sorted({line.rsplit("\t", 1)[1] for line in train[1:]}) == ["0", "1"]
    assert hashlib.sha256((root / "dev.tsv").read_bytes()).hexdigest() == DEV_SHA256
    readme = (root / "README.md").read_text()
    for needed in ("Socher", "GLUE", "Licence", "random.Random(13)"):
        assert needed in readme


def test_every_demo_has_files_and_an_attribution():
    for name, demo in DEMOS.items():
        assert demo.path.is_dir() and demo.path.parent == HERE, name
        assert (demo.path / "README.md").is_file(), f"{name} needs its source, citation and licence"
        assert demo.citation and demo.description
        get_task(demo.task)  # a registered task


def test_load_by_name_implies_the_task():
    splits = load_splits(None, "sst2-demo")
    assert splits.task.name == "sst2" and len(splits.train) == 2000 and len(splits.dev) == 872
    assert sorted(set(splits.dev["label"])) == [0, 1]
    capped = load_splits(get_task("sst2"), "sst2-demo", max_train_samples=100, seed=1)
    assert len(capped.train) == 100


def test_a_different_task_is_refused():
    with pytest.raises(ConfigError, match=r"--task mrpc does not match the demo data 'sst2-demo' \(task sst2\)"):
        resolve_data(get_task("mrpc"), "sst2-demo")


def test_unknown_bare_name_suggests_the_demo():
    with pytest.raises(DataError, match=r"'sst2-dmeo' does not exist and is not a demo.*did you mean 'sst2-demo'"):
        resolve_demo("sst2-dmeo")


def test_paths_are_never_taken_for_demo_names(tmp_path, monkeypatch):
    assert resolve_demo(str(tmp_path / "nowhere")) is None  # a path: the data reader names the missing path
    assert resolve_demo("train.tsv") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sst2-demo").mkdir()  # an existing folder of the same name wins
    assert resolve_demo("sst2-demo") is None


def test_pyproject_ships_the_demo_files_as_package_data():
    """Every file of every demo matches a package-data pattern, so a wheel carries it (the wheel itself was checked
    with `pip wheel . --no-deps`)."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["distill"]
    files = [p.relative_to(ROOT / "distill").as_posix() for p in HERE.rglob("*") if p.is_file()
             and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert files
    assert all(any(fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)


def test_presets_lists_the_demo_sets(capsys):
    from distill.cli import main

    assert main(["presets"]) == 0
    assert "sst2-demo" in capsys.readouterr().out
