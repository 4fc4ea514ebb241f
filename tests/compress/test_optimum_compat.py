"""optimum's ORT model classes load our INT8 bundles and predict exactly what plain onnxruntime predicts.

Skipped unless ``optimum.onnxruntime`` imports. optimum-onnx needs transformers < 4.58, so it lives in its own
environment, never this project's (transformers 5), e.g.

    python -m venv --system-site-packages /tmp/optvenv && /tmp/optvenv/bin/pip install optimum-onnx
    /tmp/optvenv/bin/python -m pytest -q tests/compress/test_optimum_compat.py

The bundles are written the way users write them, by this project under transformers 5: in a subprocess of
``$DISTILL_BUILD_PYTHON``, else of the interpreter the venv was made from (its system site-packages).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("optimum.onnxruntime")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "bench" / "optimum_check.py"
SENTENCES = ["a great movie", "the plot was boring and the actor quite bad", "fine"]
TAGS = {0: "O", 1: "B-PER", 2: "I-PER"}

# run by the builder Python: a classifier through `distill quantize` (dynamic and static) and `distill export`,
# and a token tagger quantized in memory, never saved (as a `distill run` on NER data quantizes its student)
BUILD = f"""
import sys
from pathlib import Path
import factories, torch
from transformers import BertForTokenClassification
from compress import QuantizeConfig, quantize_model
from compress.bundle import write_bundle
from distill.cli import main

root = Path(sys.argv[1])
factories.save_teacher(root / "classifier", root)
factories.write_sst2_like(root / "sst2", n_train=32, n_dev=8)
quick = ["--latency-runs", "2", "--max-seq-length", "32", "--quiet", "--offline"]
assert main(["quantize", str(root / "classifier"), "--output-dir", str(root / "dynamic"), *quick]) == 0
assert main(["quantize", str(root / "classifier"), "--mode", "static", "--calibration-data", str(root / "sst2"),
             "--output-dir", str(root / "static"), *quick]) == 0
assert main(["export", str(root / "dynamic"), "--output-dir", str(root / "exported"), "--quiet"]) == 0
torch.manual_seed(0)
tok = factories.tiny_tokenizer(root)
tags = {TAGS!r}
config = factories.tiny_bert_config(vocab=len(tok), num_labels=len(tags), id2label=tags,
                                    label2id={{v: k for k, v in tags.items()}})
quantize_model(BertForTokenClassification(config).eval(), root / "token", QuantizeConfig(), tokenizer=tok,
               max_seq_length=32)
write_bundle(root / "token")
"""


def _transformers_major(python: str) -> int | None:
    """transformers' major version under ``python`` (None: not importable there)."""
    res = subprocess.run([python, "-c", "import transformers; print(transformers.__version__)"],
                         capture_output=True, text=True, timeout=120)
    return int(res.stdout.split(".")[0]) if res.returncode == 0 else None


def _builder_python() -> str:
    """A Python with this project's transformers 5: $DISTILL_BUILD_PYTHON, this one, or the venv's base one."""
    import transformers

    if os.environ.get("DISTILL_BUILD_PYTHON"):
        return os.environ["DISTILL_BUILD_PYTHON"]
    if int(transformers.__version__.split(".")[0]) >= 5:
        return sys.executable
    return getattr(sys, "_base_executable", sys.executable)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    python = _builder_python()
    if (_transformers_major(python) or 0) < 5:
        pytest.skip(f"{python} has no transformers 5 to write bundles with: set DISTILL_BUILD_PYTHON")
    root = tmp_path_factory.mktemp("bundles")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    res = subprocess.run([python, "-c", BUILD, str(root)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def _plain_logits(bundle: Path, enc) -> np.ndarray:
    """What the bundle README's onnxruntime path computes for tokenized ``enc``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]


@pytest.mark.parametrize("name", ["dynamic", "static", "exported", "token"])
def test_optimum_loads_bundle_and_matches_onnxruntime(bundles, name):
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTModelForTokenClassification
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    bundle = bundles / name
    cls = ORTModelForTokenClassification if name == "token" else ORTModelForSequenceClassification
    model = cls.from_pretrained(bundle)
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    raw = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    raw.no_padding()
    assert [tokenizer(s)["input_ids"] for s in SENTENCES] == [raw.encode(s).ids for s in SENTENCES]
    enc = tokenizer(SENTENCES, padding=True, return_tensors="np")
    theirs = model(**enc).logits
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = _plain_logits(bundle, enc)
    assert theirs.shape == ours.shape == ((3, enc["input_ids"].shape[1], 3) if name == "token" else (3, 2))
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=0)
    assert model.config.id2label == (TAGS if name == "token" else {0: "LABEL_0", 1: "LABEL_1"})
    written = json.loads((bundle / "config.json").read_text())
    assert int(written["transformers_version"].split(".")[0]) >= 5  # written by this project, loaded by 4.5x
    assert written["architectures"] == [
        "BertForTokenClassification" if name == "token" else "BertForSequenceClassification"]


def test_optimum_pipeline_names_a_label(bundles):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    bundle = bundles / "static"
    classify = pipeline("text-classification", model=ORTModelForSequenceClassification.from_pretrained(bundle),
                        tokenizer=AutoTokenizer.from_pretrained(bundle))
    assert classify(SENTENCES[0])[0]["label"] in {"LABEL_0", "LABEL_1"}


def test_check_script_reports_diff_and_failures(bundles, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    out = tmp_path / "optimum_check.json"
    res = subprocess.run([sys.executable, str(SCRIPT), str(bundles / "dynamic"), str(bundles / "token"),
                          str(tmp_path / "broken"), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr  # the broken bundle fails the run...
    result = json.loads(out.read_text())
    ok, token, broken = result["bundles"]
    assert ok["ok"] and token["ok"] and not broken["ok"] and "error" in broken  # ...but the good ones are reported
    assert token["class"] == "ORTModelForTokenClassification" and ok["max_abs_logit_diff"] <= 1e-4
    assert result["versions"]["optimum-onnx"] and result["versions"]["transformers"]
