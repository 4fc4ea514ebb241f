"""``distill run`` end to end for every encoder family, through the CLI, on a tiny random teacher of that family
(tests/family_factories.py: hidden 128, 2 heads, FFN 512, 4 layers, the family's own kind of tokenizer).

Each run fine-tunes the teacher, distils a ``tiny`` student of the teacher's family (``--init auto``: its layers)
with the hidden and relation terms on, prunes heads (with the hidden width), FFN neurons and layers, exports INT8
and writes the report. The student and pruned dirs must be of the teacher's model type and reload with plain
``AutoModelFor...from_pretrained`` giving the logits of the models the run held in memory: ``distill.pipeline.run``
is wrapped (the CLI looks it up on each call) to keep the ``RunReport`` it returns, whose ``distil.model`` and
``prune.model`` are those models. Token classification (CoNLL-style tags) runs for ModernBERT and DeBERTa-v3.

Everything is as small as the pipeline allows (32 rows, --max-seq-length 16, one epoch, one latency run at
sequence 16): each run prints its wall time (``pytest -s``), which is reported, never asserted.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import factories
import pytest
import torch
from family_factories import FAMILY_NAMES, WORDS, save_tiny_teacher

from compress.prune.io import WIDTHS_FILE
from distill.cli import main
from distill.core.families import family_of

SCHEMA = json.loads((Path(__file__).parents[1] / "distill" / "report_schema.json").read_text())
SENTENCES = ["the movie was very good", "a boring plot and an awful actor", "it is quite lovely", "sad"]
# every stage of the run, with the terms and granularities the issue asks for; latency at the tiny length
FAST = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "16", "--max-seq-length", "16",
        "--latency-runs", "1", "--set", "report.latency_seq=16", "--set", "report.latency_threads=1", "--quiet"]
TERMS = ["--hidden-weight", "1", "--relation-weight", "1"]
PRUNE = ["--prune-heads", "0.5", "--prune-ffn", "0.5", "--prune-layers", "1"]  # heads take the hidden width
TASK_METRICS = "stages[].metrics."  # the task's metric names (the pin is of an SST-2 run): any, as numbers
TOKEN_FAMILIES = ("modernbert", "deberta-v2")
TAGS = {**{w: "PER" for w in factories.POSITIVE}, **{w: "LOC" for w in factories.NEGATIVE}, "actor": "ORG"}


def write_conll_like(root: Path, n_train: int = 32, n_dev: int = 16, seed: int = 0) -> Path:
    """A CoNLL-2003-style dir (eng.train, eng.testa; IOB1) over the tiny families' words: a word's tag follows
    from the word (positive words PER, negative LOC, 'actor' ORG, the rest O)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("eng.train", n_train), ("eng.testa", n_dev)):
        lines = ["-DOCSTART- -X- O O", ""]
        for _ in range(n):
            words = rng.sample(WORDS, 5)
            lines += [f"{w} NN I-NP {'I-' + TAGS[w] if w in TAGS else 'O'}" for w in words] + [""]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


class Run:
    """One finished run: its output dir, report.json, the in-memory ``RunReport`` and its wall time."""

    def __init__(self, family: str, task: str, out: Path, report, seconds: float) -> None:
        self.family, self.task, self.out, self.report, self.seconds = family, task, out, report, seconds
        self.json = json.loads((out / "report.json").read_text())

    @property
    def in_memory(self) -> dict:
        return {"student": self.report.distil.model, "pruned": self.report.prune.model}


def run_family(tmp: Path, family: str, task: str) -> Run:
    """``distill run`` (the CLI) for a tiny ``family`` teacher on ``task`` (sst2 or conll2003), keeping the
    RunReport ``distill.pipeline.run`` returned."""
    import distill.pipeline as pipeline  # the CLI reads ``distill.pipeline.run``

    token = task == "conll2003"
    teacher = save_tiny_teacher(family, tmp / "teacher", head="", hidden=128, heads=2, ffn=512)  # fine-tuned first
    data = write_conll_like(tmp / "data") if token else factories.write_sst2_like(tmp / "data", n_train=32, n_dev=16)
    out, kept = tmp / "run", []
    real_run = pipeline.run

    def keep(*args, **kwargs):
        kept.append(real_run(*args, **kwargs))
        return kept[-1]

    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "run", keep)
        code = main(["run", "--teacher", str(teacher), "--student", "tiny", "--task", task, "--data", str(data),
                     "--output-dir", str(out), *TERMS, *PRUNE, *FAST])
    seconds = time.perf_counter() - start
    print(f"\n{family} {task}: tiny end-to-end run {seconds:.1f} s")
    assert code == 0 and len(kept) == 1
    return Run(family, task, out, kept[0], seconds)


CASES = [(name, "sst2") for name in FAMILY_NAMES] + [(name, "conll2003") for name in TOKEN_FAMILIES]


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{t}" for f, t in CASES])
def family_run(request, tmp_path_factory) -> Run:
    family, task = request.param
    return run_family(tmp_path_factory.mktemp(f"{family}-{task}"), family, task)


def test_every_stage_ran_with_the_asked_terms(family_run: Run):
    report = family_run.json
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "int8"]
    assert report["settings"]["init"] == "teacher-layers", "--init auto took the teacher's layers"
    epoch = report["history"]["student"][-1]
    assert epoch["hidden"] > 0 and epoch["relation"] > 0, "hidden and relation terms were on"
    int8 = report["stages"][-1]  # smaller than the FP32 safetensors even this tiny (no exporter trace metadata)
    assert int8["size_mb"] < report["stages"][2]["size_mb"] and 0.0 <= int8["agreement"] <= 1.0
    assert (family_run.out / "int8" / "model.onnx").is_file()


def test_report_is_valid_against_the_schema(family_run: Run):
    """Every key path of report.json is one the pinned schema knows, with a type it allows."""
    found = _pinned_shape(family_run.json)
    allowed = {path: SCHEMA.get(path) or (["float"] if path.startswith(TASK_METRICS) else []) for path in found}
    unknown = {path: types for path, types in found.items() if not set(types) <= set(allowed[path])}
    assert unknown == {}
    assert {p for p in SCHEMA if "." not in p and "[" not in p} == set(family_run.json)


def _pinned_shape(report: dict) -> dict[str, list[str]]:
    """report.json's key paths and types, as tests/distill/test_report_schema.py computes them for the pin."""
    import importlib.util

    path = Path(__file__).parents[1] / "distill" / "test_report_schema.py"
    spec = importlib.util.spec_from_file_location("pinned_report_schema", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shape(report)


def test_student_and_pruned_are_the_teachers_type(family_run: Run):
    teacher = json.loads((family_run.out / "teacher" / "config.json").read_text())
    assert teacher["model_type"] == family_run.family
    for stage in ("student", "pruned"):
        config = json.loads((family_run.out / stage / "config.json").read_text())
        assert config["model_type"] == family_run.family, stage
    family = family_of(family_run.report.prune.model)
    student = family.widths(family_run.report.distil.model.config)
    pruned = family.widths(family_run.report.prune.model.config)
    assert (student.layers, student.hidden, student.heads, student.ffn) == (2, 128, 2, 512)
    assert (pruned.layers, pruned.hidden, pruned.heads, pruned.ffn) == (1, 64, 1, 256)


def test_saved_stages_reload_with_plain_from_pretrained_and_the_same_logits(family_run: Run):
    import transformers

    auto = (transformers.AutoModelForTokenClassification if family_run.task == "conll2003"
            else transformers.AutoModelForSequenceClassification)
    tok = transformers.AutoTokenizer.from_pretrained(family_run.out / "student")
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=16, return_tensors="pt")
    for stage, held in family_run.in_memory.items():
        assert not (family_run.out / stage / WIDTHS_FILE).exists(), "a layout the plain config expresses"
        reloaded = auto.from_pretrained(family_run.out / stage).eval()
        assert type(reloaded) is type(held), stage
        with torch.no_grad():
            want = held.to("cpu").eval()(**batch).logits
            got = reloaded(**batch).logits
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), stage
