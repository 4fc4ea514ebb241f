"""``report.json`` is a contract with users' scripts: its keys and value types are pinned here.

A tiny full run (teacher fine-tuned here, student, pruning with recovery, INT8) writes report.json; its shape (every
key path with its JSON type) must equal ``report_schema.json``. Dicts that other packages fill (the environment,
compress's pruning and INT8 reports, the training loop's per-epoch rows) are pinned as "a dict" / "a list" only;
``settings`` holds exactly RunConfig's settings by flat name (a new setting is one field, not an edit here).
A deliberate schema change updates ``report_schema.json`` in the same commit:
``python tests/distill/test_report_schema.py RUN_DIR > tests/distill/report_schema.json``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import factories
import pytest

EXPECTED = Path(__file__).with_name("report_schema.json")
# key paths whose content other modules own: only their type is pinned
OPAQUE = {"environment", "settings", "history.teacher[]", "history.student[]", "history.pruned[]",
          "history.prune_report", "history.quantize_report", "history.int8_speed", "history.prune_steps[].per_layer"}


def json_type(value) -> str:
    """The JSON type name of a loaded value."""
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(value, kind):
            return name
    return "null"


def shape(value, path: str = "") -> dict[str, list[str]]:
    """Every key path of ``value`` with the sorted JSON types seen there (``[]`` marks list items)."""
    found: dict[str, set[str]] = {}

    def walk(v, p: str) -> None:
        p = re.sub(r"^training\.(\w+?)_\d+", r"training.\1", p)  # a repeated stage (recovery per step): name_2, ...
        if p:
            found.setdefault(p, set()).add(json_type(v))
        if p in OPAQUE:
            return
        if isinstance(v, dict):
            for k, item in v.items():
                walk(item, f"{p}.{k}" if p else k)
        elif isinstance(v, list):
            for item in v:
                walk(item, f"{p}[]")

    walk(value, path)
    return {k: sorted(v) for k, v in sorted(found.items())}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    from distill.cli import main

    tmp = tmp_path_factory.mktemp("schema")
    teacher = factories.save_teacher(tmp / "teacher", tmp, with_head=False)
    data = factories.write_sst2_like(tmp / "data", n_train=32, n_dev=16)
    out = tmp / "run"
    assert main(["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--epochs", "1",
                 "--teacher-epochs", "1", "--batch-size", "16", "--max-seq-length", "16", "--latency-runs", "2",
                 "--output-dir", str(out), "--quiet"]) == 0
    return json.loads((out / "report.json").read_text())


def test_report_json_keeps_its_schema(report):
    from distill.pipeline.config import SETTINGS

    assert shape(report) == json.loads(EXPECTED.read_text())
    assert list(report["settings"]) == list(SETTINGS)


def test_the_typed_report_reads_back_what_it_wrote(report):
    """``RunReport.from_json(report.json).to_json()`` is report.json without what rendering adds."""
    from distill.pipeline.results import RunReport

    written = {k: v for k, v in report.items() if k != "environment"}
    written["stages"] = [{k: v for k, v in s.items() if k != "speedup"} for s in report["stages"]]
    again = RunReport.from_json(report)
    assert again.to_json() == written
    assert again.final.name == "int8" and again.prune.steps[0].step == 1 and again.teacher.primary.key == "teacher"


if __name__ == "__main__":  # regenerate the expected schema from a run dir
    print(json.dumps(shape(json.loads((Path(sys.argv[1]) / "report.json").read_text())), indent=1))
