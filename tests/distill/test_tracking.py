"""What a run shows and logs while it trains: progress bars with live loss terms, throughput and ETA on a terminal,
plain epoch lines otherwise (nothing with --quiet), and optional TensorBoard event files (``--tensorboard``)."""

from __future__ import annotations

import importlib.util
import io
import json

import factories
import pytest
import torch
from rich.console import Console

from distill.cli import main
from distill.core import console as console_mod
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.evaluate.predict import evaluator
from distill.objective.objective import DistillConfig, Objective
from distill.train.loop import TrainConfig, fit


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny teacher/student pair and loaders (4 batches of 8)."""
    from transformers import BertForSequenceClassification

    tmp = tmp_path_factory.mktemp("track")
    tok = factories.tiny_tokenizer(tmp)
    task = get_task("sst2")
    splits = load_splits(task, str(factories.write_sst2_like(tmp / "d", n_train=32, n_dev=8)))
    train = make_loader(tokenize(splits.train, tok, 16), tok, 8, shuffle=True, seed=0)
    dev = make_loader(tokenize(splits.dev, tok, 16), tok, 8, shuffle=False)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok))).eval()
    return tok, task, train, dev, teacher


def _fit(setup, description="distil"):
    from transformers import BertForSequenceClassification

    tok, task, train, dev, teacher = setup
    torch.manual_seed(1)
    student = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=16, heads=2, ffn=32))
    return fit(student, Objective(DistillConfig(hidden_weight=0.0)), train, TrainConfig(lr=1e-3, epochs=1),
               teacher=teacher, evaluate=evaluator(task, dev), metric="accuracy", description=description)


def _capture(monkeypatch, terminal: bool) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(console_mod, "console", Console(file=buffer, force_terminal=terminal, width=200,
                                                        color_system=None))
    return buffer


def test_terminal_bar_shows_loss_terms_throughput_and_eta(setup, monkeypatch):
    buffer = _capture(monkeypatch, terminal=True)
    monkeypatch.setattr(console_mod, "_state", {"quiet": False})
    _fit(setup)
    text = buffer.getvalue()
    bar = [line for line in text.splitlines() if "distil 1/1" in line][-1]
    for word in ("loss ", "ce ", "kd ", "samples/s", "4/4"):
        assert word in bar, bar
    assert "0:00:0" in bar  # elapsed and remaining time columns


def test_not_a_terminal_gives_plain_epoch_lines(setup, monkeypatch):
    buffer = _capture(monkeypatch, terminal=False)
    monkeypatch.setattr(console_mod, "_state", {"quiet": False})
    _fit(setup)
    lines = buffer.getvalue().strip().splitlines()
    assert len(lines) == 1 and "distil epoch 1: " in lines[0] and "samples/s" in lines[0], lines
    assert "\r" not in buffer.getvalue() and "\x1b" not in buffer.getvalue()


def test_quiet_prints_nothing(setup, monkeypatch):
    for terminal in (True, False):
        buffer = _capture(monkeypatch, terminal=terminal)
        monkeypatch.setattr(console_mod, "_state", {"quiet": True})
        _fit(setup)
        assert buffer.getvalue() == ""


def test_progress_text():
    assert console_mod.progress_text({"loss": 0.5, "kd": 0.25}) == "loss 0.5000  kd 0.2500"
    text = console_mod.progress_text({"loss": 1.0}, {"samples": 100, "start": 0.0})
    assert text.startswith("loss 1.0000  ") and text.endswith(" samples/s")


def _run_argv(tmp_path, *extra) -> list[str]:
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=8)
    return ["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--output-dir",
            str(tmp_path / "out"), "--epochs", "2", "--batch-size", "8", "--no-prune", "--no-quantize",
            "--latency-runs", "1", "--max-seq-length", "16", "--quiet", *extra]


def test_tensorboard_missing_is_one_clear_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    argv = _run_argv(tmp_path, "--tensorboard")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install tensorboard" in err, err
    assert not (tmp_path / "out").exists()


def test_tensorboard_logs_steps_and_epochs(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(_run_argv(tmp_path, "--tensorboard")) == 0
    logs = tmp_path / "out" / "tensorboard"
    assert list(logs.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logs))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"distil/train/loss", "distil/train/ce", "distil/train/kd", "distil/train/lr"} <= tags, tags
    assert {"distil/epoch/loss", "distil/dev/accuracy"} <= tags, tags
    assert [e.step for e in events.Scalars("distil/train/loss")] == list(range(1, 9))  # 2 epochs x 4 steps
    assert [e.step for e in events.Scalars("distil/dev/accuracy")] == [1, 2]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    dev = [h["dev_accuracy"] for h in report["history"]["student"]]
    assert [e.value for e in events.Scalars("distil/dev/accuracy")] == pytest.approx(dev)
