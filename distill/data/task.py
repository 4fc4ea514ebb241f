"""The ``Task`` record: which columns hold text and labels, how many labels, which metrics score it, and its kind.

A ``Task`` describes *what* one dataset asks; its ``kind`` (a ``distill.data.kinds.TaskKind`` from ``TASK_KINDS``)
says how every task of that kind is read, modelled and scored. The named tasks (GLUE, CoNLL-2003) are in
``distill.data.tasks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from distill.data.kinds import REGRESSION, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, TaskKind, get_kind


@dataclass(frozen=True)
class GlueTsv:
    """The GLUE distribution's own TSV layout for one task (``train.tsv``/``dev.tsv``)."""

    text_columns: tuple[str | int, ...]  # header names, or column indices when the file has no header
    label_column: str | int
    header: bool = True
    dev_file: str = "dev.tsv"
    label_map: dict[str, int] | None = None  # string labels ("entailment") -> ids


@dataclass(frozen=True)
class Task:
    """One supervised task. ``kind`` is a registered kind's name (or the ``TaskKind``) and becomes the
    ``TaskKind``; without one, a task is sequence classification, or regression when ``num_labels == 1`` (as a
    one-output sequence head has always meant here: STS-B)."""

    name: str
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    num_labels: int = 2
    metrics: tuple[str, ...] = ("accuracy",)
    label_names: tuple[str, ...] = ()
    kind: TaskKind = None  # type: ignore[assignment]  # a name or None is resolved in __post_init__
    hub: tuple[str, str | None] | None = None  # (dataset path, config name) for datasets.load_dataset
    dev_split: str = "validation"
    glue: GlueTsv | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        kind = get_kind(self.kind or SEQUENCE_CLASSIFICATION)
        if kind.name == SEQUENCE_CLASSIFICATION and self.num_labels == 1:
            kind = get_kind(REGRESSION)
        object.__setattr__(self, "kind", kind)

    @property
    def is_regression(self) -> bool:
        """One score per example (kept for callers that predate ``task.kind``)."""
        return self.kind.name == REGRESSION

    @property
    def is_token(self) -> bool:
        """One label per word (NER); kept for callers that predate ``task.kind``."""
        return self.kind.name == TOKEN_CLASSIFICATION

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    def with_columns(self, text_columns: tuple[str, ...] | None, label_column: str | None) -> Task:
        """The same task read from a file whose columns have other names."""
        return replace(
            self,
            text_columns=tuple(text_columns) if text_columns else self.text_columns,
            label_column=label_column or self.label_column,
        )
