"""A real browser shows the Explorer's truth: JupyterLab 4 and Notebook 7 on 127.0.0.1, Chromium.

The test writes a one-cell notebook that shows an Explorer into a temporary folder, serves it
with JupyterLab (then Notebook 7), opens it in Debian's Chromium with Playwright and runs it.
Then it drives the Explorer as a student would -- drags that move the box, resize it by its
corners and edges, a fast drag, a new box, every control, add/remove/switch ROI, stride and
channel, and ``ex.box = ...`` from code -- and after *each* interaction, once settled, compares
what the page shows with the kernel's own state:

- the truth comes from the kernel itself: the test connects its own client to the notebook's
  kernel (its connection file) and executes code that prints the model's state as JSON (box,
  status, raw outputs, colour scale). The expected colours are computed here, in the test,
  with matplotlib's colormap from those raw outputs -- never taken from the page;
- the active box's outline, found in the pixels of ``.roiviz-image`` (its exact colour), must
  lie within half a screen pixel of the model's box times the drawing scale;
- every cell of every strategy panel (canvas pixels at the cell centres) must have exactly the
  expected colour;
- the ``.roiviz-status`` text must equal ``model.status()``.

Zero mismatches are allowed. Screenshots go to pytest's temporary folder, or to the folder in
the environment variable ``ROIVIZ_SCREENSHOTS`` when it is set (``make screenshots``); the
test never writes into the checkout.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package) and the ``playwright`` Python
package; never ``playwright install``. Skipped with the reason when either is missing, except
when the environment variable ``CI`` is set: then it fails. Servers and the browser are stopped
even when the test fails (the server by its process id, with every kernel it started).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic", "--force-color-profile=srgb",
]
START_BOX = (40.0, 30.0, 90.0, 80.0)
CELL = (
    "from roiviz.widgets import Explorer\n"
    f"ex = Explorer('grace_hopper', boxes=[{START_BOX}])\n"
    "ex"
)
# Printed by the kernel on request: the model's state, raw numbers only (no colours).
TRUTH = """
import json as _json
_m, _r = ex.model, ex.model.results
_kind, _lo, _hi = _m.color_scale()
print(_json.dumps({
    "box": list(_m.box), "boxes": [list(b) for b in _m.boxes], "active": _m.active,
    "status": _m.status(), "kind": _kind, "lo": _lo, "hi": _hi, "channel": _m.channel,
    "scale": ex.view.scale, "n": _m.output_size,
    "outputs": {k: v.tolist() for k, v in _r.outputs.items()},
}))
"""
ACTIVE_RGB = (0xFF, 0x3B, 0x30)  # the active box's outline colour (roiviz/static/explorer.js)

pytestmark = pytest.mark.browser


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI (where the browser test is required to run)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (the environment variable CI is set, so the browser test must run)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its kernels: its own process group, by the server's process id."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)  # the server was started in a new session: pgid == pid
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _requirements() -> None:
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")


def _write_notebook(path: Path, source: str) -> None:
    nb = {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb), encoding="utf-8")


def serve(base: Path, app: str, cell: str = CELL) -> Iterator[dict]:
    """A Jupyter server (``jupyterlab``, ``notebook``, or ``explore`` for ``roiviz explore``'s
    Voilà page) on a free port of 127.0.0.1, serving a notebook whose one cell is ``cell``."""
    served = base / "served"
    served.mkdir(exist_ok=True)
    _write_notebook(served / "explorer.ipynb", cell)
    for sub in ("home", "settings", "workspaces", "runtime", "config", "tmp"):
        (base / sub).mkdir(exist_ok=True)
    notification = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false"}), encoding="utf-8")
    port, token = _free_port(), os.urandom(16).hex()
    env = dict(os.environ)
    env.update(
        HOME=str(base / "home"), MPLCONFIGDIR=str(base / "home" / "mpl"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_CONFIG_DIR=str(base / "config"),
        TMPDIR=str(base / "tmp"),  # Voilà writes its kernels' connection files there
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    )
    env.pop("MPLBACKEND", None)
    cmd = [sys.executable, "-m", app, "--no-browser", "--ip=127.0.0.1", f"--port={port}"]
    if app == "explore":  # `roiviz explore`: Voilà on 127.0.0.1
        cmd = [sys.executable, "-m", "roiviz", "explore", "grace_hopper", "--no-browser", f"--port={port}",
               "--box", *(str(v) for v in START_BOX)]
    else:
        cmd += [f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}"]
        if app == "jupyterlab":
            cmd += [f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
                    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
    log = open(base / f"{app}.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{app} exited with {proc.returncode}:\n{(base / f'{app}.log').read_text()}")
            try:
                if app == "explore":  # asking Voilà for a page would start a kernel: only connect
                    socket.create_connection(("127.0.0.1", port), timeout=2).close()
                    break
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} did not answer in 90 s:\n{(base / f'{app}.log').read_text()}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "runtime": base / "runtime", "tmp": base / "tmp", "app": app}
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    _requirements()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    where = os.environ.get("ROIVIZ_SCREENSHOTS")
    folder = Path(where) if where else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------
# The kernel's truth
# ---------------------------------------------------------------------------------------------


class Kernel:
    """Our own client on the notebook's kernel (found through the server's sessions)."""

    def __init__(self, server: dict) -> None:
        from jupyter_client import BlockingKernelClient

        if server["app"] == "explore":  # Voilà: the one kernel of its runtime folder
            files = sorted(server["tmp"].glob("voila_*/kernel-*.json"))
            assert len(files) == 1, f"expected one kernel, got {files}"
            connection = files[0]
        else:
            with urllib.request.urlopen(f"{server['url']}/api/sessions?token={server['token']}", timeout=10) as r:
                sessions = json.load(r)
            assert len(sessions) == 1, f"expected one kernel session, got {sessions}"
            connection = server["runtime"] / f"kernel-{sessions[0]['kernel']['id']}.json"
        self.client = BlockingKernelClient(connection_file=str(connection))
        self.client.load_connection_file()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def run(self, code: str) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.client.execute_interactive(code, timeout=60, output_hook=hook)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    def truth(self) -> dict:
        return json.loads(self.run(TRUTH))

    def close(self) -> None:
        self.client.stop_channels()


def expected_colors(truth: dict, name: str) -> np.ndarray:
    """``n x n x 3`` bytes: the kernel's raw output of ``name`` through the view's colour rule."""
    import matplotlib
    from matplotlib.colors import Normalize

    out = np.asarray(truth["outputs"][name], dtype=np.float32)  # [C, n, n]
    lo, hi = truth["lo"], truth["hi"]
    if truth["kind"] == "rgb":
        v = np.moveaxis(out, 0, -1).astype(np.float64)
        return np.round(np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    shown = out[truth["channel"]] if truth["channel"] >= 0 else out.mean(axis=0, dtype=np.float32)
    rgba = matplotlib.colormaps["viridis"](Normalize(lo, hi)(shown), bytes=True)
    return np.asarray(rgba)[..., :3]


def _pixels(locator) -> np.ndarray:
    """The canvas's own pixels (``getImageData``), ``H x W x 3``; checks that the page shows it
    unscaled (its on-screen size equals its pixel size at device scale 1)."""
    import base64
    import io

    from PIL import Image

    got = locator.evaluate(
        "c => { const r = c.getBoundingClientRect();"
        " return {w: c.width, h: c.height, cw: r.width, ch: r.height, png: c.toDataURL('image/png')}; }")
    assert (got["cw"], got["ch"]) == (got["w"], got["h"]), f"canvas shown scaled: {got['cw']}x{got['ch']} css px"
    png = base64.b64decode(got["png"].split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _edges(mask: np.ndarray, axis: int) -> tuple[float, float]:
    """Centres of the first and last 2-pixel bands of outline colour along ``axis``."""
    counts = mask.sum(axis=axis)
    strong = np.flatnonzero(counts >= 0.5 * counts.max())
    assert len(strong) >= 2, "no box outline found"
    lo = strong[strong <= strong[0] + 2]
    hi = strong[strong >= strong[-1] - 2]
    # A band of columns c..c+1 covers [c, c + 2): its centre is c + 1.
    return float(lo.mean() + 0.5), float(hi.mean() + 0.5)


def mismatches(page, truth: dict) -> list[str]:
    """What differs between the page and the kernel's state (empty: the page tells the truth)."""
    problems = []
    root = page.locator(".roiviz-explorer").first
    text = root.locator(".roiviz-status").inner_text().strip()
    if text != truth["status"]:
        problems.append(f"status {text!r} != {truth['status']!r}")
    pic = _pixels(root.locator(".roiviz-image"))
    mask = (pic == np.array(ACTIVE_RGB, np.uint8)).all(axis=2)
    s = truth["scale"]
    x1, y1, x2, y2 = truth["box"]
    try:
        (left, right), (top, bottom) = _edges(mask, 0), _edges(mask, 1)
        for got, want, what in ((left, x1, "x1"), (right, x2, "x2"), (top, y1, "y1"), (bottom, y2, "y2")):
            if abs(got - want * s) > 0.5:
                problems.append(f"box {what} drawn at {got:.2f} px, model {want} -> {want * s:.2f} px")
    except AssertionError as e:
        problems.append(str(e))
    panels = root.locator("canvas.roiviz-panel-canvas")
    names = [panels.nth(i).get_attribute("data-strategy") for i in range(panels.count())]
    if names != list(truth["outputs"]):
        problems.append(f"panels {names} != strategies {list(truth['outputs'])}")
        return problems
    n = truth["n"]
    for i, name in enumerate(names):
        px = _pixels(panels.nth(i))
        cell = px.shape[0] / n
        if px.shape[0] != px.shape[1] or cell != int(cell):
            problems.append(f"{name}: panel of {px.shape[:2]} px for {n}x{n} cells")
            continue
        centres = (np.arange(n) * int(cell) + int(cell) // 2)
        got = px[centres][:, centres]
        want = expected_colors(truth, name)
        if want.shape != got.shape:
            problems.append(f"{name}: kernel state {truth['kind']} with outputs {want.shape}, page {got.shape}")
            continue
        bad = np.argwhere((got != want).any(axis=2))
        if len(bad):
            r, c = bad[0]
            problems.append(f"{name}: {len(bad)} of {n * n} cells wrong, e.g. [{r}, {c}] {got[r, c]} != {want[r, c]}")
    return problems


def _model_state(truth: dict) -> dict:
    return {k: v for k, v in truth.items() if k != "status"} | {"status": truth["status"].split(" · computed")[0]}


def settle(page, kernel: Kernel, timeout_s: float = 5.0, changed_from: dict | None = None) -> tuple[dict, list[str], float]:
    """Wait until the page has no request in flight (and, with ``changed_from``, until the
    kernel's model has taken the interaction: a control's message may still be on its way),
    then compare with the kernel, retrying until ``timeout_s`` while a frame may still be on its
    way. Returns the truth, the remaining mismatches and the seconds it took."""
    t0 = time.monotonic()
    if changed_from is not None:
        while _model_state(kernel.truth()) == _model_state(changed_from):
            assert time.monotonic() - t0 < 15, "the interaction never reached the kernel's model"
            page.wait_for_timeout(100)
    page.wait_for_function("() => document.querySelector('.roiviz-explorer .roiviz-view')"
                           " && document.querySelector('.roiviz-explorer .roiviz-view').parentElement.dataset.settled === 'true'",
                           timeout=int(timeout_s * 1000) + 10_000)
    truth = kernel.truth()
    while True:
        problems = mismatches(page, truth)
        if not problems or time.monotonic() - t0 > timeout_s:
            return truth, problems, time.monotonic() - t0
        page.wait_for_timeout(100)
        truth = kernel.truth()


# ---------------------------------------------------------------------------------------------
# Driving the Explorer
# ---------------------------------------------------------------------------------------------


class Driver:
    def __init__(self, page, kernel: Kernel) -> None:
        self.page, self.kernel = page, kernel
        self.root = page.locator(".roiviz-explorer").first

    def to_page(self, x: float, y: float, scale: float) -> tuple[float, float]:
        picture = self.root.locator(".roiviz-image")
        picture.evaluate("e => e.scrollIntoView({block: 'center'})")
        bb = picture.bounding_box()
        return bb["x"] + x * scale, bb["y"] + y * scale

    def drag(self, start: tuple[float, float], end: tuple[float, float], steps: int = 12, pause_ms: int = 16) -> None:
        truth = self.kernel.truth()
        a, b = self.to_page(*start, truth["scale"]), self.to_page(*end, truth["scale"])
        m = self.page.mouse
        m.move(*a)
        m.down()
        for i in range(1, steps + 1):
            t = i / steps
            m.move(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
            if pause_ms:
                self.page.wait_for_timeout(pause_ms)
        m.up()
        m.move(5, 5)  # away from the picture: no hover state left

    def select(self, cls: str, label: str) -> None:
        self.root.locator(f".{cls} select").select_option(label=label)

    def click(self, selector: str) -> None:
        self.root.locator(selector).first.click()
        self.page.mouse.move(5, 5)


def interactions(d: Driver) -> list[tuple[str, object]]:
    """At least 20 things a student does, each a callable on the driver."""
    x1, y1, x2, y2 = START_BOX

    def slider_right() -> None:
        # Type into the slider's readout (a keyboard path that works in every frontend).
        readout = d.root.locator(".roiviz-output-size .widget-readout").first
        readout.scroll_into_view_if_needed()
        readout.click()
        d.page.keyboard.press("Control+A")
        d.page.keyboard.type("8")
        d.page.keyboard.press("Enter")
        d.page.mouse.move(5, 5)

    return [
        ("move the box", lambda: d.drag((65, 55), (75, 61))),
        ("resize by the bottom-right corner", lambda: d.drag((x2 + 10, y2 + 6), (x2 + 25, y2 + 20))),
        ("resize by the top-left corner", lambda: d.drag((x1 + 10, y1 + 6), (x1 + 2, y1 - 2))),
        ("resize by the right edge", lambda: d.drag((x2 + 25, 70), (x2 + 14, 70))),
        ("a fast drag", lambda: d.drag((70, 65), (40, 35), steps=3, pause_ms=0)),
        ("draw a new box", lambda: d.drag((5, 100), (45, 124))),
        ("output size 7 -> 8", slider_right),
        ("sampling_ratio adaptive", lambda: d.select("roiviz-sampling-ratio", "adaptive")),
        ("aligned off", lambda: d.click(".roiviz-aligned input")),
        ("hide crop", lambda: d.click(".roiviz-toggle-crop")),
        ("add a ROI", lambda: d.click(".roiviz-add")),
        ("move the new ROI", lambda: d.drag((30, 116), (60, 90))),
        ("switch to ROI 1", lambda: d.select("roiviz-roi", "ROI 1")),
        ("stride 8", lambda: d.select("roiviz-stride", "8")),
        ("drag on the feature map", lambda: d.drag((20, 110), (50, 80))),
        ("channel 5", lambda: d.select("roiviz-channel", "5")),
        ("resize on channel 5", lambda: d.drag((75, 94), (85, 104), steps=8)),
        ("stride 16", lambda: d.select("roiviz-stride", "16")),
        ("channel mean", lambda: d.select("roiviz-channel", "mean of 16")),
        ("sampling_ratio 4", lambda: d.select("roiviz-sampling-ratio", "4")),
        ("show crop again", lambda: d.click(".roiviz-toggle-crop")),
        ("remove a ROI", lambda: d.click(".roiviz-remove")),
        ("stride 1", lambda: d.select("roiviz-stride", "1")),
        ("box from code", lambda: d.kernel.run("ex.box = (12.5, 20.25, 100.0, 77.75)")),
        ("a box pushed past the edge", lambda: d.drag((56, 48), (140, 140), steps=6)),
    ]


WINDOWS = """
import json as _json
from roiviz.widgets import read_windows as _rw
_m, _r = ex.model, ex.model.results
_h, _w = _m.input.shape[-2:]
print(_json.dumps({_n: _rw(_n, _r.box, _m.output_size, _r.spatial_scale, _h, _w, _m.sampling_ratio,
                           _m.aligned).tolist() for _n in _r.outputs}))
"""


def check_hover(page, kernel: Kernel) -> None:
    """Hovering a panel cell names (and highlights) the input cells the kernel says it reads."""
    windows = json.loads(kernel.run(WINDOWS))
    n = len(next(iter(windows.values()))[0])
    for name in ("roi_pool", "roi_align", "adaptive_avg"):
        canvas = page.locator(f".roiviz-explorer canvas.roiviz-panel-canvas[data-strategy='{name}']")
        canvas.scroll_into_view_if_needed()
        bb = canvas.bounding_box()
        i, j = n // 2, n - 1
        page.mouse.move(bb["x"] + (j + 0.5) * bb["width"] / n, bb["y"] + (i + 0.5) * bb["height"] / n)
        r0, r1, c0, c1 = (windows[name][0][i], windows[name][1][i], windows[name][2][j], windows[name][3][j])
        want = (f"reads map rows {r0}..{r1 - 1}, columns {c0}..{c1 - 1}" if r1 > r0 and c1 > c0
                else "reads no cell (zero fill)")
        page.wait_for_function(
            "([sel, want]) => document.querySelector(sel).textContent.includes(want)",
            arg=[".roiviz-explorer .roiviz-hover", f"{name}[{i}, {j}]"], timeout=5000)
        text = page.locator(".roiviz-explorer .roiviz-hover").inner_text()
        assert want in text, f"hover on {name}[{i}, {j}]: {text!r}, kernel: {want!r}"
    page.mouse.move(5, 5)


def open_and_run(page, server: dict) -> None:
    """Open the notebook in JupyterLab or Notebook 7 and run its cell (Shift+Enter)."""
    app = server["app"]
    if app == "explore":
        page.goto(server["url"] + "/")
        page.wait_for_selector(".roiviz-explorer .roiviz-image", timeout=120_000)
        return
    path = "lab/tree" if app == "jupyterlab" else "notebooks"
    page.goto(f"{server['url']}/{path}/explorer.ipynb?token={server['token']}")
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"], .jp-Notebook', timeout=90_000)
    page.wait_for_timeout(1500)  # a fresh server may ignore the first command
    for _ in range(3):
        page.locator(".jp-CodeCell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_selector(".roiviz-explorer .roiviz-image", timeout=60_000)
            return
        except Exception:
            continue
    raise AssertionError("the Explorer did not appear")


@pytest.mark.parametrize("app", ["jupyterlab", "notebook", "explore"])
def test_the_page_shows_the_kernels_truth(app, browser, tmp_path, screenshots) -> None:
    if app == "notebook":
        pytest.importorskip("notebook", minversion="7")
    if app == "explore":
        pytest.importorskip("voila")
    server_gen = serve(tmp_path, app)
    server = next(server_gen)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(60_000)
        open_and_run(page, server)
        kernel = Kernel(server)
        try:
            page.locator(".roiviz-explorer").first.scroll_into_view_if_needed()
            report, failures = [], []
            truth, problems, took = settle(page, kernel)
            assert truth["box"] == list(START_BOX)
            failures += [f"start: {p}" for p in problems]
            steps = interactions(Driver(page, kernel))
            assert len(steps) >= 20
            last = truth
            for what, act in steps:
                act()
                truth, problems, took = settle(page, kernel, changed_from=last)
                report.append(f"{what}: box {truth['box']}, settled in {took:.2f} s")
                failures += [f"{what}: {p}" for p in problems]
                last = truth
            check_hover(page, kernel)
            page.locator(".roiviz-explorer").first.screenshot(path=str(screenshots / f"explorer-{app}.png"))
            print("\n".join(report))
            assert not failures, "the page differs from the kernel:\n" + "\n".join(failures)
        finally:
            kernel.close()
            context.close()
    finally:
        server_gen.close()


def test_status_wraps_at_900_px(browser, tmp_path) -> None:
    server_gen = serve(tmp_path, "jupyterlab")
    server = next(server_gen)
    try:
        context = browser.new_context(viewport={"width": 900, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        open_and_run(page, server)
        status = page.locator(".roiviz-explorer .roiviz-status").first
        status.wait_for()
        page.wait_for_timeout(500)
        fits = status.evaluate("e => e.scrollWidth <= e.clientWidth && e.getBoundingClientRect().right <= window.innerWidth")
        assert fits, "the status line is cut at 900 px"
        assert "cells lost" in status.inner_text()
        context.close()
    finally:
        server_gen.close()


# ---------------------------------------------------------------------------------------------
# The multi-scale (FPN) mode
# ---------------------------------------------------------------------------------------------

FPN_START = (40.0, 40.0, 140.0, 150.0)  # sqrt(w*h) = 104.9: level 2
FPN_CELL = (
    "from roiviz.widgets import Explorer\n"
    f"ex = Explorer('grace_hopper', size=512, levels=(2, 3, 4, 5), boxes=[{FPN_START}])\n"
    "ex"
)
# The kernel's FPN state, raw numbers only: each level's output [C, n, n] and colour range.
FPN_TRUTH = """
import json as _json
_m, _f = ex.model, ex.model.results.fpn
print(_json.dumps({
    "label": _m.fpn_label(), "level": _f.level, "n": _m.output_size,
    "levels": {str(_k): {"out": _f.outputs[_k].tolist(), "scale": list(_m.fpn_color_scale(_k))}
               for _k in _f.levels},
}))
"""


def fpn_mismatches(page, truth: dict) -> list[str]:
    """What the FPN row shows that differs from the kernel: the level line, the chosen column and
    boundary, and every cell of every level's output panel (colours computed here)."""
    import matplotlib
    from matplotlib.colors import Normalize

    problems = []
    root = page.locator(".roiviz-explorer").first
    label = root.locator(".roiviz-fpn-level").inner_text().strip()
    if label != truth["label"]:
        problems.append(f"level line {label!r} != {truth['label']!r}")
    chosen = root.locator(".roiviz-fpn-col.roiviz-fpn-chosen")
    got = [chosen.nth(i).get_attribute("data-level") for i in range(chosen.count())]
    if got != [str(truth["level"])]:
        problems.append(f"chosen columns {got} != level {truth['level']}")
    bound = root.locator(".roiviz-fpn-bound.roiviz-fpn-chosen")
    texts = [bound.nth(i).inner_text() for i in range(bound.count())]
    if len(texts) != 1 or not texts[0].startswith(f"P{truth['level']}: ["):
        problems.append(f"highlighted boundary {texts} for level {truth['level']}")
    n = truth["n"]
    for k, entry in truth["levels"].items():
        px = _pixels(root.locator(f"canvas.roiviz-fpn-panel[data-level='{k}']"))
        cell = px.shape[0] // n
        if px.shape[:2] != (n * cell, n * cell):
            problems.append(f"P{k}: panel of {px.shape[:2]} px for {n}x{n} cells")
            continue
        centres = np.arange(n) * cell + cell // 2
        shown = np.asarray(entry["out"], dtype=np.float32).mean(axis=0, dtype=np.float32)
        want = np.asarray(matplotlib.colormaps["viridis"](Normalize(*entry["scale"])(shown), bytes=True))[..., :3]
        bad = np.argwhere((px[centres][:, centres] != want).any(axis=2))
        if len(bad):
            problems.append(f"P{k}: {len(bad)} of {n * n} cells wrong")
    return problems


def test_fpn_mode_shows_the_kernels_levels(browser, tmp_path, screenshots) -> None:
    """Drag a box through every FPN level: the page names the model's level, marks its column and
    boundary, and every level's panel shows the kernel's roi_align output from that level."""
    server_gen = serve(tmp_path, "jupyterlab", cell=FPN_CELL)
    server = next(server_gen)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(60_000)
        open_and_run(page, server)
        kernel = Kernel(server)
        try:
            d = Driver(page, kernel)
            _, _, x2, y2 = FPN_START
            steps = [
                ("start", None),
                ("grow to P3 by the corner", lambda: d.drag((x2, y2), (200, 220))),
                ("grow to P4 by the corner", lambda: d.drag((200, 220), (330, 340))),
                ("draw a P5 box", lambda: d.drag((8, 8), (505, 505), steps=16)),
                ("mmdetection's rule", lambda: kernel.run("ex.model.level_rule = 'mmdetection'")),
                ("shrink to P2 by the corner", lambda: d.drag((505, 505), (90, 100), steps=16)),
            ]
            failures, levels, last = [], [], None
            for what, act in steps:
                if act is not None:
                    act()
                # A change made in the kernel is there when kernel.run returns (and the rule does not
                # change the main view's state, which changed_from waits for).
                in_kernel = what == "mmdetection's rule"
                truth, problems, _ = settle(page, kernel, changed_from=None if in_kernel else last)
                failures += [f"{what}: {p}" for p in problems]
                t0 = time.monotonic()
                while True:
                    fpn = json.loads(kernel.run(FPN_TRUTH))
                    problems = fpn_mismatches(page, fpn)
                    if not problems or time.monotonic() - t0 > 5:
                        break
                    page.wait_for_timeout(100)
                failures += [f"{what}: {p}" for p in problems]
                levels.append(fpn["level"])
                last = truth
            page.locator(".roiviz-fpn").first.screenshot(path=str(screenshots / "explorer-fpn.png"))
            assert levels == [2, 3, 4, 5, 5, 2], levels  # the drags went where they were meant to
            assert "mmdetection rule" in fpn["label"]
            assert not failures, "the FPN row differs from the kernel:\n" + "\n".join(failures)
        finally:
            kernel.close()
            context.close()
    finally:
        server_gen.close()
