"""report.html in headless Chromium (DevTools protocol over a pipe): no console errors, no requests leaving the
page, every plot drawn and visible, and the numbers in the table equal to those in report.json.

Skipped when /usr/bin/chromium is absent (CI installs Debian's ``chromium``).
"""

import base64
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from distill.report.render import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--mute-audio",
         "--remote-debugging-pipe", "--window-size=1280,900"]
TIMEOUT = 20.0  # seconds per call


def full_report() -> dict:
    """A report with every optional part: KL, backends, history, per-layer pruning, predictions."""
    teacher = [i % 2 for i in range(40)]
    stages = [("teacher", 0.9, 1.0, 1.0, 0.0, 1000, 4.0, {"torch": 20.0}),
              ("student", 0.85, 0.85 / 0.9, 0.9, 0.12, 300, 1.2, {"torch": 5.0}),
              ("pruned", 0.84, 0.84 / 0.9, 0.88, 0.15, 150, 0.6, {"torch": 3.0}),
              ("int8", 0.83, 0.83 / 0.9, 0.87, 0.17, 150, 0.2, {"onnxruntime": 1.25})]
    rows = [{"name": n, "metric": m, "retention": r, "agreement": a, "kl_to_teacher": kl, "params": p,
             "size_mb": s, "latency_ms": next(iter(lat.values())), "latencies_ms": lat, "path": n,
             "metrics": {"accuracy": m}} for n, m, r, a, kl, p, s, lat in stages]
    epochs = [{"epoch": e, "step": 10 * e, "loss": 1.0 / e, "ce": 0.6 / e, "kd": 0.3 / e, "hidden": 0.1 / e,
               "dev_accuracy": 0.7 + 0.05 * e} for e in (1, 2, 3)]
    flip = [1 - t if i % 7 == 0 else t for i, t in enumerate(teacher)]
    return {"task": "sst2", "metric_name": "accuracy", "stages": rows, "latency_seq": 128, "latency_threads": 2,
            "latency_runs": 30, "stage_seconds": {"distil": 3.2, "prune": 1.5}, "wall_seconds": 6.1,
            "history": {"student": epochs, "pruned": epochs[:1],
                        "prune_report": {"params_before": 300, "params_after": 150, "per_layer": [
                            {"layer": i, "heads": 1, "ffn": 256, "heads_before": 2, "ffn_before": 512}
                            for i in range(2)]}},
            "settings": {"seed": 1, "student": "tiny"},
            "predictions": {"teacher": teacher, "student": flip, "pruned": flip, "int8": teacher}}


class CDP:
    """A minimal DevTools client over Chromium's --remote-debugging-pipe (fd 3 in, fd 4 out, NUL-separated)."""

    def __init__(self, user_dir: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen([str(CHROMIUM), *FLAGS, f"--user-data-dir={user_dir}"], preexec_fn=wire,
                                     pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf, self._id, self.events, self.deadline = b"", 0, [], 0.0

    def _read(self) -> dict:
        """The next message from the browser."""
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """Call a method and return its result; events that arrive meanwhile are kept in ``events``."""
        self._id += 1
        self.deadline = time.monotonic() + TIMEOUT
        msg = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """Block until an event named ``method`` arrives (or was already seen)."""
        self.deadline = time.monotonic() + TIMEOUT
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read())
        return next(e for e in self.events if e.get("method") == method)

    def close(self) -> None:
        """Close the browser and the pipes."""
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


PAGE_PROBE = """JSON.stringify({
  html: document.documentElement.outerHTML,
  images: [...document.images].map(img => {
    const r = img.getBoundingClientRect();
    return {id: img.closest('figure') ? img.closest('figure').id : '', complete: img.complete,
            natural: img.naturalWidth, x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
  })})"""


def load_page(cdp: CDP, path: Path) -> dict:
    """Open ``path`` in a fresh tab; return the rendered DOM, image boxes, errors, requests and a screenshot fn."""
    target = cdp.send("Target.createTarget", url="about:blank")["targetId"]
    session = cdp.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable", session)
    cdp.events.clear()
    cdp.send("Page.navigate", session, url=path.as_uri())
    cdp.wait_for("Page.loadEventFired")
    probe = json.loads(cdp.send("Runtime.evaluate", session, expression=PAGE_PROBE, returnByValue=True,
                                awaitPromise=True)["result"]["value"])
    events = [e for e in cdp.events if e.get("sessionId") == session]
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    requests = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]

    def shot(box: dict) -> bytes:
        clip = {k: box[k] for k in ("x", "y")} | {"width": box["w"], "height": box["h"], "scale": 1}
        data = cdp.send("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
        return base64.b64decode(data["data"])

    return {**probe, "errors": errors, "requests": requests, "shot": shot}


class Cells(HTMLParser):
    """Collect ``(row's data-stage, data-key) -> (data-value, text)`` from the stage table."""

    def __init__(self) -> None:
        super().__init__()
        self.cells, self._stage, self._cell, self._text = {}, None, None, ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-stage" in a:
            self._stage = a["data-stage"]
        elif tag == "td" and self._stage and "data-key" in a:
            self._cell, self._text = (a["data-key"], a["data-value"]), ""

    def handle_data(self, data):
        if self._cell:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell:
            key, value = self._cell
            self.cells[(self._stage, key)] = (json.loads(value), self._text)
            self._cell = None
        elif tag == "table":
            self._stage = None


@pytest.fixture(scope="module")
def browser():
    user_dir = tempfile.mkdtemp(prefix="distill-chromium-")
    cdp = CDP(user_dir)
    yield cdp
    cdp.close()
    shutil.rmtree(user_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    (out / "env.json").write_text(json.dumps({"python": "3.11", "packages": {"torch": "2.13.0"}}))
    write_report(out, full_report())
    return load_page(browser, out / "report.html"), json.loads((out / "report.json").read_text())


def test_no_console_errors_and_no_requests_leave_the_page(page):
    result, _ = page
    assert result["errors"] == []
    assert all(url.startswith(("file:", "data:")) for url in result["requests"]), result["requests"]


def test_every_plot_is_drawn_and_visible(page):
    from PIL import Image

    result, _ = page
    figures = {img["id"]: img for img in result["images"]}
    assert set(figures) == {"plot-pareto", "plot-training", "plot-pruning", "plot-confusion"}
    for name, img in figures.items():
        assert img["complete"] and img["natural"] > 200 and img["w"] > 200 and img["h"] > 150, (name, img)
        shot = Image.open(io.BytesIO(result["shot"](img))).convert("RGB")
        colours = shot.getcolors(maxcolors=1 << 20)
        ink = sum(n for n, rgb in colours if sum(rgb) < 600) / (shot.width * shot.height)
        assert len(colours) > 30 and ink > 0.02, (name, len(colours), ink)


def test_table_numbers_equal_report_json(page):
    result, data = page
    parser = Cells()
    parser.feed(result["html"])
    cells = parser.cells
    teacher_ms = data["stages"][0]["latency_ms"]
    for stage in data["stages"]:
        name = stage["name"]
        for key in ("metric", "retention", "agreement", "kl_to_teacher", "params", "size_mb", "speedup"):
            assert cells[(name, key)][0] == stage[key], (name, key)
        for backend, ms in stage["latencies_ms"].items():
            assert cells[(name, f"latency_{backend}_ms")] == (ms, f"{ms:.2f}")
        assert cells[(name, "metric")][1] == f"{stage['metric']:.4f}"
        assert cells[(name, "retention")][1] == f"{stage['retention']:.1%}"
        assert cells[(name, "kl_to_teacher")][1] == f"{stage['kl_to_teacher']:.4f}"
        assert cells[(name, "params")][1] == f"{stage['params']:,}"
        assert cells[(name, "size_mb")][1] == f"{stage['size_mb']:.2f}"
        assert cells[(name, "speedup")][1] == f"{teacher_ms / stage['latency_ms']:.1f}×"
    assert "torch" in result["html"] and "2.13.0" in result["html"]  # the environment section


def test_the_checker_sees_errors_and_outside_requests(browser, tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    result = load_page(browser, bad)
    assert any("boom" in json.dumps(e) for e in result["errors"])
    assert any(url.startswith("http://127.0.0.1:9/") for url in result["requests"])
