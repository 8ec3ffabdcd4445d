"""Does alignment matter more on a coarser map? The per-seed gaps and the small-vs-large comparison.

Mask R-CNN (He et al. 2017) measured RoIAlign − RoIPool at +3.4 mask AP on a stride-16 map
(Table 2c) and +7.3 at stride 32 (Table 2d): the gap widens as a feature cell grows. Whether a
small experiment shows it depends on the objects: when they are about one stride-32 cell wide,
every strategy falls toward "fill the box" and the gap shrinks instead. This module measures
that, from the results dict of :func:`roiviz.experiments.run`:

- :func:`seed_gaps`: ``roi_align − roi_pool`` ("align − pool") and ``resize − roi_pool``
  ("warp − pool", RoIWarp being a bilinear resize of the rounded box) per stride and per seed,
  paired (the same data, backbone and initial head), for mask AP, AP50, AP75 and mask IoU;
- :func:`widening`: whether the gap at the coarsest stride exceeds the gap at the finest, in the
  mean and on how many seeds;
- :func:`compare_object_sizes`: the same experiment (a reduced configuration, ~1 min) on
  small-object and large-object data, as rows of gap vs object size / stride, and
  :func:`plot_gap_vs_size` to draw them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .data import LARGE_OBJECTS, SMALL_OBJECTS, DataConfig
from .train import ExperimentConfig, Strategy, run_experiment

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "GAPS",
    "GAP_METRICS",
    "SIZES",
    "compare_object_sizes",
    "format_gaps",
    "format_size_table",
    "plot_gap_vs_size",
    "seed_gaps",
    "widening",
]

#: Metrics the gaps are reported for (keys of a per-seed result).
GAP_METRICS: tuple[str, ...] = ("ap", "ap50", "ap75", "mask_iou")
#: Gap name -> (strategy, minus strategy): Mask R-CNN's RoIAlign and RoIWarp, each vs RoIPool.
GAPS: dict[str, tuple[str, str]] = {
    "align_minus_pool": ("roi_align", "roi_pool"),
    "warp_minus_pool": ("resize", "roi_pool"),
}
_LABELS = {"ap": "mask AP", "ap50": "AP50", "ap75": "AP75", "mask_iou": "mask IoU"}


def _stride_of(key: str) -> int:
    return int(key.rsplit("_", 1)[1])


def seed_gaps(results: Mapping) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Paired per-seed gaps: ``{stride_key: {gap_name: {metric: [one value per seed]}}}``.

    A gap whose two strategies are not both in the results is left out (so is a stride with
    neither gap).

    Examples
    --------
    >>> r = {"results": {"stride_16": {
    ...     "roi_pool": {"per_seed": [{"ap": 0.5, "ap50": 0.8, "ap75": 0.4, "mask_iou": 0.7}]},
    ...     "roi_align": {"per_seed": [{"ap": 0.6, "ap50": 0.9, "ap75": 0.6, "mask_iou": 0.8}]}}}}
    >>> g = seed_gaps(r)["stride_16"]
    >>> list(g), [round(v, 3) for v in g["align_minus_pool"]["ap75"]]
    (['align_minus_pool'], [0.2])
    """
    if not isinstance(results, Mapping) or not results.get("results"):
        raise ValueError("results must be the dict returned by run() (with a non-empty 'results' key)")
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for key, by_strategy in results["results"].items():
        per_stride = {}
        for gap, (a, b) in GAPS.items():
            if a not in by_strategy or b not in by_strategy:
                continue
            sa, sb = by_strategy[a]["per_seed"], by_strategy[b]["per_seed"]
            per_stride[gap] = {m: [x[m] - y[m] for x, y in zip(sa, sb, strict=True)] for m in GAP_METRICS}
        if per_stride:
            out[key] = per_stride
    return out


def widening(results: Mapping, metric: str = "ap", gap: str = "align_minus_pool") -> dict:
    """Is ``gap`` larger at the coarsest stride than at the finest? In the mean and per seed.

    Returns ``{"fine", "coarse"}`` (the two stride keys), ``"fine_gap"``, ``"coarse_gap"`` (means
    over seeds), ``"widens"`` (``coarse_gap > fine_gap``), ``"seeds_widening"`` and ``"seeds"``
    (on how many of the paired seeds the gap at the coarse stride exceeds the gap at the fine one).

    Examples
    --------
    >>> def s(ap_pool, ap_align):
    ...     return {"roi_pool": {"per_seed": [{m: ap_pool for m in GAP_METRICS}]},
    ...             "roi_align": {"per_seed": [{m: ap_align for m in GAP_METRICS}]}}
    >>> w = widening({"results": {"stride_16": s(0.7, 0.8), "stride_32": s(0.6, 0.8)}})
    >>> w["widens"], w["seeds_widening"], w["seeds"]
    (True, 1, 1)
    """
    if metric not in GAP_METRICS:
        raise ValueError(f"metric must be one of {GAP_METRICS}, got {metric!r}")
    if gap not in GAPS:
        raise ValueError(f"gap must be one of {list(GAPS)}, got {gap!r}")
    gaps = {k: v[gap][metric] for k, v in seed_gaps(results).items() if gap in v}
    if len(gaps) < 2:
        raise ValueError(f"need {GAPS[gap]} at two strides or more, got {sorted(gaps)}")
    fine, coarse = min(gaps, key=_stride_of), max(gaps, key=_stride_of)
    paired = list(zip(gaps[fine], gaps[coarse], strict=True))
    return {
        "fine": fine,
        "coarse": coarse,
        "fine_gap": statistics.fmean(gaps[fine]),
        "coarse_gap": statistics.fmean(gaps[coarse]),
        "widens": statistics.fmean(gaps[coarse]) > statistics.fmean(gaps[fine]),
        "seeds_widening": sum(c > f for f, c in paired),
        "seeds": len(paired),
    }


def format_gaps(results: Mapping) -> str:
    """The gaps as text: one line per stride and gap, the per-seed values of every metric.

    Examples
    --------
    >>> r = {"results": {"stride_16": {
    ...     "roi_pool": {"per_seed": [{"ap": 0.5, "ap50": 0.8, "ap75": 0.4, "mask_iou": 0.7}]},
    ...     "roi_align": {"per_seed": [{"ap": 0.6, "ap50": 0.9, "ap75": 0.6, "mask_iou": 0.8}]}}}}
    >>> print(format_gaps(r))
    gaps per seed (paired: same data, backbone and initial head)
    stride 16  align - pool  mask AP +0.100  AP50 +0.100  AP75 +0.200  mask IoU +0.100
    """
    gaps = seed_gaps(results)
    lines = ["gaps per seed (paired: same data, backbone and initial head)"]
    for key, per_stride in gaps.items():
        for gap, by_metric in per_stride.items():
            name = gap.replace("_minus_", " - ").replace("_", " ")
            cells = "  ".join(f"{_LABELS[m]} " + " ".join(f"{v:+.3f}" for v in by_metric[m])
                              for m in GAP_METRICS)
            lines.append(f"{key.replace('_', ' ')}  {name}  {cells}")
    keys = [k for k in gaps if "align_minus_pool" in gaps[k]]
    if len(keys) >= 2:
        for metric in ("ap", "ap75"):
            w = widening(results, metric)
            lines.append(
                f"{_LABELS[metric]} align - pool, {w['fine'].replace('_', ' ')} -> "
                f"{w['coarse'].replace('_', ' ')}: {w['fine_gap']:+.3f} -> {w['coarse_gap']:+.3f} "
                f"({'widens' if w['widens'] else 'does not widen'} in the mean; wider on "
                f"{w['seeds_widening']}/{w['seeds']} seeds)")
    return "\n".join(lines)


#: The reduced configuration of :func:`compare_object_sizes`: strides 16 and 32, one seed,
#: small splits and few steps (about 50 CPU-seconds for both data sets, one thread).
SIZES = ExperimentConfig(
    strides=(16, 32), seeds=(0,), n_pretrain=256, n_train=96, n_test=64, data=LARGE_OBJECTS,
    pretrain_steps=120, pretrain_batch=8, steps=150,
)


def compare_object_sizes(
    datasets: Mapping[str, DataConfig] | None = None,
    config: ExperimentConfig = SIZES,
    strategies: Sequence[str] | Mapping[str, Strategy] = ("roi_pool", "resize", "roi_align"),
    progress: bool = False,
    threads: int = 1,
) -> dict:
    """Run the same experiment on each data set and tabulate the gaps against object size / stride.

    Parameters
    ----------
    datasets : mapping of label -> DataConfig, optional
        Defaults to ``{"small": SMALL_OBJECTS, "large": LARGE_OBJECTS}``.
    config : ExperimentConfig
        Everything but the data (its ``data`` is replaced by each data set in turn).
    strategies : names in :data:`roiviz.STRATEGIES`, or a mapping of name -> strategy
        Must include ``roi_pool`` and ``roi_align`` (and ``resize`` for the warp gap).
    progress : bool
        Show a progress bar per data set.
    threads : int
        Torch threads during the runs.

    Returns
    -------
    dict
        ``{"rows": [{"data", "stride", "extent_px", "extent_over_stride", "ap_roi_pool", ...,
        "align_minus_pool_ap", "warp_minus_pool_ap", ...}], "results": {label: run results}}``:
        one row per data set and stride; ``extent_px`` is the median object extent (the longer
        side of its box) in that data set's test images.
    """
    import roiviz

    if datasets is None:
        datasets = {"small": SMALL_OBJECTS, "large": LARGE_OBJECTS}
    if not datasets:
        raise ValueError("datasets must name at least one DataConfig")
    if not isinstance(strategies, Mapping):
        unknown = [n for n in strategies if n not in roiviz.STRATEGIES]
        if unknown:
            raise ValueError(f"strategies must be names in roiviz.STRATEGIES, unknown: {unknown}")
        strategies = {n: roiviz.STRATEGIES[n] for n in strategies}
    if "roi_pool" not in strategies or "roi_align" not in strategies:
        raise ValueError("strategies must include 'roi_pool' and 'roi_align'")
    rows: list[dict] = []
    runs: dict[str, dict] = {}
    for label, data in datasets.items():
        if not isinstance(data, DataConfig):
            raise TypeError(f"datasets[{label!r}] must be a DataConfig, got {type(data).__name__}")
        results = run_experiment(config.replace(data=data), strategies=strategies,
                                 progress=progress, threads=threads)
        runs[label] = results
        gaps = seed_gaps(results)
        extent = results["objects"]["extent_px_median"]
        for key, by_strategy in results["results"].items():
            stride = _stride_of(key)
            row: dict = {"data": label, "stride": stride, "extent_px": extent,
                         "extent_over_stride": extent / stride}
            for name, s in by_strategy.items():
                for m in GAP_METRICS:
                    row[f"{m}_{name}"] = s[f"{m}_mean"]
            for gap, by_metric in gaps.get(key, {}).items():
                for m in GAP_METRICS:
                    row[f"{gap}_{m}"] = statistics.fmean(by_metric[m])
            rows.append(row)
    return {"rows": rows, "results": runs}


def format_size_table(table: Mapping, metric: str = "ap") -> str:
    """One line per data set and stride: object size / stride, ``metric`` per strategy, the gaps.

    Examples
    --------
    >>> t = {"rows": [{"data": "large", "stride": 32, "extent_px": 140.0, "extent_over_stride": 4.375,
    ...                "ap_roi_pool": 0.6, "ap_roi_align": 0.8, "align_minus_pool_ap": 0.2}]}
    >>> print(format_size_table(t))
    data   stride  object px  object/stride  roi_pool  roi_align  align - pool
    large      32        140           4.38     0.600      0.800        +0.200
    """
    if metric not in GAP_METRICS:
        raise ValueError(f"metric must be one of {GAP_METRICS}, got {metric!r}")
    rows = table["rows"]
    if not rows:
        raise ValueError("table has no rows")
    names = [k[len(metric) + 1:] for k in rows[0] if k.startswith(metric + "_")
             and not k.startswith(("align_", "warp_"))]
    gaps = [g for g in GAPS if f"{g}_{metric}" in rows[0]]
    width = max(4, *(len(r["data"]) for r in rows)) + 2
    head = ("data".ljust(width) + "stride  object px  object/stride"
            + "".join(f"{n:>{max(len(n), 5) + 2}}" for n in names)
            + "".join(f"{g.replace('_minus_', ' - ').replace('_', ' '):>14}" for g in gaps))
    lines = [head]
    for r in rows:
        lines.append(
            r["data"].ljust(width) + f"{r['stride']:>6}  {r['extent_px']:>9.0f}  {r['extent_over_stride']:>13.2f}"
            + "".join(f"{r[f'{metric}_{n}']:>{max(len(n), 5) + 2}.3f}" for n in names)
            + "".join(f"{r[f'{g}_{metric}']:>+14.3f}" for g in gaps))
    return "\n".join(lines)


def plot_gap_vs_size(table: Mapping, ax: Axes | None = None, metric: str = "ap") -> Axes:
    """Gap (align − pool, and warp − pool when present) against object size / stride, log x axis.

    Each point is one data set at one stride, labelled ``"<data>, s<stride>"``; a dashed line
    marks "no gap".

    Examples
    --------
    >>> t = {"rows": [{"data": "small", "stride": 16, "extent_over_stride": 2.3, "align_minus_pool_ap": 0.2},
    ...               {"data": "large", "stride": 32, "extent_over_stride": 4.4, "align_minus_pool_ap": 0.15}]}
    >>> ax = plot_gap_vs_size(t)
    >>> [line.get_label() for line in ax.get_lines()][:1]
    ['roi_align − roi_pool']
    """
    if metric not in GAP_METRICS:
        raise ValueError(f"metric must be one of {GAP_METRICS}, got {metric!r}")
    rows = table["rows"]
    if not rows:
        raise ValueError("table has no rows")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    styles = {"align_minus_pool": ("roi_align − roi_pool", "C0", "o"),
              "warp_minus_pool": ("resize − roi_pool (RoIWarp)", "C1", "s")}
    for gap, (label, color, marker) in styles.items():
        pts = sorted((r["extent_over_stride"], r[f"{gap}_{metric}"], r) for r in rows
                     if f"{gap}_{metric}" in r)
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, ls="",
                ms=8, label=label)
        if gap == "align_minus_pool":
            for x, y, r in pts:
                ax.annotate(f"{r['data']}, s{r['stride']}", (x, y), textcoords="offset points",
                            xytext=(6, 6), fontsize=10)
    ax.axhline(0.0, color="0.4", ls="--", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("median object size / stride (feature cells per object)", fontsize=11)
    ax.set_ylabel(f"{_LABELS[metric]} gap", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.set_title(f"{_LABELS[metric]} gained over roi_pool, by object size in cells", fontsize=12)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=10)
    return ax
