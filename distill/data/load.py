"""``load_splits`` and ``tokenize``: the task's kind picks the reader and the tokenizer (``task.kind``)."""

from __future__ import annotations

from distill.data.demo import resolve_data
from distill.data.kinds import TaskKind, kind_for_columns, kind_for_data
from distill.data.splits import Splits
from distill.data.task import Task


def load_splits(task: Task | None, data: str | None = None, *, text_columns: tuple[str, ...] | None = None,
                label_column: str | None = None, max_train_samples: int | None = None, seed: int = 0) -> Splits:
    """Resolve the data source (a demo name such as ``sst2-demo``: ``distill.data.demo``), read it with the kind's
    reader (without a task: the kind that claims the data, e.g. a CoNLL file, else a sentence table), validate
    labels, and cap the training set if asked."""
    task, data = resolve_data(task, data)
    kind = task.kind if task is not None else kind_for_data(data, text_columns, label_column)
    return kind.load(task, data, text_columns=text_columns, label_column=label_column,
                     max_train_samples=max_train_samples, seed=seed)


def tokenize(dataset, tokenizer, max_length: int, *, index: bool = False, kind: TaskKind | None = None):
    """Tokenize canonical columns without padding (the collator pads each batch to its longest row), with the
    kind's tokenize function: words and tags (NER) get labels aligned to word pieces, sentences one label per row.
    Without ``kind``, the kind whose canonical columns the dataset has.

    With ``index=True`` each row also carries ``idx`` (its position), which a teacher cache looks rows up by.
    """
    kind = kind or kind_for_columns(dataset.column_names)
    return kind.tokenize(dataset, tokenizer, max_length, index=index)
