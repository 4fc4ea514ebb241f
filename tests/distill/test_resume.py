"""Faults of a whole ``distill run``, each checked through the CLI: SIGKILL at a random step then ``--resume``,
SIGTERM, a non-finite loss, a disk that fills or an output dir that cannot be written.

| fault                                   | exit | what the user sees / what is left                              |
|-----------------------------------------|------|----------------------------------------------------------------|
| SIGKILL at a random training step       | -9   | ``--resume`` ends with the same report metrics and weights      |
| SIGTERM mid-training                    | 143  | "interrupted by SIGTERM at distil step k/n; checkpoint written  |
|                                         |      | to ...; resume with `distill run --resume OUT`"                |
| crash after INT8, before the report     | 130  | ``--resume`` reuses teacher/student/int8, only scores again    |
| NaN loss                                | 1    | "the training loss became nan at distil step k (...)           |
|                                         |      | (non-finite: kd=nan)"; ``--skip-nonfinite`` counts and goes on |
| disk full while writing a checkpoint    | 1    | "cannot write .../step-k (No space left on device)"; resumable |
| too little free space before training   | 2    | "this run needs about N MB ... only M MB is free"; nothing made |
| output dir not writable                 | 2    | "output dir '...' is not writable (...)"; nothing written       |
| --resume with changed settings          | 2    | "--resume takes every setting from .../config.yaml"            |
| --resume of a finished run              | 0    | "holds a finished run: nothing to resume"                       |
"""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import factories
import pytest
import torch
from safetensors.torch import load_file

from distill.cli import main
from distill.train import checkpoint as ckpt_mod

ROOT = Path(__file__).resolve().parents[2]
# 64 rows / batch 16: distil 2 epochs = 8 steps; two pruning steps (Taylor), each recovering 1 epoch = 4 steps
ARGS = ["--student", "tiny", "--task", "sst2", "--epochs", "2", "--batch-size", "16", "--max-seq-length", "24",
        "--latency-runs", "2", "--prune-steps", "2", "--prune-importance", "taylor", "--recover-epochs", "2",
        "--no-quantize", "--quiet"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    teacher = factories.save_teacher(tmp / "teacher", tmp)
    data = factories.write_sst2_like(tmp / "data", n_train=64, n_dev=16)
    return ["--teacher", str(teacher), "--data", str(data), *ARGS]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The uninterrupted run (default checkpoint interval: epoch ends only)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", *inputs, "--output-dir", str(out)]) == 0
    return out


def _assert_same_run(out: Path, reference: Path, stages=("student", "pruned")):
    got, want = (json.loads((p / "report.json").read_text()) for p in (out, reference))
    assert got["resumed"] is True
    assert [s["name"] for s in got["stages"]] == [s["name"] for s in want["stages"]]
    for a, b in zip(got["stages"], want["stages"], strict=True):
        for key in ("metric", "agreement", "kl_to_teacher", "params"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["name"], key)
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-6)
    for key in ("student", "pruned", "prune_steps"):
        assert json.dumps(got["history"].get(key)) == json.dumps(want["history"].get(key)), key
    for stage in stages:
        a, b = load_file(out / stage / "model.safetensors"), load_file(reference / stage / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), (stage, k)
    assert not (out / "checkpoints").exists(), "checkpoints of a finished run are removed"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return env


def _start(inputs, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "distill", "run", *inputs, "--output-dir", str(out), "--checkpoint-every", "1",
           *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, directory: Path, step: int, timeout: float = 120.0) -> None:
    """Poll until ``directory`` holds a complete checkpoint of at least ``step`` (or its stage moved on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [int(p.parent.name.split("-")[1]) for p in directory.glob("step-*/manifest.json")]
        if done and max(done) >= step:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before checkpoint {directory.name}/{step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    proc.kill()
    pytest.fail(f"no checkpoint {directory}/{step} after {timeout} s")


def test_sigkill_at_a_random_step_then_resume_matches(inputs, reference, tmp_path):
    rng = random.Random(2024)
    stage, step = rng.choice([("distil", k) for k in range(1, 8)] + [(f"recover-{i}", k) for i in (1, 2)
                                                                     for k in range(1, 4)])
    out = tmp_path / "run"
    proc = _start(inputs, out)
    _wait_for_checkpoint(proc, out / "checkpoints" / stage, step)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "report.json").exists()
    assert list((out / "checkpoints" / stage).glob("step-*")), f"killed after {stage} had finished"
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(out, reference)


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(inputs, reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(inputs, out, "--checkpoint-every", "0")  # only epoch ends, and the one SIGTERM asks for
    _wait_for_checkpoint(proc, out / "checkpoints" / "distil", 4)  # the end of epoch 1
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("interrupted by SIGTERM at ") and "checkpoint written to" in lines[0]
    assert lines[0].endswith(f"resume with `distill run --resume {out}`.")
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(out, reference)


def test_disk_full_mid_run_then_resume(inputs, reference, tmp_path, monkeypatch, capsys):
    real, calls = ckpt_mod._write, [0]

    def full_disk(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(ckpt_mod, "_write", full_disk)
    assert main(["run", *inputs, "--output-dir", str(out), "--checkpoint-every", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: cannot write ") and "step-00000003 (No space left" in err
    assert "the last complete checkpoint (step 2) is kept" in err and err.endswith(f"--resume {out}`.")
    assert sorted(p.name for p in (out / "checkpoints" / "distil").iterdir()) == ["step-00000001", "step-00000002"]
    monkeypatch.setattr(ckpt_mod, "_write", real)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(out, reference)
    assert main(["run", "--resume", str(out)]) == 0
    assert "holds a finished run: nothing to resume" in " ".join(capsys.readouterr().err.split())


def test_iterative_pruning_resumes_inside_the_second_recovery(inputs, reference, tmp_path, monkeypatch):
    """Killed during step 2's recovery: step 1's pruned model is reloaded and step 2 pruned again, identically."""
    import distill.train.checkpoint as checkpoint
    from distill.core.interrupts import Interrupted

    real = checkpoint.Checkpoints.save

    def save_then_die(self, step, **kwargs):
        path = real(self, step, **kwargs)
        if self.directory.name == "recover-2" and step == 2:
            raise Interrupted(signal.SIGKILL)  # stands in for the process dying right after this checkpoint
        return path

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)
    out = tmp_path / "run"
    assert main(["run", *inputs, "--output-dir", str(out), "--checkpoint-every", "1"]) == 128 + signal.SIGKILL
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["prune", "recover-2"]
    monkeypatch.undo()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    _assert_same_run(out, reference)


def test_nan_loss_stops_or_is_skipped(inputs, tmp_path, monkeypatch, capsys):
    import distill.objective.objective as objective

    real, calls = objective.soft_target_kl, [0]

    def nan_on_third(*args, **kwargs):
        calls[0] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls[0] == 3 else value

    monkeypatch.setattr(objective, "soft_target_kl", nan_on_third)
    out = tmp_path / "run"
    base = ["distil", *inputs, "--output-dir", str(out), "--checkpoint-every", "1"]
    assert main(base) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "the training loss became nan at distil step 3 (epoch 1, batch 3) (non-finite: kd=nan)" in err
    assert "last good checkpoint (step 2)" in err and f"--resume {out} --skip-nonfinite`" in err
    calls[0] = 0
    assert main([*base, "--overwrite", "--skip-nonfinite"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["skipped_nonfinite"] == {"distil": 1}


def test_a_crash_after_int8_resumes_by_scoring_only(tmp_path, monkeypatch, capsys):
    import distill.pipeline.runner as runner
    from distill.core.interrupts import Interrupted

    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=16)
    out = tmp_path / "run"

    def crash(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(runner, "stage_score", crash)
    args = ["--teacher", str(teacher), "--data", str(data), *ARGS, "--no-prune", "--epochs", "1"]
    args.remove("--no-quantize")
    assert main(["run", *args, "--output-dir", str(out)]) == 130
    assert f"interrupted by SIGINT; resume with `distill run --resume {out}`." in capsys.readouterr().err
    assert {"distil", "quantize"} <= set(json.loads((out / "stages.json").read_text()))
    monkeypatch.undo()
    for name in ("stage_student", "stage_quantize"):  # finished stages load their output instead of running again
        real = getattr(runner, name)
        monkeypatch.setattr(runner, name, _no_fit(real))
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "int8"]
    assert report["history"]["student"] and report["history"]["quantize_report"]["mode"] == "dynamic"


def _no_fit(stage):
    """``stage`` with training and quantization forbidden: it may only load what a finished stage saved."""
    def wrapped(*args, **kwargs):
        import compress
        import distill.pipeline.stages.quantize as quantize
        import distill.pipeline.stages.student as student

        def forbidden(*a, **k):
            raise AssertionError("a finished stage ran again")

        saved = student.fit, quantize.fit, compress.quantize_model
        student.fit = quantize.fit = compress.quantize_model = forbidden
        try:
            return stage(*args, **kwargs)
        finally:
            student.fit, quantize.fit, compress.quantize_model = saved
    return wrapped


def test_resume_refuses_changed_settings_and_unknown_dirs(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["run", "--resume", str(tmp_path / "run")]) == 2
    assert "holds no config.yaml, so there is no run to resume" in capsys.readouterr().err
    (tmp_path / "run" / "config.yaml").write_text("teacher:\n  name: x\n")
    assert main(["run", "--resume", str(tmp_path / "run"), "--lr", "0.1", "--epochs", "9"]) == 2
    assert "--resume takes every setting from" in capsys.readouterr().err


def test_too_little_free_space_fails_before_anything_is_written(inputs, tmp_path, monkeypatch, capsys):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1_000_000))
    out = tmp_path / "run"
    assert main(["run", *inputs, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "this run needs about" in err and "only 1 MB is free" in err
    assert not out.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, which nobody (not even root) can write")
def test_unwritable_output_dir_fails_before_anything_is_written(inputs, capsys):
    assert main(["run", *inputs, "--output-dir", "/proc/distill-run/out"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "output dir '/proc/distill-run/out' is not writable" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only dirs")
def test_read_only_output_dir_fails_before_anything_is_written(inputs, tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert main(["run", *inputs, "--output-dir", str(tmp_path / "ro" / "run")]) == 2
    assert "is not writable (Permission denied)" in capsys.readouterr().err


def test_the_fault_flags_are_documented_in_help():
    from distill.cli import build_parser

    parser = build_parser()
    for command in ("run", "distil"):
        text = parser._subparsers._group_actions[0].choices[command].format_help()
        for flag in ("--resume OUTPUT", "--checkpoint-every N", "--keep-checkpoints K", "--skip-nonfinite"):
            assert flag in text, (command, flag)
    assert "distill run --resume runs/sst2-tiny" in parser.format_help()
