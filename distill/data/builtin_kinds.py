"""The built-in task kinds: sequence classification, regression and token classification (NER).

Each is one ``TaskKind`` in ``TASK_KINDS`` made of the plain functions below (shared where two kinds agree) and of
the readers in ``distill.data.text`` (sentences) and ``distill.data.tokens`` (tagged words). Metric hooks receive
``load_metric`` from the evaluation layer, so this module never imports it.
"""

from __future__ import annotations

import numpy as np

from distill.data.batching import IGNORE_INDEX, PadCollator, TokenPadCollator
from distill.data.kinds import (
    REGRESSION,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    OnnxSignature,
    ReportFields,
    TaskKind,
    TrivialPredictor,
    config_value,
    register_kind,
)
from distill.data.text import load_text_splits, tokenize_text
from distill.data.tokens import is_token_data, load_token_splits, tokenize_tokens, word_predictions, word_tags

TOKEN_METRIC = "seqeval_f1"  # entity-level P/R/F1 for token classification (bundled evaluate module)


# ---- predictions and agreement ---------------------------------------------------------------------------------

def class_ids(logits) -> np.ndarray:
    """The argmax class (or tag) id over the last axis."""
    return np.asarray(logits).argmax(-1)


def scores(logits) -> np.ndarray:
    """The single output of each row, flattened: the regression score."""
    return np.asarray(logits).reshape(-1)


def whole_rows(logits, labels=None) -> np.ndarray:
    """Every row is compared with the teacher (one output per example)."""
    return np.asarray(logits)


def labelled_positions(logits, labels=None) -> np.ndarray:
    """Only labelled word pieces (labels ≠ -100, the first piece of each word) are compared: (N, L, C) logits
    become one row per scored word. Without labels, every position as is."""
    logits = np.asarray(logits)
    return logits if labels is None else logits[np.asarray(labels) != IGNORE_INDEX]


def class_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of predictions equal to the teacher's (0 when nothing is scored)."""
    return float((a == b).mean()) if a.size else 0.0


def score_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of the two score vectors (0 when either is constant)."""
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# ---- metrics ---------------------------------------------------------------------------------------------------

def sequence_metrics(task, logits, labels, load_metric) -> dict[str, float]:
    """Each of the task's metrics on one prediction per example (class ids, or scores for regression)."""
    preds = task.kind.predictions(np.asarray(logits))
    out: dict[str, float] = {}
    for name in task.metrics:
        out.update(load_metric(name).compute(predictions=preds.tolist(), references=np.asarray(labels).tolist()))
    return {k: float(v) for k, v in out.items()}


def token_metrics(task, logits, labels, load_metric) -> dict[str, float]:
    """Entity-level F1 (and precision, recall, token accuracy) of word-level tags: the argmax at each labelled
    word piece (labels ≠ -100) of (N, L, C) logits, through the bundled ``seqeval_f1`` module."""
    names = task.label_names or tuple(str(i) for i in range(np.asarray(logits).shape[-1]))
    labels = np.asarray(labels)
    gold = [row[row != IGNORE_INDEX].astype(int).tolist() for row in labels]
    found = load_metric(TOKEN_METRIC).compute(predictions=word_tags(word_predictions(logits, labels), names),
                                              references=word_tags(gold, names))
    ordered = {k: found[k] for k in task.metrics if k in found}
    return {k: float(v) for k, v in {**ordered, **found}.items()}


# ---- trivial predictors: what a model that ignores its input scores --------------------------------------------

def majority_class(task, train_labels, dev_labels) -> TrivialPredictor:
    """Classification: the most frequent training label (the smallest id on a tie) for every dev row."""
    train = np.asarray(train_labels, dtype=np.int64)
    counts = np.bincount(train[train >= 0], minlength=task.num_labels)
    top = int(counts.argmax())
    logits = np.zeros((len(dev_labels), max(task.num_labels, top + 1)), dtype=np.float32)
    logits[:, top] = 1.0
    name = task.label_names[top] if top < len(task.label_names) else str(top)
    return TrivialPredictor(f"majority class '{name}'", logits)


def train_mean(task, train_labels, dev_labels) -> TrivialPredictor:
    """Regression: the mean training score for every dev row (its Pearson r is undefined)."""
    mean = float(np.mean(np.asarray(train_labels, dtype=np.float64)))
    return TrivialPredictor(f"training mean {mean:.3f}", np.full((len(dev_labels), 1), mean, dtype=np.float32))


def outside_tag(task, train_labels, dev_labels) -> TrivialPredictor:
    """Token classification: the outside tag ``O`` (else tag 0) on every word: no entity found, entity F1 0."""
    outside = task.label_names.index("O") if "O" in task.label_names else 0
    shape = np.asarray(dev_labels).shape
    logits = np.zeros((*shape, max(task.num_labels, len(task.label_names), outside + 1)), dtype=np.float32)
    logits[..., outside] = 1.0
    return TrivialPredictor(f"'{task.label_names[outside] if task.label_names else 0}' on every word", logits)


# ---- labels of a loaded split ----------------------------------------------------------------------------------

def row_labels(dataset) -> np.ndarray:
    """One label (id or score) per row of a sentence split."""
    return np.asarray(dataset["label"])


def padded_tags(dataset) -> np.ndarray:
    """The word tags of a token split, padded with -100 to the longest sentence."""
    rows = dataset["tags"]
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), IGNORE_INDEX, dtype=np.int64)
    for i, tags in enumerate(rows):
        out[i, :len(tags)] = tags
    return out


def is_regression_config(config) -> bool:
    """A one-output head that predicts a score: ``problem_type`` regression, or one label and no problem type."""
    problem = config_value(config, "problem_type")
    labels = config_value(config, "id2label")
    return problem == "regression" or (
        problem is None and config_value(config, "num_labels", len(labels) if labels else None) == 1)


def _not_regression(config) -> bool:
    return not is_regression_config(config)


# ---- the entries -----------------------------------------------------------------------------------------------

SEQUENCE_KIND = register_kind(TaskKind(
    name=SEQUENCE_CLASSIFICATION, auto_model="AutoModelForSequenceClassification", target="class",
    columns=("text", "label"), load=load_text_splits, tokenize=tokenize_text, collator=PadCollator,
    output_loss="ce_kl", predictions=class_ids, metrics=sequence_metrics, scored=whole_rows,
    agreement=class_agreement, trivial=majority_class, split_labels=row_labels, onnx=OnnxSignature(),
    report=ReportFields(("accuracy", "f1"), "share of dev examples given the teacher's class"),
    augment=True, config_test=_not_regression))

REGRESSION_KIND = register_kind(TaskKind(
    name=REGRESSION, auto_model="AutoModelForSequenceClassification", target="score",
    columns=("text", "label"), load=load_text_splits, tokenize=tokenize_text, collator=PadCollator,
    output_loss="mse", predictions=scores, metrics=sequence_metrics, scored=whole_rows,
    agreement=score_agreement, trivial=train_mean, split_labels=row_labels,
    onnx=OnnxSignature(decode="float(logits[0, 0])"),
    report=ReportFields(("pearson", "spearmanr"), "Pearson r of the stage's and the teacher's dev scores",
                        kl=False, confusion=False),
    augment=True, problem_type="regression", config_test=is_regression_config))

TOKEN_KIND = register_kind(TaskKind(
    name=TOKEN_CLASSIFICATION, auto_model="AutoModelForTokenClassification", target="tags",
    columns=("tokens", "tags"), load=load_token_splits, tokenize=tokenize_tokens, collator=TokenPadCollator,
    output_loss="token_ce_kl", predictions=class_ids, metrics=token_metrics, scored=labelled_positions,
    agreement=class_agreement, trivial=outside_tag, split_labels=padded_tags,
    onnx=OnnxSignature(output_axes={0: "batch_size", 1: "sequence_length"}, example="John Smith visited Paris",
                       decode="[(t, labels[str(int(i))]) for t, i in zip(enc.tokens, logits[0].argmax(-1))]"),
    report=ReportFields(("f1", "precision", "recall", "accuracy"), "share of labelled words given the teacher's tag",
                        unit="word"),
    per_token=True, cross_tokenizer=False, teacher_cache=False, sniff=is_token_data))

import distill.data.lm_kind  # noqa: E402,F401  (registers the causal-lm kind after the three above)
