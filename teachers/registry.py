"""Teacher aliases: short names users type, mapped to Hugging Face Hub ids."""

from __future__ import annotations

from distill.core.registry import Registry

TEACHERS: Registry[str] = Registry("teacher alias")


def register_teacher(alias: str, hub_id: str) -> None:
    """Add an alias (``distill run --teacher ALIAS``) for a Hub model id."""
    TEACHERS.register(alias, hub_id)


register_teacher("bert-base", "google-bert/bert-base-uncased")
register_teacher("bert-large", "google-bert/bert-large-uncased")
register_teacher("minilm", "sentence-transformers/all-MiniLM-L6-v2")
register_teacher("roberta-base", "FacebookAI/roberta-base")
register_teacher("distilbert", "distilbert/distilbert-base-uncased")
