"""Token classification data (NER): read CoNLL files or ``{"tokens", "tags"}`` jsonl, align word labels to
word pieces, and pad batches with ``-100`` labels.

Every source ends as two ``datasets.Dataset`` objects with columns ``tokens`` (list of words) and ``tags``
(list of tag ids); the ``token-classification`` kind (``distill.data.builtin_kinds``) reads, tokenizes and scores
through this module. After tokenizing, ``labels`` holds one id per word piece: the word's tag on its first piece,
``-100`` on its other pieces, on special tokens and on padding, which every loss and metric ignores.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from distill.core.errors import DataError
from distill.data.batching import IGNORE_INDEX
from distill.data.kinds import TOKEN_CLASSIFICATION
from distill.data.splits import Splits
from distill.data.task import Task

CONLL_FILES = {"train": ("eng.train", "train.txt", "train.conll"),
               "dev": ("eng.testa", "dev.txt", "dev.conll", "valid.txt", "validation.txt", "testa.txt")}
JSONL_FILES = {"train": ("train.jsonl",), "dev": ("dev.jsonl", "validation.jsonl", "valid.jsonl")}
CONLL_SUFFIXES = (".conll", ".txt", ".train", ".testa", ".testb", ".iob")


# ---- tags ------------------------------------------------------------------------------------------------------

def iob1_to_iob2(tags: list[str]) -> list[str]:
    """IOB1 (CoNLL-2003's original files: entities start with ``I-``) to IOB2 (every entity starts with ``B-``).

    ``I-X`` becomes ``B-X`` when it follows ``O``, the start, or a tag of another type; IOB2 input is unchanged.
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def tag_names(tags: set[str]) -> tuple[str, ...]:
    """Label names for tags read from a file: ``O`` first, then by entity type, ``B-`` before ``I-``."""
    def key(tag: str) -> tuple[str, str]:
        return (tag[2:], tag[:1]) if len(tag) > 2 and tag[1] == "-" else (tag, "")

    return tuple(sorted(tags - {"O"}, key=key)) if "O" not in tags else ("O", *sorted(tags - {"O"}, key=key))


# ---- reading ---------------------------------------------------------------------------------------------------

def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file (``token ... TAG`` per line, blank lines between sentences, ``-DOCSTART-``
    lines skipped); tags converted to IOB2."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read data file '{path}' ({exc.__class__.__name__})",
                        "check the path and that the file is UTF-8 text") from None
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            fields = []
        if not fields:
            if words:
                sentences.append((words, iob1_to_iob2(tags)))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise DataError(f"line {n} of '{path}' has no tag column ('{line.strip()[:40]}')",
                            "write one 'token ... TAG' line per word, a blank line between sentences")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, iob1_to_iob2(tags)))
    if not sentences:
        raise DataError(f"data file '{path}' has no sentences", "write one 'token ... TAG' line per word")
    return sentences


def read_token_jsonl(path: Path) -> list[tuple[list[str], list]]:
    """Rows ``{"tokens": [...], "tags": [...]}`` (``ner_tags`` also accepted); tags are names or ids."""
    rows: list[tuple[list[str], list]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read data file '{path}' ({exc.__class__.__name__})",
                        "check the path and that the file is UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"line {n} of '{path}' is not valid JSON", "write one JSON object per line") from None
        tags = row.get("tags", row.get("ner_tags")) if isinstance(row, dict) else None
        tokens = row.get("tokens") if isinstance(row, dict) else None
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise DataError(f"line {n} of '{path}' lacks a 'tokens' or 'tags' list",
                            'write rows like {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}')
        if len(tokens) != len(tags):
            raise DataError(f"line {n} of '{path}' has {len(tokens)} tokens but {len(tags)} tags",
                            "give exactly one tag per token")
        rows.append(([str(t) for t in tokens], tags))
    if not rows:
        raise DataError(f"data file '{path}' is empty", "write one JSON object per line")
    return rows


def _read_any(path: Path) -> list[tuple[list[str], list]]:
    return read_token_jsonl(path) if path.suffix in (".jsonl", ".json") else read_conll(path)


def _looks_like_token_jsonl(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = next((line for line in f if line.strip()), "")
        row = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(row, dict) and isinstance(row.get("tokens"), list) and ("tags" in row or "ner_tags" in row)


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def _split_files(root: Path) -> tuple[Path, Path | None] | None:
    """(train, dev) token files of a directory or one file (dev None: hold out every 10th sentence)."""
    if root.is_dir():
        for table in (CONLL_FILES, JSONL_FILES):
            train = _find(root, table["train"])
            if train is not None:
                return train, _find(root, table["dev"])
        return None
    if root.suffix in CONLL_SUFFIXES or (root.suffix in (".jsonl", ".json") and _looks_like_token_jsonl(root)):
        return root, None
    return None


def is_token_data(data: str | Path | None) -> bool:
    """A CoNLL directory/file or a tokens/tags jsonl: how token classification claims data given without a task."""
    if not data:
        return False
    root = Path(data)
    found = _split_files(root) if root.exists() else None
    if found is None:
        return False
    train = found[0]
    return train.suffix not in (".jsonl", ".json") or _looks_like_token_jsonl(train)


def _to_ids(rows: list[tuple[list[str], list]], names: tuple[str, ...], where: str) -> list[list[int]]:
    lookup = {n: i for i, n in enumerate(names)}
    out = []
    for _, tags in rows:
        if all(isinstance(t, int) for t in tags):
            bad = [t for t in tags if not 0 <= t < len(names)]
            if bad:
                raise DataError(f"tag ids {bad[:5]} in {where} are outside the {len(names)} tags",
                                "check the tag ids or pick the matching --task")
            out.append(list(tags))
            continue
        try:
            out.append([lookup[str(t)] for t in tags])
        except KeyError as exc:
            raise DataError(f"tag {exc.args[0]!r} in {where} is not among {', '.join(names)}",
                            "fix the tags or pick the matching --task") from None
    return out


def _dataset(rows: list[tuple[list[str], list]], ids: list[list[int]]):
    from datasets import Dataset

    return Dataset.from_dict({"tokens": [r[0] for r in rows], "tags": ids})


def load_token_local(root: str | Path, task: Task | None):
    """Read train/dev token data: ``eng.train``/``eng.testa`` (CoNLL-2003, IOB1 → IOB2), ``train.txt``/
    ``dev.txt`` (CoNLL), ``train.jsonl``/``dev.jsonl``, or one such file of which every 10th sentence is dev."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path '{root}' does not exist", "pass a directory with eng.train and eng.testa")
    found = _split_files(root)
    if found is None:
        raise DataError(f"no token-classification train file in '{root}'",
                        "add eng.train + eng.testa, train.txt + dev.txt (CoNLL) or train.jsonl + dev.jsonl")
    train_path, dev_path = found
    if root.is_dir() and dev_path is None:
        raise DataError(f"'{root}' has {train_path.name} but no dev file",
                        "add eng.testa, dev.txt or dev.jsonl beside it")
    train = _read_any(train_path)
    if dev_path is not None:
        dev = _read_any(dev_path)
    else:
        dev = train[::10]
        train = [r for i, r in enumerate(train) if i % 10]
    base = task or Task("custom-ner", ("tokens",), "tags", kind=TOKEN_CLASSIFICATION,
                        metrics=("f1", "precision", "recall", "accuracy"))
    names = base.label_names
    if not names:
        strings = {str(t) for _, tags in train + dev for t in tags}
        if all(isinstance(t, int) for _, tags in train + dev for t in tags):
            names = tuple(str(i) for i in range(max(int(s) for s in strings) + 1))
        else:
            names = tag_names(strings)
        base = replace(base, label_names=names, num_labels=len(names))
    return Splits(_dataset(train, _to_ids(train, names, str(train_path))),
                  _dataset(dev, _to_ids(dev, names, str(dev_path or train_path))), base, str(root))


def load_token_hub(task: Task):
    """A token task from the Hub (``tokens`` and ``ner_tags`` columns of integer ids in the task's tag order)."""
    from datasets import load_dataset

    if task.hub is None:
        raise DataError(f"task '{task.name}' has no Hub dataset", "pass --data DIR with eng.train and eng.testa")
    try:
        ds = load_dataset(*task.hub)
    except Exception as exc:  # network, cache or Hub errors all mean the same to the user
        raise DataError(f"could not load {task.hub[0]} from the Hub ({exc.__class__.__name__})",
                        "check your connection, or pass --data DIR with the CoNLL eng.train/eng.testa files") from None
    parts = []
    for split in ("train", task.dev_split):
        d = ds[split]
        parts.append(type(d).from_dict({"tokens": d[task.text_columns[0]], "tags": d[task.label_column]}))
    return Splits(parts[0], parts[1], task, f"hub:{task.hub[0]}")


def load_token_splits(task: Task | None, data: str | None, *, max_train_samples: int | None = None,
                      seed: int = 0, text_columns=None, label_column=None):
    """The token kind's reader: read, check both splits are non-empty, cap the train set. Column names are not
    used (token files have fixed columns)."""
    splits = load_token_local(data, task) if data else load_token_hub(task)
    if len(splits.train) == 0 or len(splits.dev) == 0:
        raise DataError(f"'{splits.source}' has an empty train or dev split", "give at least one sentence in each")
    if max_train_samples and max_train_samples < len(splits.train):
        splits.train = splits.train.shuffle(seed=seed).select(range(max_train_samples))
    return splits


# ---- tokenizing and batching -----------------------------------------------------------------------------------

def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """One label per word piece: the word's tag on its first piece, ``-100`` on later pieces and special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE_INDEX if word is None or word == previous else tags[word])
        previous = word
    return labels


def tokenize_tokens(dataset, tokenizer, max_length: int, *, index: bool = False):
    """Tokenize pre-split words (``is_split_into_words``) without padding; ``labels`` aligned by ``align_labels``.

    Words cut off by ``max_length`` are not scored. Needs a fast tokenizer (for ``word_ids``).
    """
    from datasets.utils.logging import disable_progress_bar

    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"token classification needs a fast tokenizer, not {type(tokenizer).__name__}",
                        "use a teacher whose directory has tokenizer.json")
    disable_progress_bar()

    def encode(batch, positions):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        enc["labels"] = [align_labels(enc.word_ids(i), tags) for i, tags in enumerate(batch["tags"])]
        if index:
            enc["idx"] = positions
        return enc

    return dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names)


# ---- predictions -----------------------------------------------------------------------------------------------

def word_predictions(logits, labels) -> list[list[int]]:
    """Per sentence, the argmax tag id at each scored position (first piece of a word): word-level predictions."""
    import numpy as np

    preds = np.asarray(logits).argmax(-1)
    keep = np.asarray(labels) != IGNORE_INDEX
    return [p[k].astype(int).tolist() for p, k in zip(preds, keep, strict=True)]


def word_tags(ids: list[list[int]], names: tuple[str, ...] | list[str]) -> list[list[str]]:
    """Tag ids to tag names, sentence by sentence."""
    return [[names[i] for i in row] for row in ids]
