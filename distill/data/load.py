"""``load_splits``: pick the reader for a task kind and data source, check both splits, cap the train set."""

from __future__ import annotations

from distill.core.errors import DataError
from distill.data.splits import Splits
from distill.data.tasks import Task
from distill.data.text import load_hub, load_local, tokenize_text
from distill.data.tokens import is_token_source, load_token_splits, tokenize_tokens


def load_splits(task: Task | None, data: str | None = None, *, text_columns: tuple[str, ...] | None = None,
                label_column: str | None = None, max_train_samples: int | None = None, seed: int = 0) -> Splits:
    """Resolve the data source, read it, validate labels, and cap the training set if asked."""
    if _is_token_source(task, data, text_columns, label_column):  # NER: distill.data.tokens
        return load_token_splits(task, data, max_train_samples=max_train_samples, seed=seed)
    if data:
        splits = load_local(data, task, text_columns, label_column)
    elif task is not None:
        splits = load_hub(task)
    else:
        raise DataError("no task and no data given", "pass --task NAME or --data DIR")
    if len(splits.train) == 0 or len(splits.dev) == 0:
        raise DataError(f"'{splits.source}' has an empty train or dev split", "give at least one row in each")
    if max_train_samples and max_train_samples < len(splits.train):
        splits.train = splits.train.shuffle(seed=seed).select(range(max_train_samples))
    return splits


def _is_token_source(task: Task | None, data: str | None, text_columns, label_column) -> bool:
    """A token task, or (no task, no column names) a CoNLL file/dir or a tokens/tags jsonl."""
    if task is not None:
        return task.is_token
    if text_columns or label_column:
        return False
    return is_token_source(None, data)


def tokenize(dataset, tokenizer, max_length: int, *, index: bool = False):
    """Tokenize canonical columns without padding (the collator pads each batch to its longest row): words and
    tags (NER) get labels aligned to word pieces, sentences one label per row.

    With ``index=True`` each row also carries ``idx`` (its position), which a teacher cache looks rows up by.
    """
    if "tokens" in dataset.column_names:
        return tokenize_tokens(dataset, tokenizer, max_length, index=index)
    return tokenize_text(dataset, tokenizer, max_length, index=index)
