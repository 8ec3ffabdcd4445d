"""How fast the Explorer answers a drag in a real browser, and how many bytes an update costs.

Serves a one-cell notebook with an Explorer in JupyterLab on 127.0.0.1, opens it in Debian's
Chromium (Playwright), and drags the box with the mouse:

- **pointer move -> panels repainted**: for each pointer move whose box the kernel answers, the
  time from the input event (``event.timeStamp``) to the first animation frame after the panels
  were repainted from the kernel's answer (kernel compute and both message trips included;
  moves superseded while a request was in flight are dropped by design: latest wins);
  split into: waiting for a request in flight, the round trip (browser -> server -> kernel ->
  server -> browser), drawing, and the wait for the next animation frame;
- **settle after a fast drag**: mouse-up -> the last frame painted (metrics included);
- **bytes per update message**: every message the kernel's view sent during the drags
  (JSON + binary buffers), measured in the kernel on the widget's comm;
- the kernel's own compute time per box (``results.elapsed_ms``) and its whole handling of a
  box message (compute, frame, send).

Not a test: it prints numbers. Run::

    .venv/bin/python benchmarks/bench_explorer.py              # 6 slow drags, 6 fast drags
    .venv/bin/python benchmarks/bench_explorer.py --drags 10 --stride 8

It reuses the server and kernel helpers of ``tests/test_browser.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_browser as tb  # noqa: E402

RECORD = """
_sizes = []
_send = ex.view.comm.send
def _recording_send(data=None, metadata=None, buffers=None, **kw):
    _sizes.append(len(__import__('json').dumps(data, default=str)) + sum(memoryview(b).nbytes for b in (buffers or [])))
    return _send(data=data, metadata=metadata, buffers=buffers, **kw)
ex.view.comm.send = _recording_send
_elapsed = []
ex.model.observe(lambda c: _elapsed.append(c['new'].elapsed_ms) if c['new'] is not None else None, 'results')
_handled = []  # ms from a box message's arrival to the frame sent (compute + payload + send)
_on_msg = ex._on_msg
def _timed_on_msg(*a, **kw):
    _t = __import__('time').perf_counter()
    _on_msg(*a, **kw)
    _handled.append((__import__('time').perf_counter() - _t) * 1e3)
ex.view._msg_callbacks.callbacks[:] = [_timed_on_msg]
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drags", type=int, default=6, help="slow drags and fast drags each (default: 6)")
    p.add_argument("--stride", type=int, default=1, choices=(1, 8, 16))
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="roiviz-bench-"))
    gen = tb.serve(base, "jupyterlab")
    server = next(gen)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1).new_page()
            tb.open_and_run(page, server)
            kernel = tb.Kernel(server)
            if args.stride != 1:
                kernel.run(f"ex.model.stride = {args.stride}")
            kernel.run(RECORD)
            d = tb.Driver(page, kernel)
            state = "document.querySelector('.roiviz-view').parentElement.__roiviz"
            page.evaluate(f"() => {{ {state}.latencies.length = 0; {state}.settles.length = 0; }}")
            for k in range(args.drags):  # slow drags: one move per 30 ms, as a hand does
                dx = 20 if k % 2 == 0 else -20
                d.drag((65 if dx > 0 else 85, 55), (65 + dx if dx > 0 else 65, 70), steps=30, pause_ms=30)
                tb.settle(page, kernel)
            slow = page.evaluate(f"() => {state}.latencies.slice()")
            trips = page.evaluate(f"() => {state}.trips.slice()")
            page.evaluate(f"() => {{ {state}.settles.length = 0; }}")
            for k in range(args.drags):  # fast drags: moves as fast as the browser takes them
                dx = 25 if k % 2 == 0 else -25
                d.drag((65 if dx > 0 else 90, 55), (90 if dx > 0 else 65, 60), steps=10, pause_ms=0)
                tb.settle(page, kernel)
            settles = page.evaluate(f"() => {state}.settles.slice()")
            sizes = json.loads(kernel.run("print(__import__('json').dumps(_sizes))"))
            elapsed = json.loads(kernel.run("print(__import__('json').dumps(_elapsed))"))
            handled = json.loads(kernel.run("print(__import__('json').dumps(_handled))"))
            kernel.close()
            browser.close()
    finally:
        gen.close()

    def stats(a: list[float]) -> str:
        a = np.asarray(a, dtype=float)
        return f"median {np.median(a):6.1f}  p90 {np.percentile(a, 90):6.1f}  max {a.max():6.1f}  (n={len(a)})"

    print(f"Explorer in JupyterLab + Chromium, 128x128 photo, stride {args.stride}, output 7x7, "
          f"every strategy; CPU: {cpu_model()}")
    print(f"  pointer move -> panels repainted, ms : {stats(slow)}")
    print(f"  settle after a fast drag (mouse-up), ms: {stats(settles)}")
    for part, what in (("queued", "waiting for the request in flight"), ("trip", "round trip to the kernel"),
                       ("draw", "drawing the frame"), ("paint", "frame arrived -> painted")):
        print(f"    {what:37s}: {stats([t[part] for t in trips if part in t])}")
    print(f"  kernel compute per box, ms           : {stats(elapsed)}")
    print(f"  kernel: box message -> frame sent, ms: {stats(handled)}")
    print(f"  bytes per update message             : {stats(sizes)}  (limit 16384)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
