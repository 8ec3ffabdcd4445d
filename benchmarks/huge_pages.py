"""Fresh-output cost with and without numpy's huge pages: one CPU forward, many calls.

roiviz's CPU kernels write their outputs into memory that numpy allocates, and numpy asks
Linux for transparent huge pages for arrays of 4 MiB and more unless
``NUMPY_MADVISE_HUGEPAGE=0``. This script runs the same forward in two child processes, one
with each setting (read by numpy at import), interleaved ``--repeats`` times, and prints the
distribution of per-call times and the page faults per call (``ru_minflt``)::

    PYTHONPATH=. python benchmarks/huge_pages.py --workload W1 --op "roi_align sr=2"

Where the system gives no huge pages (``/sys/kernel/mm/transparent_hugepage/enabled`` is
``never``) both settings are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch, roiviz
from roiviz.bench import WORKLOADS, make_boxes
workload, op, calls, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
w = WORKLOADS[workload]
x = torch.randn(w.batch, w.channels, w.height, w.width, generator=torch.Generator().manual_seed(0))
boxes = make_boxes(w)
sr = int(op.split("sr=")[1]) if "sr=" in op else None
def call():
    if sr is None:
        return roiviz.roi_pool(x, boxes, w.output_size, w.spatial_scale)
    return roiviz.roi_align(x, boxes, w.output_size, w.spatial_scale, sr)
with torch.no_grad():
    call(); call()
    times, faults = [], []
    for _ in range(calls):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - t0))
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(json.dumps({"times_ms": times, "faults": faults}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W1")
    parser.add_argument("--op", default="roi_align sr=2", choices=["roi_align sr=2", "roi_align sr=-1", "roi_pool"])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import numpy as np

    root = Path(__file__).resolve().parents[1]
    results: dict[str, list[float]] = {"huge pages (numpy default)": [], "NUMPY_MADVISE_HUGEPAGE=0": []}
    faults: dict[str, list[int]] = {k: [] for k in results}
    for _ in range(args.repeats):
        for label, value in (("huge pages (numpy default)", "1"), ("NUMPY_MADVISE_HUGEPAGE=0", "0")):
            env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": value, "PYTHONPATH": str(root)}
            out = subprocess.run([sys.executable, "-c", CHILD, args.workload, args.op, str(args.calls),
                                  str(args.threads)], capture_output=True, text=True, env=env, check=True)
            data = json.loads(out.stdout.strip().splitlines()[-1])
            results[label] += data["times_ms"]
            faults[label] += data["faults"]
    print(f"{args.workload} {args.op}, {args.threads} threads, {args.repeats} x {args.calls} calls per setting")
    for label, times in results.items():
        p = np.percentile(times, [10, 50, 90])
        print(f"  {label:28s} mean {np.mean(times):6.1f} ms  p10 {p[0]:6.1f}  median {p[1]:6.1f}  p90 {p[2]:6.1f}"
              f"  page faults per call {int(np.median(faults[label]))}")


if __name__ == "__main__":
    main()
