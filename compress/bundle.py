"""Edge bundle: complete an INT8 directory with labels.json and a README whose snippet runs without this package."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from distill.core.artifacts import atomic_write_text, write_json
from distill.core.errors import ModelError

LABELS_FILE = "labels.json"
README_FILE = "README.md"
_FIX = "write the bundle with compress.quantize_model(..., tokenizer=...) first"

# onnxruntime + tokenizers only (no torch, no transformers); run from inside the bundle folder
_SNIPPET = """\
import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
tok = Tokenizer.from_file("tokenizer.json")
session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
labels = json.load(open("labels.json"))
enc = tok.encode("{example}")
inputs = {{"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}}
feeds = {{i.name: np.array(inputs[i.name], dtype=np.int64) for i in session.get_inputs()}}
logits = session.run(None, feeds)[0]
print({result})
"""


def _id2label(out_dir: Path, id2label: Mapping[int | str, str] | None) -> dict[str, str]:
    """Label names keyed by class id as strings (JSON keys), from the argument or the bundle's config.json."""
    if id2label is None:
        config = out_dir / "config.json"
        if not config.is_file():
            raise ModelError(f"'{out_dir}' has no config.json to read labels from", _FIX)
        id2label = json.loads(config.read_text()).get("id2label") or {}
    return {str(k): str(v) for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}


def _is_regression(out_dir: Path, labels: dict[str, str]) -> bool:
    """A one-output head that predicts a score (STS-B) rather than a class."""
    config = out_dir / "config.json"
    problem = json.loads(config.read_text()).get("problem_type") if config.is_file() else None
    return problem == "regression" or len(labels) == 1


def _is_token(out_dir: Path) -> bool:
    """A token-classification head (NER): one prediction per word piece."""
    config = out_dir / "config.json"
    archs = json.loads(config.read_text()).get("architectures") or [] if config.is_file() else []
    return any(str(a).endswith("ForTokenClassification") for a in archs)


def usage_snippet(regression: bool = False, example: str | None = None, *, token: bool = False) -> str:
    """Ten lines of Python that load the bundle with onnxruntime + tokenizers and print one prediction
    (``token``: a tag for every word piece)."""
    if token:
        result = "[(t, labels[str(int(i))]) for t, i in zip(enc.tokens, logits[0].argmax(-1))]"
    else:
        result = "float(logits[0, 0])" if regression else "labels[str(int(logits[0].argmax()))]"
    example = example or ("John Smith visited Paris" if token else "a truly great movie")
    return _SNIPPET.format(example=example.replace('"', "'"), result=result)


def _table(numbers: Mapping[str, object]) -> str:
    """A two-column Markdown table of the numbers passed in (floats to 4 significant digits)."""
    rows = [f"| {k} | {f'{v:.4g}' if isinstance(v, float) else v} |" for k, v in numbers.items()]
    return "\n".join(["| measure | value |", "|---|---|", *rows])


def write_bundle(out_dir: Path, *, numbers: Mapping[str, object] | None = None,
                 id2label: Mapping[int | str, str] | None = None, title: str = "INT8 model") -> Path:
    """Add labels.json and README.md (numbers + a standalone usage snippet) to an INT8 dir; returns the README."""
    out_dir = Path(out_dir)
    missing = [f for f in ("model.onnx", "tokenizer.json") if not (out_dir / f).is_file()]
    if missing:
        raise ModelError(f"'{out_dir}' lacks {', '.join(missing)}", _FIX)
    labels = _id2label(out_dir, id2label)
    write_json(out_dir / LABELS_FILE, labels)
    text = "\n\n".join([
        f"# {title}",
        "ONNX Runtime INT8 model with its tokenizer. Files: `model.onnx`, `tokenizer.json`, `labels.json` "
        "(class id -> name), `config.json`, `quantize_config.json` (how it was quantized).",
        "## Numbers\n\n" + (_table(numbers) if numbers else "(none recorded)"),
        "## Use\n\n`pip install onnxruntime tokenizers numpy`, then run this from inside this folder:\n\n"
        f"```python\n{usage_snippet(_is_regression(out_dir, labels), token=_is_token(out_dir))}```",
    ])
    return atomic_write_text(out_dir / README_FILE, text + "\n")


def readme_snippet(readme: Path) -> str:
    """The Python code block of a bundle README (what a user would copy), for tests and checks."""
    text = Path(readme).read_text()
    start = text.index("```python\n") + len("```python\n")
    return text[start:text.index("```", start)]
