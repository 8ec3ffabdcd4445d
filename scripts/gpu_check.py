"""The measuring half of ``scripts/gpu_check.sh``: roiviz on CUDA against torchvision, one JSON and a figure.

In one process, on the first CUDA device:

1. **exact**: on W1 and W3, roiviz's CUDA forward and input gradient against torchvision's
   *CPU* kernels (whose float order :mod:`roiviz.reference` follows): bit-identical or not, and
   the largest difference; torchvision's CUDA kernels likewise, for comparison.
2. **determinism**: each op's input gradient computed five times: bit-identical or not (roiviz's
   Triton backward is deterministic; torchvision's uses floating-point atomics).
3. **bench**: :func:`roiviz.bench.run_benchmark` on W1 and W3 with ``device="cuda"`` (CUDA
   events, warm-up, interleaved rounds, medians): every op and strategy of
   :data:`roiviz.STRATEGIES`, forward and forward+backward, roiviz against torchvision; then
   the three ROI ops again inside ``roiviz.trusted_boxes()`` (no box value checks, which read
   the boxes on the host), to show what the kernels alone cost.

Writes ``gpu-check-<date>.json`` and ``gpu-check-<date>.png`` into ``--out`` and prints the
issue-14 targets (ratios roiviz / torchvision, same run) with met / not met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import torch

import roiviz
from roiviz import bench
from roiviz.ops import _triton

ROI_OPS = ["roi_align sr=2", "roi_align sr=-1", "roi_pool"]


def _grad(fn, x, boxes, wl, g):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg, boxes, wl.output_size, wl.spatial_scale)
    return out.detach(), torch.autograd.grad(out, xg, g)[0]


def exactness(workloads: list[str], device: str) -> list[dict]:
    """Device results of roiviz and torchvision against torchvision's CPU kernels (reference order)."""
    rows = []
    for name in workloads:
        wl = bench.WORKLOADS[name]
        x, boxes = bench.make_input(wl), bench.make_boxes(wl)
        for op in ROI_OPS:
            tv = bench._torchvision_op(op)
            if tv is None:
                continue
            out_cpu = tv(x, boxes, wl.output_size, wl.spatial_scale)
            g = torch.randn(out_cpu.shape, generator=torch.Generator().manual_seed(2))
            out_cpu, grad_cpu = _grad(tv, x, boxes, wl, g)
            for impl, fn in (("roiviz", bench._roiviz_plain(op)), ("torchvision", tv)):
                out, grad = _grad(fn, x.to(device), boxes.to(device), wl, g.to(device))
                rows.append({
                    "workload": name, "op": op, "impl": impl, "device": device, "against": "torchvision cpu",
                    "forward_bit_identical": bool(torch.equal(out.cpu(), out_cpu)),
                    "forward_max_abs_diff": float((out.cpu() - out_cpu).abs().max()),
                    "grad_bit_identical": bool(torch.equal(grad.cpu(), grad_cpu)),
                    "grad_max_abs_diff": float((grad.cpu() - grad_cpu).abs().max()),
                })
    return rows


def determinism(workloads: list[str], device: str, runs: int = 5) -> list[dict]:
    """Is each op's input gradient the same, bit for bit, over ``runs`` runs?"""
    rows = []
    for name in workloads:
        wl = bench.WORKLOADS[name]
        x, boxes = bench.make_input(wl, device=device), bench.make_boxes(wl, device=device)
        for op in ROI_OPS:
            for impl, fn in (("roiviz", bench._roiviz_plain(op)), ("torchvision", bench._torchvision_op(op))):
                if fn is None:
                    continue
                shape = fn(x, boxes, wl.output_size, wl.spatial_scale).shape
                g = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(device)
                grads = [_grad(fn, x, boxes, wl, g)[1] for _ in range(runs)]
                rows.append({
                    "workload": name, "op": op, "impl": impl, "runs": runs,
                    "bit_identical": all(torch.equal(grads[0], other) for other in grads[1:]),
                    "max_abs_diff": max(float((grads[0] - other).abs().max()) for other in grads[1:]),
                })
    return rows


def figure(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roiviz.viz import plot_timings

    rows = result["bench"]["rows"]
    names = sorted({r["workload"] for r in rows})
    fig, axes = plt.subplots(len(names), 1, figsize=(12, 4.5 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        plot_timings(ax, [r for r in rows if r["workload"] == name], group="op", hue=("impl", "pass"),
                     title=f"{name}: median ms per call (log scale)")
    env = result["environment"]
    fig.suptitle(f"roiviz vs torchvision on {env['device_name'] or env['cpu_model']}, {env['date_utc']} "
                 f"(torch {env['torch']}, torchvision {env['torchvision']}, triton {result['triton']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _same(identical: bool, diff: float) -> str:
    return "bit-identical" if identical else f"differ by up to {diff:.3g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the JSON and the figure")
    p.add_argument("--workloads", nargs="+", default=["W1", "W3"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=0.1)
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try this script out (quick workloads)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: torch sees no CUDA device", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    result: dict = {"triton": triton_version, "triton_kernels_used": _triton.available()}
    result["exact"] = exactness(args.workloads, args.device)
    result["determinism"] = determinism(args.workloads, args.device)
    plain = bench.run_benchmark(args.workloads, device=args.device, rounds=args.rounds,
                                min_run_time=args.min_run_time, progress=False, quick=args.device != "cuda")
    trusted = bench.run_benchmark(args.workloads, ROI_OPS, device=args.device, rounds=args.rounds,
                                  min_run_time=args.min_run_time, progress=False, trusted=True,
                                  quick=args.device != "cuda")
    result["environment"] = plain.environment
    result["bench"] = plain.to_dict()
    result["bench_trusted_boxes"] = trusted.to_dict()
    result["seconds"] = round(time.perf_counter() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu-check-{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    figure(result, args.out / f"{stem}.png")

    print(plain.table())
    print("\nwith roiviz.trusted_boxes():")
    print(trusted.table())
    for r in result["exact"]:
        print(f"exact {r['workload']} {r['op']:<16} {r['impl']:<12} vs torchvision cpu: "
              f"forward {_same(r['forward_bit_identical'], r['forward_max_abs_diff'])}, "
              f"grad {_same(r['grad_bit_identical'], r['grad_max_abs_diff'])}")
    for r in result["determinism"]:
        print(f"determinism {r['workload']} {r['op']:<16} {r['impl']:<12} {r['runs']} backward runs: "
              f"{_same(r['bit_identical'], r['max_abs_diff'])}")
    for label, res in (("", plain), (" (trusted boxes)", trusted)):
        for key, t in res.to_dict()["targets"].items():
            print(f"target{label} {key}: ratio {t['ratio']:.3f} (target <= {t['target']:g}): "
                  f"{'met' if t['met'] else 'NOT met'}")
    print(f"wrote {args.out / stem}.json and .png in {result['seconds']} s on {plain.environment['device_name'] or 'cpu'} "
          f"(roiviz {roiviz.__version__}, triton kernels used: {result['triton_kernels_used']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
