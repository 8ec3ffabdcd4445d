"""Large maps: a forward reading each ROI's cells from the map itself, or a channels-last copy.

roiviz's CPU forwards read a map of 4 MiB or more a ROI's cells at a time when the cells its
ROIs cover add up to at most ``REGION_RATIO`` (4) times the map's, else a channels-last copy
of the whole map (``roiviz.ops._numba.forward_input``). This script times both on W3's map
(``[2, 256, 100, 136]``, 14x14, scale 1/8) with more and more boxes an image, in one process,
blocks of calls alternating between the two, and prints the 10th percentile and median (ms) of
each, with the ratio of the ROIs' cells to the map's::

    PYTHONPATH=. python benchmarks/region_vs_copy.py --threads 1 --boxes 10 25 50 100 200

Both give the same numbers bit for bit (``tests/test_ops_paths.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from functools import partial

import torch

import roiviz
from roiviz.bench import WORKLOADS, cpu_id, cpu_model, make_boxes, make_input
from roiviz.ops import _numba


def read_regions(on: bool) -> None:
    """Every large map read a ROI's cells at a time (``on``), or always through the copy."""
    _numba.REGION_RATIO, _numba.REGION_MIN_BYTES = (math.inf, 0) if on else (0.0, math.inf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, nargs="+", default=[10, 25, 50, 100, 200], help="boxes an image")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--blocks", type=int, default=6, help="blocks of calls per way and op")
    parser.add_argument("--calls", type=int, default=6, help="calls a block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()} ({cpu_id()}), {args.threads} threads, torch {torch.__version__}; "
          "ms, 10th percentile / median, regional | copy")
    saved = _numba.REGION_RATIO, _numba.REGION_MIN_BYTES
    try:
        for per_image in args.boxes:
            w = dataclasses.replace(WORKLOADS["W3"], boxes_per_image=per_image)
            x, boxes = make_input(w), make_boxes(w)
            total, _ = _numba.region_cells(boxes.numpy(), w.spatial_scale, w.height, w.width)
            ops = {"roi_align sr=2": partial(roiviz.roi_align, x, boxes, w.output_size, w.spatial_scale, 2, True),
                   "roi_align sr=-1": partial(roiviz.roi_align, x, boxes, w.output_size, w.spatial_scale, -1, True),
                   "roi_pool": partial(roiviz.roi_pool, x, boxes, w.output_size, w.spatial_scale)}
            times: dict[tuple[str, bool], list[float]] = {(name, on): [] for name in ops for on in (True, False)}
            with torch.no_grad():
                for block in range(args.blocks):
                    for name, fn in ops.items():
                        for on in ((True, False) if block % 2 else (False, True)):
                            read_regions(on)
                            fn()
                            for _ in range(args.calls):
                                start = time.perf_counter()
                                fn()
                                times[(name, on)].append((time.perf_counter() - start) * 1e3)
            cells = []
            for name in ops:
                pair = []
                for on in (True, False):
                    t = sorted(times[(name, on)])
                    pair.append(f"{t[len(t) // 10]:.1f}/{t[len(t) // 2]:.1f}")
                cells.append(f"{name} {pair[0]} | {pair[1]}")
            ratio = total / (w.batch * w.height * w.width)
            print(f"{per_image:3d} boxes an image (cells {ratio:4.2f}x the map): " + "; ".join(cells), flush=True)
    finally:
        _numba.REGION_RATIO, _numba.REGION_MIN_BYTES = saved


if __name__ == "__main__":
    main()
