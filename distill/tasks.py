"""Task definitions: which columns hold text and labels, how many labels, which metrics score it.

A ``Task`` describes *what* is learned; ``distill.data`` reads it from the Hub or from local files.
Token classification (``kind="token-classification"``, e.g. ``conll2003``) has one label per word; its data,
alignment and collator live in ``distill.token_data`` and it is scored by entity-level F1 (``seqeval_f1``).
Each task kind also has a trivial predictor (``trivial_predictor``: majority class, training mean, all-``O``), the
floor a trained stage must clear (``distill.collapse``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from distill.core.registry import Registry


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
    """One supervised task: ``num_labels == 1`` means regression (STS-B)."""

    name: str
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    num_labels: int = 2
    metrics: tuple[str, ...] = ("accuracy",)
    label_names: tuple[str, ...] = ()
    kind: str = "sequence-classification"
    hub: tuple[str, str | None] | None = None  # (dataset path, config name) for datasets.load_dataset
    dev_split: str = "validation"
    glue: GlueTsv | None = field(default=None, compare=False)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1 and not self.is_token

    @property
    def is_token(self) -> bool:
        """One label per word (NER): per-token logits, losses and an entity-level metric."""
        return self.kind == TOKEN_CLASSIFICATION

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


TASKS: Registry[Task] = Registry("task")
TOKEN_CLASSIFICATION = "token-classification"

_NLI = {"entailment": 0, "not_entailment": 1}


def _glue(name: str, cols: tuple[str, ...], num_labels: int, metrics: tuple[str, ...], names: tuple[str, ...],
          tsv: GlueTsv, dev_split: str = "validation") -> None:
    TASKS.register(name, Task(name, cols, "label", num_labels, metrics, names, hub=("nyu-mll/glue", name),
                              dev_split=dev_split, glue=tsv))


_glue("cola", ("sentence",), 2, ("matthews_correlation", "accuracy"), ("unacceptable", "acceptable"),
      GlueTsv((3,), 1, header=False))
_glue("sst2", ("sentence",), 2, ("accuracy",), ("negative", "positive"), GlueTsv(("sentence",), "label"))
_glue("mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy"), ("not_equivalent", "equivalent"),
      GlueTsv(("#1 String", "#2 String"), "Quality"))
_glue("qqp", ("question1", "question2"), 2, ("f1", "accuracy"), ("not_duplicate", "duplicate"),
      GlueTsv(("question1", "question2"), "is_duplicate"))
_glue("stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"), (), GlueTsv(("sentence1", "sentence2"), "score"))
_glue("mnli", ("premise", "hypothesis"), 3, ("accuracy",), ("entailment", "neutral", "contradiction"),
      GlueTsv(("sentence1", "sentence2"), "gold_label", dev_file="dev_matched.tsv",
              label_map={"entailment": 0, "neutral": 1, "contradiction": 2}), dev_split="validation_matched")
_glue("qnli", ("question", "sentence"), 2, ("accuracy",), ("entailment", "not_entailment"),
      GlueTsv(("question", "sentence"), "label", label_map=_NLI))
_glue("rte", ("sentence1", "sentence2"), 2, ("accuracy",), ("entailment", "not_entailment"),
      GlueTsv(("sentence1", "sentence2"), "label", label_map=_NLI))
_glue("wnli", ("sentence1", "sentence2"), 2, ("accuracy",), ("not_entailment", "entailment"),
      GlueTsv(("sentence1", "sentence2"), "label"))

# CoNLL-2003 English NER in IOB2 (the Hub dataset's tag ids); the original eng.* files (IOB1) are converted.
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
TASKS.register("conll2003", Task("conll2003", ("tokens",), "ner_tags", len(CONLL2003_TAGS),
                                 ("f1", "precision", "recall", "accuracy"), CONLL2003_TAGS,
                                 kind=TOKEN_CLASSIFICATION, hub=("eriktks/conll2003", None)))


def get_task(name: str) -> Task:
    """Look a task up by name (``sst2``, ``SST-2`` and ``sst-2`` all work)."""
    return TASKS.get(name.lower().replace("-", "").replace("_", ""))


# ---- the trivial predictor of each task kind: the score a stage must beat to have learned anything ---------------


@dataclass(frozen=True)
class TrivialPredictor:
    """What a model that ignores its input would predict on dev: ``logits`` are scored with the task's own metric."""

    description: str
    logits: Any  # np.ndarray shaped like a model's dev logits


def _majority_class(task: Task, train_labels, dev_labels) -> TrivialPredictor:
    """Classification: the most frequent training label (the smallest id on a tie) for every dev row."""
    import numpy as np

    counts = np.bincount(np.asarray(train_labels, dtype=np.int64)[np.asarray(train_labels) >= 0],
                         minlength=task.num_labels)
    top = int(counts.argmax())
    logits = np.zeros((len(dev_labels), max(task.num_labels, top + 1)), dtype=np.float32)
    logits[:, top] = 1.0
    name = task.label_names[top] if top < len(task.label_names) else str(top)
    return TrivialPredictor(f"majority class '{name}'", logits)


def _train_mean(task: Task, train_labels, dev_labels) -> TrivialPredictor:
    """Regression: the mean training score for every dev row (its Pearson r is undefined, scored as 0)."""
    import numpy as np

    mean = float(np.mean(np.asarray(train_labels, dtype=np.float64)))
    return TrivialPredictor(f"training mean {mean:.3f}", np.full((len(dev_labels), 1), mean, dtype=np.float32))


def _outside_tag(task: Task, train_labels, dev_labels) -> TrivialPredictor:
    """Token classification: the outside tag ``O`` (else tag 0) on every word: no entity found, entity F1 0."""
    import numpy as np

    outside = task.label_names.index("O") if "O" in task.label_names else 0
    shape = np.asarray(dev_labels).shape
    logits = np.zeros((*shape, max(task.num_labels, len(task.label_names), outside + 1)), dtype=np.float32)
    logits[..., outside] = 1.0
    return TrivialPredictor(f"'{task.label_names[outside] if task.label_names else 0}' on every word", logits)


REGRESSION = "regression"
TRIVIAL_PREDICTORS: dict[str, Callable[[Task, Any, Any], TrivialPredictor]] = {
    "sequence-classification": _majority_class,
    REGRESSION: _train_mean,
    TOKEN_CLASSIFICATION: _outside_tag,
}


def trivial_predictor(task: Task, train_labels, dev_labels) -> TrivialPredictor:
    """The task kind's trivial predictor on the dev set: ``train_labels`` are the training labels (ids or scores;
    unused for token classification), ``dev_labels`` the dev labels as the scorer sees them ((N,) or (N, L))."""
    kind = REGRESSION if task.is_regression else task.kind
    if kind not in TRIVIAL_PREDICTORS:
        raise KeyError(f"no trivial predictor for task kind '{kind}'")
    return TRIVIAL_PREDICTORS[kind](task, train_labels, dev_labels)
