"""Atomic artifacts: a stage dir appears complete or not at all."""

import pytest

from distill.core.artifacts import staged_dir, write_json


def test_staged_dir_success_and_failure(tmp_path):
    final = tmp_path / "stage"
    with staged_dir(final) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (final / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with staged_dir(final) as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("crash mid-write")
    assert (final / "a.txt").read_text() == "1"  # the old complete state survives
    with staged_dir(final) as tmp:
        (tmp / "b.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["stage"]


def test_write_json_leaves_no_temp(tmp_path):
    write_json(tmp_path / "x.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]
