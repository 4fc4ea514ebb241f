"""Security, one test (or table case) per item of the issue:

| item                                               | where                                                   |
|----------------------------------------------------|---------------------------------------------------------|
| weights from safetensors only                      | test_every_weight_load_is_safetensors_only (+ table)    |
| pickle refused unless --allow-pickle, with warning | test_bad_input.py pickle-only-weights, here allow-pickle |
| trust_remote_code off unless --trust-remote-code   | test_remote_code_*                                      |
| recipe paths relative to the recipe                | test_cli_misc.test_run_from_recipe_with_overrides       |
| never write through a symlink out of the output    | test_overwrite_never_writes_through_symlinks, report    |
| --offline: no socket connect, HF_HUB_OFFLINE       | test_offline_never_connects                             |
"""

import ast
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[2]
SAFE = ("use_safetensors", "from_pretrained_kwargs", "gguf_file")  # GGUF holds raw tensors, no pickle


def _weight_loads():
    """Every ``X.from_pretrained(...)`` call in the package that loads weights (not a tokenizer or a config)."""
    for pkg in ("distill", "teachers", "students", "compress"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "from_pretrained":
                    receiver = ast.unparse(node.func.value)
                    if "Tokenizer" not in receiver and "Config" not in receiver:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", ast.unparse(node)


def test_every_weight_load_is_safetensors_only():
    calls = list(_weight_loads())
    assert len(calls) >= 4  # teachers, students, compress.prune.io, the cached fine-tuned teacher
    unsafe = [where for where, code in calls if not any(word in code for word in SAFE)]
    assert unsafe == [], f"from_pretrained without use_safetensors / the load policy: {unsafe}"


def test_load_policy_kwargs():
    from distill.core.runtime import LoadPolicy

    assert LoadPolicy().from_pretrained_kwargs() == {"trust_remote_code": False, "use_safetensors": True}
    assert LoadPolicy(allow_pickle=True, trust_remote_code=True).from_pretrained_kwargs() == {
        "trust_remote_code": True}


def _remote_code_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model dir whose config names its own code (auto_map); importing that code writes a marker file."""
    src = factories.save_teacher(tmp_path / "remote", tmp_path)
    marker = tmp_path / "code-ran"
    (src / "configuration_custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig\n\n\nclass CustomConfig(BertConfig):\n    model_type = 'bert'\n")
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (src / "config.json").write_text(json.dumps(config))
    return src, marker


def test_remote_code_refused_without_flag(tmp_path, capsys):
    src, marker = _remote_code_model(tmp_path)
    assert _run(tmp_path, src) == 2
    err = capsys.readouterr().err
    assert "ships its own modelling code" in err and "--trust-remote-code" in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_remote_code_runs_with_flag(tmp_path):
    """With --trust-remote-code the checkpoint's code is imported (in a subprocess: it lands in a module cache)."""
    src, marker = _remote_code_model(tmp_path)
    data = factories.write_sst2_like(tmp_path / "d", n_train=8, n_dev=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "distill", "run", "--teacher", str(src), "--task", "sst2", "--data",
                    str(data), "--output-dir", str(tmp_path / "out"), "--epochs", "1", "--no-prune", "--no-quantize",
                    "--latency-runs", "1", "--max-seq-length", "16", "--quiet", "--trust-remote-code"],
                   capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert marker.read_text() == "ran"


def test_overwrite_never_writes_through_symlinks(tmp_path):
    """Links inside the output dir (even under names a run keeps, like teacher_cache) are replaced, not followed."""
    outside = tmp_path / "outside"
    (outside / "cache").mkdir(parents=True)
    (outside / "cache" / "precious.txt").write_text("keep me")
    (outside / "student").mkdir()
    (outside / "student" / "precious.txt").write_text("keep me too")
    out = tmp_path / "out"
    out.mkdir()
    (out / "teacher_cache").symlink_to(outside / "cache", target_is_directory=True)
    (out / "student").symlink_to(outside / "student", target_is_directory=True)
    (out / "report.json").symlink_to(outside / "cache" / "precious.txt")
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    assert _run(tmp_path, teacher, "--overwrite", "--cache-teacher") == 0
    assert sorted(p.name for p in (outside / "cache").iterdir()) == ["precious.txt"]
    assert sorted(p.name for p in (outside / "student").iterdir()) == ["precious.txt"]
    assert (outside / "cache" / "precious.txt").read_text() == "keep me"
    for name in ("teacher_cache", "student", "report.json"):
        assert not (out / name).is_symlink() and (out / name).exists(), name


def test_report_replaces_a_symlinked_file_instead_of_writing_through_it(tmp_path):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    assert _run(tmp_path, teacher) == 0
    target = tmp_path / "elsewhere.html"
    target.write_text("mine")
    report = tmp_path / "out" / "report.html"
    report.unlink()
    report.symlink_to(target)
    assert main(["report", str(tmp_path / "out")]) == 0
    assert target.read_text() == "mine" and not report.is_symlink() and "<html" in report.read_text().lower()
