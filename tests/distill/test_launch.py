"""``accelerate launch -m distill run`` with two CPU processes (gloo) against one process with the same global batch.

The launched run covers every training stage (teacher fine-tuning, distillation with a teacher cache, pruning
recovery, QAT) and the main-process-only tail (ONNX export, INT8, scoring, report). Dropout is off in teacher and
student so 2 processes × batch 8 and 1 process × batch 16 see the same math.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import factories
import pytest
import torch
from safetensors.torch import load_file

from distill.cli import main
from distill.data import LengthGroupedBatchSampler

ROOT = Path(__file__).resolve().parents[2]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def test_length_groups_line_up_across_processes():
    """N processes at batch B step on the rows one process at batch N × B would, split into N similar-length parts."""
    lengths = [(i * 7) % 23 + 1 for i in range(70)]
    single = LengthGroupedBatchSampler(lengths, 8, seed=3, bucket_factor=2)
    split = LengthGroupedBatchSampler(lengths, 4, seed=3, bucket_factor=2)
    split.num_processes = 2
    for epoch in (0, 1):
        single.set_epoch(epoch)
        split.set_epoch(epoch)
        parts = split.batches()
        assert len(parts) == len(split) == 18  # 70 rows / 4: 8 global batches of 8 as 4 + 4, one of 6 as 4 + 2
        merged = [parts[i] + parts[i + 1] for i in range(0, 18, 2)]
        assert merged == single.batches()
        pairs = zip(parts[::2], parts[1::2], strict=True)
        assert all(min(lengths[i] for i in a) >= max(lengths[i] for i in b) for a, b in pairs)
    split.drop_last = True
    assert len(split) == len(split.batches()) == 16


def _student_dir(root: Path, tmp: Path) -> Path:
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    tok = factories.tiny_tokenizer(tmp)
    BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=16, heads=2, ffn=32,
                                                             **NO_DROPOUT)).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def _launch(args: list[str], mode: str = "--multi_gpu") -> subprocess.CompletedProcess:
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is set up; --multi_gpu (or
    # --use_fsdp) picks the torchrun launcher, and with no GPU visible each process builds a CPU (gloo) Accelerator.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", mode, "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
           "-m", "distill", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    # CI machines are shared: a slow start is no failure, a hang still is
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


def _count(lines: list[str], pattern: str) -> int:
    return sum(bool(re.search(pattern, line)) for line in lines)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Data, a teacher without a task head, a student, and the single-process run at batch 16 the launched runs
    are compared to: (tmp dir, the arguments every run shares, the single run's printed lines)."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    tmp_path = tmp_path_factory.mktemp("launch")
    data = factories.write_sst2_like(tmp_path / "data", n_train=64, n_dev=20)
    teacher = factories.save_teacher(tmp_path / "teacher", tmp_path, with_head=False, **NO_DROPOUT)
    student = _student_dir(tmp_path / "student", tmp_path)
    common = ["run", "--teacher", str(teacher), "--student", str(student), "--task", "sst2", "--data", str(data),
              "--epochs", "2", "--teacher-epochs", "1", "--recover-epochs", "1", "--lr", "5e-3",
              "--teacher-lr", "1e-3", "--max-seq-length", "32", "--cache-teacher", "--qat", "--latency-runs", "2",
              "--device", "cpu"]
    stdout, stderr = StringIO(), StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        assert main([*common, "--batch-size", "16", "--output-dir", str(tmp_path / "one")]) == 0
    return tmp_path, common, stdout.getvalue() + stderr.getvalue()


def _assert_same_run(tmp_path: Path, launched: str) -> None:
    """The launched run (2 processes × batch 8) trained, scored and wrote what the single run (batch 16) did."""
    for stage in ("teacher", "student", "pruned"):
        w2, w1 = _weights(tmp_path / launched / stage), _weights(tmp_path / "one" / stage)
        assert w2.keys() == w1.keys()
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4, msg=f"{stage}: {k}")
    r2, r1 = (json.loads((tmp_path / d / "report.json").read_text()) for d in (launched, "one"))
    for key in ("teacher", "student", "pruned"):  # dev metrics gathered over both processes' shards
        for h2, h1 in zip(r2["history"][key], r1["history"][key], strict=True):
            assert h2["dev_accuracy"] == pytest.approx(h1["dev_accuracy"])
            assert h2["loss"] == pytest.approx(h1["loss"], rel=1e-4)
    rows2, rows1 = ({s["name"]: s for s in r["stages"]} for r in (r2, r1))
    assert rows2.keys() == {"teacher", "student", "pruned", "int8"}
    for name in ("teacher", "student", "pruned"):
        assert rows2[name]["metric"] == pytest.approx(rows1[name]["metric"])
        assert rows2[name]["params"] == rows1[name]["params"]  # a sharded teacher is measured whole
    assert json.loads((tmp_path / launched / "env.json").read_text())["processes"] == 2
    # one set of outputs, nothing half-written by the second process
    names = sorted(p.name for p in (tmp_path / launched).iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert not [p for p in (tmp_path / launched).rglob(".*")], "temporary files left behind"
    assert (tmp_path / launched / "int8" / "model.onnx").is_file()


def _assert_same_lines(launched: subprocess.CompletedProcess, single: str) -> None:
    """Every status line once: the launched run prints what the single run prints, and no rank's errors."""
    lines2, lines1 = (launched.stdout + launched.stderr).splitlines(), single.splitlines()
    patterns = (r"^── ", r"epoch \d+:", r"^report written to", r"┃ stage", r"^│ int8", r"reusing the teacher cache")
    for pattern in patterns:
        assert _count(lines2, pattern) == _count(lines1, pattern) > 0, pattern
    assert not [line for line in lines2 if "[rank" in line or "Traceback" in line]


def test_two_processes_match_one_process_end_to_end(reference):
    tmp_path, common, single = reference
    two = _launch([*common, "--batch-size", "8", "--output-dir", str(tmp_path / "two")])
    _assert_same_run(tmp_path, "two")
    _assert_same_lines(two, single)
    start = load_file(tmp_path / "student" / "model.safetensors")["bert.encoder.layer.0.output.dense.weight"]
    trained = _weights(tmp_path / "one" / "student")["bert.encoder.layer.0.output.dense.weight"]
    assert (trained - start).abs().max() > 1e-3  # it trained
    assert "sharded" not in two.stdout + two.stderr  # DDP: every process holds the whole teacher


def test_fsdp_sharded_teacher_matches_one_process(reference):
    """`accelerate launch --use_fsdp`: the teacher is fine-tuned, cached, run and scored sharded over the two
    processes (half its weights on each) while the student stays DDP; the results equal the single run's."""
    tmp_path, common, single = reference
    fsdp = _launch([*common, "--batch-size", "8", "--output-dir", str(tmp_path / "fsdp")], mode="--use_fsdp")
    _assert_same_run(tmp_path, "fsdp")
    _assert_same_lines(fsdp, single)
    text = " ".join((fsdp.stdout + fsdp.stderr).split())  # rich wraps long lines
    assert "fine-tuning it first (sharded over 2 processes)" in text
    found = re.findall(r"sharded \(FSDP\) over 2 processes: ([\d,]+) of its ([\d,]+) parameters", text)
    assert len(found) == 1, found  # sharded once, then reused by recovery, QAT and scoring
    held, total = (int(n.replace(",", "")) for n in found[0])
    teacher_row = json.loads((tmp_path / "fsdp" / "report.json").read_text())["stages"][0]
    assert teacher_row["name"] == "teacher" and total == teacher_row["params"]
    assert abs(held - total / 2) < 100  # each process holds half (rows split as torch.chunk does)


def test_fsdp_shards_each_of_several_teachers(tmp_path):
    """Two teachers, both sharded, each with its own cache: the student equals the one-process run's."""
    data = factories.write_sst2_like(tmp_path / "data", n_train=48, n_dev=16)
    t1 = factories.save_teacher(tmp_path / "t1", tmp_path, **NO_DROPOUT)
    t2 = factories.save_teacher(tmp_path / "t2", tmp_path, seed=1, **NO_DROPOUT)
    student = _student_dir(tmp_path / "student", tmp_path)
    common = ["run", "--teacher", str(t1), "--teacher", str(t2), "--student", str(student), "--task", "sst2",
              "--data", str(data), "--epochs", "2", "--lr", "5e-3", "--max-seq-length", "32", "--cache-teacher",
              "--no-prune", "--no-quantize", "--latency-runs", "1", "--device", "cpu"]
    res = _launch([*common, "--batch-size", "8", "--teacher-shard", "fsdp", "--output-dir", str(tmp_path / "two")])
    assert main([*common, "--batch-size", "16", "--quiet", "--output-dir", str(tmp_path / "one")]) == 0
    text = " ".join((res.stdout + res.stderr).split())
    assert "teacher 1 sharded (FSDP) over 2 processes" in text and "teacher 2 sharded (FSDP) over 2 processes" in text
    w2, w1 = _weights(tmp_path / "two" / "student"), _weights(tmp_path / "one" / "student")
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=2e-5, rtol=1e-4, msg=k)
    assert (tmp_path / "two" / "teacher_cache_2").is_dir()


@pytest.fixture
def no_launcher(monkeypatch):
    from distill.core.runtime import RANK_VARS, SIZE_VARS

    for name in (*RANK_VARS, *SIZE_VARS, "ACCELERATE_USE_CPU", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_ranks_come_from_torchrun_or_mpi_variables(no_launcher):
    from distill.core.dist import distributed_requested, is_main_process

    assert not distributed_requested() and is_main_process()
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")  # mpirun (accelerate's multi-CPU launcher) sets no RANK
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert distributed_requested() and not is_main_process()
    no_launcher.setenv("RANK", "0")  # torchrun's variables come first
    assert is_main_process()


def test_only_a_secondary_process_skips_interpreter_teardown(no_launcher):
    """``end_secondary_process``: os._exit(0) on a launched rank other than 0, nothing in one process or on rank 0."""
    from distill.core import dist

    exits: list[int] = []
    no_launcher.setattr(dist.os, "_exit", exits.append)
    dist.end_secondary_process()  # a single process
    no_launcher.setenv("WORLD_SIZE", "2")
    no_launcher.setenv("RANK", "0")
    dist.end_secondary_process()  # the main process goes on to its report
    assert exits == []
    no_launcher.setenv("RANK", "1")
    dist.end_secondary_process()
    assert exits == [0]


def test_accelerate_cpu_launch_without_mpi_says_it_runs_one_process(no_launcher, capsys):
    assert main(["presets"]) == 0
    assert "single process" not in capsys.readouterr().err
    no_launcher.setenv("ACCELERATE_USE_CPU", "True")  # what `accelerate launch --cpu --num_processes 2` exports
    no_launcher.setenv("MASTER_ADDR", "127.0.0.1")
    assert main(["presets"]) == 0
    err = capsys.readouterr().err
    assert "accelerate launch --cpu started a single process" in err and "--multi_gpu" in err
