"""``roiviz demo --out DIR``: the main figures as PNG files, for readers without Jupyter.

Writes, with matplotlib's Agg backend (no display needed):

=========================== ====================================================================
``boxes.png``               the photo with ROIs, and the stride-8 feature map with the same ROIs
``roi_pool_quantization.png`` ROI Pool's bins on the feature map; cells lost and gained, counted
``roi_align_samples.png``   ROI Align's sample points: ``aligned`` off and on, ``sampling_ratio``
``strategies.png``          every strategy's output for one box, one colour scale, with metrics
``coverage.png``            which input pixels each strategy's output depends on
=========================== ====================================================================

Examples
--------
>>> import tempfile, contextlib, io
>>> with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()) as out:
...     code = main(["--out", d, "--size", "64", "--only", "boxes"])
>>> code, out.getvalue().strip().endswith("boxes.png")
(0, True)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from . import viz
from .images import SAMPLES, FeatureExtractor, sample_image, to_tensor
from .strategies import STRATEGIES

__all__ = ["FIGURES", "main", "make_figures"]

Box = tuple[float, float, float, float]


def _figure(figsize: tuple[float, float], dpi: float) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def fig_boxes(image: np.ndarray, boxes: Sequence[Box], stride: int, dpi: float) -> Figure:
    """The photo with ROIs, and its feature map with the same ROIs at ``1 / stride``."""
    features = FeatureExtractor(stride=stride)(image)
    fig = _figure((9, 4.4), dpi)
    ax1, ax2 = fig.subplots(1, 2)
    labels = [f"ROI {i + 1}" for i in range(len(boxes))]
    viz.draw_image(ax1, image, boxes, labels=labels, title=f"the image ({image.shape[0]}x{image.shape[1]} px)")
    h, w = features.shape[-2:]
    viz.draw_image(ax2, features, boxes, spatial_scale=1 / stride, labels=labels,
                   title=f"its feature map ({h}x{w}, stride {stride}, mean of {features.shape[1]} channels)")
    return fig


def fig_roi_pool(image: np.ndarray, box: Box, stride: int, dpi: float) -> Figure:
    """ROI Pool's quantised bins of one box at two output sizes."""
    features = FeatureExtractor(stride=stride)(image)
    fig = _figure((10, 5), dpi)
    for ax, size in zip(fig.subplots(1, 2), (2, 3), strict=True):
        viz.draw_roi_pool_bins(ax, features, box, size, 1 / stride)
    fig.suptitle(f"ROI Pool on the stride-{stride} feature map: the box is rounded to whole cells "
                 "(red: lost, blue: gained), bins overlap", fontsize=10)
    return fig


def fig_roi_align(image: np.ndarray, box: Box, stride: int, dpi: float) -> Figure:
    """ROI Align's sample points: legacy (``aligned=False``) vs aligned, fixed vs adaptive grid."""
    features = FeatureExtractor(stride=stride)(image)
    fig = _figure((13, 5), dpi)
    settings = [(2, False), (2, True), (-1, True)]
    for ax, (sr, aligned) in zip(fig.subplots(1, 3), settings, strict=True):
        viz.draw_roi_align_samples(ax, features, box, 2, 1 / stride, sampling_ratio=sr, aligned=aligned)
    fig.suptitle("ROI Align samples the continuous box: aligned=False shifts it by half a cell", fontsize=10)
    return fig


def fig_strategies(image: np.ndarray, box: Box, output_size: int, dpi: float) -> Figure:
    """The image with the box, and every strategy's output with its metrics."""
    from .metrics import strategy_metrics

    x = to_tensor(image)
    rois = torch.tensor([[0.0, *box]])
    with torch.no_grad():
        outputs = {name: f(x, rois, output_size) for name, f in STRATEGIES.items()}
    metrics = strategy_metrics(x, box, output_size, outputs=outputs)
    fig = _figure((16, 3.4), dpi)
    axes = fig.subplots(1, len(STRATEGIES) + 1)
    viz.draw_image(axes[0], image, [box], title="the box", ticks=False)
    panels = viz.StrategyPanels(list(axes[1:]), list(STRATEGIES), fontsize=10)
    panels.update(outputs, metrics)
    fig.suptitle(f"every strategy, {output_size}x{output_size}, one colour scale "
                 "(cov: box pixels used; leak: outside pixels used, per box area; PSNR: output resized "
                 "back vs the true crop)", fontsize=10)
    return fig


def fig_coverage(image: np.ndarray, box: Box, output_size: int, dpi: float) -> Figure:
    """Influence maps: which pixels each strategy's output depends on, for one box."""
    from .metrics import influence_map

    x = to_tensor(image)
    fig = _figure((16, 2.9), dpi)
    for ax, name in zip(fig.subplots(1, len(STRATEGIES)), STRATEGIES, strict=True):
        m = influence_map(name, box, output_size, probe=x)
        viz.draw_coverage(ax, m, box, title=name)
    fig.suptitle("|d output / d input| on this image: dark inside the box = ignored, bright outside = leaked",
                 fontsize=10)
    return fig


#: name -> (file name, what it shows)
FIGURES: dict[str, str] = {
    "boxes": "boxes.png",
    "roi_pool": "roi_pool_quantization.png",
    "roi_align": "roi_align_samples.png",
    "strategies": "strategies.png",
    "coverage": "coverage.png",
}


def make_figures(out: Path, image_name: str = "grace_hopper", size: int = 128,
                 box: Box | None = None, output_size: int = 7, stride: int = 8, dpi: float = 100,
                 only: Sequence[str] | None = None) -> list[Path]:
    """Write the figures into ``out`` (created if needed) and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    image = sample_image(image_name, size)
    k = size / 128  # the default boxes are given for a 128 px image
    # On the stride-8 map this box's corners fall on cell centres (x1 / 8 = 1.5, ...): ROI Pool's
    # rounding then both loses a row and a column and gains one, which the figures show.
    box = box or (12 * k, 20 * k, 100 * k, 84 * k)
    boxes = [box, (70 * k, 75 * k, 122 * k, 120 * k), (4 * k, 90 * k, 30 * k, 124 * k)]
    makers: dict[str, Callable[[], Figure]] = {
        "boxes": lambda: fig_boxes(image, boxes, stride, dpi),
        "roi_pool": lambda: fig_roi_pool(image, box, stride, dpi),
        "roi_align": lambda: fig_roi_align(image, box, stride, dpi),
        "strategies": lambda: fig_strategies(image, box, output_size, dpi),
        "coverage": lambda: fig_coverage(image, box, output_size, dpi),
    }
    names = list(FIGURES) if not only else list(only)
    paths = []
    for name in tqdm(names, desc="roiviz demo", unit="figure", leave=False):
        fig = makers[name]()
        path = out / FIGURES[name]
        fig.savefig(path)
        paths.append(path)
    return paths


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="roiviz demo", description="Write roiviz's main figures as PNG files.")
    p.add_argument("--out", required=True, type=Path, help="directory to write the PNG files into")
    p.add_argument("--image", default="grace_hopper", choices=SAMPLES, help="sample image (default: grace_hopper)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default: 128)")
    p.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                   help="the ROI in image pixels (default: a box on the face)")
    p.add_argument("--output-size", type=int, default=7, help="PH = PW of the strategies (default: 7)")
    p.add_argument("--stride", type=int, default=8, choices=(2, 4, 8, 16), help="feature map stride (default: 8)")
    p.add_argument("--dpi", type=float, default=100)
    p.add_argument("--only", nargs="+", choices=list(FIGURES), help="write only these figures")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roiviz demo``; prints the paths written and returns the exit code."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.size < 16:
        print(f"roiviz demo: --size must be at least 16, got {args.size}", file=sys.stderr)
        return 2
    if args.output_size < 1:
        print(f"roiviz demo: --output-size must be at least 1, got {args.output_size}", file=sys.stderr)
        return 2
    box = tuple(args.box) if args.box else None
    if box is not None and not (0 <= box[0] < box[2] <= args.size and 0 <= box[1] < box[3] <= args.size):
        print(f"roiviz demo: --box must satisfy 0 <= x1 < x2 <= {args.size} and 0 <= y1 < y2 <= {args.size}, "
              f"got {box}", file=sys.stderr)
        return 2
    paths = make_figures(args.out, args.image, args.size, box, args.output_size, args.stride, args.dpi, args.only)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
