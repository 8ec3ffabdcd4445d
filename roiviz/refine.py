"""Box refinement by gradient ascent through an ROI op: what Precise RoI Pooling's box gradient is for.

IoU-Net (Jiang et al., ECCV 2018) refines a detection by gradient ascent on a score computed
from the ROI's pooled features, moving ``x1, y1, x2, y2`` along ``d score / d box``. That needs
an ROI op whose output is a differentiable function of the box:

- :func:`roiviz.prroi_pool` integrates each bin exactly: its output moves continuously with
  every edge, and so does the score.
- :func:`roiviz.roi_align` (like :func:`torchvision.ops.roi_align`) returns no gradient for the
  boxes at all: the score does not depend on the box as far as autograd knows, the step is
  zero and the box never moves. That is what "stalls" means here, exactly.
- :func:`roi_align_sampled` is ROI Align written so that autograd *does* differentiate the
  sample positions: its box gradient is that of ``sampling_ratio^2`` point samples per bin,
  zero wherever those points sit on flat ground, and jumps as a sample crosses a cell.

The score here is template matching, as in trackers built on IoU-Net (ATOM, DiMP): the
negative mean squared difference between the pooled features of the candidate box and those of
the true box. :func:`refine_box` runs the loop and records the box, score and IoU at every step.

Examples
--------
A flat object on a flat background (as after a ReLU): only the exact integral sees the edges.

>>> import torch
>>> from roiviz.refine import compare_refinement
>>> features = torch.zeros(1, 1, 32, 32)
>>> features[..., 10:22, 8:24] = 1.0
>>> runs = compare_refinement(features, (5.1, 7.9, 26.5, 24.3), (8.0, 10.0, 24.0, 22.0), steps=25,
...                           step_size=2.0, output_size=4)
>>> for name, run in runs.items():
...     print(f"{name}: IoU {run.iou[0]:.2f} -> {run.iou[-1]:.2f}, zero-gradient steps {run.zero_steps}/25")
prroi_pool: IoU 0.55 -> 0.99, zero-gradient steps 0/25
roi_align: IoU 0.55 -> 0.55, zero-gradient steps 25/25
roi_align, samples differentiated: IoU 0.55 -> 0.55, zero-gradient steps 25/25
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._checks import check_input, check_output_size, check_sampling_ratio, check_spatial_scale
from .boxes import BoxesLike, compute_dtype, to_rois
from .ops.prroi_pool import prroi_pool
from .ops.roi_align import roi_align

__all__ = [
    "REFINE_OPS",
    "Refinement",
    "box_iou",
    "compare_refinement",
    "plot_refinement",
    "refine_box",
    "roi_align_sampled",
    "template_score",
]

Box = Sequence[float]


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes (0 when both are empty).

    Examples
    --------
    >>> box_iou((0, 0, 2, 2), (1, 0, 3, 2))
    0.3333333333333333
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def template_score(pool: Callable[..., Tensor], features: Tensor, box: Tensor, template: Tensor,
                   output_size: int | tuple[int, int] = 7, spatial_scale: float = 1.0) -> Tensor:
    """``-mean((pool(features, box) - template)^2)``: 0 at a perfect match, negative elsewhere.

    ``box`` is a ``Tensor[4]`` on image 0 of ``features``; the result is a 0-dim tensor, in the
    graph of ``box`` when ``pool`` differentiates its boxes.
    """
    rois = torch.cat([box.new_zeros(1), box])[None]  # [1, 5]
    pooled = pool(features, rois, output_size, spatial_scale)  # [1, C, PH, PW]
    return -(pooled - template).pow(2).mean()


@dataclasses.dataclass(frozen=True)
class Refinement:
    """One run of :func:`refine_box`: per step ``0 .. steps``, the box, its score and IoU."""

    boxes: list[tuple[float, float, float, float]]
    scores: list[float]
    iou: list[float]
    #: Whether autograd gave the score a gradient with respect to the box at all.
    has_gradient: bool
    #: Steps at which the gradient was exactly zero (no gradient at all counts as zero).
    zero_steps: int

    @property
    def moved(self) -> bool:
        """Whether the box ever changed."""
        return any(b != self.boxes[0] for b in self.boxes[1:])


def refine_box(pool: Callable[..., Tensor], features: Tensor, start: Box, target: Box, steps: int = 40,
               step_size: float = 2.0, decay: float = 0.93, output_size: int | tuple[int, int] = 7,
               spatial_scale: float = 1.0) -> Refinement:
    """Refine ``start`` towards ``target`` by gradient ascent on :func:`template_score` through ``pool``.

    The template is ``pool(features, target)``. Step ``t`` moves the four coordinates along
    the score's gradient by ``step_size * decay^t`` image pixels in all (the gradient's
    direction, normalised: the features' scale does not matter), then keeps ``x1 <= x2`` and
    ``y1 <= y2``. Where the gradient is zero, or the op gives the boxes none
    (:func:`roiviz.roi_align`, like torchvision's), the step is zero: the box stays.

    Parameters
    ----------
    pool : callable
        ``pool(input, boxes [K, 5], output_size, spatial_scale) -> Tensor[K, C, PH, PW]``,
        e.g. :func:`roiviz.prroi_pool`, :func:`roiviz.roi_align` or :func:`roi_align_sampled`.
    features : Tensor[1, C, H, W]
        The feature map (float32 or float64); image 0 is used.
    start, target : (x1, y1, x2, y2)
        The jittered box and the true one, in image pixels.
    steps, step_size, decay : int, float, float
        Number of steps; the first step's length in image pixels and its factor per step.
    """
    features = check_input(features, "features").detach()
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    dtype = compute_dtype(features.dtype)
    box = torch.tensor([float(v) for v in start], dtype=dtype)
    goal = torch.tensor([float(v) for v in target], dtype=dtype)
    if box.shape != (4,) or goal.shape != (4,):
        raise ValueError(f"start and target must be (x1, y1, x2, y2), got {start!r} and {target!r}")
    with torch.no_grad():
        template = pool(features, torch.cat([goal.new_zeros(1), goal])[None], output_size, spatial_scale)
    boxes, scores, ious = [], [], []
    has_gradient, zero_steps = False, 0
    for step in range(steps + 1):
        b = box.clone().requires_grad_()
        score = template_score(pool, features, b, template, output_size, spatial_scale)
        boxes.append(tuple(float(v) for v in box))
        scores.append(float(score.detach()))
        ious.append(box_iou(box.tolist(), goal.tolist()))
        if step == steps:
            break
        if score.requires_grad:  # else the op gave the box no gradient: nothing to follow
            (grad,) = torch.autograd.grad(score, b)
            has_gradient = True
        else:
            grad = torch.zeros_like(box)
        zero_steps += bool((grad == 0).all())
        with torch.no_grad():
            norm = grad.norm()
            box = box + step_size * decay**step * grad / torch.where(norm > 0, norm, torch.ones_like(norm))
            x1, x2 = torch.minimum(box[0], box[2]), torch.maximum(box[0], box[2])
            y1, y2 = torch.minimum(box[1], box[3]), torch.maximum(box[1], box[3])
            box = torch.stack([x1, y1, x2, y2])
    return Refinement(boxes, scores, ious, has_gradient, zero_steps)


def roi_align_sampled(input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
                      sampling_ratio: int = 2, aligned: bool = True) -> Tensor:
    """ROI Align with a fixed ``sampling_ratio``, written so that autograd differentiates the box.

    The same numbers as :func:`roiviz.roi_align` (same samples, same clamped bilinear rule), but
    the sample positions stay in the graph: ``d out / d box`` is the derivative of the bilinear
    interpolation at the sample points, which is zero when a sample's four neighbours are
    equal and jumps when a sample crosses a cell. For teaching and for :func:`refine_box`; it
    gathers every sample at once (memory ``K * PH * PW * sampling_ratio^2 * C``).

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.rand(1, 2, 8, 8, dtype=torch.float64)
    >>> boxes = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0]], dtype=torch.float64)
    >>> torch.allclose(roi_align_sampled(x, boxes, 3), roiviz.roi_align(x, boxes, 3, 1.0, 2, True))
    True
    """
    input = check_input(input)
    ph_n, pw_n = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    grid = check_sampling_ratio(sampling_ratio)
    if grid < 0:
        raise ValueError(f"sampling_ratio must be positive here (a fixed grid), got {sampling_ratio}")
    rois = to_rois(boxes, input)
    _, c_n, height, width = input.shape
    x = input.to(rois.dtype).permute(0, 2, 3, 1)  # [N, H, W, C]
    offset = 0.5 if aligned else 0.0
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset  # [K]
    roi_w, roi_h = rois[:, 3] * scale - offset - start_w, rois[:, 4] * scale - offset - start_h
    if not aligned:  # legacy: at least one cell
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    ys = _sample_axis(start_h, roi_h / ph_n, ph_n, grid, height)  # each [K, PH * G]
    xs = _sample_axis(start_w, roi_w / pw_n, pw_n, grid, width)
    (y_ok, y_lo, y_hi, ly), (x_ok, x_lo, x_hi, lx) = ys, xs
    batch = rois[:, 0].detach().long()[:, None, None]  # [K, 1, 1]
    hy, hx = 1 - ly, 1 - lx
    value = ((hy[:, :, None] * hx[:, None, :])[..., None] * x[batch, y_lo[:, :, None], x_lo[:, None, :]]
             + (hy[:, :, None] * lx[:, None, :])[..., None] * x[batch, y_lo[:, :, None], x_hi[:, None, :]]
             + (ly[:, :, None] * hx[:, None, :])[..., None] * x[batch, y_hi[:, :, None], x_lo[:, None, :]]
             + (ly[:, :, None] * lx[:, None, :])[..., None] * x[batch, y_hi[:, :, None], x_hi[:, None, :]])
    value = value * (y_ok[:, :, None] & x_ok[:, None, :]).to(value.dtype)[..., None]  # [K, PH*G, PW*G, C]
    out = value.reshape(-1, ph_n, grid, pw_n, grid, c_n).mean(dim=(2, 4))  # [K, PH, PW, C]
    return out.permute(0, 3, 1, 2).contiguous().to(input.dtype)


def _sample_axis(start: Tensor, bin_size: Tensor, n_bins: int, grid: int,
                 size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample positions along one axis and torchvision's bilinear rule: ``(ok, low, high, l)``."""
    steps = (torch.arange(n_bins * grid, dtype=start.dtype) // grid
             + (torch.arange(n_bins * grid, dtype=start.dtype) % grid + 0.5) / grid)  # p + (i + .5) / G
    c = start[:, None] + steps * bin_size[:, None]  # [K, P * G]
    ok = (c >= -1.0) & (c <= size)
    c = torch.where(c > 0, c, torch.zeros_like(c))  # clamped at 0 (no gradient there)
    low = torch.floor(c.detach()).long().clamp(max=size - 1)
    at_end = low >= size - 1
    c = torch.where(at_end, low.to(c.dtype), c)  # the last cell: constant (no gradient)
    high = torch.where(at_end, low, low + 1)
    return ok, low, high, c - low.to(c.dtype)


def _prroi_pool_aligned(input: Tensor, boxes: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0) -> Tensor:
    """:func:`roiviz.prroi_pool` with ``aligned=True`` (the registered strategy)."""
    return prroi_pool(input, boxes, output_size, spatial_scale, aligned=True)


def _roi_align_torchvision(input: Tensor, boxes: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0) -> Tensor:
    """:func:`roiviz.roi_align` (``aligned=True, sampling_ratio=2``) under torchvision's contract:
    no gradient for the boxes (they are detached, as torchvision's autograd does)."""
    return roi_align(input, boxes.detach(), output_size, spatial_scale, 2, True)


def _roi_align_sampled_2(input: Tensor, boxes: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0) -> Tensor:
    """:func:`roi_align_sampled` with ``sampling_ratio=2, aligned=True``."""
    return roi_align_sampled(input, boxes, output_size, spatial_scale, 2, True)


#: The ops :func:`compare_refinement` runs, all in the convention of ``aligned=True``.
REFINE_OPS: dict[str, Callable[..., Tensor]] = {
    "prroi_pool": _prroi_pool_aligned,
    "roi_align": _roi_align_torchvision,
    "roi_align, samples differentiated": _roi_align_sampled_2,
}


def compare_refinement(features: Tensor, start: Box, target: Box, ops: dict[str, Callable[..., Tensor]] | None = None,
                       steps: int = 25, step_size: float = 4.0, decay: float = 0.93,
                       output_size: int | tuple[int, int] = 7, spatial_scale: float = 1.0) -> dict[str, Refinement]:
    """:func:`refine_box` from the same ``start`` with each op of ``ops`` (default :data:`REFINE_OPS`).

    See the module docstring for an example.
    """
    ops = REFINE_OPS if ops is None else ops
    return {name: refine_box(op, features, start, target, steps, step_size, decay, output_size, spatial_scale)
            for name, op in ops.items()}


def plot_refinement(runs: dict[str, Refinement], image: object, target: Box, axes: Sequence[object] | None = None,
                    every: int = 5) -> Sequence[object]:
    """Two panels: the boxes of each run over ``image`` (every ``every``-th step faint, the last
    bold, the target dashed white), and IoU with the target against the step.

    Runs that end in the same place stay visible: the first run is drawn widest and underneath,
    each later one narrower on top of it, in the boxes and in the IoU curves alike; every bold
    box lies over every faint one, and the target under them all. The legend of the boxes sits under the left panel, clear of the picture.

    ``image`` is anything :func:`roiviz.viz.draw_image` shows, in the boxes' pixel coordinates.
    Returns the two axes.
    """
    from matplotlib import patheffects
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from . import viz

    if axes is None:
        fig = Figure(figsize=(10, 4.6), layout="constrained")
        axes = fig.subplots(1, 2)
    ax_img, ax_iou = axes
    viz.draw_image(ax_img, image, title=f"boxes every {every} steps (faint) and at the end (bold)")
    colors = ["tab:orange", "tab:red", "tab:cyan", "tab:green", "tab:purple"]
    n = len(runs)
    handles = []
    for k, ((name, run), color) in enumerate(zip(runs.items(), colors, strict=False)):
        width = 1.2 + 2.4 * (n - 1 - k) / max(n - 1, 1)  # the first run widest, underneath
        shown = run.boxes[::every]
        for i, (x1, y1, x2, y2) in enumerate([*shown, run.boxes[-1]]):
            last = i == len(shown)
            ax_img.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                                       lw=width if last else 1.0, alpha=1.0 if last else 0.7,
                                       zorder=4 + k if last else 3))  # bold over faint
        ax_iou.plot(range(len(run.iou)), run.iou, color=color, lw=width + 0.6, label=name, zorder=3 + k)
        handles.append(Line2D([], [], color=color, lw=width, label=f"{name} (end: bold)"))
    x1, y1, x2, y2 = (float(v) for v in target)
    outline = [patheffects.withStroke(linewidth=3.2, foreground="black")]
    ax_img.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="white", lw=1.6, ls="--",
                               zorder=2.5, path_effects=outline))
    handles.append(Line2D([], [], color="white", lw=1.6, ls="--", label="target (under the runs)"))
    ax_img.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2,
                  fontsize=viz.SMALL_FONT_SIZE, facecolor="0.65", edgecolor="none", framealpha=1.0)
    ax_iou.set(xlabel="step", ylabel="IoU with the true box", ylim=(0, 1.02))
    ax_iou.set_title("IoU against step", fontsize=viz.FONT_SIZE)
    ax_iou.grid(alpha=0.3)
    ax_iou.legend(loc="lower right", fontsize=viz.SMALL_FONT_SIZE)
    return axes
