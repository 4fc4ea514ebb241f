"""Causal-LM teachers: an alias, a model dir, a Hub id or a ``.gguf`` file, loaded as a plain ``*ForCausalLM``.

A GGUF (``--teacher FILE.gguf``, or an alias such as ``smollm2-135m-pip`` that resolves to one) goes through
``teachers.gguf`` (dequantized, then copied into a plain model that saves and exports like any checkpoint). Any other
source must be a causal LM: an encoder (a masked-LM or classifier checkpoint) is refused in one line, since a fresh
LM head on it would teach nothing. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import ModelError
from distill.core.runtime import load_policy
from teachers.gguf import is_gguf, load_gguf
from teachers.loading import LoadedTeacher, load_config, load_failed, resolve_model_source
from teachers.registry import TEACHERS


def lm_source(name: str) -> str:
    """Where a causal-LM teacher comes from: a GGUF path as is, else ``resolve_model_source`` (alias, dir, Hub)."""
    if is_gguf(name):
        return str(Path(name).expanduser())
    if name in TEACHERS:
        source = TEACHERS.get(name)
        source = source() if callable(source) else source
        if is_gguf(source):
            return source
    return resolve_model_source(name)


def is_causal_lm_config(config) -> bool:
    """The config's architecture is a causal LM head (``*ForCausalLM``, GPT-2's ``*LMHeadModel``)."""
    from distill.data.kinds import get_kind
    from distill.data.lm_kind import CAUSAL_LM

    return get_kind(CAUSAL_LM).claims(config)


def check_causal_lm(name: str, config) -> None:
    """One-line ModelError unless ``config`` is a causal LM's."""
    if not is_causal_lm_config(config):
        arch = (getattr(config, "architectures", None) or [getattr(config, "model_type", "?")])[0]
        raise ModelError(f"teacher '{name}' is not a causal language model ({arch}), which --task causal-lm needs",
                         "pass a decoder LM (*ForCausalLM: smollm2-135m-pip, gpt2, a .gguf file), or a classification "
                         "--task for this encoder")


def load_lm_teacher(name: str) -> LoadedTeacher:
    """A causal-LM teacher in float32, eval mode, frozen; ``head_trained`` is always true (LMs are scored as is)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = lm_source(name)
    if is_gguf(source):
        model, tokenizer = load_gguf(source)
        return LoadedTeacher(model.requires_grad_(False), tokenizer, source, head_trained=True)
    check_causal_lm(name, load_config(source))
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype="float32", **load_policy().from_pretrained_kwargs())
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=load_policy().trust_remote_code)
    except ModelError:
        raise
    except Exception as exc:
        raise load_failed(name, exc, "causal LM") from None
    return LoadedTeacher(model.eval().requires_grad_(False), tokenizer, source, head_trained=True)
