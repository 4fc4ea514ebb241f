"""The named tasks: GLUE (``sst2``, ``stsb``, ...) and CoNLL-2003 NER, in the ``TASKS`` registry.

A ``Task`` (``distill.data.task``) describes *what* is learned; its kind (``distill.data.kinds``, entries in
``distill.data.builtin_kinds``) says how it is read, modelled and scored. STS-B is a ``regression`` task;
``conll2003`` is ``token-classification``: one label per word, scored by entity-level F1 (``seqeval_f1``).
"""

from __future__ import annotations

import distill.data.builtin_kinds  # noqa: F401  (registers the built-in kinds the tasks below name)
from distill.core.registry import Registry
from distill.data.kinds import REGRESSION, TOKEN_CLASSIFICATION, TrivialPredictor
from distill.data.lm_kind import LM_TASK
from distill.data.task import GlueTsv, Task

__all__ = ["CONLL2003_TAGS", "TASKS", "TOKEN_CLASSIFICATION", "GlueTsv", "Task", "get_task", "trivial_predictor"]

TASKS: Registry[Task] = Registry("task")

_NLI = {"entailment": 0, "not_entailment": 1}


def _glue(name: str, cols: tuple[str, ...], num_labels: int, metrics: tuple[str, ...], names: tuple[str, ...],
          tsv: GlueTsv, dev_split: str = "validation", kind: str | None = None) -> None:
    TASKS.register(name, Task(name, cols, "label", num_labels, metrics, names, kind=kind, hub=("nyu-mll/glue", name),
                              dev_split=dev_split, glue=tsv))


_glue("cola", ("sentence",), 2, ("matthews_correlation", "accuracy"), ("unacceptable", "acceptable"),
      GlueTsv((3,), 1, header=False))
_glue("sst2", ("sentence",), 2, ("accuracy",), ("negative", "positive"), GlueTsv(("sentence",), "label"))
_glue("mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy"), ("not_equivalent", "equivalent"),
      GlueTsv(("#1 String", "#2 String"), "Quality"))
_glue("qqp", ("question1", "question2"), 2, ("f1", "accuracy"), ("not_duplicate", "duplicate"),
      GlueTsv(("question1", "question2"), "is_duplicate"))
_glue("stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"), (), GlueTsv(("sentence1", "sentence2"), "score"),
      kind=REGRESSION)
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

TASKS.register("causallm", LM_TASK)  # --task causal-lm (distill.data.lm_kind); the text comes from --data


def get_task(name: str) -> Task:
    """Look a task up by name (``sst2``, ``SST-2`` and ``sst-2`` all work)."""
    return TASKS.get(name.lower().replace("-", "").replace("_", ""))


def trivial_predictor(task: Task, train_labels, dev_labels) -> TrivialPredictor:
    """The task kind's trivial predictor on the dev set (majority class, training mean, all-``O``): ``train_labels``
    are the training labels (ids or scores), ``dev_labels`` the dev labels as the scorer sees them."""
    return task.kind.trivial(task, train_labels, dev_labels)
