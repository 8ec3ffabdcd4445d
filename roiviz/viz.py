"""Matplotlib pictures of what ROI strategies do: one function per picture, on a given ``ax``.

Every function draws on axes you give it and returns the artists it made, grouped in a small
object whose ``update(...)`` method changes those artists *in place* (``set_data``,
``set_bounds``, ``set_offsets``, ``set_text``) instead of re-plotting. That is what keeps the
:class:`roiviz.widgets.Explorer` smooth while a box is dragged.

=============================  ===============================================================
:func:`draw_image`             an image or one channel of a feature map, with boxes
:func:`draw_boxes`             boxes as rectangles (in image pixels, mapped by ``spatial_scale``)
:func:`draw_roi_pool_bins`     ROI Pool's quantised bins, lost and gained cells coloured, counted
:func:`draw_roi_align_samples` ROI Align's bins and bilinear sample points
:class:`StrategyPanels`        every strategy's output side by side, one colour scale, metrics
:func:`draw_coverage`          a :func:`roiviz.metrics.influence_map` with the box over it
:func:`plot_timings`           benchmark medians as grouped bars
:func:`plot_scaling`           benchmark medians against a size (number of ROIs, channels, ...)
=============================  ===============================================================

Convention
----------
A map of ``H x W`` cells is drawn with ``extent=(0, W, H, 0)``: cell ``(row r, column c)``
covers the square ``[c, c + 1] x [r, r + 1]`` and its centre is at ``(c + 0.5, r + 0.5)``. A box
``(x1, y1, x2, y2)`` given in image pixels is drawn at ``(x1, y1, x2, y2) * spatial_scale`` on
the map. In these coordinates ROI Align with ``aligned=True`` samples exactly the drawn box;
with ``aligned=False`` it samples a box shifted by half a cell down and right, and
:func:`draw_roi_align_samples` draws it there. ROI Pool and the crop strategies keep whole
cells ``round(x1 * scale) .. round(x2 * scale)`` inclusive, drawn as the quantised region.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.ticker import (
    FuncFormatter,
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from .boxes import align_geometry, parse_box, pool_bin_edges, sample_grid

__all__ = [
    "BIN_COLORS",
    "BOX_COLORS",
    "FONT_SIZE",
    "GAINED_COLOR",
    "LOST_COLOR",
    "SMALL_FONT_SIZE",
    "BoxArtists",
    "ImageArtists",
    "PlainLogFormatter",
    "RoIAlignArtists",
    "RoIPoolArtists",
    "StrategyPanels",
    "as_chw",
    "box_in_map",
    "display_array",
    "draw_boxes",
    "draw_coverage",
    "draw_image",
    "draw_roi_align_samples",
    "draw_roi_pool_bins",
    "metrics_text",
    "plain_log_ticks",
    "plot_scaling",
    "plot_timings",
]

#: Colours of successive boxes (the first is the active ROI in the Explorer).
BOX_COLORS = ("#ff3b30", "#0a84ff", "#ffd60a", "#30d158", "#bf5af2", "#ff9f0a", "#64d2ff")
#: Cells of the box that ROI Pool's rounding drops, and cells outside it that it adds.
LOST_COLOR = "#ff3b30"
GAINED_COLOR = "#0a84ff"
#: ROI Pool's bins, coloured by (row parity, column parity): neighbouring bins, which overlap by
#: up to a cell, never share a colour.
BIN_COLORS = ("#ffd60a", "#ff2d92", "#00e0ff", "#ff9f0a")
#: Each bin's outline is drawn this many cells inside the bin, so that two bins whose edges
#: fall on the same cell line show two lines, one per bin.
BIN_INSET = 0.08
#: Font sizes in points. A notebook figure is at most 10 inches wide at 100 dpi (1000 px), which
#: JupyterLab may shrink to about 800 px: 9 pt is then still 10 px on screen.
FONT_SIZE = 10.0
SMALL_FONT_SIZE = 9.0

Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------------------------
# Arrays in, arrays to show
# --------------------------------------------------------------------------------------------


def as_chw(image: Any, name: str = "image") -> torch.Tensor:
    """An image or feature map as a float ``Tensor[C, H, W]`` on the CPU.

    Accepts a numpy array ``H x W``, ``H x W x C`` with ``C`` in (1, 3, 4) (an image, channels
    last) or ``C x H x W`` (any other 3-D array), and a tensor ``[H, W]``, ``[C, H, W]`` or
    ``[1, C, H, W]`` (tensors are channels first, as in PyTorch).

    Examples
    --------
    >>> as_chw(np.zeros((4, 5, 3))).shape
    torch.Size([3, 4, 5])
    >>> as_chw(torch.zeros(1, 16, 8, 8)).shape
    torch.Size([16, 8, 8])
    """
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            t = torch.from_numpy(np.ascontiguousarray(image))[None]
        elif image.ndim == 3 and image.shape[2] in (1, 3, 4):
            t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        elif image.ndim == 3:
            t = torch.from_numpy(np.ascontiguousarray(image))
        else:
            raise ValueError(f"{name} must be a 2-D or 3-D array, got shape {image.shape}")
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        elif t.dim() == 2:
            t = t[None]
        elif t.dim() != 3:
            raise ValueError(f"{name} must be a tensor [H, W], [C, H, W] or [1, C, H, W], got shape {tuple(t.shape)}")
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(image).__name__}")
    if t.shape[-1] == 0 or t.shape[-2] == 0 or t.shape[0] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.bool)):
        t = t.float()
    if t.dtype == torch.uint8:
        t = t.float() / 255.0  # an 8-bit photo
    return t.float().contiguous()


def display_array(chw: torch.Tensor | np.ndarray, channel: int | None = None) -> np.ndarray:
    """What to show of a ``[C, H, W]`` array: ``H x W x 3`` for RGB, else one ``H x W`` plane.

    ``channel=None`` shows the three channels of an RGB array as colour, a single channel as is,
    and the mean over channels of any other map. An int picks that channel.

    Examples
    --------
    >>> display_array(torch.ones(3, 2, 2)).shape
    (2, 2, 3)
    >>> display_array(torch.arange(8.).reshape(2, 2, 2), channel=1)
    array([[4., 5.],
           [6., 7.]], dtype=float32)
    """
    a = chw.detach().cpu().numpy() if isinstance(chw, torch.Tensor) else np.asarray(chw)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return a.astype(np.float32, copy=False)
    if a.ndim != 3:
        raise ValueError(f"chw must be [C, H, W], got shape {a.shape}")
    c_n = a.shape[0]
    if channel is not None:
        if not -c_n <= channel < c_n:
            raise ValueError(f"channel must be in [0, {c_n}), got {channel}")
        return a[channel].astype(np.float32, copy=False)
    if c_n == 3:
        return np.moveaxis(a, 0, -1).astype(np.float32, copy=False)
    if c_n == 1:
        return a[0].astype(np.float32, copy=False)
    return a.mean(axis=0).astype(np.float32, copy=False)


def _rgb_in_clim(a: np.ndarray, clim: tuple[float, float]) -> np.ndarray:
    """An ``H x W x 3`` array mapped linearly from ``clim`` to [0, 1] (imshow needs that for RGB)."""
    lo, hi = clim
    return np.clip((a - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def box_in_map(box: Sequence[float], spatial_scale: float = 1.0) -> Box:
    """A box in image pixels as drawn on a map of scale ``spatial_scale``.

    >>> box_in_map((8, 16, 40, 64), 1 / 8)
    (1.0, 2.0, 5.0, 8.0)
    """
    x1, y1, x2, y2 = (float(v) * spatial_scale for v in box)
    return (x1, y1, x2, y2)


def _check_box(box: Any, name: str = "box") -> Box:
    if isinstance(box, (torch.Tensor, np.ndarray)):
        box = box.tolist()
    _, x1, y1, x2, y2 = parse_box(box, name=name)
    return (x1, y1, x2, y2)


def _roi(box: Box) -> torch.Tensor:
    return torch.tensor([0.0, *box], dtype=torch.float32)


def _clean_axes(ax: Axes, ticks: bool) -> None:
    if not ticks:
        ax.set_xticks([])
        ax.set_yticks([])
        return
    for axis in (ax.xaxis, ax.yaxis):  # pixels and cells are counted in whole numbers
        axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 4, 5, 10]))


def _legend(ax: Axes, where: bool | str, handles: list[Any], **kwargs: Any) -> None:
    """A legend inside the axes' lower right (``True``/``"inside"``), under the axes, clear of
    the data (``"below"``), or none (``False``)."""
    if where is False:
        return
    if where in (True, "inside"):
        ax.legend(handles=handles, loc="lower right", fontsize=SMALL_FONT_SIZE, framealpha=0.8, **kwargs)
    elif where == "below":
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2,
                  fontsize=SMALL_FONT_SIZE, frameon=False, **kwargs)
    else:
        raise ValueError(f"legend must be True, False, 'inside' or 'below', got {where!r}")


# --------------------------------------------------------------------------------------------
# Image and boxes
# --------------------------------------------------------------------------------------------


@dataclass
class BoxArtists:
    """The rectangles (and optional labels) of :func:`draw_boxes`."""

    rects: list[Rectangle]
    labels: list[Text] = field(default_factory=list)
    spatial_scale: float = 1.0

    def update(self, index: int, box: Sequence[float]) -> None:
        """Move rectangle ``index`` to ``box`` (image pixels), in place."""
        x1, y1, x2, y2 = box_in_map(_check_box(box), self.spatial_scale)
        self.rects[index].set_bounds(x1, y1, x2 - x1, y2 - y1)
        if index < len(self.labels):
            self.labels[index].set_position((x1, y1))


def draw_boxes(
    ax: Axes, boxes: Iterable[Sequence[float]], *, spatial_scale: float = 1.0,
    colors: Sequence[str] | None = None, labels: Sequence[str] | None = None,
    linewidth: float = 2.0, linestyle: str = "-", zorder: float = 3.0,
) -> BoxArtists:
    """Draw boxes ``(x1, y1, x2, y2)`` (image pixels) as rectangles on a map of scale ``spatial_scale``.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> art = draw_boxes(ax, [(0, 0, 8, 8), (4, 4, 16, 12)], spatial_scale=0.5, labels=["a", "b"])
    >>> [tuple(float(v) for v in r.get_bbox().bounds) for r in art.rects]
    [(0.0, 0.0, 4.0, 4.0), (2.0, 2.0, 6.0, 4.0)]
    """
    colors = list(colors) if colors is not None else list(BOX_COLORS)
    rects, texts = [], []
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = box_in_map(_check_box(box, f"boxes[{i}]"), spatial_scale)
        color = colors[i % len(colors)]
        rect = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                         linewidth=linewidth, linestyle=linestyle, zorder=zorder)
        ax.add_patch(rect)
        rects.append(rect)
        if labels is not None and i < len(labels):
            texts.append(ax.text(x1, y1, f" {labels[i]}", color="black", fontsize=SMALL_FONT_SIZE, va="bottom",
                                 ha="left", zorder=zorder, clip_on=True,
                                 bbox={"facecolor": color, "edgecolor": "none", "pad": 1.0}))
    return BoxArtists(rects, texts, spatial_scale)


@dataclass
class ImageArtists:
    """The picture of :func:`draw_image` (or :func:`draw_coverage`) and its boxes."""

    image: AxesImage
    boxes: BoxArtists
    channel: int | None = None

    def update(self, image: Any | None = None, boxes: Iterable[Sequence[float]] | None = None) -> None:
        """Replace the picture (same size) and/or move the boxes, in place."""
        if image is not None:
            self.image.set_data(display_array(as_chw(image), self.channel))
        if boxes is not None:
            for i, box in enumerate(boxes):
                self.boxes.update(i, box)


def draw_image(
    ax: Axes, image: Any, boxes: Iterable[Sequence[float]] | None = None, *,
    channel: int | None = None, spatial_scale: float = 1.0, cmap: str = "viridis",
    vmin: float | None = None, vmax: float | None = None, title: str | None = None,
    labels: Sequence[str] | None = None, colors: Sequence[str] | None = None, ticks: bool = True,
    linewidth: float = 2.0,
) -> ImageArtists:
    """Show an image or one channel of a feature map, with boxes over it.

    Parameters
    ----------
    ax : Axes
        Where to draw.
    image : array or Tensor
        ``H x W``, ``H x W x 3`` (numpy), ``[C, H, W]`` or ``[1, C, H, W]`` (see :func:`as_chw`).
    boxes : iterable of (x1, y1, x2, y2), optional
        In image pixels; drawn at ``box * spatial_scale`` (use ``1 / stride`` on a feature map).
    channel : int, optional
        The channel to show; by default RGB as colour, other maps as their channel mean.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> art = draw_image(ax, np.zeros((16, 24, 3)), [(2, 2, 10, 8)])
    >>> list(art.image.get_extent()), len(art.boxes.rects)
    ([0, 24, 16, 0], 1)
    """
    chw = as_chw(image)
    shown = display_array(chw, channel)
    h, w = chw.shape[-2:]
    if shown.ndim == 3:
        lo = float(shown.min()) if vmin is None else vmin
        hi = float(shown.max()) if vmax is None else vmax
        # RGB photos in [0, 1] are shown as they are; other 3-channel maps are stretched.
        clim = (0.0, 1.0) if lo >= 0.0 and hi <= 1.0 and vmin is None and vmax is None else (lo, hi)
        im = ax.imshow(_rgb_in_clim(shown, clim), extent=(0, w, h, 0), interpolation="nearest")
    else:
        im = ax.imshow(shown, extent=(0, w, h, 0), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    box_art = draw_boxes(ax, boxes or [], spatial_scale=spatial_scale, labels=labels, colors=colors,
                         linewidth=linewidth)
    if title is not None:
        ax.set_title(title, fontsize=FONT_SIZE)
    _clean_axes(ax, ticks)
    return ImageArtists(im, box_art, channel)


# --------------------------------------------------------------------------------------------
# ROI Pool: quantised bins, lost and gained cells
# --------------------------------------------------------------------------------------------


def _cells_rgba(mask: np.ndarray, color: str, alpha: float) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    rgba[mask] = to_rgba(color, alpha)
    return rgba


@dataclass
class RoIPoolArtists:
    """What :func:`draw_roi_pool_bins` drew; ``update(box)`` moves it all in place."""

    ax: Axes
    image: AxesImage
    box: Rectangle
    region: Rectangle
    bins: list[Rectangle]
    lost: AxesImage
    gained: AxesImage
    title: Text
    output_size: tuple[int, int]
    spatial_scale: float
    shape: tuple[int, int]
    counts: dict[str, int] = field(default_factory=dict)

    def update(self, box: Sequence[float]) -> None:
        """Redraw for a new ``box`` (image pixels): bins, lost/gained cells, counts, title."""
        from .metrics import quantization  # metrics imports strategies; keep viz light to import

        box = _check_box(box)
        ph_n, pw_n = self.output_size
        h, w = self.shape
        x1, y1, x2, y2 = box_in_map(box, self.spatial_scale)
        self.box.set_bounds(x1, y1, x2 - x1, y2 - y1)
        edges = (t[0].tolist() for t in pool_bin_edges(_roi(box)[None], self.spatial_scale, ph_n, pw_n, h, w))
        bh0, bh1, bw0, bw1 = edges
        bins = [[(bh0[i], bh1[i], bw0[j], bw1[j]) for j in range(pw_n)] for i in range(ph_n)]
        for rect, (hs, he, ws, we) in zip(self.bins, (b for row in bins for b in row), strict=True):
            # Rows hs..he-1 cover [hs, he]; the outline sits BIN_INSET inside that square.
            rect.set_bounds(ws + BIN_INSET, hs + BIN_INSET, we - ws - 2 * BIN_INSET, he - hs - 2 * BIN_INSET)
            rect.set_visible(he > hs and we > ws)  # an empty bin (outside the map) gives 0
        hs = min(b[0] for row in bins for b in row)
        he = max(b[1] for row in bins for b in row)
        ws = min(b[2] for row in bins for b in row)
        we = max(b[3] for row in bins for b in row)
        self.region.set_bounds(ws, hs, we - ws, he - hs)
        q = quantization(box, self.spatial_scale, h, w)
        self.lost.set_data(_cells_rgba(np.asarray(q.lost_mask), LOST_COLOR, 0.55))
        self.gained.set_data(_cells_rgba(np.asarray(q.gained_mask), GAINED_COLOR, 0.55))
        self.counts = {"lost": int(q.lost), "gained": int(q.gained)}
        self.title.set_text(
            f"ROI Pool {ph_n}x{pw_n}: {q.lost} cells lost, {q.gained} gained by rounding"
        )


def draw_roi_pool_bins(
    ax: Axes, image: Any, box: Sequence[float], output_size: int | tuple[int, int],
    spatial_scale: float = 1.0, *, channel: int | None = None, cmap: str = "gray", ticks: bool = True,
    legend: bool | str = True, values: bool = False,
) -> RoIPoolArtists:
    """ROI Pool's view of one box: its quantised bins, and the cells rounding loses and gains.

    The dashed rectangle is the true box (``box * spatial_scale``); the thin rectangles are the
    bins ROI Pool takes the maximum over (``floor`` start, ``ceil`` end: neighbours overlap),
    drawn :data:`BIN_INSET` inside their cells and coloured by the parity of their row and column
    (:data:`BIN_COLORS`), so that overlapping neighbours can be told apart; red cells are inside the true box but dropped by rounding, blue cells are outside it but
    added (see :func:`roiviz.metrics.quantization` for how a cell counts as inside).

    Parameters
    ----------
    image : array or Tensor
        The feature map the box is pooled from (shown in grey underneath).
    box : (x1, y1, x2, y2)
        In image pixels.
    legend : bool or {"inside", "below"}
        Where the legend goes: inside the axes (lower right; ``True``), under them, clear of
        the map (``"below"``), or nowhere (``False``).
    values : bool
        Write each cell's value on it (for small maps, such as a 4x4 teaching example).

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> art = draw_roi_pool_bins(ax, np.zeros((8, 8)), (0.6, 0.6, 5.4, 5.4), 2)
    >>> len(art.bins), art.counts["lost"] >= 0
    (4, True)
    """
    from ._checks import check_output_size, check_spatial_scale

    chw = as_chw(image)
    ph_n, pw_n = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    h, w = int(chw.shape[-2]), int(chw.shape[-1])
    im = ax.imshow(display_array(chw, channel), extent=(0, w, h, 0), cmap=cmap, interpolation="nearest",
                   alpha=0.8)
    empty = np.zeros((h, w, 4), dtype=np.float32)
    lost = ax.imshow(empty, extent=(0, w, h, 0), interpolation="nearest", zorder=2)
    gained = ax.imshow(empty.copy(), extent=(0, w, h, 0), interpolation="nearest", zorder=2)
    region = Rectangle((0, 0), 1, 1, fill=False, edgecolor="white", linewidth=2.0, zorder=3)
    bins = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=BIN_COLORS[2 * (ph % 2) + pw % 2], linewidth=1.5,
                      alpha=0.95, zorder=4)
            for ph in range(ph_n) for pw in range(pw_n)]
    true_box = Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linestyle="--", linewidth=1.5, zorder=5)
    for patch in (region, *bins, true_box):
        ax.add_patch(patch)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    title = ax.set_title("", fontsize=FONT_SIZE)
    if values:
        shown = display_array(chw, channel)
        lo, hi = float(np.min(shown)), float(np.max(shown))
        for (r, c), v in np.ndenumerate(shown):
            dark = hi > lo and (v - lo) / (hi - lo) < 0.5  # the grey map is dark there
            ax.text(c + 0.5, r + 0.5, f"{v:g}", ha="center", va="center", fontsize=FONT_SIZE,
                    color="white" if dark else "black", zorder=6)
    _legend(ax, legend, [Rectangle((0, 0), 1, 1, color=LOST_COLOR, alpha=0.55, label="lost"),
                         Rectangle((0, 0), 1, 1, color=GAINED_COLOR, alpha=0.55, label="gained"),
                         Line2D([], [], color="black", linestyle="--", label="true box"),
                         tuple(Line2D([], [], color=c) for c in BIN_COLORS)],
            labels=["lost", "gained", "true box", "bins (alternating colours)"],
            handler_map={tuple: HandlerTuple(ndivide=None, pad=0)})
    _clean_axes(ax, ticks)
    art = RoIPoolArtists(ax, im, true_box, region, bins, lost, gained, title, (ph_n, pw_n), scale, (h, w))
    art.update(box)
    return art


# --------------------------------------------------------------------------------------------
# ROI Align: bins and sample points
# --------------------------------------------------------------------------------------------


@dataclass
class RoIAlignArtists:
    """What :func:`draw_roi_align_samples` drew; ``update(box, ...)`` moves it in place."""

    ax: Axes
    image: AxesImage
    box: Rectangle
    region: Rectangle
    grid: LineCollection
    inside: PathCollection
    outside: PathCollection
    title: Text
    output_size: tuple[int, int]
    spatial_scale: float
    shape: tuple[int, int]
    sampling_ratio: int = -1
    aligned: bool = False
    count: int = 0

    def update(self, box: Sequence[float], sampling_ratio: int | None = None, aligned: bool | None = None) -> None:
        """Redraw for a new box (and optionally new ``sampling_ratio``/``aligned``)."""
        box = _check_box(box)
        if sampling_ratio is not None:
            self.sampling_ratio = int(sampling_ratio)
        if aligned is not None:
            self.aligned = bool(aligned)
        ph_n, pw_n = self.output_size
        h, w = self.shape
        x1, y1, x2, y2 = box_in_map(box, self.spatial_scale)
        self.box.set_bounds(x1, y1, x2 - x1, y2 - y1)
        g = align_geometry(_roi(box)[None], self.spatial_scale, ph_n, pw_n, self.sampling_ratio, self.aligned)
        ys, xs, _, _ = sample_grid(_roi(box)[None], self.spatial_scale, ph_n, pw_n, self.sampling_ratio, self.aligned)
        gh, gw = int(g.grid_h[0]), int(g.grid_w[0])
        self.count = count = max(gh * gw, 1)
        # The region ROI Align samples, in index coordinates (cell centres at integers) ...
        sx, sy = float(g.start_w[0]), float(g.start_h[0])
        rw, rh = float(g.bin_w[0]) * pw_n, float(g.bin_h[0]) * ph_n
        # ... drawn shifted by +0.5 since a cell c covers [c, c + 1] on screen.
        self.region.set_bounds(sx + 0.5, sy + 0.5, rw, rh)
        segs = [[(sx + 0.5 + pw * rw / pw_n, sy + 0.5), (sx + 0.5 + pw * rw / pw_n, sy + 0.5 + rh)]
                for pw in range(1, pw_n)]
        segs += [[(sx + 0.5, sy + 0.5 + ph * rh / ph_n), (sx + 0.5 + rw, sy + 0.5 + ph * rh / ph_n)]
                 for ph in range(1, ph_n)]
        self.grid.set_segments(segs)
        yy, xx = np.broadcast_arrays(ys[0, :, None, :gh, None].double().numpy(), xs[0, None, :, None, :gw].double().numpy())
        yx = np.stack([yy.ravel(), xx.ravel()], axis=1)  # bin (ph, pw), then sample (iy, ix)
        # A sample contributes nothing when y < -1, y > H, x < -1 or x > W, but still counts.
        out = (yx[:, 0] < -1) | (yx[:, 0] > h) | (yx[:, 1] < -1) | (yx[:, 1] > w)
        xy = yx[:, ::-1] + 0.5
        self.inside.set_offsets(xy[~out] if (~out).any() else np.empty((0, 2)))
        self.outside.set_offsets(xy[out] if out.any() else np.empty((0, 2)))
        adaptive = " (adaptive)" if self.sampling_ratio <= 0 else ""
        self.title.set_text(
            f"ROI Align {ph_n}x{pw_n}, aligned={self.aligned}\n"
            f"sampling_ratio={self.sampling_ratio}{adaptive}:\n{count} samples per bin"
        )


def draw_roi_align_samples(
    ax: Axes, image: Any, box: Sequence[float], output_size: int | tuple[int, int],
    spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False, *,
    channel: int | None = None, cmap: str = "gray", ticks: bool = True, legend: bool | str = True,
) -> RoIAlignArtists:
    """ROI Align's view of one box: the region it samples, its bins and every sample point.

    The dashed rectangle is the box as given (``box * spatial_scale``); the solid one is the
    region actually sampled: the same box with ``aligned=True``, shifted by half a cell down
    and right with ``aligned=False`` (the legacy misalignment). Dots are bilinear samples;
    crosses are samples outside the map, which add 0 but still count in the bin's mean. The
    bin lines are drawn over the dots, so that they stay visible however dense the samples.
    ``legend`` is placed as in :func:`draw_roi_pool_bins`.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> art = draw_roi_align_samples(ax, np.zeros((8, 8)), (0, 0, 4, 4), 2, sampling_ratio=2, aligned=True)
    >>> art.inside.get_offsets().tolist()[:4], art.count   # bin (0, 0) is [0, 2] x [0, 2]
    ([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.5, 1.5]], 4)
    """
    from ._checks import check_aligned, check_output_size, check_sampling_ratio, check_spatial_scale

    chw = as_chw(image)
    ph_n, pw_n = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    h, w = int(chw.shape[-2]), int(chw.shape[-1])
    im = ax.imshow(display_array(chw, channel), extent=(0, w, h, 0), cmap=cmap, interpolation="nearest",
                   alpha=0.8)
    region = Rectangle((0, 0), 1, 1, fill=False, edgecolor="#30d158", linewidth=2.0, zorder=7)
    true_box = Rectangle((0, 0), 1, 1, fill=False, edgecolor="black", linestyle="--", linewidth=1.5, zorder=8)
    ax.add_patch(region)
    ax.add_patch(true_box)
    grid = LineCollection([], colors="#30d158", linewidths=1.3, zorder=7)
    ax.add_collection(grid)
    inside = ax.scatter([], [], s=8, color="#ff3b30", zorder=6, label="sample")
    outside = ax.scatter([], [], s=16, marker="x", color="#ff9f0a", zorder=6, label="outside the map (adds 0)")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    title = ax.set_title("", fontsize=FONT_SIZE)
    _legend(ax, legend, [Line2D([], [], color="black", linestyle="--", label="box"),
                         Line2D([], [], color="#30d158", label="sampled region, bins"), inside, outside])
    _clean_axes(ax, ticks)
    art = RoIAlignArtists(ax, im, true_box, region, grid, inside, outside, title, (ph_n, pw_n), scale, (h, w),
                          check_sampling_ratio(sampling_ratio), check_aligned(aligned))
    art.update(box)
    return art


# --------------------------------------------------------------------------------------------
# Every strategy side by side
# --------------------------------------------------------------------------------------------


def _metric(m: Any, name: str) -> float:
    return float(m[name] if isinstance(m, Mapping) else getattr(m, name))


def metrics_text(m: Any) -> str:
    """A two-line summary of one strategy's metrics (a ``StrategyMetrics`` or a dict)."""
    cov, leak, psnr = _metric(m, "coverage"), _metric(m, "leak_fraction"), _metric(m, "psnr")
    psnr_s = "n/a" if np.isnan(psnr) else ("inf" if np.isinf(psnr) else f"{psnr:.1f}")
    return f"cov {cov:.0%} leak {leak:.0%}\nPSNR {psnr_s} dB"


class StrategyPanels:
    """The outputs of several strategies side by side, on one colour scale, with their metrics.

    The axes and their artists are made once; :meth:`update` only calls ``set_data``,
    ``set_clim``, ``set_extent`` and ``set_text``.

    Parameters
    ----------
    axes : sequence of Axes
        One per name, in order.
    names : sequence of str
        Strategy names (titles of the panels).
    show_metrics : bool
        Write each strategy's metrics under its panel.

    Examples
    --------
    >>> fig = Figure()
    >>> panels = StrategyPanels.create(fig, ["crop", "resize"])
    >>> panels.update({"crop": torch.zeros(1, 1, 2, 2), "resize": torch.ones(1, 1, 2, 2)})
    >>> panels.images["resize"].get_clim()
    (0.0, 1.0)
    """

    def __init__(self, axes: Sequence[Axes], names: Sequence[str], *, cmap: str = "viridis",
                 show_metrics: bool = True, fontsize: float = FONT_SIZE) -> None:
        names = list(names)
        if len(axes) != len(names):
            raise ValueError(f"axes must have one Axes per name: {len(names)} names, got {len(axes)} axes")
        self.names = names
        self.axes: dict[str, Axes] = dict(zip(names, axes, strict=True))
        self.images: dict[str, AxesImage] = {}
        self.titles: dict[str, Text] = {}
        self.texts: dict[str, Text] = {}
        self.clim: tuple[float, float] = (0.0, 1.0)
        self._shape: tuple[int, int] | None = None
        for name, ax in self.axes.items():
            self.images[name] = ax.imshow(np.zeros((1, 1)), cmap=cmap, vmin=0.0, vmax=1.0,
                                          interpolation="nearest", extent=(0, 1, 1, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            self.titles[name] = ax.set_title(name, fontsize=fontsize)
            if show_metrics:
                self.texts[name] = ax.text(0.5, -0.04, "", transform=ax.transAxes, ha="center", va="top",
                                           fontsize=max(fontsize - 1, SMALL_FONT_SIZE))

    @classmethod
    def create(cls, fig: Figure, names: Sequence[str], ncols: int | None = None, **kwargs: Any) -> StrategyPanels:
        """Make a grid of axes on ``fig`` (``ncols`` wide, all in one row by default)."""
        names = list(names)
        ncols = ncols or max(len(names), 1)
        nrows = -(-len(names) // ncols)
        axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(names))]
        return cls(axes, names, **kwargs)

    def colorbar(self, fig: Figure, label: str = "value") -> Any:
        """Add one colour bar for all panels (they share one scale); it follows :meth:`update`."""
        cbar = fig.colorbar(self.images[self.names[-1]], ax=list(self.axes.values()), fraction=0.02, pad=0.02)
        cbar.set_label(label, fontsize=SMALL_FONT_SIZE)
        cbar.ax.tick_params(labelsize=SMALL_FONT_SIZE)
        return cbar

    def update(self, outputs: Mapping[str, Any], metrics: Any = None, *, channel: int | None = None,
               clim: tuple[float, float] | None = None) -> None:
        """Show new outputs (``[C, PH, PW]`` or ``[1, C, PH, PW]`` each) and metrics, in place.

        One colour scale for all panels: ``clim``, or the range of all outputs shown (always
        including 0, the value the zero-filling strategies invent; ``(0, 1)`` for RGB outputs
        within it).
        """
        shown = {name: display_array(outputs[name], channel) for name in self.names if name in outputs}
        if clim is None:
            lo = min([0.0, *(float(a.min()) for a in shown.values())])
            hi = max([0.0, *(float(a.max()) for a in shown.values())])
            if all(a.ndim == 3 for a in shown.values()) and lo >= 0.0 and hi <= 1.0:
                lo, hi = 0.0, 1.0  # RGB in [0, 1]: show the colours as they are
            clim = (lo, hi if hi > lo else lo + 1.0)
        self.clim = (float(clim[0]), float(clim[1]))
        for name in self.names:
            im = self.images[name]
            if name not in shown:
                self.axes[name].set_visible(False)
                continue
            self.axes[name].set_visible(True)
            a = shown[name]
            im.set_data(_rgb_in_clim(a, self.clim) if a.ndim == 3 else a)
            im.set_clim(*self.clim)
            shape = a.shape[:2]
            if tuple(im.get_extent()) != (0, shape[1], shape[0], 0):
                im.set_extent((0, shape[1], shape[0], 0))
            if metrics is not None and name in self.texts:
                self.texts[name].set_text(metrics_text(metrics[name]))


# --------------------------------------------------------------------------------------------
# Gradient / coverage maps
# --------------------------------------------------------------------------------------------


def draw_coverage(ax: Axes, influence: np.ndarray | torch.Tensor, box: Sequence[float] | None = None, *,
                  spatial_scale: float = 1.0, title: str | None = None, cmap: str = "magma",
                  ticks: bool = False) -> ImageArtists:
    """Show an influence map (normalised to its maximum) with the box drawn over it.

    ``influence`` is ``Tensor[H, W]`` from :func:`roiviz.metrics.influence_map`: which input
    cells move the output. Cells inside the box that stay black are lost; bright cells outside
    it are leaks.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> art = draw_coverage(ax, np.eye(4), (0, 0, 2, 2), title="crop")
    >>> art.image.get_clim(), len(art.boxes.rects)
    ((0.0, 1.0), 1)
    """
    m = (influence.detach().cpu().numpy() if isinstance(influence, torch.Tensor) else np.asarray(influence))
    m = m.astype(np.float32, copy=False)
    if m.ndim != 2:
        raise ValueError(f"influence must be a 2-D map, got shape {m.shape}")
    peak = float(m.max()) if m.size else 0.0
    shown = m / peak if peak > 0 else m
    art = draw_image(ax, shown, [box] if box is not None else None, spatial_scale=spatial_scale, cmap=cmap,
                     vmin=0.0, vmax=1.0, title=title, colors=["#64d2ff"], ticks=ticks)
    for rect in art.boxes.rects:
        rect.set_linestyle("--")
    return art


# --------------------------------------------------------------------------------------------
# Timings (used by the benchmark)
# --------------------------------------------------------------------------------------------


class PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis tick labels as plain numbers (``0.6``, ``2``, ``300``) instead of ``6×10⁻¹``.

    Which ticks get a label is matplotlib's own choice (decades, and some minor ticks when the
    axis spans less than a few decades); only the text changes.

    Examples
    --------
    >>> ax = Figure().add_subplot(yscale="log", ylim=(0.3, 3))
    >>> plain_log_ticks(ax, "y")
    >>> f = ax.yaxis.get_minor_formatter()
    >>> f.set_locs([0.5, 0.6, 2.0])
    >>> [f(v) for v in (0.6, 2.0)]
    ['0.6', '2']
    """

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def plain_log_ticks(ax: Axes, axis: str = "both") -> None:
    """Label the log-scaled ``axis`` (``"x"``, ``"y"`` or ``"both"``) of ``ax`` with plain numbers.

    Works in the axis's own base: a ``base=2`` axis reads ``1, 2, 4, 8`` instead of ``2⁰ … 2³``.

    Examples
    --------
    >>> ax = Figure().add_subplot(xlim=(1, 8))
    >>> ax.set_xscale("log", base=2)
    >>> plain_log_ticks(ax, "x")
    >>> f = ax.xaxis.get_major_formatter()
    >>> f.set_locs([1.0, 2.0, 4.0, 8.0])
    >>> [f(v) for v in (1.0, 2.0, 4.0, 8.0)]
    ['1', '2', '4', '8']
    """
    if axis not in ("x", "y", "both"):
        raise ValueError(f"axis must be 'x', 'y' or 'both', got {axis!r}")
    for name in ("x", "y") if axis == "both" else (axis,):
        target = ax.xaxis if name == "x" else ax.yaxis
        if target.get_scale() == "log":
            base = getattr(target.get_transform(), "base", 10.0)  # 2 on a log2 axis: 1, 2, 4, 8
            target.set_major_formatter(PlainLogFormatter(base=base))
            target.set_minor_formatter(PlainLogFormatter(base=base, labelOnlyBase=False))


def _label(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    return " ".join(str(row[k]) for k in keys if k in row and row[k] is not None)


def plot_timings(
    ax: Axes, results: Sequence[Mapping[str, Any]], *, group: str | Sequence[str] = "op",
    hue: Sequence[str] = ("impl", "pass"), value: str = "median_ms", log: bool = True,
    title: str | None = None, values: bool = False, legend: str = "inside",
) -> list[Rectangle]:
    """Benchmark medians as grouped bars: one group per ``group`` key, one bar colour per ``hue``.

    Parameters
    ----------
    results : sequence of dict
        One record per measurement, e.g. ``{"op": "roi_align", "workload": "K=512",
        "impl": "roiviz", "pass": "fwd", "median_ms": 1.8}``. Keys missing from a record are
        skipped in its labels; ``value`` must be present.
    group : str or sequence of str
        Key(s) whose values label the groups on the x axis (e.g. ``("op", "workload")``).
    hue : sequence of str
        Key(s) whose values tell bars apart inside a group (legend).
    values : bool
        Write each bar's value (2 significant digits) above it, with room made at the top, so
        that a bar between two tick labels can still be read.
    legend : {"inside", "above"}
        The legend inside the axes (matplotlib's best place) or above them, right-aligned, clear
        of the bars (the title then moves to the left).

    On a log axis the ticks sit at 1, 2 and 5 times each power of ten, all labelled as plain
    numbers (``0.2``, ``0.5``, ``1``, ``2``).

    Returns
    -------
    list of Rectangle
        The bars, in the order of ``results``.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> rows = [{"op": "roi_align", "impl": "roiviz", "pass": "fwd", "median_ms": 2.0},
    ...         {"op": "roi_align", "impl": "torchvision", "pass": "fwd", "median_ms": 1.0},
    ...         {"op": "roi_pool", "impl": "roiviz", "pass": "fwd", "median_ms": 3.0}]
    >>> bars = plot_timings(ax, rows)
    >>> [float(b.get_height()) for b in bars]
    [2.0, 1.0, 3.0]
    """
    group_keys = [group] if isinstance(group, str) else list(group)
    if not results:
        raise ValueError("results must hold at least one record")
    for i, row in enumerate(results):
        if value not in row:
            raise ValueError(f"results[{i}] has no {value!r} key: {dict(row)}")
    groups = list(dict.fromkeys(_label(r, group_keys) for r in results))
    hues = list(dict.fromkeys(_label(r, hue) for r in results))
    width = 0.8 / max(len(hues), 1)
    colors = {h: f"C{i % 10}" for i, h in enumerate(hues)}
    bars, seen = [], set()
    for row in results:
        g, h = groups.index(_label(row, group_keys)), _label(row, hue)
        x = g - 0.4 + width * (hues.index(h) + 0.5)
        label = h if h not in seen else None
        seen.add(h)
        (bar,) = ax.bar([x], [float(row[value])], width=width, color=colors[h], label=label)
        bars.append(bar)
    if legend not in ("inside", "above"):
        raise ValueError(f"legend must be 'inside' or 'above', got {legend!r}")
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(value.replace("_ms", " (ms)").replace("_", " "))
    heights = [float(b.get_height()) for b in bars]
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        positive = [h for h in heights if h > 0]
        if positive:  # the bars' range, with room for a tick below and labels above
            ax.set_ylim(min(positive) / 1.6, max(positive) * (2.2 if values else 1.3))
    elif values:
        ax.set_ylim(top=max(heights) * 1.15)
    if values:
        for bar, h in zip(bars, heights, strict=True):
            ax.annotate(f"{h:.2g}", (bar.get_x() + bar.get_width() / 2, h), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=SMALL_FONT_SIZE)
    if any(hues):
        if legend == "above":
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(hues), fontsize=SMALL_FONT_SIZE,
                      frameon=False, borderaxespad=0.2)
        else:
            ax.legend(fontsize=SMALL_FONT_SIZE)
    if title:
        ax.set_title(title, fontsize=FONT_SIZE, loc="left" if legend == "above" else "center")
    return bars


def plot_scaling(
    ax: Axes, results: Sequence[Mapping[str, Any]], x: str = "num_rois", *, y: str = "median_ms",
    by: Sequence[str] = ("op", "impl", "pass"), log: bool = True, title: str | None = None,
    xlabel: str | None = None, title_width: int | None = None,
) -> list[Line2D]:
    """Benchmark medians against a size: one line per combination of the ``by`` keys.

    Records without the ``x`` key (or with ``None`` there) are ignored, so the results of
    several sweeps can be passed together and plotted one sweep at a time (``x="num_rois"``,
    ``x="channels"``, ...). With :mod:`roiviz.bench` rows, which keep the swept value in ``"x"``
    and its name in ``"sweep"``, pass one sweep's rows and ``x="x", xlabel="number of ROIs"``.
    ``title_width`` wraps each line of the title at that many characters, so that the titles
    of panels side by side do not run into each other.

    Examples
    --------
    >>> fig = Figure(); ax = fig.add_subplot()
    >>> rows = [{"op": "roi_align", "impl": "roiviz", "num_rois": k, "median_ms": k / 10} for k in (1, 10, 100)]
    >>> [line.get_xdata().tolist() for line in plot_scaling(ax, rows)]
    [[1.0, 10.0, 100.0]]
    """
    rows = [r for r in results if x in r and r[x] is not None]
    if not rows:
        raise ValueError(f"results hold no record with the key {x!r}")
    series: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if y not in r:
            raise ValueError(f"a record has no {y!r} key: {dict(r)}")
        series.setdefault(_label(r, by), []).append((float(r[x]), float(r[y])))
    lines = []
    for label, pts in series.items():
        pts.sort()
        (line,) = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label or None)
        lines.append(line)
    ax.set_xlabel(xlabel if xlabel is not None else x.replace("_", " "))
    ax.set_ylabel(y.replace("_ms", " (ms)").replace("_", " "))
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax)
    if any(series):
        ax.legend(fontsize=SMALL_FONT_SIZE)
    if title:
        if title_width is not None:
            title = "\n".join(textwrap.fill(line, title_width) for line in title.splitlines())
        ax.set_title(title, fontsize=FONT_SIZE)
    return lines
