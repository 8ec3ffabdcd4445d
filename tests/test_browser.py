"""A real browser drives the Explorer: JupyterLab on 127.0.0.1, Debian's Chromium, Playwright.

The test serves a *copy* of ``notebooks/02_explore_the_strategies.ipynb`` from a temporary folder
(so JupyterLab's autosave can never touch the committed notebook), opens it in Chromium, runs all
cells, then with the mouse drags the bottom-right corner of the ROI on the explorer's ipympl
canvas and moves the output-size slider, and asserts that:

- the ``.roiviz-status`` line shows the new box;
- the strategy panels were redrawn (their pixels changed) and the metrics table changed;
- the output-size slider's readout and the panels follow the slider.

It saves a screenshot of the explorer to ``docs/screenshots/explorer.png`` (shown in the README).

Data coordinates are mapped to screen pixels with the figure's own transform: the Explorer's
layout is fixed (``canvas.resizable = False``, ``figsize``/``dpi`` and ``subplots_adjust`` set in
:class:`roiviz.widgets.Explorer`), so an identical Explorer built here (inline backend, Agg) gives
``image_ax.transData`` in figure pixels, which the canvas's bounding box scales to the page.

Needs ``/usr/bin/chromium`` (Debian's ``chromium`` package) and the ``playwright`` Python package;
never ``playwright install``. Skipped with the reason when either is missing, except when the
environment variable ``CI`` is set: then it fails. The server and the browser are stopped even
when the test fails (the server by its process id, with every kernel it started).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_explore_the_strategies.ipynb"
SCREENSHOT = ROOT / "docs" / "screenshots" / "explorer.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
BOX_RE = re.compile(r"box \(x1, y1, x2, y2\) = \(([-\d.]+), ([-\d.]+), ([-\d.]+), ([-\d.]+)\)")

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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """JupyterLab on a free port of 127.0.0.1 with a token, its own folders, serving a copy of notebook 2."""
    if not Path(CHROMIUM).is_file():
        _unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        _unavailable("jupyterlab is not installed")

    base = tmp_path_factory.mktemp("lab")
    served = base / "served"
    served.mkdir()
    shutil.copy(NOTEBOOK, served / NOTEBOOK.name)
    for sub in ("home", "settings", "workspaces", "runtime", "config"):
        (base / sub).mkdir()
    # No "get notified about Jupyter news?" toast over the explorer (and no network fetch).
    notification = base / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}), encoding="utf-8")
    port, token = _free_port(), os.urandom(16).hex()
    env = dict(os.environ)
    env.update(
        HOME=str(base / "home"), MPLCONFIGDIR=str(base / "home" / "mpl"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"), JUPYTER_CONFIG_DIR=str(base / "config"),
        PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
    )
    env.pop("MPLBACKEND", None)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={served}",
        f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # Lab refuses to run as root without it
    log = open(base / "server.log", "wb")  # closed in the finally below
    proc = subprocess.Popen(cmd, cwd=served, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{(base / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer in 60 s:\n{(base / 'server.log').read_text()}")
            time.sleep(0.3)
        yield {"url": url, "token": token, "notebook": NOTEBOOK.name, "log": base / "server.log"}
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def page(lab: dict) -> Iterator[object]:
    """A Chromium page (1280x1000, scale 1) on the notebook; browser closed whatever happens."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            pg = context.new_page()
            pg.set_default_timeout(60_000)
            pg.goto(f"{lab['url']}/lab/tree/{lab['notebook']}?token={lab['token']}&reset")
            pg.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=90_000)
            yield pg
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------
# Helpers on the page
# ---------------------------------------------------------------------------------------------


def _n_code_cells() -> int:
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    return sum(c["cell_type"] == "code" for c in nb["cells"])


def _prompts(pg) -> list[str]:
    return pg.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent.trim())")


def _command(pg, command: str, menu: str) -> None:
    """Run a JupyterLab menu command: open ``menu`` in the menu bar, click the item by its id."""
    pg.click(f'.lm-MenuBar-itemLabel:text-is("{menu}")')
    pg.click(f'li.lm-Menu-item[data-command="{command}"]')


def _until(pg, condition: str, timeout_ms: int, retry, what: str) -> None:
    """Wait for the page ``condition``; if it does not come, call ``retry()`` once and wait again.

    On a fresh server JupyterLab sometimes ignores a command (seen for Clear All and Run All, and
    once, in 8 runs, a Run All that stalled midway): one retry, then fail with the prompts.
    """
    for attempt in range(2):
        try:
            pg.wait_for_function(condition, timeout=timeout_ms)
            return
        except Exception as err:
            status = pg.locator(".jp-Notebook-ExecutionIndicator").first.get_attribute("data-status")
            if attempt == 1:
                raise AssertionError(f"{what}: prompts {_prompts(pg)}, kernel {status}") from err
            print(f"{what} (prompts {_prompts(pg)}, kernel {status}); trying once more")
            pg.wait_for_timeout(1000)
            retry()


def _run_all(pg) -> None:
    """Clear every output, then Run All, and wait until every cell has run."""
    prompts = "[...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
    cleared = f"() => !{prompts}.some(e => /\\[\\d+\\]/.test(e.textContent))"
    started = f"() => {prompts}.some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"
    # Done when every code cell shows a number (not [*], not empty).
    done = f"() => {{ const p = {prompts}; return p.length === {_n_code_cells()} && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }}"

    def clear_all() -> None:
        _command(pg, "editmenu:clear-all", "Edit")

    def run_all() -> None:
        _command(pg, "runmenu:run-all", "Run")

    pg.wait_for_timeout(1000)
    clear_all()  # the stored prompts [1]..[n] must go, or "ran" would prove nothing
    _until(pg, cleared, 5000, clear_all, "Clear All had no effect")
    run_all()
    _until(pg, started, 5000, run_all, "Run All did not start")
    _until(pg, done, 120_000, run_all, "Run All did not finish")
    pg.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    errors = pg.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert errors.count() == 0, "a cell wrote to stderr:\n" + "\n".join(errors.all_inner_texts())


def _status_box(pg) -> tuple[float, float, float, float]:
    text = pg.locator(".roiviz-explorer .roiviz-status").first.inner_text()
    m = BOX_RE.search(text)
    assert m, f"the status line shows no box: {text!r}"
    return tuple(float(v) for v in m.groups())  # type: ignore[return-value]


def _wait_status_box(pg, expected: tuple[float, ...], tol: float, timeout_s: float = 15) -> tuple[float, ...]:
    deadline = time.monotonic() + timeout_s
    box = _status_box(pg)
    while time.monotonic() < deadline:
        box = _status_box(pg)
        if all(abs(a - b) <= tol for a, b in zip(box, expected, strict=True)):
            return box
        pg.wait_for_timeout(200)
    return box


def _canvas_pixels(pg):
    """The explorer's figure as the page shows it, as an RGB numpy array."""
    import numpy as np
    from PIL import Image

    png = pg.locator(".roiviz-explorer .jupyter-matplotlib-canvas-div").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _figure_geometry():
    """``data_to_fig(x, y) -> (px, py)`` in figure pixels from the top-left, the figure size, and
    the x (figure pixels) where the picture's axes end (the panels are right of it)."""
    from roiviz.widgets import Explorer

    ex = Explorer("grace_hopper", backend="inline")  # the notebook's first explorer, same layout
    ex.figure.canvas.draw()  # applies the image's equal aspect to the axes position
    width, height = ex.figure.bbox.width, ex.figure.bbox.height
    trans = ex.image_ax.transData

    def data_to_fig(x: float, y: float) -> tuple[float, float]:
        px, py = trans.transform((x, y))
        return float(px), float(height - py)

    return data_to_fig, (width, height), float(ex.image_ax.get_window_extent().x1)


def _changed_fraction(before, after, x0: int) -> float:
    """Fraction of pixels right of ``x0`` (the strategy panels) that differ."""
    a, b = before[:, x0:], after[:, x0:]
    assert a.shape == b.shape
    return float((abs(a - b).sum(axis=2) > 30).mean())


# ---------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------


def test_drag_roi_corner_and_move_slider_in_jupyterlab(page) -> None:
    pg = page
    _run_all(pg)
    explorer = pg.locator(".roiviz-explorer").first
    explorer.scroll_into_view_if_needed()
    overlay = explorer.locator(".jupyter-matplotlib-canvas-div canvas").nth(1)  # takes mouse events
    overlay.wait_for(state="visible")
    pg.wait_for_timeout(1000)  # let the front-end draw the first image

    x1, y1, x2, y2 = _status_box(pg)
    assert (x1, y1, x2, y2) == (40.0, 30.0, 90.0, 80.0), "notebook 2 ends with the box on the face"
    data_to_fig, (fig_w, fig_h), panels_x0 = _figure_geometry()
    bb = overlay.bounding_box()
    assert bb and bb["width"] > 100, f"the canvas has no size: {bb}"
    sx, sy = bb["width"] / fig_w, bb["height"] / fig_h

    def to_page(x: float, y: float) -> tuple[float, float]:
        fx, fy = data_to_fig(x, y)
        return bb["x"] + fx * sx, bb["y"] + fy * sy

    metrics_before = explorer.locator("div.roiviz-metrics").inner_text()
    pixels_before = _canvas_pixels(pg)

    # Drag the bottom-right corner handle from (90, 80) to (110, 104) in image pixels.
    target = (110.0, 104.0)
    start, end = to_page(x2, y2), to_page(*target)
    pg.mouse.move(*start)
    pg.mouse.down()
    for i in range(1, 16):
        t = i / 15
        pg.mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
        pg.wait_for_timeout(20)
    pg.wait_for_timeout(150)  # ipympl throttles mouse moves: let the last one arrive before release
    pg.mouse.up()

    # One screen pixel is about half an image pixel here; allow one and a half.
    expected = (x1, y1, *target)
    box = _wait_status_box(pg, expected, tol=1.5)
    assert all(abs(a - b) <= 1.5 for a, b in zip(box, expected, strict=True)), (
        f"after the drag the status shows {box}, expected about {expected}"
    )
    pg.wait_for_function(
        "before => document.querySelector('.roiviz-explorer div.roiviz-metrics').innerText !== before",
        arg=metrics_before, timeout=15_000,
    )
    pg.wait_for_timeout(1000)  # the canvas image follows the model through one more round trip
    pixels_dragged = _canvas_pixels(pg)
    x0 = int(panels_x0 * sx)
    assert _changed_fraction(pixels_before, pixels_dragged, x0) > 0.02, "the strategy panels did not change"

    # Move the output-size slider one step with the keyboard: 7 -> 8 bins per side.
    slider = explorer.locator(".roiviz-output-size")
    assert slider.locator(".widget-readout").inner_text().strip() == "7"
    metrics_dragged = explorer.locator("div.roiviz-metrics").inner_text()
    slider.locator(".noUi-handle").first.click()
    pg.keyboard.press("ArrowRight")
    pg.wait_for_function(
        "() => document.querySelector('.roiviz-explorer .roiviz-output-size .widget-readout')"
        ".textContent.trim() === '8'",
        timeout=15_000,
    )
    pg.wait_for_function(
        "before => document.querySelector('.roiviz-explorer div.roiviz-metrics').innerText !== before",
        arg=metrics_dragged, timeout=15_000,
    )
    pg.wait_for_timeout(1000)
    pixels_slid = _canvas_pixels(pg)
    assert _changed_fraction(pixels_dragged, pixels_slid, x0) > 0.02, "the panels did not follow the slider"
    assert _status_box(pg) == box, "moving the slider must not move the box"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    explorer.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
