"""Raw text for causal language modelling: read documents, tokenize, pack into fixed-size blocks.

Sources: a folder (``train.txt``/``dev.txt``, ``.raw`` or ``.jsonl``; WikiText's ``wiki.{train,valid,test}.raw``), a
single file (every 10th document becomes dev), or jsonl rows with a text field. Documents are found where the
format marks them:

- WikiText (``.raw``/``.txt`` with lines like `` = Title = ``): an article starts at each top-level heading line
  (`` = = Section = = `` lines stay inside their article). The split is lossless: the documents joined give the
  file back, so tokenizing them one by one matches tokenizing the file except at the article seams.
- other text files: paragraphs separated by one or more blank lines (each stripped of outer whitespace);
- jsonl: one document per row (``{"text": ...}``; empty texts are skipped).

Packing (``pack_blocks``): every document is tokenized without special tokens (no BOS: raw text is scored as
raw text) and followed by the tokenizer's EOS, which marks the boundary. ``boundaries="eos"`` concatenates the
documents and cuts the stream into blocks of ``block_size`` (a block may span two documents, with the EOS between
them: the usual pre-training layout, no token wasted); ``boundaries="split"`` cuts each document on its own so no
block crosses a boundary (its last block is padded). Rows have ``input_ids``, ``attention_mask`` and ``labels``
(= ``input_ids``, -100 on padding; the model shifts labels itself), as ``datasets.Dataset``.

Imports torch-free; ``datasets`` is imported inside the functions that build datasets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from distill.core.errors import ConfigError, DataError, ModelError

IGNORE_INDEX = -100
TEXT_SUFFIXES = (".txt", ".raw", ".jsonl")
SPLIT_STEMS = {
    "train": ("train", "wiki.train"),
    "dev": ("dev", "validation", "valid", "wiki.valid"),
    "test": ("test", "wiki.test"),
}
BOUNDARIES = ("eos", "split")
_WIKI_HEADING = re.compile(r"^ = [^=].* = $")  # top-level WikiText heading; " = = Section = = " does not match
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n?")
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass
class LMSplits:
    """Packed train and dev blocks plus where they came from; ``note`` says when a fallback chose the files."""

    train: object  # datasets.Dataset
    dev: object
    files: dict[str, Path]
    block_size: int
    note: str = ""
    stats: dict[str, int] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"text file '{path}' does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read text file '{path}' ({exc.__class__.__name__})",
                        "give a UTF-8 text file") from None
    if not text.strip():
        raise DataError(f"text file '{path}' is empty", "give a file with some text in it")
    return text


def is_wikitext(text: str) -> bool:
    """Whether the text has WikiText's top-level `` = Title = `` heading lines."""
    return any(_WIKI_HEADING.match(line) for line in text.split("\n"))


def split_wikitext(text: str) -> list[str]:
    """WikiText articles: a new document at each top-level heading line; joining the result gives ``text``."""
    starts, offset = [0], 0
    for line in text.split("\n"):
        if _WIKI_HEADING.match(line) and offset > 0:
            starts.append(offset)
        offset += len(line) + 1
    bounds = starts + [len(text)]
    docs = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [d for d in docs if d.strip()]


def split_paragraphs(text: str) -> list[str]:
    """Documents separated by blank lines, each stripped of surrounding whitespace."""
    return [p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n")) if p.strip()]


def read_jsonl_documents(path: Path, text_field: str = "text") -> list[str]:
    """One document per jsonl row: the string in ``text_field``; rows with empty text are skipped."""
    docs = []
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"line {number} of '{path}' is not valid JSON", "write one JSON object per line") from None
        if not isinstance(row, dict) or text_field not in row:
            raise DataError(f"line {number} of '{path}' has no '{text_field}' field",
                            "name the text field with --text-column")
        if not isinstance(row[text_field], str):
            raise DataError(f"'{text_field}' on line {number} of '{path}' is not a string",
                            "store the text as a string")
        if row[text_field].strip():
            docs.append(row[text_field])
    if not docs:
        raise DataError(f"'{path}' has no non-empty '{text_field}' texts", "give rows with some text")
    return docs


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """The documents of one file, split as its format marks them (module docstring)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl_documents(path, text_field)
    text = _read_text(path)
    return split_wikitext(text) if is_wikitext(text) else split_paragraphs(text)


def eos_token_id(tokenizer) -> int:
    """The tokenizer's EOS id, which marks document boundaries; one-line error when it has none."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(f"the tokenizer '{name}' has no EOS token, which marks where documents end",
                         "use a causal-LM tokenizer, or set tokenizer.eos_token before packing")
    return int(eos)


def context_length(config) -> int | None:
    """The longest sequence the model's positions cover (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_block_size(block_size: int, config=None) -> None:
    """A block size must be at least 2 tokens and fit the model's context (when the config says what it is)."""
    if not isinstance(block_size, int) or block_size < 2:
        raise ConfigError(f"block size {block_size!r} is too small", "pass --block-size of at least 2 tokens")
    limit = context_length(config) if config is not None else None
    if limit is not None and block_size > limit:
        raise ConfigError(f"block size {block_size} is above the model's context of {limit} tokens",
                          f"pass --block-size {limit} or less")


def tokenize_documents(documents: Sequence[str], tokenizer) -> list[list[int]]:
    """Token ids of each document, without special tokens (no BOS/EOS added by the tokenizer)."""
    if not documents:
        return []
    encoded = tokenizer(list(documents), add_special_tokens=False, verbose=False)
    return [list(ids) for ids in encoded["input_ids"]]


def token_stream(documents: Sequence[str], tokenizer, *, eos: bool = True) -> list[int]:
    """All documents' tokens in order, each followed by EOS when ``eos`` (what perplexity slides over)."""
    end = [eos_token_id(tokenizer)] if eos else []
    stream: list[int] = []
    for ids in tokenize_documents(documents, tokenizer):
        stream.extend(ids)
        stream.extend(end)
    return stream


def _cut(ids: list[int], block_size: int, pad_id: int, drop_last: bool) -> list[tuple[list[int], int]]:
    """Consecutive blocks of ``ids`` as (padded ids, real length); a short last block padded or dropped."""
    blocks = []
    for start in range(0, len(ids), block_size):
        chunk = ids[start:start + block_size]
        if len(chunk) < block_size:
            if drop_last or len(chunk) < 2:
                break
            chunk = chunk + [pad_id] * (block_size - len(chunk))
            blocks.append((chunk, len(ids) - start))
        else:
            blocks.append((chunk, block_size))
    return blocks


def pack_blocks(doc_ids: Sequence[Sequence[int]], block_size: int, eos_id: int, *, boundaries: str = "eos",
                drop_last: bool = True, pad_id: int | None = None) -> dict[str, list[list[int]]]:
    """Columns ``input_ids``/``attention_mask``/``labels`` of ``block_size`` blocks (see the module docstring).

    ``drop_last`` drops the stream's (``eos``) short final block; with ``split`` every document's remainder is
    padded (with ``pad_id``, else EOS) and masked, since dropping it would lose each document's end.
    """
    if boundaries not in BOUNDARIES:
        raise ConfigError(f"unknown document-boundary mode '{boundaries}'", f"choose one of: {', '.join(BOUNDARIES)}")
    check_block_size(block_size)
    pad = eos_id if pad_id is None else pad_id
    if boundaries == "eos":
        stream = [t for ids in doc_ids for t in (*ids, eos_id)]
        blocks = _cut(stream, block_size, pad, drop_last)
    else:
        blocks = [b for ids in doc_ids for b in _cut([*ids, eos_id], block_size, pad, drop_last=False)]
    columns: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
    for ids, real in blocks:
        columns["input_ids"].append(ids)
        columns["attention_mask"].append([1] * real + [0] * (block_size - real))
        columns["labels"].append(ids[:real] + [IGNORE_INDEX] * (block_size - real))
    return columns


def lm_dataset(documents: Sequence[str], tokenizer, block_size: int, *, boundaries: str = "eos",
               drop_last: bool = True, source: str = "the text"):
    """A ``datasets.Dataset`` of packed blocks from documents; an error when not even one block comes out."""
    from datasets import Dataset

    eos = eos_token_id(tokenizer)
    doc_ids = tokenize_documents(documents, tokenizer)
    columns = pack_blocks(doc_ids, block_size, eos, boundaries=boundaries, drop_last=drop_last,
                          pad_id=getattr(tokenizer, "pad_token_id", None))
    if not columns["input_ids"]:
        total = sum(len(ids) + 1 for ids in doc_ids)
        raise DataError(f"{source} gives {total} tokens, fewer than one block of {block_size}",
                        "give more text or a smaller --block-size")
    return Dataset.from_dict(columns)


def find_lm_files(folder: Path) -> tuple[dict[str, Path], str]:
    """``{"train": ..., "dev": ...}`` files in a folder, and a note when a fallback picked them.

    Names: ``train``, ``dev``/``validation``/``valid``, ``test`` (WikiText's ``wiki.*`` too) with ``.txt``,
    ``.raw`` or ``.jsonl``. Without a train file but with a validation and a test file (the WikiText-2 copy here,
    whose train split is missing), train on validation and evaluate on test.
    """
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        for stem in stems:
            hit = next((folder / f"{stem}{s}" for s in TEXT_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)
            if hit is not None:
                found[split] = hit
                break
    if "train" in found and ("dev" in found or "test" in found):
        return {"train": found["train"], "dev": found.get("dev", found.get("test"))}, ""
    if "dev" in found and "test" in found:
        note = f"no train file in '{folder}': training on {found['dev'].name}, evaluating on {found['test'].name}"
        return {"train": found["dev"], "dev": found["test"]}, note
    names = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise DataError(f"'{folder}' has no train and dev text files (it has: {names})",
                    "name them train.txt and dev.txt (or .raw/.jsonl)")


def load_lm_splits(source: Path | str, tokenizer, block_size: int, *, config=None, text_field: str = "text",
                   boundaries: str = "eos") -> LMSplits:
    """Packed train/dev blocks from a folder or a single file (every 10th document of a file becomes dev)."""
    check_block_size(block_size, config)
    eos_token_id(tokenizer)
    path = Path(source).expanduser()
    if path.is_dir():
        files, note = find_lm_files(path)
        docs = {split: read_documents(p, text_field) for split, p in files.items()}
    elif path.is_file():
        all_docs = read_documents(path, text_field)
        if len(all_docs) < 2:
            raise DataError(f"'{path}' holds one document, too few to hold out a dev part",
                            "give a folder with train and dev files, or a file with several documents")
        docs = {"train": [d for i, d in enumerate(all_docs) if i % 10 != 9] or all_docs[:-1],
                "dev": [d for i, d in enumerate(all_docs) if i % 10 == 9] or all_docs[-1:]}
        files, note = {"train": path, "dev": path}, f"every 10th document of {path.name} is held out as dev"
    else:
        raise DataError(f"text source '{path}' does not exist", "pass a folder of train/dev text files or one file")
    data = {split: lm_dataset(d, tokenizer, block_size, boundaries=boundaries, source=f"'{files[split].name}'")
            for split, d in docs.items()}
    stats = {f"{split}_documents": len(d) for split, d in docs.items()}
    stats.update({f"{split}_blocks": len(ds) for split, ds in data.items()})
    return LMSplits(train=data["train"], dev=data["dev"], files=files, block_size=block_size, note=note, stats=stats)


def sampled_windows(ids: list[int], window: int, count: int | None) -> tuple[list[int], int]:
    """``count`` evenly spaced non-overlapping windows of ``ids`` concatenated (all when None), and how many the
    stream holds."""
    total = len(ids) // window
    if not count or count >= total:
        return ids, total
    step = total / count
    starts = [int(i * step) * window for i in range(count)]
    return [t for s in starts for t in ids[s:s + window]], total
