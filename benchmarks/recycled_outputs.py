"""What recycling outputs is worth: each CPU op with and without it, in the same process.

roiviz's CPU ops take their large outputs from ``roiviz.ops._common.output_empty``, which
reuses the memory of an earlier output that nothing refers to any more. Fresh memory is a new
``mmap`` whose first write faults in every 4 KiB page. This script times a loop of forwards
(``no_grad``, as ``roiviz bench`` does) on the benchmark workloads with recycling off
(``RECYCLE_SLOTS = 0``) and on, interleaved over rounds, and counts the minor page faults per
call (``ru_minflt``). Whether fresh memory faults depends on the C allocator's state, so the
fault count is printed next to the time.

    python benchmarks/recycled_outputs.py            # W1 and W3
    python benchmarks/recycled_outputs.py --rounds 5 --calls 20 --workloads W3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

import roiviz
from roiviz.bench import WORKLOADS, make_boxes
from roiviz.ops import _common

OPS = {
    "roi_align sr=2": lambda x, b, wl: roiviz.roi_align(x, b, wl.output_size, wl.spatial_scale, 2, True),
    "roi_align sr=-1": lambda x, b, wl: roiviz.roi_align(x, b, wl.output_size, wl.spatial_scale, -1, True),
    "roi_pool": lambda x, b, wl: roiviz.roi_pool(x, b, wl.output_size, wl.spatial_scale),
}


def time_calls(call, calls: int) -> tuple[float, float]:
    """Median ms per call and minor page faults per call over ``calls`` calls (after two warm-ups)."""
    call()
    call()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return statistics.median(times) * 1e3, faults / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W3"], choices=["W1", "W3"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    slots = _common.RECYCLE_SLOTS
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median ms per forward "
          f"(minor page faults per call), best round of {args.rounds}")
    for name in args.workloads:
        wl = WORKLOADS[name]
        boxes = make_boxes(wl)
        x = torch.randn(wl.batch, wl.channels, wl.height, wl.width, generator=torch.Generator().manual_seed(0))
        for op, fn in OPS.items():
            best: dict[int, tuple[float, float]] = {}
            for _ in range(args.rounds):
                for n_slots in (0, slots):  # interleaved: a change in load hits both alike
                    _common.RECYCLE_SLOTS = n_slots
                    roiviz.clear_workspace()
                    with torch.no_grad():
                        ms, faults = time_calls(lambda: fn(x, boxes, wl), args.calls)  # noqa: B023 (called now)
                    if n_slots not in best or ms < best[n_slots][0]:
                        best[n_slots] = (ms, faults)
            _common.RECYCLE_SLOTS = slots
            (off, off_faults), (on, on_faults) = best[0], best[slots]
            print(f"{name} {op:16s} fresh {off:6.1f} ms ({off_faults:6.0f})   recycled {on:6.1f} ms "
                  f"({on_faults:4.0f})   ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
