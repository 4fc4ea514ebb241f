"""Rebuild the embedded demo data (``distill/data/demo/sst2-demo``) from the full GLUE files in ../shared/data.

    python experiments/data/make_demo.py [--shared ../shared/data]

SST-2: 2,000 training rows drawn without replacement with ``random.Random(SEED)`` (kept in file order, bytes
unchanged) plus the whole 872-row dev set. The output is deterministic; the sha256 of each file is printed so a
rebuild can be compared with the committed copy.
"""

from __future__ import annotations

import argparse
import hashlib
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SEED = 13
N_TRAIN = 2000


def sample_lines(path: Path, n: int, seed: int) -> list[str]:
    """The header and ``n`` data lines of ``path`` drawn with ``seed``, in their original order."""
    header, *rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [header] + [rows[i] for i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    out = ROOT / "distill" / "data" / "demo" / "sst2-demo"
    out.mkdir(parents=True, exist_ok=True)
    src = args.shared / "SST-2"
    (out / "train.tsv").write_text("".join(sample_lines(src / "train.tsv", N_TRAIN, SEED)), encoding="utf-8")
    (out / "dev.tsv").write_bytes((src / "dev.tsv").read_bytes())
    for name in ("train.tsv", "dev.tsv"):
        data = (out / name).read_bytes()
        rows = data.count(b"\n") - 1
        print(f"{name}: {rows} rows, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
