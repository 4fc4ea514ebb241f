"""compress.bundle: labels.json, README numbers, and a usage snippet that runs where this package cannot load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import factories
import pytest
import torch
from transformers import BertForSequenceClassification

from compress import QuantizeConfig, quantize_model
from compress.bundle import readme_snippet, usage_snippet, write_bundle
from distill.core.errors import ModelError

LABELS = {0: "negative", 1: "positive"}
# the snippet runs with our packages (and torch / transformers) made unimportable
BLOCKED = ["distill", "compress", "teachers", "students", "torch", "transformers"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tok = factories.tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    config = factories.tiny_bert_config(vocab=len(tok), num_labels=2, id2label=LABELS,
                                        label2id={v: k for k, v in LABELS.items()})
    out = tmp_path_factory.mktemp("run") / "int8"
    quantize_model(BertForSequenceClassification(config).eval(), out, QuantizeConfig(), tokenizer=tok,
                   max_seq_length=16)
    return out


def test_bundle_has_labels_and_numbers(bundle):
    readme = write_bundle(bundle, numbers={"accuracy": 0.912345, "size_mb": 0.31, "latency_ms": 1.5,
                                           "target": "avx512_vnni"}, title="sst2 tiny INT8")
    assert json.loads((bundle / "labels.json").read_text()) == {"0": "negative", "1": "positive"}
    text = readme.read_text()
    assert text.startswith("# sst2 tiny INT8") and "| accuracy | 0.9123 |" in text
    assert "| target | avx512_vnni |" in text and "| latency_ms | 1.5 |" in text
    snippet = readme_snippet(readme)
    assert len(snippet.strip().splitlines()) <= 10
    assert "distill" not in snippet and "compress" not in snippet


def test_snippet_predicts_a_label_without_this_package(bundle):
    write_bundle(bundle)
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in BLOCKED)
    code = (f"import sys; {block}\n"
            "text = open('README.md').read()\n"
            "start = text.index('```python\\n') + len('```python\\n')\n"
            "exec(text[start:text.index('```', start)])\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n")
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=bundle, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in LABELS.values()


def test_regression_snippet_prints_a_score():
    assert "float(logits[0, 0])" in usage_snippet(regression=True)
    assert "labels[" in usage_snippet(regression=False)


def test_bundle_needs_model_and_tokenizer(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="tokenizer.json"):
        write_bundle(tmp_path)


def test_never_saved_token_model_gets_its_architecture_and_a_token_snippet(tmp_path):
    from transformers import AutoConfig, BertForTokenClassification

    torch.manual_seed(0)
    tok = factories.tiny_tokenizer(tmp_path)
    tags = {0: "O", 1: "B-PER", 2: "I-PER"}
    config = factories.tiny_bert_config(layers=1, vocab=len(tok), num_labels=3, id2label=tags,
                                        label2id={v: k for k, v in tags.items()})
    model = BertForTokenClassification(config).eval()  # built in memory: config.architectures is None
    out = tmp_path / "int8"
    quantize_model(model, out, QuantizeConfig(), tokenizer=tok, max_seq_length=16)
    assert AutoConfig.from_pretrained(out).architectures == ["BertForTokenClassification"]
    assert not model.config.architectures  # the caller's config is left as it was
    assert "zip(enc.tokens" in readme_snippet(write_bundle(out))
