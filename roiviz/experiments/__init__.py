"""Does the choice of ROI strategy matter? Train a small mask head per strategy and compare.

Mask R-CNN (He et al. 2017, Table 2c/2d) found that RoIAlign beats RoIWarp and RoIPool on mask
AP, and by more at stride 32 than at stride 16. This package reruns that comparison on a CPU,
for every strategy in :data:`roiviz.STRATEGIES`, on a synthetic dataset where sub-pixel
positions are known exactly (:mod:`.data`), with a frozen pretrained backbone and one small
head per strategy (:mod:`.model`, :mod:`.train`), and shows the result as a table and a bar
chart (:mod:`.report`).

From the command line::

    roiviz experiment --quick                 # stride 16, one seed, about 30 s
    roiviz experiment --json results.json     # strides 16 and 32, three seeds, large objects, about 10 min

From a notebook::

    from roiviz.experiments import run, format_table, plot_results
    results = run(quick=True)
    print(format_table(results)); plot_results(results, ax=ax)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .data import CLASSES, LARGE_OBJECTS, SMALL_OBJECTS, DataConfig, make_dataset
from .gaps import (
    SIZES,
    compare_object_sizes,
    format_gaps,
    format_size_table,
    plot_gap_vs_size,
    seed_gaps,
    widening,
)
from .report import METRIC_LABELS, format_table, load_results, plot_results, save_results
from .train import FULL, QUICK, ExperimentConfig, Strategy, run_experiment

__all__ = [
    "CLASSES",
    "FULL",
    "LARGE_OBJECTS",
    "METRIC_LABELS",
    "QUICK",
    "SIZES",
    "SMALL_OBJECTS",
    "TABLE_METRICS",
    "DataConfig",
    "ExperimentConfig",
    "compare_object_sizes",
    "format_gaps",
    "format_size_table",
    "format_table",
    "load_results",
    "main",
    "make_dataset",
    "plot_gap_vs_size",
    "plot_results",
    "run",
    "save_results",
    "seed_gaps",
    "widening",
]

#: The columns of the printed and stored table (mask AP at COCO's thresholds, AP50, AP75, mask IoU).
TABLE_METRICS: tuple[str, ...] = ("ap", "ap50", "ap75", "mask_iou")


def run(
    quick: bool = False,
    *,
    strides: Sequence[int] | None = None,
    seeds: int | Sequence[int] | None = None,
    json_path: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    threads: int | None = None,
    config: ExperimentConfig | None = None,
    strategies: Mapping[str, Strategy] | None = None,
) -> dict:
    """Run the experiment and return its results (the dict also written as JSON).

    Parameters
    ----------
    quick : bool
        Start from :data:`QUICK` (stride 16, one seed, < 1 min) instead of :data:`FULL`.
    strides : sequence of int, optional
        Override the strides (powers of two, e.g. ``(8, 16, 32)``).
    seeds : int or sequence of int, optional
        Number of seeds (``0 .. n-1``) or the seeds themselves.
    json_path : path, optional
        Also write the results there as JSON.
    out : path, optional
        Also write ``results.json``, ``table.txt``, ``mask_iou.png`` and ``mask_ap.png`` there.
    progress : bool
        Show a tqdm progress bar.
    threads : int, optional
        Torch threads during the run (default 1: on a shared machine more threads than free
        cores make PyTorch's spinning workers many times slower, not faster).
    config : ExperimentConfig, optional
        A full configuration; ``quick`` is then ignored, ``strides``/``seeds`` still apply.
    strategies : mapping of name -> strategy, optional
        Defaults to all of :data:`roiviz.STRATEGIES`.

    Returns
    -------
    dict
        ``{"config", "strategies", "threads", "seconds", "results": {"stride_16": {name:
        {"mask_iou_mean", "mask_iou_std", "ap_mean", "ap_std", "ap50_mean", ..., "per_seed"}}}}``.
    """
    cfg = config if config is not None else (QUICK if quick else FULL)
    changes: dict = {}
    if strides is not None:
        changes["strides"] = tuple(int(s) for s in strides)
    if seeds is not None:
        if isinstance(seeds, int):
            if seeds < 1:
                raise ValueError(f"seeds must be >= 1, got {seeds}")
            seeds = range(seeds)
        changes["seeds"] = tuple(int(s) for s in seeds)
    if changes:
        cfg = cfg.replace(**changes)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    results = run_experiment(cfg, strategies=strategies, progress=progress, threads=threads or 1)
    results["mode"] = "custom" if config is not None else ("quick" if quick else "full")
    # align - pool and warp - pool, per stride and seed (absent when a strategy is left out).
    results["gaps"] = seed_gaps(results)
    if json_path is not None:
        save_results(results, json_path)
    if out is not None:
        _write_outputs(results, Path(out))
    return results


def _write_outputs(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    save_results(results, out / "results.json")
    (out / "table.txt").write_text(format_table(results, TABLE_METRICS) + "\n\n" + format_gaps(results) + "\n")
    for metric, name in (("mask_iou", "mask_iou.png"), ("ap", "mask_ap.png")):
        fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
        plot_results(results, ax=ax, metric=metric)
        fig.savefig(out / name, dpi=120)
        plt.close(fig)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _stride(text: str) -> int:
    value = _positive_int(text)
    if value < 4 or value > 64 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"a stride must be a power of two from 4 to 64 (e.g. 8, 16, 32), got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roiviz experiment",
        description="Train the same small mask head on every ROI strategy's output and compare "
        "mask IoU / mask AP on held-out synthetic shapes (Mask R-CNN's RoIAlign result, on a CPU).",
    )
    p.add_argument("--quick", action="store_true", help="stride 16, one seed, small splits (< 1 min)")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON to PATH")
    p.add_argument("--strides", metavar="S", type=_stride, nargs="+",
                   help="backbone strides to compare (default: 16 for --quick, 16 32 otherwise)")
    p.add_argument("--seeds", metavar="N", type=_positive_int,
                   help="number of seeds (default: 1 for --quick, 3 otherwise)")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="write results.json, table.txt and bar charts (PNG) into DIR")
    p.add_argument("--threads", metavar="N", type=_positive_int, default=1,
                   help="torch threads (default 1, safest on a shared CPU)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``roiviz experiment``: run, print the table, write JSON/figures if asked. Returns an exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    base = QUICK if args.quick else FULL
    try:  # validate the combination (e.g. image size vs strides) before any work
        config = base.replace(
            strides=tuple(args.strides) if args.strides else base.strides,
            seeds=tuple(range(args.seeds)) if args.seeds else base.seeds,
        )
    except ValueError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    for path in (args.json, args.out):
        if path is not None and path.exists() and path.is_dir() != (path is args.out):
            kind = ("--out", "directory") if path is args.out else ("--json", "file")
            print(f"{parser.prog}: error: {kind[0]} {path} exists and is not a {kind[1]}",
                  file=sys.stderr)
            return 2
    start = time.perf_counter()
    results = run(args.quick, strides=config.strides, seeds=config.seeds, json_path=args.json,
                  out=args.out, progress=not args.no_progress, threads=args.threads)
    print(format_table(results, TABLE_METRICS))
    print()
    print(format_gaps(results))
    print(f"\n{len(results['strategies'])} strategies x {len(config.strides)} stride(s) x "
          f"{len(config.seeds)} seed(s) in {time.perf_counter() - start:.1f} s "
          f"({results['threads']} thread(s))")
    for path in (args.json, args.out):
        if path is not None:
            print(f"wrote {path}")
    return 0
