"""Docs build: screenshot a real run's report.html with headless Chromium for the README (never drawn by hand).

    python experiments/docs/build_screenshot.py runs/sst2-tiny experiments/docs/report.png [HEIGHT]

The README's ``experiments/docs/report.png`` comes from the real MiniLM-L6 -> mini SST-2 run (see
experiments/README.md): ``distill report RUN`` then this script at height 2200 (table, plots and confusion
matrices; the PNG stays under 400 KB).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2000) -> Path:
    """Render ``html`` (a file) to ``png`` at the given window size."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="distill-docs-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png.resolve()}", html.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return png


if __name__ == "__main__":
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else "experiments/docs/report.png")
    height = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    print(screenshot(run_dir / "report.html", out, height=height))
