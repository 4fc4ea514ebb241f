"""Rebuild distill/data/demo/wikitext-2-demo from WikiText-2 raw (../shared/data/wikitext-2-raw).

train.txt: the first TRAIN_ARTICLES whole articles of wiki.valid.raw; dev.txt: the first DEV_ARTICLES whole
articles of wiki.test.raw (articles start at top-level `` = Title = `` lines; each file is a byte-identical prefix of
its source, so its sha256 identifies it). Prints the sha256 and sizes for the README.

    python experiments/data/make_wikitext_demo.py [SOURCE_DIR]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from distill.data.lm import split_wikitext

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "distill" / "data" / "demo" / "wikitext-2-demo"
TRAIN_ARTICLES, DEV_ARTICLES = 6, 3


def prefix(path: Path, articles: int) -> str:
    """The file's text up to the start of article ``articles + 1`` (the leading blank line included)."""
    text = path.read_text(encoding="utf-8")
    first = split_wikitext(text)[articles]  # the next article, which the prefix stops before
    return text[:text.index(first)]


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "wikitext-2-raw"
    OUT.mkdir(parents=True, exist_ok=True)
    for name, source, count in (("train.txt", "wiki.valid.raw", TRAIN_ARTICLES), ("dev.txt", "wiki.test.raw",
                                                                                 DEV_ARTICLES)):
        text = prefix(src / source, count)
        (OUT / name).write_text(text, encoding="utf-8")
        data = text.encode("utf-8")
        print(f"{name}: {count} articles of {source}, {len(data):,} bytes, {text.count(chr(10)):,} lines, "
              f"sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
