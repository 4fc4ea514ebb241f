"""Task kinds as plug-ins: each built-in kind's model class, collator, metric, trivial baseline and ONNX signature
(one table), and a toy kind registered here that the data, metric and scoring paths use without other changes."""

import json
import pickle
from dataclasses import replace

import factories
import numpy as np
import pytest
from datasets import Dataset

from distill.core.errors import ConfigError, UnknownNameError
from distill.data import load_splits, make_loader, tokenize
from distill.data.builtin_kinds import class_agreement, class_ids, whole_rows
from distill.data.kinds import (
    TASK_KINDS,
    OnnxSignature,
    ReportFields,
    TaskKind,
    TrivialPredictor,
    get_kind,
    kind_for_config,
    kind_for_data,
    register_kind,
)
from distill.data.pairs import tokenize_two
from distill.data.splits import Splits
from distill.data.task import Task
from distill.data.tasks import get_task, trivial_predictor
from distill.evaluate.agreement import dev_predictions, kl_to_teacher
from distill.evaluate.baseline import trivial_metric
from distill.evaluate.predict import compute_metrics
from distill.evaluate.scoring import agreement, score_stage

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
# hand-computed: Pearson r of x = (1, 2, 3) and y = (1, 2, 4) is 3 / (sqrt(2) * sqrt(42) / 3) = 9 / sqrt(84)
PEARSON = 9 / 84 ** 0.5

# kind -> (task, canonical rows, expected AutoModel, labels shape of a 2-row batch padded to width 6, label dtype)
CASES = {
    "sequence-classification": dict(
        task=Task("t", metrics=("accuracy",), label_names=("neg", "pos")),
        rows={"text": ["good movie", "bad film was very"], "label": [1, 0]},
        auto="AutoModelForSequenceClassification", labels_shape=(2,), float_labels=False,
        # predicts 1, 0, 1 against 1, 1, 1: accuracy 2/3
        logits=np.array([[0, 1], [1, 0], [0, 1]], np.float32), gold=np.array([1, 1, 1]),
        expected={"accuracy": 2 / 3},
        # majority of (0, 1, 1, 1) is 1: right on one dev row of three
        train=[0, 1, 1, 1], dev=[1, 0, 0], trivial=1 / 3, trivial_text="majority class 'pos'",
        output_dims=("batch_size", 2), num_labels=2),
    "regression": dict(
        task=Task("t", num_labels=1, metrics=("pearson",)),
        rows={"text": ["good movie", "bad film was very"], "label": [0.5, 3.0]},
        auto="AutoModelForSequenceClassification", labels_shape=(2,), float_labels=True,
        logits=np.array([[1.0], [2.0], [3.0]], np.float32), gold=np.array([1.0, 2.0, 4.0]),
        expected={"pearson": PEARSON},
        # a constant has no Pearson r: scored 0
        train=[1.0, 3.0], dev=[1.0, 2.0, 4.0], trivial=0.0, trivial_text="training mean 2.000",
        output_dims=("batch_size", 1), num_labels=1),
    "token-classification": dict(
        task=Task("t", ("tokens",), "tags", len(TAGS), ("f1", "precision", "recall"), TAGS,
                  kind="token-classification"),
        rows={"tokens": [["good", "movie"], ["bad", "film", "was", "very"]], "tags": [[1, 2], [0, 0, 3, 0]]},
        auto="AutoModelForTokenClassification", labels_shape=(2, 6), float_labels=False,
        # sentence 1: B-PER I-PER O found exactly; sentence 2: B-LOC missed -> P 1/1, R 1/2, F1 2/3
        logits=np.eye(len(TAGS), dtype=np.float32)[[[1, 2, 0], [0, 0, 0]]],
        gold=np.array([[1, 2, 0], [3, -100, -100]]), expected={"f1": 2 / 3, "precision": 1.0, "recall": 0.5},
        train=None, dev=[[1, 2, 0], [3, -100, -100]], trivial=0.0, trivial_text="'O' on every word",
        output_dims=("batch_size", "sequence_length", len(TAGS)), num_labels=len(TAGS)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kind_owns_model_class_head_and_loss(name):
    case, kind = CASES[name], get_kind(name)
    assert case["task"].kind is kind and case["task"].kind == name
    assert kind.model_class().__name__ == case["auto"]
    config = factories.tiny_bert_config(num_labels=case["num_labels"], problem_type=kind.problem_type)
    model = kind.model_class().from_config(config)
    assert kind_for_config(model.config, type(model).__name__) is kind  # export and bundle find the kind
    assert kind.output_loss in {"ce_kl", "mse", "token_ce_kl"}
    from distill.objective.objective import OUTPUT_LOSSES

    assert OUTPUT_LOSSES.get(kind.output_loss) is not None  # the objective knows the loss this kind names


@pytest.mark.parametrize("name", list(CASES))
def test_kind_tokenizes_and_collates(name, tmp_path):
    case, kind = CASES[name], get_kind(name)
    tok = factories.tiny_tokenizer(tmp_path)
    data = tokenize(Dataset.from_dict(case["rows"]), tok, 16, index=True, kind=kind)
    assert tokenize(Dataset.from_dict(case["rows"]), tok, 16)["labels"] == data["labels"]  # kind found by columns
    batch = kind.collator(tok, None)([data[0], data[1]])
    assert tuple(batch["input_ids"].shape) == (2, 6)  # [CLS] bad film was very [SEP]
    assert tuple(batch["labels"].shape) == case["labels_shape"]
    assert batch["labels"].is_floating_point() == case["float_labels"]
    assert batch["idx"].tolist() == [0, 1]
    loader = make_loader(data, tok, 2, shuffle=False, kind=kind)
    assert tuple(next(iter(loader))["labels"].shape) == case["labels_shape"]


@pytest.mark.parametrize("name", list(CASES))
def test_kind_metric_on_a_hand_computed_example(name):
    case = CASES[name]
    scores = compute_metrics(case["task"], case["logits"], case["gold"])
    assert list(scores)[0] == case["task"].main_metric
    for key, value in case["expected"].items():
        assert scores[key] == pytest.approx(value)


@pytest.mark.parametrize("name", list(CASES))
def test_kind_trivial_baseline(name):
    case = CASES[name]
    task = case["task"]
    predictor = trivial_predictor(task, case["train"], case["dev"])
    assert predictor.description == case["trivial_text"]
    baseline = trivial_metric(task, case["train"], case["dev"])
    assert baseline.metric == pytest.approx(case["trivial"]) and baseline.description == case["trivial_text"]


@pytest.mark.parametrize("name", list(CASES))
def test_kind_onnx_signature(name, tmp_path):
    import onnxruntime as ort

    from compress import export_onnx

    case, kind = CASES[name], get_kind(name)
    config = factories.tiny_bert_config(layers=1, num_labels=case["num_labels"], problem_type=kind.problem_type)
    model = kind.model_class().from_config(config).eval()
    path = export_onnx(model, tmp_path / "model.onnx", max_seq_length=8)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(kind.onnx.inputs)
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # batch × sequence, dynamic
    (output,) = session.get_outputs()
    assert output.name == kind.onnx.output == "logits"
    assert len(output.shape) == len(case["output_dims"])
    for axis, dim in enumerate(output.shape):
        assert isinstance(dim, str) if axis in kind.onnx.output_axes else dim == case["output_dims"][axis]


def test_report_fields_and_comparisons_follow_the_kind():
    seq, reg, tok = (CASES[n]["task"] for n in CASES)
    assert seq.kind.report.confusion and seq.kind.report.kl and not reg.kind.report.kl
    assert kl_to_teacher(reg, np.zeros((3, 1)), np.ones((3, 1))) is None
    logits, labels = CASES["token-classification"]["logits"], CASES["token-classification"]["gold"]
    assert dev_predictions(tok, logits, labels) == [1, 2, 0, 0]  # one tag per labelled word
    assert agreement(reg, np.array([[1.0], [2.0], [3.0]]), np.array([[1.0], [2.0], [4.0]])) == pytest.approx(PEARSON)
    assert tok.kind.per_token and not tok.kind.cross_tokenizer and not tok.kind.teacher_cache
    assert seq.kind.augment and reg.kind.augment and not tok.kind.augment  # regression: rows scored -100


def test_cross_tokenizer_rows_only_for_kinds_that_allow_it(tmp_path):
    tok = factories.tiny_tokenizer(tmp_path)
    rows = Dataset.from_dict(CASES["token-classification"]["rows"])
    with pytest.raises(ConfigError, match="token classification cannot use a student tokenizer"):
        tokenize_two(rows, tok, tok, 16)
    both = tokenize_two(Dataset.from_dict(CASES["regression"]["rows"]), tok, tok, 16, kind=get_kind("regression"))
    assert both["labels"] == [0.5, 3.0] and both["teacher_input_ids"] == both["input_ids"]


def test_task_kind_defaults_names_and_pickling():
    assert Task("t").kind == "sequence-classification" and Task("t", num_labels=1).is_regression
    assert get_task("stsb").kind == "regression" and get_task("conll2003").is_token
    assert str(get_task("conll2003").kind) == "token-classification"
    task = get_task("conll2003")
    assert pickle.loads(pickle.dumps(task)) == task and pickle.loads(pickle.dumps(task.kind)) is task.kind
    with pytest.raises(UnknownNameError, match="task kind"):
        Task("t", kind="sequence-clasification")
    assert kind_for_config({"architectures": ["BertForSequenceClassification"], "problem_type": "regression"}) \
        is get_kind("regression")
    assert kind_for_config({"architectures": ["BertModel"]}) is None


# ---- the plug-in claim: a new kind, defined only here, drives data, metric and scoring -------------------------

def _read_lines(task, data, *, text_columns=None, label_column=None, max_train_samples=None, seed=0) -> Splits:
    """``train.lines``/``dev.lines``: ``LABEL|text`` per line, labels are words (``yes``/``no``)."""
    from pathlib import Path

    parts = {}
    for split in ("train", "dev"):
        pairs = [line.split("|", 1) for line in (Path(data) / f"{split}.lines").read_text().splitlines()]
        parts[split] = Dataset.from_dict({"line": [t for _, t in pairs], "answer": [y == "yes" for y, _ in pairs]})
    task = task or Task("lines", kind="toy-lines", metrics=("accuracy",), label_names=("no", "yes"))
    return Splits(parts["train"], parts["dev"], task, str(data))


def _tokenize_lines(dataset, tokenizer, max_length, *, index=False):
    def encode(batch, positions):
        enc = tokenizer(batch["line"], truncation=True, max_length=max_length)
        enc["labels"] = [int(a) for a in batch["answer"]]
        if index:
            enc["idx"] = positions
        return enc

    return dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names)


class _Collate:
    """Pads to a fixed width of 8: a collator the built-in kinds do not have."""

    def __init__(self, tokenizer, pad_to_multiple_of=None):
        self.pad = tokenizer.pad_token_id

    def __call__(self, rows):
        import torch

        ids = torch.full((len(rows), 8), self.pad)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"][:8])
        return {"input_ids": ids, "attention_mask": (ids != self.pad).long(),
                "labels": torch.tensor([r["labels"] for r in rows])}


def _exact_match(task, logits, labels, load_metric):
    """Uses the evaluation layer's bundled modules, as a built-in kind does."""
    preds = class_ids(logits)
    found = load_metric("accuracy").compute(predictions=preds.tolist(), references=np.asarray(labels).tolist())
    return {"accuracy": float(found["accuracy"]), "wrong": float((preds != labels).sum())}


def _always_no(task, train_labels, dev_labels):
    return TrivialPredictor("'no' on every line", np.tile([[1.0, 0.0]], (len(dev_labels), 1)))


@pytest.fixture
def toy_kind():
    kind = register_kind(TaskKind(
        name="toy-lines", auto_model="AutoModelForSequenceClassification", target="class", columns=("line", "answer"),
        load=_read_lines, tokenize=_tokenize_lines, collator=_Collate, output_loss="ce_kl", predictions=class_ids,
        metrics=_exact_match, scored=whole_rows, agreement=class_agreement, trivial=_always_no,
        split_labels=lambda ds: np.asarray(ds["answer"], dtype=np.int64), onnx=OnnxSignature(),
        report=ReportFields(("accuracy",), "share of lines given the teacher's answer"),
        sniff=lambda path: (__import__("pathlib").Path(path) / "train.lines").is_file()))
    yield kind
    TASK_KINDS._items.pop("toy-lines")  # tests only: the registry has no removal


def test_a_registered_kind_drives_data_metric_and_scoring(toy_kind, tmp_path):
    tok = factories.tiny_tokenizer(tmp_path)
    (tmp_path / "train.lines").write_text("yes|good movie\nno|bad film\nyes|great plot\n")
    (tmp_path / "dev.lines").write_text("yes|lovely story\nno|awful actor\n")
    assert kind_for_data(str(tmp_path)) is toy_kind  # claimed without --task
    splits = load_splits(None, str(tmp_path))
    task = splits.task
    assert task.kind is toy_kind and len(splits.train) == 3
    data = tokenize(splits.dev, tok, 16)  # recognised by its columns
    batch = next(iter(make_loader(data, tok, 2, shuffle=False, kind=task.kind)))
    assert tuple(batch["input_ids"].shape) == (2, 8) and batch["labels"].tolist() == [1, 0]
    logits = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)  # says yes twice: one right
    assert compute_metrics(task, logits, batch["labels"].numpy()) == {"accuracy": 0.5, "wrong": 1.0}
    teacher = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    row = score_stage("student", task, logits, batch["labels"].numpy(), teacher, 1.0, params=1, size_mb=0.1,
                      latency_ms=1.0, path="s")
    assert row.metric == 0.5 and row.agreement == 0.5 and row.kl_to_teacher > 0
    assert dev_predictions(task, logits) == [1, 1]
    baseline = trivial_metric(task, toy_kind.split_labels(splits.train), toy_kind.split_labels(splits.dev))
    assert baseline.metric == 0.5 and baseline.description == "'no' on every line"
    assert replace(task, name="renamed").kind is toy_kind
    json.dumps(row.to_dict())
