"""Edge bundle: complete an INT8 directory with labels.json and a README whose snippet runs without this package;
``export_bundle`` copies one (from a run dir, an INT8 dir or an .onnx file) into a fresh folder to ship."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from distill.core.artifacts import atomic_write_text, staged_dir, write_json
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


# what a bundle needs beside model.onnx (whichever exist); external ONNX weight files are matched by suffix
BUNDLE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "config.json",
                "quantize_config.json")
_EXTERNAL_DATA = (".onnx_data", ".onnx.data", ".data")
_EXPORT_FIX = "pass a run dir (with report.json and an int8 stage), an INT8 dir, or its model.onnx"


def numbers_from_report(report: Mapping) -> dict[str, object]:
    """The README numbers of a run's final stage: metric, retention vs the teacher, size, latency, INT8 target."""
    row = report["stages"][-1]
    numbers: dict[str, object] = {report.get("metric_name", "metric"): round(row["metric"], 4),
                                  "retention": round(row["retention"], 4), "size_mb": row["size_mb"],
                                  "latency_ms (batch 1, CPU)": row["latency_ms"]}
    if row.get("speedup") is not None:
        numbers["speedup vs teacher"] = row["speedup"]
    target = (report.get("history") or {}).get("quantize_report", {}).get("target")
    if target:
        numbers["target"] = target
    return numbers


def resolve_export_source(source: str | Path) -> tuple[Path, dict | None, str]:
    """(model.onnx, README numbers, title) for a run dir, an INT8 dir or an .onnx file."""
    source = Path(source)
    if source.is_dir() and (source / "report.json").is_file():
        report = json.loads((source / "report.json").read_text())
        onnx_rows = [r for r in report.get("stages", []) if (source / str(r.get("path")) / "model.onnx").is_file()]
        if not onnx_rows:
            raise ModelError(f"run '{source}' has no INT8 (ONNX) stage",
                             "run it without --no-quantize, or `distill quantize` a stage and export that dir")
        row = onnx_rows[-1]
        numbers = numbers_from_report({**report, "stages": [row]})
        settings = report.get("settings") or {}
        title = " ".join(str(x) for x in (report.get("task"), settings.get("student"), "INT8") if x)
        return source / str(row["path"]) / "model.onnx", numbers, title
    onnx_path = source / "model.onnx" if source.is_dir() else source
    if source.is_dir() and not onnx_path.is_file():
        raise ModelError(f"'{source}' holds neither report.json nor model.onnx", _EXPORT_FIX)
    if not onnx_path.exists():
        raise ModelError(f"'{source}' does not exist", _EXPORT_FIX)
    numbers = None
    quantize_report = onnx_path.parent / "quantize_report.json"
    if quantize_report.is_file():
        q = json.loads(quantize_report.read_text())
        numbers = {"size_mb": q.get("onnx_int8_mb"), "target": q.get("target"),
                   **{k: v for k, v in (q.get("speed") or {}).items() if k.endswith("_ms") or k == "speedup"}}
        numbers = {k: v for k, v in numbers.items() if v is not None}
    return onnx_path, numbers, "INT8 model"


def export_bundle(source: str | Path, out_dir: str | Path) -> Path:
    """Copy an INT8 model, its tokenizer and config into ``out_dir`` (written atomically) and complete it with
    labels.json and a README (numbers + a 10-line onnxruntime snippet); returns ``out_dir``."""
    from compress.measure import onnx_param_count

    onnx_path, numbers, title = resolve_export_source(source)
    onnx_param_count(onnx_path)  # a missing file or one that is not an ONNX model fails here, before any write
    src = onnx_path.parent
    missing = [f for f in ("tokenizer.json", "config.json") if not (src / f).is_file()]
    if missing:
        raise ModelError(f"'{src}' lacks {', '.join(missing)} beside {onnx_path.name}",
                         "export a dir written by `distill run` or `distill quantize`")
    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp:
        shutil.copy2(onnx_path, tmp / "model.onnx")
        for f in src.iterdir():
            if f.is_file() and (f.name in BUNDLE_FILES or f.name.endswith(_EXTERNAL_DATA)):
                shutil.copy2(f, tmp / f.name)
        write_bundle(tmp, numbers=numbers, title=title)
    return out_dir
