"""Show experiment results: a text table and a bar chart with error bars (on a given ``ax``).

Both take the dict returned by :func:`roiviz.experiments.run` (or loaded from its JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "METRIC_LABELS",
    "alignment_gaps",
    "format_table",
    "load_results",
    "plot_results",
    "save_results",
]

#: Metric keys (as in the JSON, without ``_mean``/``_std``) and their display names.
METRIC_LABELS: dict[str, str] = {
    "mask_iou": "mask IoU",
    "ap": "mask AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "class_acc": "class acc",
}


def _check_results(results: dict) -> None:
    if not isinstance(results, dict) or "results" not in results or not results["results"]:
        raise ValueError("results must be the dict returned by run() (with a non-empty 'results' key)")


def _check_metric(metric: str) -> None:
    if metric not in METRIC_LABELS:
        raise ValueError(f"metric must be one of {list(METRIC_LABELS)}, got {metric!r}")


def alignment_gaps(results: dict, metric: str = "mask_iou") -> dict[str, dict[str, float | bool]]:
    """Mask R-CNN's comparison per stride: RoIAlign vs RoIWarp (``resize``) vs RoIPool.

    Returns, per stride key, ``align_minus_pool``, ``align_minus_resize``, ``resize_minus_pool``
    (differences of the mean ``metric``), ``ordered`` (``roi_align >= resize >= roi_pool``) and
    ``align_beats_pool_seeds`` out of ``seeds`` (a paired, per-seed comparison).
    Strides missing one of the three strategies are skipped.

    Examples
    --------
    >>> r = {"results": {"stride_16": {"roi_pool": {"mask_iou_mean": 0.70}, "resize": {"mask_iou_mean": 0.72},
    ...                                "roi_align": {"mask_iou_mean": 0.80}}}}
    >>> g = alignment_gaps(r)["stride_16"]
    >>> round(g["align_minus_pool"], 3), g["ordered"]
    (0.1, True)
    """
    _check_results(results)
    _check_metric(metric)
    out: dict[str, dict[str, float | bool]] = {}
    for key, by_strategy in results["results"].items():
        try:
            align, warp, pool = (by_strategy[n][f"{metric}_mean"] for n in ("roi_align", "resize", "roi_pool"))
        except KeyError:
            continue
        # Paired by seed (same data, backbone and initial head): the fair comparison.
        a_seeds = [r.get(metric) for r in by_strategy["roi_align"].get("per_seed", [])]
        p_seeds = [r.get(metric) for r in by_strategy["roi_pool"].get("per_seed", [])]
        paired = [(a, p) for a, p in zip(a_seeds, p_seeds, strict=False) if a is not None and p is not None]
        out[key] = {
            "align_beats_pool_seeds": sum(a > p for a, p in paired),
            "seeds": len(paired),
            "align_minus_pool": align - pool,
            "align_minus_resize": align - warp,
            "resize_minus_pool": warp - pool,
            "ordered": align >= warp >= pool,
        }
    return out


def format_table(results: dict, metrics: tuple[str, ...] = ("mask_iou", "ap", "ap50", "class_acc")) -> str:
    """A plain-text table: one block per stride, one row per strategy, ``mean ± std`` over seeds.

    With a single seed there is no spread to show: the cells hold the value alone and the
    block's title says "1 seed, no spread". The last column is the strategy's mask-IoU gain
    over ``roi_pool`` (when both are present).

    Examples
    --------
    >>> r = {"results": {"stride_16": {
    ...     "roi_pool": {"mask_iou_mean": 0.7, "mask_iou_std": 0.01, "per_seed": [{}]},
    ...     "roi_align": {"mask_iou_mean": 0.8, "mask_iou_std": 0.02, "per_seed": [{}]}}}}
    >>> print(format_table(r, metrics=("mask_iou",)))
    stride 16 (1 seed, no spread)  mask IoU         vs roi_pool
    roi_pool                       0.700                 +0.000
    roi_align                      0.800                 +0.100
    """
    _check_results(results)
    for m in metrics:
        _check_metric(m)
    lines: list[str] = []
    for key, by_strategy in results["results"].items():
        n_seeds = len(next(iter(by_strategy.values()))["per_seed"])
        title = f"{key.replace('_', ' ')} ({n_seeds} seed{'s' if n_seeds != 1 else ', no spread'})"
        width = max(len(title), *(len(n) for n in by_strategy)) + 2
        if lines:
            lines.append("")
        lines.append(title.ljust(width) + "".join(f"{METRIC_LABELS[m]:<17}" for m in metrics)
                     + "vs roi_pool")
        base = by_strategy.get("roi_pool", {}).get("mask_iou_mean")
        for name, s in by_strategy.items():
            cells = "".join(_cell(s[m + "_mean"], s[m + "_std"], n_seeds).ljust(17) for m in metrics)
            gain = f"{s['mask_iou_mean'] - base:+.3f}" if base is not None and "mask_iou_mean" in s else "-"
            lines.append(name.ljust(width) + cells + gain.rjust(11))
    gaps = alignment_gaps(results)
    if gaps:
        lines.append("")
    for key, g in gaps.items():
        lines.append(f"{key.replace('_', ' ')}: mask IoU roi_align - roi_pool {g['align_minus_pool']:+.3f}, "
                     f"roi_align - resize {g['align_minus_resize']:+.3f}, resize - roi_pool "
                     f"{g['resize_minus_pool']:+.3f}; roi_align >= resize >= roi_pool: "
                     f"{'yes' if g['ordered'] else 'no'}; roi_align > roi_pool on "
                     f"{g['align_beats_pool_seeds']}/{g['seeds']} seeds")
    if "full_box_mask_iou" in results:
        lines += ["", f"(a head predicting the whole proposal would score mask IoU "
                      f"{results['full_box_mask_iou']:.3f})"]
    n_seeds = len(results.get("config", {}).get("seeds", ())) or 2  # unknown: show the spread
    for key, q in results.get("backbone", {}).items():
        lines.append(f"(frozen backbone, {key.replace('_', ' ')}: its own per-pixel segmentation of "
                     f"the test images has foreground IoU "
                     f"{_cell(q['seg_fg_iou_mean'], q['seg_fg_iou_std'], n_seeds)}, "
                     f"class accuracy {q['seg_class_acc_mean']:.3f})")
    return "\n".join(lines)


def _cell(mean: float, std: float, n_seeds: int) -> str:
    """``mean ± std`` over several seeds; the mean alone for one seed (a spread of 0 is no spread)."""
    return f"{mean:.3f} ± {std:.3f}" if n_seeds > 1 else f"{mean:.3f}"


def plot_results(results: dict, ax: Axes | None = None, metric: str = "mask_iou") -> Axes:
    """Grouped bars: one group per strategy, one bar per stride, error bars = std over seeds.

    With one seed (``per_seed`` of length 1) there is no spread: no error bars, and the title says so.

    Parameters
    ----------
    results : dict
        As returned by :func:`roiviz.experiments.run`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made when omitted.
    metric : str
        One of :data:`METRIC_LABELS`.

    Returns
    -------
    Axes

    Examples
    --------
    >>> r = {"results": {"stride_16": {"roi_align": {"ap_mean": 0.5, "ap_std": 0.1, "per_seed": [{}]}}}}
    >>> ax = plot_results(r, metric="ap")
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['roi_align']
    """
    _check_results(results)
    _check_metric(metric)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(8, 3.5))
    groups = results["results"]
    names = list(next(iter(groups.values())))
    n_seeds = max(len(by_strategy[n].get("per_seed", ())) for by_strategy in groups.values() for n in names)
    width = 0.8 / len(groups)
    for i, (key, by_strategy) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(names))]
        means = [by_strategy[n][f"{metric}_mean"] for n in names]
        stds = [by_strategy[n][f"{metric}_std"] for n in names] if n_seeds > 1 else None
        ax.bar(xs, means, width * 0.95, yerr=stds, capsize=3, label=key.replace("_", " "))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=9)
    if metric == "mask_iou" and "full_box_mask_iou" in results:
        ax.axhline(results["full_box_mask_iou"], color="0.3", ls="--", lw=1,
                   label="whole proposal (floor)")
    ax.set_ylabel(METRIC_LABELS[metric])
    top = max(g[n][f"{metric}_mean"] + (g[n][f"{metric}_std"] if n_seeds > 1 else 0.0)
              for g in groups.values() for n in names)
    ax.set_ylim(0.0, min(1.05, top * 1.1 + 0.01))  # bars start at zero: no exaggerated gaps
    ax.grid(axis="y", alpha=0.3)
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed: no error bars"
    ax.set_title(f"{METRIC_LABELS[metric]} per strategy ({spread})", fontsize=10)
    ax.legend(frameon=False, fontsize=9)
    return ax


def save_results(results: dict, path: str | Path) -> Path:
    """Write ``results`` as indented JSON (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def load_results(path: str | Path) -> dict:
    """Read results written by :func:`save_results` (or ``--json``)."""
    results = json.loads(Path(path).read_text())
    _check_results(results)
    return results
