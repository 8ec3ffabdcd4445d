"""Forward (and forward+backward) time of prroi_pool against roi_align (sampling_ratio=2), W1 and W3.

Both ops in one process, calls interleaved (roi_align, prroi_pool, roi_align, ...), medians and
their ratio; the CPU model, torch threads and the load average are printed with them, because
the machine these run on may be shared. Both in the strategy convention (``aligned=True``).

    PYTHONPATH=. python benchmarks/bench_prroi.py [--reps 15] [--threads 2] [--backward]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import roiviz
from roiviz.bench import WORKLOADS, cpu_model, make_boxes, make_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--backward", action="store_true", help="also time forward+backward (input and boxes)")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W3"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # roiviz's kernels use as many threads as torch
    ops = {
        "roi_align sr=2": lambda x, b, w: roiviz.roi_align(x, b, w.output_size, w.spatial_scale, 2, True),
        "prroi_pool": lambda x, b, w: roiviz.prroi_pool(x, b, w.output_size, w.spatial_scale, aligned=True),
    }
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} thread(s); "
          f"ROIVIZ_KERNELS={os.environ.get('ROIVIZ_KERNELS', 'numba')}; load before: {os.getloadavg()}")
    for name in args.workloads:
        w = WORKLOADS[name]
        x, boxes = make_input(w), make_boxes(w)
        modes = ["fwd", "fwd+bwd"] if args.backward else ["fwd"]
        for mode in modes:
            times: dict[str, list[float]] = {op: [] for op in ops}
            for rep in range(args.reps + 2):  # two warm-up rounds (numba loads its cache, pages fault in)
                for op, fn in ops.items():
                    xi = x.detach().requires_grad_(mode != "fwd")
                    bi = boxes.detach().requires_grad_(mode != "fwd" and op == "prroi_pool")
                    start = time.perf_counter()
                    out = fn(xi, bi, w)
                    if mode != "fwd":
                        out.sum().backward()
                    elapsed = time.perf_counter() - start
                    del out
                    if rep >= 2:
                        times[op].append(elapsed)
            med = {op: statistics.median(t) * 1e3 for op, t in times.items()}
            print(f"{name} {mode} ({w.n_rois} ROIs, {w.channels} ch, {w.output_size}x{w.output_size}, "
                  f"{args.reps} reps): " + ", ".join(f"{op} {m:.1f} ms" for op, m in med.items())
                  + f"; prroi_pool / roi_align = {med['prroi_pool'] / med['roi_align sr=2']:.2f}")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
