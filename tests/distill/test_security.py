"""Safe loading: safetensors only unless --allow-pickle, and --offline never opens a network connection."""

import json
import socket

import factories
import pytest

from distill.cli import main


@pytest.fixture
def pickled(tmp_path):
    import torch
    from safetensors.torch import load_file

    src = factories.save_teacher(tmp_path / "p", tmp_path)
    torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
    (src / "model.safetensors").unlink()
    return src


def _run(tmp_path, teacher, *extra):
    data = factories.write_sst2_like(tmp_path / "d", n_train=16, n_dev=8)
    return main(["run", "--teacher", str(teacher), "--task", "sst2", "--data", str(data), "--output-dir",
                 str(tmp_path / "out"), "--epochs", "1", "--no-prune", "--no-quantize", "--latency-runs", "1",
                 "--max-seq-length", "16", "--quiet", *extra])


def test_pickle_refused_by_default(tmp_path, pickled, capsys):
    assert _run(tmp_path, pickled) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pickle_loads_with_allow_pickle(tmp_path, pickled):
    with pytest.warns(UserWarning, match="pickle"):
        assert _run(tmp_path, pickled, "--allow-pickle") == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["stages"][0]["name"] == "teacher"


def test_offline_never_connects(tmp_path, capsys, monkeypatch):
    attempts = []
    real = socket.socket.connect

    def spy(self, address, *a, **k):
        attempts.append(address)
        return real(self, address, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", spy)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    code = _run(tmp_path, "some-org/some-model", "--offline")
    err = capsys.readouterr().err
    assert code == 2 and "cannot load the config of 'some-org/some-model'" in err
    remote = [a for a in attempts if not isinstance(a, str) and str(a[0]) not in ("127.0.0.1", "::1")]
    assert remote == []
    # the guard itself refuses a real remote connect
    with pytest.raises(OSError, match="--offline"):
        socket.socket().connect(("192.0.2.1", 443))
