"""Load a task's train/dev splits (Hub or local files) into canonical columns and batch them.

Every source ends as two ``datasets.Dataset`` objects with columns ``text``, optional ``text_pair`` and
``label``, so the rest of the engine never knows where the data came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.core.errors import DataError
from distill.demo import resolve_data
from distill.tasks import Task

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "validation", "valid", "val", "dev_matched")}
SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


@dataclass
class Splits:
    """The two splits a run needs, plus the task as actually read (label count may be inferred)."""

    train: Any  # datasets.Dataset
    dev: Any
    task: Task
    source: str


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read data file '{path}' ({exc.__class__.__name__})",
                        "check the path and that the file is UTF-8 text") from None
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        raise DataError(f"data file '{path}' is empty", "give a file with a header and at least one row")
    return lines


def _column_index(header: list[str], column: str | int, path: Path) -> int:
    if isinstance(column, int):
        return column
    if column not in header:
        raise DataError(f"column '{column}' is missing from '{path}' (it has: {', '.join(header)})",
                        "name the right column with --text-column(s)/--label-column")
    return header.index(column)


def read_table(path: Path, text_columns: tuple[str | int, ...], label_column: str | int, *,
               header: bool = True) -> tuple[list[tuple[str, ...]], list[str]]:
    """Read a TSV/CSV/JSONL file into (texts, raw labels); TSV is read without quoting, as GLUE needs."""
    if path.suffix == ".jsonl" or path.suffix == ".json":
        return _read_jsonl(path, text_columns, label_column)
    lines = _read_lines(path)
    if path.suffix == ".csv":
        import csv

        rows = list(csv.reader(lines))
    else:
        rows = [line.rstrip("\r").split("\t") for line in lines]
    names = [c.strip() for c in rows[0]] if header else []
    body = rows[1:] if header else rows
    idx = [_column_index(names, c, path) for c in text_columns]
    lab = _column_index(names, label_column, path)
    width = max(idx + [lab]) + 1
    good = [r for r in body if len(r) >= width]
    if len(good) < len(body) * 0.99 or not good:
        raise DataError(f"'{path}' has {len(body) - len(good)} of {len(body)} rows with fewer than {width} fields",
                        "check the delimiter and the column names")
    return [tuple(r[i].strip() for i in idx) for r in good], [r[lab].strip() for r in good]


def _read_jsonl(path: Path, text_columns, label_column) -> tuple[list[tuple[str, ...]], list]:
    texts, labels = [], []
    for n, line in enumerate(_read_lines(path), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"line {n} of '{path}' is not valid JSON", "write one JSON object per line") from None
        for col in (*text_columns, label_column):
            if col not in row:
                raise DataError(f"column '{col}' is missing from line {n} of '{path}' (it has: {', '.join(row)})",
                                "name the right column with --text-column(s)/--label-column")
        texts.append(tuple(str(row[c]) for c in text_columns))
        labels.append(row[label_column])
    return texts, labels


def _find_split_file(root: Path, split: str) -> Path | None:
    for stem in SPLIT_NAMES[split]:
        for suffix in SUFFIXES:
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
    return None


def _labels_to_ids(raw: list, task: Task, names: tuple[str, ...] | None) -> tuple[list, tuple[str, ...]]:
    """Turn raw labels into ints (classification) or floats (regression); infer names for string labels."""
    if task.is_regression:
        try:
            return [float(x) for x in raw], ()
        except ValueError:
            raise DataError(f"task '{task.name}' is regression but a label is not a number",
                            "check --label-column") from None
    kinds = {type(x) for x in raw}
    if len(kinds) > 1 and not kinds <= {int, str}:
        raise DataError(f"labels mix types ({', '.join(sorted(k.__name__ for k in kinds))})",
                        "use one label type: all integers or all strings")
    as_str = [str(x) for x in raw]
    if all(s.lstrip("-").isdigit() for s in as_str):
        if kinds == {int, str}:
            raise DataError("labels mix integers and strings", "use one label type: all integers or all strings")
        return [int(s) for s in as_str], names or ()
    if any(s.lstrip("-").isdigit() for s in as_str):
        raise DataError("labels mix numbers and names", "use one label type: all integers or all strings")
    names = names or tuple(sorted(set(as_str)))
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(as_str) - set(lookup))
    if unknown:
        raise DataError(f"label(s) {', '.join(map(repr, unknown[:5]))} are not among {', '.join(names)}",
                        "fix the labels or the label column")
    return [lookup[s] for s in as_str], names


def _to_dataset(texts: list[tuple[str, ...]], labels: list):
    from datasets import Dataset

    cols: dict[str, list] = {"text": [t[0] for t in texts], "label": labels}
    if texts and len(texts[0]) > 1:
        cols["text_pair"] = [t[1] for t in texts]
    return Dataset.from_dict(cols)


def _check_labels(labels: list, task: Task, where: str) -> None:
    if task.is_regression:
        return
    bad = sorted({x for x in labels if not 0 <= x < task.num_labels})
    if bad:
        raise DataError(f"labels {bad[:5]} in {where} are outside the {task.num_labels} classes of task "
                        f"'{task.name}'", "check --label-column or pick the matching --task")


def load_local(root: str | Path, task: Task | None, text_columns: tuple[str, ...] | None = None,
               label_column: str | None = None) -> Splits:
    """Read ``train``/``dev`` files from a directory (GLUE TSV layout or csv/tsv/jsonl), or one file split 90/10."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path '{root}' does not exist", "pass a directory with train.tsv and dev.tsv")
    glue = task.glue if task is not None and not text_columns and not label_column else None
    if glue is not None and root.is_dir() and (root / "train.tsv").is_file():
        dev_path = root / glue.dev_file
        if not dev_path.is_file():
            raise DataError(f"'{root}' has no {glue.dev_file}", f"add the GLUE dev file {glue.dev_file}")
        parts = {}
        for split, path in (("train", root / "train.tsv"), ("dev", dev_path)):
            texts, raw = read_table(path, glue.text_columns, glue.label_column, header=glue.header)
            raw = [glue.label_map.get(x, x) for x in raw] if glue.label_map else raw
            labels, _ = _labels_to_ids(raw, task, task.label_names if glue.label_map is None else None)
            _check_labels(labels, task, str(path))
            parts[split] = _to_dataset(texts, labels)
        return Splits(parts["train"], parts["dev"], task, str(root))
    return _load_generic(root, task, text_columns, label_column)


def _load_generic(root: Path, task: Task | None, text_columns, label_column) -> Splits:
    base = task or Task("custom", metrics=("accuracy", "f1"))
    base = base.with_columns(text_columns, label_column)
    if root.is_dir():
        train_path, dev_path = _find_split_file(root, "train"), _find_split_file(root, "dev")
        if train_path is None:
            raise DataError(f"no train file in '{root}'", "add train.tsv/.csv/.jsonl (and dev.*) to the directory")
        if dev_path is None:
            raise DataError(f"no dev file in '{root}'", "add dev.tsv/.csv/.jsonl (or validation.*) beside train")
    else:
        if root.suffix not in SUFFIXES:
            raise DataError(f"'{root}' is not a .tsv, .csv or .jsonl file", "convert it or pass a directory")
        train_path, dev_path = root, None
    texts, raw = read_table(train_path, base.text_columns, base.label_column)
    if dev_path is not None:
        dev_texts, dev_raw = read_table(dev_path, base.text_columns, base.label_column)
    else:  # one file: hold out every 10th row as dev, deterministically
        dev_texts, dev_raw = texts[::10], raw[::10]
        texts = [t for i, t in enumerate(texts) if i % 10]
        raw = [r for i, r in enumerate(raw) if i % 10]
    names = base.label_names or None
    labels, names = _labels_to_ids(raw, base, names)
    dev_labels, _ = _labels_to_ids(dev_raw, base, names or None)
    if task is None and not base.is_regression:
        n = len(names) if names else max(labels + dev_labels) + 1
        base = replace(base, num_labels=n, label_names=names,
                       metrics=("accuracy", "f1") if n == 2 else ("accuracy",))
    elif names and not base.label_names:
        base = replace(base, label_names=names)
    _check_labels(labels, base, str(train_path))
    _check_labels(dev_labels, base, str(dev_path or train_path))
    return Splits(_to_dataset(texts, labels), _to_dataset(dev_texts, dev_labels), base, str(root))


def load_hub(task: Task) -> Splits:
    """Load a GLUE task through ``datasets`` (needs internet or a populated HF cache)."""
    from datasets import load_dataset

    if task.hub is None:
        raise DataError(f"task '{task.name}' has no Hub dataset", "pass --data DIR with train and dev files")
    try:
        ds = load_dataset(*task.hub)
    except Exception as exc:  # network, cache or Hub errors all mean the same to the user
        raise DataError(f"could not load {task.hub[0]}/{task.hub[1]} from the Hub ({exc.__class__.__name__})",
                        "check your connection, or pass --data DIR with the GLUE train.tsv/dev.tsv files") from None
    parts = []
    for split in ("train", task.dev_split):
        d = ds[split]
        cols = {"text": d[task.text_columns[0]], "label": d[task.label_column]}
        if len(task.text_columns) > 1:
            cols["text_pair"] = d[task.text_columns[1]]
        parts.append(type(d).from_dict(cols))
    return Splits(parts[0], parts[1], task, f"hub:{task.hub[0]}/{task.hub[1]}")


def load_splits(task: Task | None, data: str | None = None, *, text_columns: tuple[str, ...] | None = None,
                label_column: str | None = None, max_train_samples: int | None = None, seed: int = 0) -> Splits:
    """Resolve the data source (a demo name: ``distill.demo``), read it, validate labels, cap the training set."""
    task, data = resolve_data(task, data)
    if _is_token_source(task, data, text_columns, label_column):  # NER: distill.token_data
        from distill.token_data import load_token_splits

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


def tokenize(dataset, tokenizer, max_length: int, *, index: bool = False):
    """Tokenize canonical columns without padding (the collator pads each batch to its longest row).

    With ``index=True`` each row also carries ``idx`` (its position), which a teacher cache looks rows up by.
    """
    if "tokens" in dataset.column_names:  # NER words and tags: labels aligned to word pieces
        from distill.token_data import tokenize_tokens

        return tokenize_tokens(dataset, tokenizer, max_length, index=index)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    def encode(batch, positions):
        pair = batch.get("text_pair")
        enc = tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        enc["labels"] = batch["label"]
        if index:
            enc["idx"] = positions
        return enc

    return dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names)


def row_lengths(dataset) -> list[int]:
    """Token count of every tokenized row (read from the Arrow column when the dataset has one)."""
    try:
        import pyarrow.compute as pc

        return pc.list_value_length(dataset.with_format("arrow")[:].column("input_ids")).to_numpy().tolist()
    except (AttributeError, ImportError, KeyError, TypeError):
        return [len(row["input_ids"]) for row in dataset]


class PadCollator:
    """Pad a list of tokenized rows to the longest one (dynamic padding); labels and ``idx`` become tensors.

    A plain-numpy equivalent of ``DataCollatorWithPadding`` (same tensors), without its per-batch tokenizer call.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        import numpy as np
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        batch: dict = {}
        for key in rows[0]:
            if key in ("labels", "label", "idx"):
                values = [r[key] for r in rows]
                dtype = torch.float32 if any(isinstance(v, float) for v in values) else torch.long
                batch["labels" if key == "label" else key] = torch.tensor(values, dtype=dtype)
                continue
            fill = self.pad_id if key == "input_ids" else 0
            out = np.full((len(rows), width), fill, dtype=np.int64)
            for i, r in enumerate(rows):
                seq = r[key]
                if self.left:
                    out[i, width - len(seq):] = seq
                else:
                    out[i, :len(seq)] = seq
            batch[key] = torch.from_numpy(out)
        return batch


class LengthGroupedBatchSampler:
    """Batches of similar length: shuffle, cut into buckets of ``bucket_factor × batch_size`` rows, sort each
    bucket by length, batch it, and shuffle the batches; the order depends only on (seed, epoch).

    With ``num_processes`` N > 1 (set by the engine under ``accelerate launch``) the same is done with global
    batches of N × ``batch_size`` rows, each then cut into N consecutive per-process batches: the processes step
    together on rows of similar length, and N processes at batch B see what one process sees at batch N × B.
    Without shuffling, every row is sorted by length (longest first), e.g. for a teacher pass over the data.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, drop_last: bool = False) -> None:
        if batch_size < 1 or bucket_factor < 1:
            raise ValueError("batch_size and bucket_factor must be >= 1")
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_factor, self.drop_last = bucket_factor, drop_last
        self.epoch = 0
        self.num_processes = 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches of row indices."""
        import torch

        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            return self._cut(order)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        step = self.batch_size * self.num_processes  # rows per optimiser step, over all processes
        size = step * self.bucket_factor
        out: list[list[int]] = []
        for start in range(0, n, size):
            bucket = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            out += self._cut(bucket, step)
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
        return [part for batch in out for part in self._cut(batch, self.batch_size, drop=False)]

    def _cut(self, order: list[int], size: int | None = None, drop: bool | None = None) -> list[list[int]]:
        size = size or self.batch_size
        cut = [order[i:i + size] for i in range(0, len(order), size)]
        drop = self.drop_last if drop is None else drop
        return cut[:-1] if drop and cut and len(cut[-1]) < size else cut

    def __iter__(self):
        yield from self.batches()

    def __len__(self) -> int:
        n, step = len(self.lengths), self.batch_size * self.num_processes
        if self.drop_last:
            return n // (step if self.shuffle else self.batch_size) * (self.num_processes if self.shuffle else 1)
        return -(-n // self.batch_size)


def make_loader(dataset, tokenizer, batch_size: int, *, shuffle: bool, seed: int = 0, group_by_length: bool = False,
                bucket_factor: int = 50, pin_memory: bool | None = None, pad_to_multiple_of: int | None = None,
                collate_fn=None):
    """A DataLoader with dynamic padding; shuffling uses its own seeded generator so runs repeat.

    ``group_by_length`` batches rows of similar length (see ``LengthGroupedBatchSampler``) so little is padded;
    ``pin_memory`` defaults to on when CUDA is available; ``collate_fn`` replaces the padding collator (e.g.
    ``cross_tokenizer.PairedPadCollator`` for rows tokenized twice).
    """
    import torch
    from torch.utils.data import DataLoader

    collate = collate_fn or _collator(dataset, tokenizer, pad_to_multiple_of)
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    if group_by_length:
        sampler = LengthGroupedBatchSampler(row_lengths(dataset), batch_size, shuffle=shuffle, seed=seed,
                                            bucket_factor=bucket_factor)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, pin_memory=pin)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate,
                      pin_memory=pin)


# ---- token classification (NER): reading, tokenizing and padding live in distill.token_data ------------------

def _is_token_source(task: Task | None, data: str | None, text_columns, label_column) -> bool:
    """A token task, or (no task, no column names) a CoNLL file/dir or a tokens/tags jsonl."""
    if task is not None:
        return task.is_token
    if text_columns or label_column:
        return False
    from distill.token_data import is_token_source

    return is_token_source(None, data)


def _collator(dataset, tokenizer, pad_to_multiple_of: int | None):
    """``PadCollator``, or for per-token labels ``TokenPadCollator`` (labels padded with -100)."""
    from distill.token_data import TokenPadCollator, is_token_dataset

    if is_token_dataset(dataset):
        return TokenPadCollator(tokenizer, pad_to_multiple_of)
    return PadCollator(tokenizer, pad_to_multiple_of)
