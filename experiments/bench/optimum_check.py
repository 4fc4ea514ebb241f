"""Do our INT8 bundles load with optimum's ORT model classes, and predict what plain onnxruntime predicts?

optimum-onnx caps transformers below 4.58, so this runs in its own environment (never the project's), e.g.

    python -m venv --system-site-packages /tmp/optvenv && /tmp/optvenv/bin/pip install optimum-onnx
    /tmp/optvenv/bin/python experiments/bench/optimum_check.py BUNDLE_DIR [BUNDLE_DIR ...]

Each bundle (a dir written by ``distill quantize``, ``distill run`` or ``distill export``) is loaded with
``ORTModelForSequenceClassification`` (``ORTModelForTokenClassification`` when the graph's logits are per token) and
``AutoTokenizer``; a padded batch of sentences and each sentence alone run through it and through a plain
``onnxruntime.InferenceSession`` of the same ``model.onnx``. It also checks that ``AutoTokenizer`` gives the ids of
``tokenizers.Tokenizer.from_file("tokenizer.json")`` (what the bundle README's snippet uses). Prints the max
|logit difference| per bundle and writes ``experiments/results/optimum_check.json``; exits 1 when a bundle fails
to load or differs by more than ``--atol``. Imports nothing from this project (it needs transformers 5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
SENTENCES = ["a truly great movie", "awful, boring and far too long to sit through",
             "John Smith visited Paris in May", "it was ok i guess"]
PACKAGES = ("optimum-onnx", "optimum", "transformers", "onnxruntime", "tokenizers", "torch", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of what decides the result (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def is_token_graph(onnx_path: Path) -> bool:
    """Whether the graph's first output is per token (batch × sequence × labels), as for NER."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return len(session.get_outputs()[0].shape) == 3


def check_bundle(bundle: Path, sentences: list[str] = SENTENCES) -> dict:
    """Load ``bundle`` with optimum and compare its logits with a plain onnxruntime session of model.onnx."""
    import numpy as np
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTModelForTokenClassification
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    onnx_path = bundle / "model.onnx"
    token = is_token_graph(onnx_path)
    cls = ORTModelForTokenClassification if token else ORTModelForSequenceClassification
    model = cls.from_pretrained(bundle)  # the default file_name is model.onnx; no export=True: use ours as is
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    raw = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    ids_match = all(tokenizer(s)["input_ids"] == raw.encode(s).ids for s in sentences)

    diffs, same_argmax, shapes = [], True, []
    for batch in [sentences, *([s] for s in sentences)]:  # padded batch (mask matters), then one row at a time
        enc = tokenizer(batch, padding=True, return_tensors="np")
        ours = session.run(None, {n: enc[n].astype(np.int64) for n in names})[0]
        theirs = model(**{n: enc[n] for n in enc if n in names}).logits
        theirs = theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
        if theirs.shape != ours.shape:
            raise AssertionError(f"optimum logits {theirs.shape} vs onnxruntime {ours.shape}")
        keep = enc["attention_mask"].astype(bool) if token else slice(None)  # padded positions are not predictions
        diffs.append(float(np.abs(theirs - ours)[keep].max()))
        same_argmax &= bool((theirs.argmax(-1) == ours.argmax(-1))[keep].all())
        shapes.append(list(ours.shape))
    config = json.loads((bundle / "config.json").read_text())
    return {"bundle": str(bundle), "class": cls.__name__, "model_type": config.get("model_type"),
            "format": (json.loads((bundle / "quantize_config.json").read_text()).get("format")
                       if (bundle / "quantize_config.json").is_file() else None),
            "inputs": names, "providers": model.providers if hasattr(model, "providers") else None,
            "tokenizer": type(tokenizer).__name__, "tokenizer_ids_match_tokenizer_json": ids_match,
            "shapes": shapes, "max_abs_logit_diff": max(diffs), "same_argmax": same_argmax}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle dirs holding model.onnx + config + tokenizer")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=RESULTS / "optimum_check.json")
    args = parser.parse_args(argv)
    rows = []
    for bundle in args.bundles:
        try:
            row = check_bundle(bundle)
            row["ok"] = row["max_abs_logit_diff"] <= args.atol and row["same_argmax"] \
                and row["tokenizer_ids_match_tokenizer_json"]
        except Exception as exc:  # report every bundle, not just the first failure
            row = {"bundle": str(bundle), "ok": False, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=5)}
        rows.append(row)
        shown = f"{row['max_abs_logit_diff']:.3g}" if "max_abs_logit_diff" in row else row["error"]
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {bundle}  {row.get('class', '')}  max |logit diff| {shown}")
    result = {"atol": args.atol, "versions": versions(), "machine": platform.machine(),
              "load_avg": [round(x, 2) for x in os.getloadavg()], "bundles": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"versions: {json.dumps(result['versions'])}\nwrote {args.out}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
