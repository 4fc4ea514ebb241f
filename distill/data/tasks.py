"""Task definitions: which columns hold text and labels, how many labels, which metrics score it.

A ``Task`` describes *what* is learned; ``distill.data`` reads it from the Hub or from local files.
Token classification (``kind="token-classification"``, e.g. ``conll2003``) has one label per word; its data,
alignment and collator live in ``distill.data.tokens`` and it is scored by entity-level F1 (``seqeval_f1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
