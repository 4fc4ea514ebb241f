"""Bad input, as one table: each case must exit with code 2, print exactly one line on stderr naming the problem
and the fix, show no traceback, and write nothing (no output dir, no change anywhere under the test's tmp dir).

Cases run in-process through ``distill.cli.main(argv)`` against tiny models built once per module; two of them are
repeated in a real subprocess, so library warnings or progress bars that bypass pytest's capture also count.
``{name}`` in an argv is filled from the ``env`` fixture; ``{out}`` is the case's own (never created) output dir.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import factories
import pytest

from distill.cli import main

ROOT = Path(__file__).resolve().parents[2]
RUN = ["run", "--teacher", "{teacher}", "--student", "tiny", "--task", "sst2", "--data", "{data}",
       "--output-dir", "{out}", "--max-seq-length", "16"]


@dataclass(frozen=True)
class Case:
    """One bad input: the command line (placeholders in braces) and a regex the one error line must match."""

    id: str
    argv: tuple[str, ...]
    expect: str


def _run(*changes: str) -> tuple[str, ...]:
    """``distill run`` on the good defaults with ``changes`` (flag, value pairs) replacing or adding flags."""
    argv = list(RUN)
    pairs = list(zip(changes[::2], changes[1::2], strict=True))
    for flag, value in pairs:
        if flag in argv:
            i = argv.index(flag)
            if value is None:
                del argv[i:i + 2]
            else:
                argv[i + 1] = value
        elif value is not None:
            argv += [flag, value]
    return tuple(argv)


def _run_flags(*flags: str) -> tuple[str, ...]:
    """``distill run`` on the good defaults plus bare flags (``--set k=v``, ``--config f``...)."""
    return tuple(RUN) + flags


CASES = [
    # ---- unknown names (with "did you mean") ----
    Case("unknown-teacher", _run("--teacher", "bert-larg"), r"unknown teacher 'bert-larg'.*did you mean 'bert-large'"),
    Case("unknown-student", _run("--student", "tinny"), r"unknown student 'tinny'.*did you mean 'tiny'"),
    Case("unknown-task", _run("--task", "sst3"), r"unknown task 'sst3'.*did you mean 'sst2'"),
    Case("unknown-importance", _run("--prune-importance", "magnitud"),
         r"unknown .*importance.* 'magnitud'.*did you mean 'magnitude'"),
    Case("unknown-quantization-target", _run("--quantize-target", "avx512vnni"),
         r"unknown quantization target 'avx512vnni'.*did you mean 'avx512_vnni'"),
    Case("unknown-attention-loss", _run_flags("--set", "distill.attention_loss=kll"),
         r"unknown --attention-loss 'kll'.*did you mean 'kl'"),
    Case("unknown-schedule", _run_flags("--set", "distill.temperature_schedule=cosin", "--set",
                                        "distill.temperature_end=1"),
         r"unknown --temperature-schedule 'cosin'.*did you mean 'cosine'"),
    Case("unknown-init", _run_flags("--set", "student.init=teacher-layer"),
         r"unknown --init 'teacher-layer'.*did you mean 'teacher-layers'"),
    Case("unknown-teacher-shard", _run_flags("--set", "train.teacher_shard=fsdp2"),
         r"unknown --teacher-shard 'fsdp2'.*did you mean 'fsdp'"),
    Case("prune-unknown-importance", ("prune", "{enc}", "--importance", "magnitud", "--output-dir", "{out}"),
         r"did you mean 'magnitude'"),
    # ---- recipes ----
    Case("recipe-malformed-yaml", _run_flags("--config", "{bad_yaml}"), r"not valid YAML at line \d"),
    Case("recipe-unknown-key", _run_flags("--config", "{typo_key}"),
         r"unknown recipe key 'train.batchsize'.*did you mean 'batch_size'"),
    Case("recipe-unknown-section", _run_flags("--config", "{typo_section}"),
         r"unknown recipe section 'trian'.*did you mean 'train'"),
    Case("recipe-missing", _run_flags("--config", "{tmp}/nowhere.yaml"), r"recipe '.*nowhere.yaml' does not exist"),
    Case("set-malformed", _run_flags("--set", "lr=3"), r"--set 'lr=3' is not of the form section.key=value"),
    # ---- out-of-range values ----
    Case("temperature-zero", _run("--temperature", "0"), r"--temperature 0.0 must be > 0"),
    Case("temperature-negative", _run("--temperature", "-1"), r"--temperature -1.0 must be > 0"),
    Case("alpha-above-1", _run("--alpha", "2"), r"--alpha 2.0 is outside \[0, 1\]"),
    Case("epochs-zero", _run("--epochs", "0"), r"--epochs 0.0 must be > 0"),
    Case("batch-size-zero", _run("--batch-size", "0"), r"--batch-size 0 must be ≥ 1"),
    Case("prune-heads-one", _run("--prune-heads", "1"), r"--prune-heads 1.0 is outside \[0, 1\)"),
    Case("prune-ffn-negative", _run("--prune-ffn", "-0.1"), r"--prune-ffn -0.1 is outside \[0, 1\)"),
    Case("prune-hidden-above-1", _run("--prune-hidden", "1.5"), r"--prune-hidden 1.5 is outside \[0, 1\)"),
    Case("max-seq-length-tiny", _run("--max-seq-length", "4"), r"--max-seq-length 4 is too short"),
    Case("prune-cmd-heads-one", ("prune", "{enc}", "--heads", "1.0", "--output-dir", "{out}"),
         r"--prune-heads 1.0 is outside \[0, 1\)"),
    # ---- data ----
    Case("no-task-no-data", _run("--task", None, "--data", None), r"no --task and no --data"),
    Case("data-missing", _run("--data", "{tmp}/nowhere"), r"data path '.*nowhere' does not exist"),
    Case("unknown-demo-data", _run("--data", "sst2-dmeo"),
         r"data path 'sst2-dmeo' does not exist and is not a demo data set.*did you mean 'sst2-demo'"),
    Case("demo-data-other-task", _run("--data", "sst2-demo", "--task", "mrpc"),
         r"--task mrpc does not match the demo data 'sst2-demo' \(task sst2\).*use --task sst2"),
    Case("data-empty-file", _run("--data", "{empty_data}"), r"data file '.*train.tsv' is empty"),
    Case("data-no-dev-file", _run("--data", "{no_dev}"), r"has no dev.tsv"),
    Case("data-missing-column", _run("--data", "{jsonl}", "--task", None, "--text-column", "review"),
         r"column 'review' is missing"),
    Case("labels-outside-head", _run("--data", "{bad_labels}"), r"labels \[7\] .* outside the 2 classes"),
    Case("labels-mixed-types", _run("--data", "{mixed_labels}", "--task", None, "--text-column", "text",
                                    "--label-column", "label"), r"labels mix numbers and names"),
    # ---- models ----
    Case("teacher-head-size", _run("--teacher", "{three}"), r"3-label head but task 'sst2' has 2 labels"),
    Case("tokenizer-vocab-differs", _run("--student", "{other}", "--prune-importance", "distillation"),
         r"runs the teacher on the student's token ids, which differ here"),
    Case("augment-mlm-without-head", _run("--augment", "2", "--augment-mlm", "{three}"),
         r"has no trained masked-LM head.*BertForMaskedLM"),
    Case("teacher-pruned-init-grows-teacher", _run("--init", "teacher-pruned"), r"cannot grow the teacher"),
    Case("layer-selection-out-of-order", _run("--layer-selection", "2,1"), r"out-of-order layer"),
    Case("teacher-weights-count", _run("--teacher-weights", "0.5,0.5"), r"2 weight\(s\) for 1 teacher"),
    Case("model-dir-without-weights", _run("--teacher", "{no_weights}"), r"has no model weights"),
    Case("model-dir-without-config", _run("--teacher", "{no_config}"), r"has no config.json"),
    Case("pickle-only-weights", _run("--teacher", "{pickled}"), r"only pickle weights.*--allow-pickle"),
    Case("prune-cmd-no-weights", ("prune", "{no_weights}", "--heads", "0.5", "--output-dir", "{out}"),
         r"has no model weights"),
    Case("quantize-cmd-pickle-only", ("quantize", "{pickled}", "--output-dir", "{out}"), r"only pickle weights"),
    Case("onnx-not-a-model", ("eval", "{bad_onnx}", "--teacher", "{teacher}", "--task", "sst2", "--data", "{data}"),
         r"is not a valid ONNX model"),
    Case("onnx-missing", ("eval", "{tmp}/nowhere.onnx", "--teacher", "{teacher}", "--task", "sst2", "--data",
                          "{data}"), r"ONNX file '.*nowhere.onnx' does not exist"),
    # ---- shapes that only fail once models are known: caught before anything is written ----
    Case("prune-removes-every-head", _run("--prune-heads", "0.8"), r"--prune-heads 0.8 removes all 2 heads"),
    Case("prune-cmd-removes-every-head", ("prune", "{enc}", "--heads", "0.9", "--output-dir", "{out}"),
         r"--prune-heads 0.9 removes all 4 heads of layer 0"),
    Case("prune-keeps-more-layers", _run("--prune-layers", "5"), r"--prune-layers 5 keeps more layers"),
    Case("hidden-ratio-breaks-relation-heads", _run_flags("--relation-weight", "1", "--relation-heads", "4",
                                                          "--prune-hidden", "0.3"),
         r"--prune-hidden 0.3 leaves a hidden width of 90, which --relation-heads 4"),
    Case("relation-heads-do-not-divide", _run_flags("--relation-weight", "1", "--relation-heads", "3"),
         r"--relation-heads 3 does not divide the student width 128"),
    Case("init-teacher-layers-widths-differ", _run("--init", "teacher-layers"),
         r"--init teacher-layers needs the student's hidden size"),
    # ---- commands and output dirs ----
    Case("static-quantize-without-data", ("quantize", "{teacher}", "--mode", "static", "--output-dir", "{out}"),
         r"static quantization needs calibration data.*--calibration-data"),
    Case("prune-taylor-without-data", ("prune", "{enc}", "--importance", "taylor", "--output-dir", "{out}"),
         r"needs gradients from task data"),
    Case("output-dir-is-a-file", _run("--output-dir", "{afile}"), r"output dir '.*afile' is a file"),
    Case("output-dir-not-empty", _run("--output-dir", "{busy}"), r"exists and is not empty.*--overwrite"),
    Case("export-run-without-int8", ("export", "{no_int8_run}", "--output-dir", "{out}"),
         r"run '.*' has no INT8 \(ONNX\) stage.*--no-quantize"),
    Case("export-onnx-not-a-model", ("export", "{bad_onnx}", "--output-dir", "{out}"), r"is not a valid ONNX model"),
    Case("export-output-dir-is-a-file", ("export", "{good_bundle}", "--output-dir", "{afile}"), r"is a file"),
    Case("prune-output-dir-is-a-file", ("prune", "{enc}", "--heads", "0.5", "--output-dir", "{afile}"),
         r"is a file"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """Every file the cases point at, built once: tiny models (good and broken) and data (good and broken)."""
    import torch
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("bad")
    teacher = factories.save_teacher(tmp / "teacher", tmp)
    enc = factories.save_teacher(tmp / "enc", tmp, with_head=False)
    data = factories.write_sst2_like(tmp / "data", n_train=16, n_dev=8)
    three = factories.save_teacher(tmp / "three", tmp, num_labels=3)
    pickled = factories.save_teacher(tmp / "pickled", tmp)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    no_weights = factories.save_teacher(tmp / "no_weights", tmp)
    (no_weights / "model.safetensors").unlink()
    no_config = factories.save_teacher(tmp / "no_config", tmp)
    (no_config / "config.json").unlink()
    other = factories.save_teacher(tmp / "other_student", tmp)
    factories.tokenizer_from_words(factories.SPECIAL + ["x", "y", "z"]).save_pretrained(other)

    def tsv_dir(name: str, train: str, dev: str | None) -> Path:
        root = tmp / name
        root.mkdir()
        (root / "train.tsv").write_text(train)
        if dev is not None:
            (root / "dev.tsv").write_text(dev)
        return root

    bad_labels = tsv_dir("bad_labels", "sentence\tlabel\na b\t7\n", "sentence\tlabel\na b\t1\n")
    empty_data = tsv_dir("empty_data", "", "sentence\tlabel\na b\t1\n")
    no_dev = tsv_dir("no_dev", "sentence\tlabel\na b\t1\n", None)
    jsonl = tmp / "reviews.jsonl"
    jsonl.write_text('{"text": "good", "label": 1}\n' * 20)
    mixed = tmp / "mixed"
    mixed.mkdir()
    for split in ("train", "dev"):
        (mixed / f"{split}.jsonl").write_text('{"text": "good", "label": 1}\n{"text": "bad", "label": "neg"}\n')
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("train:\n  lr: [1e-4\n")
    typo_key = tmp / "typo_key.yaml"
    typo_key.write_text("train:\n  batchsize: 8\n")
    typo_section = tmp / "typo_section.yaml"
    typo_section.write_text("trian:\n  lr: 1e-4\n")
    bad_onnx = tmp / "bad" / "model.onnx"
    bad_onnx.parent.mkdir()
    bad_onnx.write_bytes(b"definitely not protobuf")
    no_int8_run = tmp / "run_without_int8"
    no_int8_run.mkdir()
    (no_int8_run / "report.json").write_text('{"stages": [{"name": "teacher", "path": "teacher"}]}')
    good_bundle = tmp / "good_bundle"  # only its resolution matters: the output dir is refused first
    good_bundle.mkdir()
    (good_bundle / "model.onnx").write_bytes(b"x")
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    afile = tmp / "afile"
    afile.write_text("x")
    names = dict(teacher=teacher, enc=enc, data=data, three=three, pickled=pickled, no_weights=no_weights,
                 no_config=no_config, other=other, bad_labels=bad_labels, empty_data=empty_data, no_dev=no_dev,
                 jsonl=jsonl, mixed_labels=mixed, bad_yaml=bad_yaml, typo_key=typo_key, typo_section=typo_section,
                 bad_onnx=bad_onnx, no_int8_run=no_int8_run, good_bundle=good_bundle, busy=busy, afile=afile, tmp=tmp)
    return {k: str(v) for k, v in names.items()}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime: any write shows up as a difference."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _argv(case: Case, env: dict) -> list[str]:
    fill = {**env, "out": str(Path(env["tmp"]) / f"out-{case.id}")}
    return [a.format(**fill) for a in case.argv]


def test_the_table_is_big_enough():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(env, capsys, case):
    argv = _argv(case, env)
    if "--quiet" not in argv and argv[0] in ("run", "prune", "quantize", "export"):
        argv.append("--quiet")
    before = _snapshot(Path(env["tmp"]))
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, f"exit {code}: {err}"
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert ";" in err, f"no fix given: {err}"
    assert re.search(case.expect, err), err
    assert _snapshot(Path(env["tmp"])) == before, "something was written"


def test_cuda_out_of_memory_is_one_line_with_the_fixes(env, capsys, monkeypatch):
    """Out of GPU memory (simulated: the teacher's forward raises) names the batch size and the three fixes."""
    import torch
    from transformers import BertForSequenceClassification

    def boom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(BertForSequenceClassification, "forward", boom)
    code = main(["distil", "--quiet", "--teacher", env["teacher"], "--task", "sst2", "--data", env["data"],
                 "--batch-size", "4", "--output-dir", str(Path(env["tmp"]) / "oom")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: out of GPU memory at batch size 4; use --cache-teacher, --teacher-dtype bf16, "
                          "or a smaller --batch-size"), err


@pytest.mark.parametrize("case_id", ["prune-cmd-removes-every-head", "pickle-only-weights"])
def test_one_line_in_a_real_process(env, case_id):
    """Outside pytest's capture: no library warning, log record or progress bar adds to the one line."""
    case = next(c for c in CASES if c.id == case_id)
    res = subprocess.run([sys.executable, "-m", "distill", *_argv(case, env)], capture_output=True, text=True,
                         cwd=ROOT, env=_subprocess_env())
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert re.search(case.expect, res.stderr) and res.stdout == "", res.stderr


def _subprocess_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_table_lists_the_issue_categories():
    """The issue's list, each covered by at least one case (a guard against the table losing a category)."""
    ids = " ".join(c.id for c in CASES)
    for word in ("unknown-teacher", "unknown-student", "unknown-task", "unknown-attention-loss", "importance",
                 "quantization-target", "recipe-malformed-yaml", "recipe-unknown-key", "temperature-zero",
                 "prune-heads-one", "epochs-zero", "batch-size-zero", "data-missing", "data-empty-file",
                 "missing-column", "labels-outside-head", "labels-mixed-types", "teacher-head-size",
                 "tokenizer-vocab-differs", "removes-every-head", "hidden-ratio-breaks", "without-weights",
                 "pickle-only", "onnx-not-a-model", "output-dir-is-a-file"):
        assert word in ids, word
