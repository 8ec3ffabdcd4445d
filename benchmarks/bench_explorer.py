"""How long one box change takes in the Explorer, drawing included.

Sets ``explorer.box`` to a sequence of varied boxes on a 128x128 photo, with all seven
strategies shown, and times the whole synchronous update: validation, every strategy's output,
the status line, the in-place artist updates and the Agg drawing (``backend="agg"``: the same
figure and drawing code as with ipympl, without a browser to send the pixels to). Three paths:

- ``drag``: an update while the mouse drags (``model.dragging = True``): outputs, map, panels,
  status and drawing; the metrics table waits for the release;
- ``settled``: an update with the metrics too (a release, a slider, ``explorer.box = ...``);
- ``inline``: ``settled`` plus encoding the PNG the inline fallback shows.

Run::

    .venv/bin/python benchmarks/bench_explorer.py            # 128x128, stride 1, 200 boxes
    .venv/bin/python benchmarks/bench_explorer.py --stride 8 --boxes 100 --figure explorer.png

It prints median and 90th percentile per path (milliseconds) and, with ``--profile``, the top
functions of a cProfile run of the settled path.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from roiviz.images import sample_image
from roiviz.widgets import Explorer


def random_boxes(n: int, size: int, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """``n`` boxes of varied position, size (4 to 90 % of the side) and aspect ratio, in the image."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        w, h = rng.uniform(0.04, 0.9, 2) * size
        x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        boxes.append((round(x1, 1), round(y1, 1), round(x1 + w, 1), round(y1 + h, 1)))
    return boxes


def time_updates(explorer: Explorer, boxes: list, desc: str, png: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Wall and CPU time (ms) of ``explorer.box = b`` for each box: compute and redraw, all synchronous.

    CPU time (``time.process_time``) is reported too because this machine is shared: under
    load the wall time also counts the time spent waiting for a core.
    """
    wall, cpu = [], []
    for box in tqdm(boxes, desc=desc, leave=False):
        t0, c0 = time.perf_counter(), time.process_time()
        explorer.box = box
        if png:
            explorer.png()  # what the inline fallback sends
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if explorer.model.error:
            raise RuntimeError(explorer.model.error)
    return np.array(wall) * 1e3, np.array(cpu) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="image side (default: 128)")
    p.add_argument("--stride", type=int, default=1, choices=(1, 2, 4, 8, 16))
    p.add_argument("--output-size", type=int, default=7)
    p.add_argument("--boxes", type=int, default=200, help="box changes per path (default: 200)")
    p.add_argument("--figure", type=Path, help="save the Explorer's last frame as PNG here")
    p.add_argument("--profile", action="store_true", help="print a cProfile of the settled path")
    args = p.parse_args(argv)

    explorer = Explorer(sample_image("grace_hopper", args.size), backend="agg", stride=args.stride,
                        output_size=args.output_size)
    boxes = random_boxes(args.boxes, args.size)
    warm = random_boxes(10, args.size, seed=1)
    time_updates(explorer, warm, "warm-up")

    results = {}
    explorer.model.dragging = True
    results["drag"] = time_updates(explorer, boxes, "drag")
    explorer.model.dragging = False
    results["settled"] = time_updates(explorer, boxes, "settled")
    compute_ms = []
    for box in boxes[:50]:
        explorer.box = box
        compute_ms.append(explorer.model.results.elapsed_ms)
    results["inline"] = time_updates(explorer, boxes[:50], "inline", png=True)

    print(f"Explorer box change: {args.size}x{args.size} grace_hopper, stride {args.stride}, "
          f"{len(explorer.model.strategies)} strategies, output {args.output_size}x{args.output_size}, "
          f"{args.boxes} varied boxes, full draws {explorer.draw_count}, partial redraws {explorer.blit_count}")
    for name, (wall, cpu) in results.items():
        print(f"  {name:8s} wall median {np.median(wall):6.1f} ms  p90 {np.percentile(wall, 90):6.1f} ms"
              f"   cpu median {np.median(cpu):6.1f} ms  p90 {np.percentile(cpu, 90):6.1f} ms   (n={len(wall)})")
    print(f"  of which computing (outputs + metrics), settled: median {np.median(compute_ms):.1f} ms wall")
    if args.figure:
        args.figure.write_bytes(explorer.png())
        print(f"  last frame: {args.figure}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        time_updates(explorer, boxes[:50], "profile")
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
