"""The unlabelled text of general distillation (``--general-data PATH``), read into passages; torch-free, so the
setting checks its path when a config is built (before the run writes anything).

A file is read with ``distill.data.lm``'s readers: jsonl rows (``{"text": ...}``) are passages; WikiText files
(`` = Title = `` heading lines) give one passage per paragraph line, headings dropped; other text files give
paragraphs separated by blank lines. A folder gives its ``train`` file when it has one (``train.txt``, WikiText's
``wiki.train.raw``, ...), else every ``.txt``/``.raw``/``.jsonl`` file in it (the WikiText-2 copy here has only
``wiki.valid.raw`` and ``wiki.test.raw``: both are read, neither labels anything a task scores).
"""

from __future__ import annotations

from pathlib import Path

from distill.core.errors import DataError
from distill.data.lm import (
    SPLIT_STEMS,
    TEXT_SUFFIXES,
    is_wikitext,
    read_jsonl_documents,
    split_paragraphs,
)

FIX = "give a UTF-8 text file or a folder of .txt/.raw/.jsonl files, or --general-data task"


def general_files(path: str | Path) -> list[Path]:
    """The text files ``path`` names (see the module docstring); DataError when there are none."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"--general-data '{path}' does not exist", FIX)
    for stem in SPLIT_STEMS["train"]:
        train = [path / f"{stem}{s}" for s in TEXT_SUFFIXES if (path / f"{stem}{s}").is_file()]
        if train:
            return train[:1]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"--general-data '{path}' holds no .txt, .raw or .jsonl file", FIX)
    return files


def _passages(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        try:
            return read_jsonl_documents(path)
        except DataError:
            return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--general-data cannot read '{path}' ({exc.__class__.__name__})", FIX) from None
    if is_wikitext(text):
        lines = (line.strip() for line in text.split("\n"))
        return [line for line in lines if line and not (line.startswith("=") and line.endswith("="))]
    return split_paragraphs(text)


def read_passages(path: str | Path) -> list[str]:
    """Every passage of the general text, in file order; DataError when there is no text at all."""
    passages = [p for f in general_files(path) for p in _passages(f)]
    if not passages:
        raise DataError(f"--general-data '{path}' holds no text", FIX)
    return passages


def check_general_data(path: str | Path) -> None:
    """Refuse a missing path, a folder without text files, or files without text (one line, exit 2)."""
    for f in general_files(path):
        if _passages(f):
            return
    raise DataError(f"--general-data '{path}' holds no text", FIX)
