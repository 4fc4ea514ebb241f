"""Task kinds as plug-ins: what every task of one kind shares, as one ``TaskKind`` record in ``TASK_KINDS``.

A *task* (``distill.data.task.Task``) says which columns, labels and metrics one dataset has; its *kind* says how
any such task is read, tokenized, batched, modelled, scored and exported: the transformers ``AutoModel`` class, the
reader and tokenize function, the collator, the output loss the objective uses, the metric computation,
predictions from logits, the trivial baseline, the ONNX signature and the report fields. The built-in kinds
(``sequence-classification``, ``regression``, ``token-classification``) are registered by
``distill.data.builtin_kinds``; a new kind (e.g. a causal LM) is one more ``TASK_KINDS.register`` call, and the
stages reach it only through ``task.kind``.

This module imports nothing heavy: transformers classes are named, and looked up only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distill.core.registry import Registry

SEQUENCE_CLASSIFICATION = "sequence-classification"
REGRESSION = "regression"
TOKEN_CLASSIFICATION = "token-classification"
DEFAULT_KIND = SEQUENCE_CLASSIFICATION  # a task read from a file without --task, unless another kind claims it

BATCH_AND_SEQUENCE = {0: "batch_size", 1: "sequence_length"}


@dataclass(frozen=True)
class OnnxSignature:
    """The exported graph's interface (compress.quantize's export, the edge bundle and its README snippet).

    ``inputs`` are the candidate graph inputs in order; the export keeps those the model's ``forward`` takes
    (``token_type_ids`` only when the model has segment embeddings). ``input_axes``/``output_axes`` name the dynamic
    axes; ``decode`` is the Python expression the bundle README prints (it sees ``logits``, ``labels`` and ``enc``).
    """

    output: str = "logits"
    output_axes: Mapping[int, str] = field(default_factory=lambda: {0: "batch_size"})
    inputs: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    input_axes: Mapping[int, str] = field(default_factory=lambda: dict(BATCH_AND_SEQUENCE))
    decode: str = "labels[str(int(logits[0].argmax()))]"
    example: str = "a truly great movie"


@dataclass(frozen=True)
class ReportFields:
    """What the report shows for this kind: the metrics a task read from a file gets by default, what the
    agreement column measures, whether KL to the teacher and confusion matrices apply, and what one dev prediction
    is (``example`` or ``word``)."""

    metrics: tuple[str, ...]
    agreement: str
    kl: bool = True
    confusion: bool = True
    unit: str = "example"


@dataclass(frozen=True)
class TrivialPredictor:
    """What a model that ignores its input predicts on dev: ``logits`` (shaped like a model's dev logits) are
    scored with the task's own metrics; ``description`` says what it predicts, for messages."""

    description: str
    logits: Any  # np.ndarray


@dataclass(frozen=True, eq=False)
class TaskKind:
    """One kind of task. Every hook is a plain function; see ``distill.data.builtin_kinds`` for the three built-in
    entries and the signatures they implement.

    - ``auto_model``: the transformers class name (``AutoModelFor...``); ``model_class()`` imports it.
    - ``target``: what a label is: ``class`` (one id per row), ``score`` (one float per row), ``tags`` (one id per
      word).
    - ``columns``: the canonical columns the reader writes (how ``tokenize`` recognises untyped data).
    - ``load(task, data, *, text_columns, label_column, max_train_samples, seed) -> Splits``: read both splits.
    - ``tokenize(dataset, tokenizer, max_length, *, index) -> Dataset``: tokenize canonical rows, no padding.
    - ``collator(tokenizer, pad_to_multiple_of) -> callable``: pads a list of tokenized rows into a batch.
    - ``output_loss``: the name of the output term (labels and teacher logits) the objective uses.
    - ``predictions(logits) -> array``: class ids, scores or tag ids from raw outputs.
    - ``metrics(task, logits, labels, load_metric) -> dict``: every metric of the task, main metric first;
      ``load_metric(name)`` gives a bundled ``evaluate`` module (the evaluation layer passes it in).
    - ``scored(logits, labels) -> array``: the rows compared with the teacher (per example, or per labelled word).
    - ``agreement(predictions, teacher_predictions) -> float``: agreement of scored predictions.
    - ``trivial(task, train_labels, dev_labels) -> TrivialPredictor``: the floor a trained model must clear.
    - ``split_labels(dataset) -> array``: a loaded split's labels as the scorer sees them.
    - ``sniff(path) -> bool`` (optional): claims a data path given without ``--task``.
    - ``config_test(config) -> bool`` (optional): beyond the head class, tells kinds that share one apart.
    - ``head_names``: class-name suffixes that also mean this kind's head, besides ``head_suffix``.
    """

    name: str
    auto_model: str
    target: str
    columns: tuple[str, ...]
    load: Callable[..., Any]
    tokenize: Callable[..., Any]
    collator: Callable[..., Callable[[list[dict]], dict]]
    output_loss: str
    predictions: Callable[[Any], Any]
    metrics: Callable[..., dict[str, float]]
    scored: Callable[[Any, Any], Any]
    agreement: Callable[[Any, Any], float]
    trivial: Callable[..., TrivialPredictor]
    split_labels: Callable[[Any], Any]
    onnx: OnnxSignature
    report: ReportFields
    problem_type: str | None = None  # transformers' config.problem_type for this kind, when it needs one
    per_token: bool = False  # one output per word piece (labels (N, L)), not one per example
    cross_tokenizer: bool = True  # a student with its own tokenizer can learn it (sequence-level outputs)
    teacher_cache: bool = True  # teachers.cache can keep the teacher's outputs
    augment: bool = False  # TinyBERT augmentation applies (unlabelled rows carry the label -100, per row)
    sniff: Callable[[str], bool] | None = None
    config_test: Callable[[Any], bool] | None = None
    head_names: tuple[str, ...] = ()  # other class-name suffixes of this kind's head (GPT-2's ``LMHeadModel``)

    @property
    def head_suffix(self) -> str:
        """The model class suffix of this kind's head, e.g. ``ForTokenClassification``."""
        return self.auto_model.removeprefix("AutoModel")

    def model_class(self):
        """The transformers ``AutoModelFor...`` class (imported now, not at registration)."""
        import transformers

        return getattr(transformers, self.auto_model)

    def has_head(self, config, class_name: str | None = None) -> bool:
        """A model of ``config`` (or of class ``class_name``) has a head of this kind's class (its class name ends
        with ``head_suffix``). Kinds sharing a head class (classification, regression) both say yes; ``claims``
        tells them apart."""
        names = [class_name] if class_name else list(config_value(config, "architectures") or [])
        return any(str(n).endswith((self.head_suffix, *self.head_names)) for n in names)

    def claims(self, config, class_name: str | None = None) -> bool:
        """``has_head``, and ``config_test`` (if any) accepts the config: the model is of this kind."""
        return self.has_head(config, class_name) and (self.config_test is None or self.config_test(config))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # task.kind == "token-classification" reads naturally
            return other.lower() == self.name
        return isinstance(other, TaskKind) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"TaskKind({self.name!r})"

    def __reduce__(self):  # pickles by name: the registered entry comes back
        return get_kind, (self.name,)


TASK_KINDS: Registry[TaskKind] = Registry("task kind")


def register_kind(kind: TaskKind) -> TaskKind:
    """Add a kind (``Task(..., kind=NAME)`` then uses it); returns it."""
    return TASK_KINDS.register(kind.name, kind)


def get_kind(name: str | TaskKind) -> TaskKind:
    """The registered kind of this name (a ``TaskKind`` is returned as is)."""
    return name if isinstance(name, TaskKind) else TASK_KINDS.get(name)


def config_value(config, key: str, default=None):
    """A config attribute, from a transformers config or a ``config.json`` dict."""
    return config.get(key, default) if isinstance(config, Mapping) else getattr(config, key, default)


def kind_for_config(config, class_name: str | None = None) -> TaskKind | None:
    """The kind whose head a model has (from its class name, else ``config.architectures``), or None (a bare
    encoder, or a head no kind claims). ``config`` may be a transformers config or a ``config.json`` dict."""
    return next((kind for _, kind in TASK_KINDS.items() if kind.claims(config, class_name)), None)


def kind_for_data(data: str | None, text_columns=None, label_column=None) -> TaskKind:
    """The kind of data given without ``--task``: the first kind whose ``sniff`` claims the path, else the
    default (sentence classification); named columns always mean a sentence table."""
    if data and not text_columns and not label_column:
        for _, kind in TASK_KINDS.items():
            if kind.sniff is not None and kind.sniff(data):
                return kind
    return get_kind(DEFAULT_KIND)


def kind_for_columns(column_names) -> TaskKind:
    """The first kind whose canonical columns a loaded (untokenized) split has."""
    names = set(column_names)
    for _, kind in TASK_KINDS.items():
        if set(kind.columns) <= names:
            return kind
    return get_kind(DEFAULT_KIND)

