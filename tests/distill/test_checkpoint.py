"""Checkpoints: whole or absent, checksummed, the last K kept, damaged ones skipped; ``fit`` resumes exactly,
stops cleanly on SIGTERM, on a non-finite loss and on a failed write."""

import errno
import logging
import os
import random
import shutil
import signal

import factories
import pytest
import torch

from distill.core import interrupts
from distill.core.errors import NonFiniteLoss, RunError
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
from distill.train import checkpoint as ckpt_mod
from distill.train.checkpoint import Checkpoints, load, rng_state, set_rng_state
from distill.train.loop import TrainConfig, fit

# ---- the checkpoint store ---------------------------------------------------------------------------------------


def _save(store: Checkpoints, step: int):
    return store.save(step, tensors={"model": {"w": torch.full((3,), float(step))}},
                      trainer={"optimizer": {"lr": 0.1 * step}, "rng": {"torch": torch.get_rng_state()}},
                      state={"step": step, "note": f"s{step}"})


def test_save_load_keeps_the_last_k(tmp_path):
    store = Checkpoints(tmp_path / "c", every=2, keep=2)
    assert [store.due(s) for s in range(5)] == [False, False, True, False, True]
    for step in range(1, 5):
        _save(store, step)
    assert [p.name for p in store.paths()] == ["step-00000004", "step-00000003"]
    assert not list((tmp_path / "c").glob(".*")), "temporary dirs left behind"
    loaded = store.load_latest()
    assert loaded.step == 4 and loaded.state["note"] == "s4" and loaded.trainer["optimizer"]["lr"] == 0.4
    assert torch.equal(loaded.tensors["model"]["w"], torch.full((3,), 4.0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest", "pickle"])
def test_a_damaged_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
    store = Checkpoints(tmp_path / "c", keep=3)
    for step in (1, 2):
        _save(store, step)
    newest = store.paths()[0]
    if damage == "truncate":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, other bytes: only the checksum notices
        data = bytearray((newest / "trainer.pt").read_bytes())
        data[-30] ^= 0xFF
        (newest / "trainer.pt").write_bytes(bytes(data))
    elif damage == "no-manifest":
        (newest / "manifest.json").unlink()
    else:  # an object that only unpickling could rebuild: weights_only refuses it even with a matching manifest
        store.save(2, tensors={}, trainer={"optimizer": {}, "rng": {}, "evil": __import__("fractions").Fraction(1, 3)},
                   state={"step": 2})
    with caplog.at_level(logging.WARNING, logger="distill.train.checkpoint"):
        loaded = store.load_latest()
    assert loaded is not None and loaded.step == 1
    assert "step-00000002 is unusable" in caplog.text and "trying the previous one" in caplog.text
    shutil.rmtree(store.paths()[1])  # nothing intact left
    assert store.load_latest() is None


def test_rng_state_round_trip():
    plain, tensors = rng_state()
    first = (random.random(), float(torch.rand(1)), float(__import__("numpy").random.rand()))
    set_rng_state(plain, tensors)
    assert (random.random(), float(torch.rand(1)), float(__import__("numpy").random.rand())) == first


# ---- fit with checkpoints ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=40, n_dev=8)))
    train, dev = tokenize(splits.train, tok, 24), tokenize(splits.dev, tok, 24)
    teacher = _bert(len(tok), 0, hidden=32, heads=4).eval()
    return tok, train, dev, teacher


def _bert(vocab, seed, **shape):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(factories.tiny_bert_config(vocab=vocab, layers=2, **shape))


def _run(setup, directory, *, resume=False, every=1, keep=100, group=True, accum=1, skip_nonfinite=False,
         objective_hook=None):
    """Distil a dropout-on student for 2.5 epochs (so RNG and fractional epochs matter); returns (model, result)."""
    from distill.evaluate.predict import evaluator

    tok, train, dev, teacher = setup
    student = _bert(len(tok), 1, hidden=16, heads=2, ffn=32)
    objective = Objective(DistillConfig(hidden_weight=0.5, temperature_schedule="linear", temperature_end=1.0),
                          student_width=16, teacher_width=32, layer_map=uniform_layer_map(2, 2))
    if objective_hook is not None:
        objective_hook(objective)
    loader = make_loader(train, tok, 8, shuffle=True, seed=3, group_by_length=group)
    config = TrainConfig(lr=1e-3, epochs=2.5, batch_size=8, seed=5, device="cpu", grad_accum_steps=accum,
                         skip_nonfinite=skip_nonfinite)
    store = Checkpoints(directory, every=every, keep=keep, resume=resume) if directory else None
    result = fit(student, objective, loader, config, teacher=teacher,
                 evaluate=evaluator(get_task("sst2"), make_loader(dev, tok, 8, shuffle=False), "cpu"),
                 metric="accuracy", checkpoints=store)
    return student, result


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


@pytest.mark.parametrize("group,accum", [(True, 1), (False, 2)], ids=["length-grouped", "shuffled-accum2"])
def test_resume_from_any_checkpoint_matches_the_uninterrupted_fit(setup, tmp_path, group, accum):
    model, reference = _run(setup, tmp_path / "all", group=group, accum=accum)
    weights = _weights(model)
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "all").glob("step-*"))
    assert steps[-1] == reference.steps
    rng = random.Random(11)
    for k in sorted(rng.sample(steps[:-1], 3)):  # three random points, mid-epoch or at epoch ends
        one = tmp_path / f"from-{k}"
        shutil.copytree(tmp_path / "all" / f"step-{k:08d}", one / f"step-{k:08d}")
        resumed_model, resumed = _run(setup, one, resume=True, group=group, accum=accum)
        assert resumed.resumed_from == k
        _same(_weights(resumed_model), weights)
        assert resumed.history == reference.history
        assert (resumed.best_epoch, resumed.steps) == (reference.best_epoch, reference.steps)


def test_a_fresh_fit_drops_older_checkpoints(setup, tmp_path):
    _save(Checkpoints(tmp_path / "c"), 99)  # e.g. from an earlier run with more steps
    _, result = _run(setup, tmp_path / "c", every=0, keep=2)
    assert [p.name for p in Checkpoints(tmp_path / "c").paths()] == [f"step-{result.steps:08d}", "step-00000010"]


def _signal_at(call: int, signum=signal.SIGTERM):
    """An objective hook that sends ``signum`` to this process during its ``call``-th forward."""
    def hook(objective):
        original, calls = objective.forward, [0]

        def forward(*args, **kwargs):
            calls[0] += 1
            if calls[0] == call:
                os.kill(os.getpid(), signum)
            return original(*args, **kwargs)
        objective.forward = forward
    return hook


def test_sigterm_finishes_the_step_writes_a_checkpoint_and_resumes(setup, tmp_path):
    model, reference = _run(setup, None)
    with interrupts.graceful(), pytest.raises(interrupts.Interrupted) as info:
        _run(setup, tmp_path / "c", every=0, objective_hook=_signal_at(4))
    exc = info.value
    assert exc.exit_code == 143 and "SIGTERM at train step 4/" in exc.line() and "step-00000004" in exc.line()
    assert [p.name for p in Checkpoints(tmp_path / "c").paths()] == ["step-00000004"]  # every=0: only this one
    resumed_model, resumed = _run(setup, tmp_path / "c", resume=True, every=0)
    assert resumed.resumed_from == 4
    _same(_weights(resumed_model), _weights(model))
    assert interrupts.requested() is None


def _nan_at(call: int, term: str = "kd"):
    """An objective hook whose ``call``-th forward reports ``term`` (and so the total) as NaN."""
    def hook(objective):
        original, calls = objective.forward, [0]

        def forward(*args, **kwargs):
            calls[0] += 1
            total, terms = original(*args, **kwargs)
            if calls[0] == call:
                return total * float("nan"), {**terms, term: float("nan")}
            return total, terms
        objective.forward = forward
    return hook


def test_a_nonfinite_loss_stops_naming_step_and_term_and_keeps_the_good_checkpoint(setup, tmp_path):
    with pytest.raises(NonFiniteLoss) as info:
        _run(setup, tmp_path / "c", every=2, objective_hook=_nan_at(9))
    line = info.value.line()
    assert "at train step 9 (epoch 2, batch 4)" in line and "non-finite: kd=nan" in line
    assert "--skip-nonfinite" in line and "last good checkpoint (step 8)" in line
    assert load(Checkpoints(tmp_path / "c").paths()[0]).step == 8


def test_skip_nonfinite_skips_and_counts(setup):
    model, result = _run(setup, None, skip_nonfinite=True, objective_hook=_nan_at(3, "hidden"))
    assert result.skipped_nonfinite == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_failed_checkpoint_write_leaves_the_previous_one(setup, tmp_path, monkeypatch):
    real, calls = ckpt_mod._write, [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "_write", failing)
    with pytest.raises(RunError, match=r"cannot write .*step-00000003 \(No space left on device\).*last complete "
                                       r"checkpoint \(step 2\) is kept"):
        _run(setup, tmp_path / "c", keep=5)
    assert [p.name for p in Checkpoints(tmp_path / "c").paths()] == ["step-00000002", "step-00000001"]
    assert load(tmp_path / "c" / "step-00000002").step == 2
    assert not list((tmp_path / "c").glob(".*")), "a half-written checkpoint was left behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only dirs; the monkeypatched test covers it")
def test_a_read_only_checkpoint_dir_mid_run(setup, tmp_path):
    def hook(objective):
        original, calls = objective.forward, [0]

        def forward(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                (tmp_path / "c").chmod(0o555)
            return original(*args, **kwargs)
        objective.forward = forward

    try:
        with pytest.raises(RunError, match="Permission denied"):
            _run(setup, tmp_path / "c", objective_hook=hook)
        assert load(Checkpoints(tmp_path / "c").paths()[0]).step == 2
    finally:
        (tmp_path / "c").chmod(0o755)
