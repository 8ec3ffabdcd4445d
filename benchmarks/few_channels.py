"""Maps of a few channels: read as they are, a channel plane at a time, or channels last.

roiviz's CPU forwards read a map of fewer than ``POOL_PLANES_BELOW`` (roi_pool) or
``ALIGN_PLANES_BELOW`` (roi_align) channels as it is, ``[N, C, H, W]``, a channel plane at a
time; larger maps channels last (a copy of the map, or of each ROI's cells). This script times
both ways on the same inputs, in the same process, alternating (best of ``--repeats`` blocks),
for a few channel counts and three geometries (a teaching picture, a larger map with
mid-sized boxes, a 512x512 picture with large boxes), and prints the two times per op::

    PYTHONPATH=. python benchmarks/few_channels.py --channels 1 3 4 6 8 15

``--grad`` times roi_pool's forward with an input that requires grad (its argmax is kept).
Both ways give the same numbers bit for bit (``tests/test_ops_paths.py``).
"""

from __future__ import annotations

import argparse
import timeit
from functools import partial

import torch

import roiviz
from roiviz.bench import cpu_id, cpu_model
from roiviz.ops import _numba

#: (height, width, boxes, spatial_scale, output size)
GEOMETRIES = [(64, 64, 8, 1.0, 7), (256, 256, 64, 0.5, 7), (512, 512, 32, 1.0, 14)]


def best_us(fn, calls: int, repeats: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=calls, repeat=repeats)) / calls * 1e6


def read_planes(on: bool) -> None:
    """Every channel count read a plane at a time (``on``), or none."""
    _numba.ALIGN_PLANES_BELOW = _numba.POOL_PLANES_BELOW = 1 << 30 if on else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3, 4, 6, 8, 15])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--grad", action="store_true", help="roi_pool with an input that requires grad")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()} ({cpu_id()}), {args.threads} threads, torch {torch.__version__}; microseconds per call, "
          "planes / channels last")
    saved = _numba.ALIGN_PLANES_BELOW, _numba.POOL_PLANES_BELOW
    gen = torch.Generator().manual_seed(0)
    try:
        for height, width, k, scale, size in GEOMETRIES:
            for c in args.channels:
                x = torch.randn(1, c, height, width, generator=gen, requires_grad=args.grad)
                xy = torch.rand(k, 2, generator=gen) * (height / scale) * 0.6
                wh = torch.rand(k, 2, generator=gen) * (height / scale) * 0.4 + 4
                boxes = torch.cat([torch.zeros(k, 1), xy, xy + wh], 1)
                calls = max(5, int(20000 / (height * width * c / 4096 + 10)))
                ops = {"roi_pool": partial(roiviz.roi_pool, x, boxes, size, scale)}
                if not args.grad:
                    ops = {"roi_align sr=2": partial(roiviz.roi_align, x, boxes, size, scale, 2, True),
                           "roi_align sr=-1": partial(roiviz.roi_align, x, boxes, size, scale, -1, True), **ops}
                cells = []
                for name, fn in ops.items():
                    times = []
                    for on in (True, False):
                        read_planes(on)
                        with torch.set_grad_enabled(args.grad):
                            times.append(best_us(fn, calls, args.repeats))
                    cells.append(f"{name} {times[0]:7.0f} / {times[1]:7.0f}")
                print(f"{height}x{width}, {k} boxes, {c:2d} channels: " + " | ".join(cells), flush=True)
    finally:
        _numba.ALIGN_PLANES_BELOW, _numba.POOL_PLANES_BELOW = saved


if __name__ == "__main__":
    main()
