"""A/B of two commits' CPU forwards, in alternating processes on the same machine.

A kernel change that moves a forward by 5-15 % is lost in the noise of two ``roiviz bench``
runs made minutes apart on a shared VM. This script checks out both commits (``git worktree``,
in a temporary folder, removed at the end), then times the full ``roiviz.roi_align`` (sr=2 and
-1) and ``roiviz.roi_pool`` forwards of W1 and W3, called as ``roiviz bench`` calls them
(fresh outputs, as a user's calls get), in one process per commit, alternating the two
``--rounds`` times, and prints each round's 10th percentiles (which other tenants' load on a
shared VM moves least) and the median of the rounds' new/old ratios::

    PYTHONPATH=. python benchmarks/ab_forward.py 6917f88 HEAD --threads 1 2 --rounds 3

Each process warms up first (the first call of a checkout compiles its kernels, then they are
cached in its ``__pycache__``). Run it from the repository, in an environment with roiviz's
dependencies; both commits must have ``roiviz.bench`` with its op table (``_roiviz_plain``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: Timed in each process: the 10th percentile of ``calls`` forwards (ms), per workload and op.
_CHILD = r"""
import json, statistics, sys, time
import torch
from roiviz import bench
torch.set_num_threads(int(sys.argv[1]))
calls = int(sys.argv[2])
times = {}
for name in ("W1", "W3"):
    wl = bench.WORKLOADS[name]
    x, b = bench.make_input(wl), bench.make_boxes(wl)
    for op in ("roi_align sr=2", "roi_align sr=-1", "roi_pool"):
        op_fn = bench._roiviz_plain(op)  # the calls roiviz bench times under these names
        fn = lambda: op_fn(x, b, wl.output_size, wl.spatial_scale)
        fn(); fn()
        ts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t0)
            del out
        times[f"{name} {op}"] = statistics.quantiles(ts, n=10)[0] * 1e3
print(json.dumps(times))
"""


def run(tree: Path, threads: int, calls: int) -> dict[str, float]:
    """The times (ms) of one process of the checkout ``tree``."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(threads), str(calls)], cwd=tree, check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="the commit to compare against")
    parser.add_argument("new", help="the commit under test")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="old/new process pairs per thread count")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per op in a process")
    args = parser.parse_args()

    repo = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True,
                               text=True).stdout.strip())
    from roiviz.bench import cpu_id, cpu_model

    print(f"{cpu_model()} ({cpu_id()}); ms, 10th percentile of {args.calls} calls; old {args.old}, new {args.new}")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        try:
            for label, rev in (("old", args.old), ("new", args.new)):
                trees[label] = Path(tmp) / label
                subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q", str(trees[label]), rev],
                               check=True)
            for label in trees:  # compile both checkouts' kernels before anything is timed
                run(trees[label], 1, 2)
            for threads in args.threads:
                ratios: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    old = run(trees["old"], threads, args.calls)
                    new = run(trees["new"], threads, args.calls)
                    cells = []
                    for key in old:
                        ratios.setdefault(key, []).append(new[key] / old[key])
                        cells.append(f"{key} {old[key]:.2f} -> {new[key]:.2f}")
                    print(f"{threads} thread(s), round {r + 1}: " + "; ".join(cells))
                print(f"{threads} thread(s), new/old, median of the rounds: "
                      + "; ".join(f"{k} {statistics.median(v):.3f}" for k, v in ratios.items()))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)


if __name__ == "__main__":
    main()
