"""How much each ROI strategy keeps, loses, invents and moves: numbers with stated formulas.

:func:`strategy_metrics` runs every strategy on one box and returns a :class:`MetricsTable` of
:class:`StrategyMetrics` records (one per strategy). Each metric also has its own function, which
the figures use: :func:`influence_map` / :func:`coverage`, :func:`quantization`,
:func:`aspect_distortion`, :func:`reconstruction_psnr`, :func:`misalignment`.

Convention (continuous coordinates)
-----------------------------------
All metrics use one geometry, the one ROI Align with ``aligned=True`` implements: feature cell
``(i, j)`` is the unit square ``[j, j + 1) x [i, i + 1)`` of map coordinates, centred on
``(j + 0.5, i + 0.5)``, and a box ``(x1, y1, x2, y2)`` in image pixels is the continuous rectangle
``[x1 * s, x2 * s] x [y1 * s, y2 * s]`` on the map (``s = spatial_scale``), of width
``bw = (x2 - x1) * s`` and height ``bh = (y2 - y1) * s`` cells.

**Cell-in-box rule:** a cell belongs to the box when its *centre* lies in the closed rectangle:
columns ``ceil(x1*s - 0.5) .. floor(x2*s - 0.5)`` and likewise rows, clipped to the map
(:func:`box_cells`). A box can contain no cell centre at all (narrower than a cell).

ROI Pool and the strategies built on the integer crop (``crop``, ``pad``, ``adaptive_*``,
``resize``) use Fast R-CNN's cells ``round(x1*s) .. round(x2*s)`` *inclusive*
(:func:`roiviz.crop_bounds`), a convention made for boxes given as inclusive pixel indices.
Seen in continuous coordinates, that crop is ``[round(x1*s), round(x2*s) + 1)``: the start moves
by up to half a cell and the end always reaches past the box, by half a cell up to a cell and a
half. :func:`quantization` counts and draws exactly that.

The metrics (per strategy, per box)
-----------------------------------
=================== ==========================================================================
coverage            influencing box cells / box cells, where a cell influences the output when
                    ``|d sum(w * out) / d x|`` is non-zero at a seeded random map ``x`` with
                    random positive output weights ``w`` (autograd: true for any strategy)
leak, leak_fraction influencing cells outside the box; that count / the box's area in cells
quant_lost/_gained  box cells missing from ROI Pool's integer crop / crop cells outside the box
                    (the strategies that start from that crop; 0 for ``roi_align``, ``prroi_pool``)
aspect_distortion   ``log((region_w / region_h) / (PW / PH))`` of the region the strategy
                    stretches onto the grid (0 for crop and pad, which do not rescale)
psnr                ``10 log10(peak^2 / MSE)`` of the output resized (bilinear) onto the box's
                    true crop, ``peak = max - min`` of that crop; ``inf`` when exact
misalignment        mean distance, in cells, between point features at bin centres of the ideal
                    grid over the box and where the output's response centroid puts them
=================== ==========================================================================

Examples
--------
>>> import torch, roiviz
>>> from roiviz.metrics import strategy_metrics
>>> x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
>>> table = strategy_metrics(x, (4.0, 4.0, 18.0, 11.0), 7)
>>> [m.strategy for m in table] == list(roiviz.STRATEGIES)
True
>>> table["adaptive_avg"].coverage, table["roi_align"].quant_lost
(1.0, 0)
>>> round(table["resize"].aspect_distortion, 4)  # a 15 x 8 crop squeezed into 7 x 7
0.6286
"""

from __future__ import annotations

import dataclasses
import functools
import html
import math
import numbers
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_input, check_output_size, check_spatial_scale, trusted_boxes
from .boxes import crop_bounds, parse_box, quantize
from .strategies import STRATEGIES, get_strategy

__all__ = [
    "METRICS",
    "QUANTIZING",
    "Coverage",
    "MetricsTable",
    "Misalignment",
    "Quantization",
    "StrategyMetrics",
    "aspect_distortion",
    "box_cells",
    "box_mask",
    "coverage",
    "influence_map",
    "local",
    "misalignment",
    "quantization",
    "reconstruction_psnr",
    "strategy_metrics",
]

#: Strategies that start from ROI Pool's integer crop, so :func:`quantization` applies to them.
QUANTIZING: frozenset[str] = frozenset({"crop", "pad", "adaptive_max", "adaptive_avg", "resize", "roi_pool"})

Box = Sequence[float] | Tensor | np.ndarray
StrategyLike = str | Callable[..., Tensor]


# --------------------------------------------------------------------------------------------
# Boxes and their cells
# --------------------------------------------------------------------------------------------


def _check_map_size(height: object, width: object) -> tuple[int, int]:
    for arg, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
            raise ValueError(f"{arg} must be a positive int (the feature map's size), got {value!r}")
    return int(height), int(width)  # type: ignore[call-overload]


def box_cells(box: Box, spatial_scale: float, height: int, width: int) -> tuple[int, int, int, int]:
    """The box's cells under the cell-centre rule: ``(row0, row1, col0, col1)``, ends exclusive.

    Rows ``row0 <= i < row1`` and columns ``col0 <= j < col1``, with ``row0 = ceil(y1*s - 0.5)``
    and ``row1 = floor(y2*s - 0.5) + 1``, clipped to the map. Empty (``row1 <= row0`` or
    ``col1 <= col0``) when the box holds no cell centre or lies off the map.

    Examples
    --------
    >>> box_cells((2, 2, 6, 6), 1.0, 10, 10)  # a box on cell edges: cells 2..5
    (2, 6, 2, 6)
    >>> box_cells((1.5, 0.5, 4.5, 2.0), 1.0, 10, 10)  # centres 1.5 and 4.5 lie on the edges
    (0, 2, 1, 5)
    >>> box_cells((0, 0, 64, 64), 1 / 16, 3, 3)  # a 4x4-cell box on a 3x3 map
    (0, 3, 0, 3)
    """
    _, x1, y1, x2, y2 = parse_box(box)
    s = check_spatial_scale(spatial_scale)
    height, width = _check_map_size(height, width)
    r0 = min(max(math.ceil(y1 * s - 0.5), 0), height)
    r1 = min(max(math.floor(y2 * s - 0.5) + 1, 0), height)
    c0 = min(max(math.ceil(x1 * s - 0.5), 0), width)
    c1 = min(max(math.floor(x2 * s - 0.5) + 1, 0), width)
    return r0, max(r1, r0), c0, max(c1, c0)


def box_mask(box: Box, spatial_scale: float, height: int, width: int) -> Tensor:
    """``Tensor[height, width]`` bool, True on the box's cells (see :func:`box_cells`).

    Examples
    --------
    >>> box_mask((1, 0, 3, 1), 1.0, 2, 4).int()
    tensor([[0, 1, 1, 0],
            [0, 0, 0, 0]], dtype=torch.int32)
    """
    r0, r1, c0, c1 = box_cells(box, spatial_scale, height, width)
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _clipped_area(box: tuple[int, float, float, float, float], s: float, height: int, width: int) -> float:
    """Area in cells of the box's part that lies on the map."""
    _, x1, y1, x2, y2 = box
    w = max(min(x2 * s, width) - max(x1 * s, 0.0), 0.0)
    h = max(min(y2 * s, height) - max(y1 * s, 0.0), 0.0)
    return w * h


# --------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Quantization:
    """What ROI Pool's integer crop drops from a box and adds to it.

    Attributes
    ----------
    lost, gained : int
        Cells of the box (cell-centre rule) outside the integer crop, and crop cells outside the box.
    box_cells, crop_cells : int
        Cells in the box and in the crop (both clipped to the map).
    lost_area, gained_area : float
        The same in exact area (cells): area of the box not covered by the crop, and area of the
        crop outside the box, both on the map.
    crop : tuple of int
        The crop ``(y0, x0, h, w)`` from :func:`roiviz.crop_bounds`.
    box_mask, crop_mask, lost_mask, gained_mask : Tensor[H, W] bool
        The cells of each set, for drawing.
    """

    lost: int
    gained: int
    box_cells: int
    crop_cells: int
    lost_area: float
    gained_area: float
    crop: tuple[int, int, int, int]
    box_mask: Tensor
    crop_mask: Tensor
    lost_mask: Tensor
    gained_mask: Tensor


def quantization(
    box: Box, spatial_scale: float, height: int, width: int, dtype: torch.dtype = torch.float32
) -> Quantization:
    """Cells of ``box`` that ROI Pool's rounding drops (lost) and cells outside it that it adds (gained).

    ``lost = |box \\ crop|`` and ``gained = |crop \\ box|`` over the cells of a ``height x width``
    map, where *box* is the cell-centre set (:func:`box_cells`) and *crop* the integer crop
    ``round(x1*s) .. round(x2*s)`` inclusive that ROI Pool, crop, pad, adaptive pooling and
    resize start from, computed in ``dtype`` as those strategies do for input of that dtype.
    In continuous coordinates that crop is ``[round(x1*s), round(x2*s) + 1)``. Rounding the
    start to the nearest cell edge is the cell-centre rule itself, except when ``x1*s`` is
    exactly ``k + 0.5``: the centre of cell ``k`` then lies on the box's edge (inside) and
    rounding away from zero drops it. The inclusive end always adds the column (row) after the
    box, unless the map ends there. So in cells ROI Pool's quantization is mostly "one more row
    and column"; how far each edge moved shows in the exact areas ``lost_area`` and
    ``gained_area`` (the start edge by up to half a cell either way, the end by half a cell to
    a cell and a half outwards).

    Examples
    --------
    >>> q = quantization((2, 2, 6, 6), 1.0, 10, 10)  # box on cell edges: cells 2..5
    >>> q.lost, q.gained, q.crop, q.box_cells, q.crop_cells
    (0, 9, (2, 2, 5, 5), 16, 25)
    >>> q = quantization((2.5, 2.0, 5.5, 5.0), 1.0, 10, 10)  # half-cell box: rows 2..4, cols 2..5
    >>> q.lost, q.gained, q.crop  # crop rows 2..5, cols 3..6: loses col 2, gains row 5 and col 6
    (3, 7, (2, 3, 4, 4))
    """
    parsed = parse_box(box)
    s = check_spatial_scale(spatial_scale)
    height, width = _check_map_size(height, width)
    rois = torch.tensor([parsed], dtype=dtype)
    y0, x0, h, w = (int(v) for v in crop_bounds(rois, s, height, width))
    inside = box_mask(parsed, s, height, width)
    crop_mask = torch.zeros(height, width, dtype=torch.bool)
    crop_mask[y0 : y0 + h, x0 : x0 + w] = True
    lost_mask = inside & ~crop_mask
    gained_mask = crop_mask & ~inside
    # Exact areas on the map: box and crop rectangles, and their intersection.
    _, bx1, by1, bx2, by2 = parsed
    bx1, bx2 = min(max(bx1 * s, 0.0), width), min(max(bx2 * s, 0.0), width)
    by1, by2 = min(max(by1 * s, 0.0), height), min(max(by2 * s, 0.0), height)
    box_area = (bx2 - bx1) * (by2 - by1)
    both = max(min(bx2, x0 + w) - max(bx1, x0), 0.0) * max(min(by2, y0 + h) - max(by1, y0), 0.0)
    return Quantization(
        lost=int(lost_mask.sum()),
        gained=int(gained_mask.sum()),
        box_cells=int(inside.sum()),
        crop_cells=h * w,
        lost_area=box_area - both,
        gained_area=h * w - both,
        crop=(y0, x0, h, w),
        box_mask=inside,
        crop_mask=crop_mask,
        lost_mask=lost_mask,
        gained_mask=gained_mask,
    )


# --------------------------------------------------------------------------------------------
# Aspect distortion
# --------------------------------------------------------------------------------------------


def aspect_distortion(
    strategy: StrategyLike, box: Box, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    height: int | None = None, width: int | None = None,
) -> float:
    """``log((region_w / region_h) / (PW / PH))``: how much the output squeezes the box's shape.

    ``region`` is what the strategy stretches onto the ``PH x PW`` grid, so output cells are
    ``region_w / PW`` input cells wide and ``region_h / PH`` tall. ``exp(d)`` is the factor by
    which a square of the input comes out taller than wide: ``d > 0`` squeezes width (a wide box
    into a square grid), ``d < 0`` squeezes height, ``0`` keeps shapes. Per strategy:

    - ``crop``, ``pad``: 0 — one input cell per output cell, nothing is rescaled (what does not
      fit is cut instead, which :func:`coverage` shows);
    - ``adaptive_max``, ``adaptive_avg``, ``resize``: the integer crop clipped to the map
      (``h x w`` of :func:`roiviz.crop_bounds`; needs ``height`` and ``width``);
    - ``roi_pool``: the unclipped integer crop, ``round(x2*s) - round(x1*s) + 1`` (at least 1)
      wide, as its bins are laid out before clipping;
    - ``roi_align``, ``prroi_pool``: the continuous box, ``bw = (x2 - x1) * s`` by ``bh``.

    ``nan`` when the region has no area, or for a strategy roiviz does not know.

    Examples
    --------
    >>> round(aspect_distortion("roi_align", (0, 0, 28, 14), 7), 6) == round(math.log(2), 6)
    True
    >>> aspect_distortion("pad", (0, 0, 28, 14), 7)
    0.0
    """
    name = _strategy_name(strategy)
    ph_pw = check_output_size(output_size)
    parsed = parse_box(box)
    s = check_spatial_scale(spatial_scale)
    if name in ("adaptive_max", "adaptive_avg", "resize"):
        if height is None or width is None:
            raise ValueError(f"aspect_distortion of {name!r} needs the map's height and width (it uses the clipped crop)")
        height, width = _check_map_size(height, width)
    return _aspect(name, parsed, ph_pw, s, None, height, width)


def _aspect(
    name: str, parsed: tuple[int, float, float, float, float], ph_pw: tuple[int, int], s: float,
    crop: tuple[int, int, int, int] | None, height: int | None, width: int | None,
) -> float:
    """:func:`aspect_distortion` with checked arguments and, optionally, the crop already computed."""
    ph, pw = ph_pw
    if name in ("crop", "pad"):
        return 0.0
    _, x1, y1, x2, y2 = parsed
    if name in ("roi_align", "prroi_pool"):
        rw, rh = (x2 - x1) * s, (y2 - y1) * s
    elif name == "roi_pool":
        q = quantize(torch.tensor([parsed], dtype=torch.float32), s)[0].tolist()  # as roi_pool rounds a float32 box
        rw, rh = max(q[2] - q[0] + 1, 1), max(q[3] - q[1] + 1, 1)
    elif name in ("adaptive_max", "adaptive_avg", "resize"):
        if crop is None:
            crop = tuple(int(v) for v in crop_bounds(torch.tensor([parsed], dtype=torch.float32), s, height, width))  # type: ignore[assignment,arg-type]
        _, _, rh, rw = crop  # type: ignore[misc]
    else:
        return math.nan
    if rw <= 0 or rh <= 0:
        return math.nan
    return math.log((rw / rh) / (pw / ph))


# --------------------------------------------------------------------------------------------
# Strategies: names and a batched probe
# --------------------------------------------------------------------------------------------


def _strategy_name(strategy: StrategyLike) -> str:
    if isinstance(strategy, str):
        get_strategy(strategy)  # ValueError listing the known names
        return strategy
    if callable(strategy):
        for name, fn in STRATEGIES.items():
            if fn is strategy:
                return name
        return getattr(strategy, "__name__", type(strategy).__name__)
    raise TypeError(f"strategy must be a name or a callable, got {type(strategy).__name__}")


def _strategy_fn(strategy: StrategyLike) -> Callable[..., Tensor]:
    return get_strategy(strategy) if isinstance(strategy, str) else strategy


def _is_builtin(fn: Callable[..., Tensor]) -> bool:
    return any(fn is f for f in STRATEGIES.values())


def _is_local(fn: Callable[..., Tensor]) -> bool:
    return _is_builtin(fn) or getattr(fn, "__roiviz_local__", False) is True


def local(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Mark a strategy as reading only cells within 2 of its box, so metrics may use a window.

    roiviz's own strategies are local already; so is :func:`roiviz.roi_align` with any
    ``sampling_ratio`` and ``aligned``, and :func:`roiviz.roi_pool`. Metrics of a local strategy
    run on a window around the box (much faster on large maps); those of any other callable
    run on the whole map. Marking a strategy that reads farther makes its leak undercounted.
    Returns ``fn`` itself, with the attribute ``__roiviz_local__ = True``.

    Examples
    --------
    >>> import roiviz
    >>> legacy = local(lambda x, b, size, scale=1.0: roiviz.roi_align(x, b, size, scale, 2, aligned=False))
    >>> legacy.__roiviz_local__
    True
    """
    if not callable(fn):
        raise TypeError(f"local() takes a strategy callable, got {type(fn).__name__}")
    fn.__roiviz_local__ = True  # type: ignore[attr-defined]
    return fn


def _resolve(strategies: object) -> list[tuple[str, Callable[..., Tensor]]]:
    if strategies is None:
        return list(STRATEGIES.items())
    if isinstance(strategies, Mapping):
        items = [(str(k), v) for k, v in strategies.items()]
    elif isinstance(strategies, (str, bytes)) or not isinstance(strategies, Sequence):
        raise TypeError(f"strategies must be a list of names or callables, a mapping name -> callable, or None; got {strategies!r}")
    else:
        items = [(_strategy_name(s), _strategy_fn(s)) for s in strategies]
    for name, fn in items:
        if not callable(fn):
            raise TypeError(f"strategy {name!r} is not callable")
    if len({n for n, _ in items}) != len(items):
        raise ValueError(f"strategies must have distinct names, got {[n for n, _ in items]}")
    return items


def _feature_bins(n: int) -> list[int]:
    """The bins of one axis that get a point feature: interior ones when there are any."""
    return sorted({1, n // 2, n - 2}) if n >= 3 else list(range(n))


def _impulse_points(
    box: tuple[int, float, float, float, float], s: float, ph: int, pw: int, height: int, width: int
) -> list[tuple[float, float]]:
    """Bin centres ``(y, x)`` of the bins of :func:`_feature_bins` on each axis, on the map only.

    Points off the map (outside ``[0, H] x [0, W]``) are skipped; the others are clamped into
    ``[0.5, H - 0.5] x [0.5, W - 0.5]``, the centres of the edge cells.
    """
    _, x1, y1, x2, y2 = box
    bh, bw = (y2 - y1) * s, (x2 - x1) * s
    ys = [y1 * s + (i + 0.5) * bh / ph for i in _feature_bins(ph)]
    xs = [x1 * s + (j + 0.5) * bw / pw for j in _feature_bins(pw)]
    ys = [min(max(y, 0.5), height - 0.5) for y in ys if 0.0 <= y <= height]
    xs = [min(max(x, 0.5), width - 0.5) for x in xs if 0.0 <= x <= width]
    return [(y, x) for y in ys for x in xs]


def _feature_kernel(bin_size: float, bins: int) -> np.ndarray:
    """The symmetric kernel that widens a feature on one axis (sums to 1, odd length).

    With 3 or more bins (features on interior bins), a tent of half-width ``R = max(1,
    round(bin_size))`` cells, ``R - |d|`` for ``|d| < R``: the feature reaches into both
    neighbouring bins, so where the output puts it varies smoothly with sub-bin shifts. With
    1 or 2 bins (features on edge bins, whose outer neighbour does not exist), a box of ``k``
    cells, ``k`` the largest odd integer ``<= bin_size - 1`` (at least 1), which keeps the
    feature within its bin.
    """
    if bins >= 3:
        r = max(1, round(bin_size))
        kernel = r - np.abs(np.arange(-(r - 1), r)).astype(np.float64)
    else:
        kernel = np.ones(max(1, 2 * math.floor(bin_size / 2) - 1))
    return kernel / kernel.sum()


def _feature_profile(p: float, n: int, kernel: np.ndarray) -> tuple[np.ndarray, float]:
    """One axis of a point feature at continuous ``p`` on ``n`` cells centred at ``i + 0.5``.

    A unit mass split bilinearly between the two cells around ``p`` (its centroid is exactly
    ``p``), convolved with the symmetric ``kernel`` (which keeps the centroid); the part off the
    map is cut. Returns the profile ``[n]`` and its centroid (``p`` unless cut).
    """
    u = p - 0.5
    i0 = math.floor(u)
    f = u - i0
    half = len(kernel) // 2
    pad = half + 2
    prof = np.zeros(n + 2 * pad)  # index i + pad is cell i
    for i, w in ((i0, 1.0 - f), (i0 + 1, f)):
        if w > 0.0:
            lo = i - half + pad
            prof[lo : lo + len(kernel)] += w * kernel
    prof = prof[pad : pad + n]
    total = prof.sum()
    centre = float((prof * (np.arange(n) + 0.5)).sum() / total) if total > 0 else p
    return prof, centre


@functools.lru_cache(maxsize=16)
def _random_probe(height: int, width: int, ph: int, pw: int, seed: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Seeded random map ``[1, 1, H, W]`` in ``[0.05, 1)`` and output weights ``[1, 1, PH, PW]`` in ``[0.5, 1.5)``.

    Cached: it does not depend on the box. Callers must not modify the tensors.
    """
    gen = torch.Generator().manual_seed(seed)
    probe = 0.05 + 0.95 * torch.rand(1, 1, height, width, generator=gen, dtype=dtype)
    weights = 0.5 + torch.rand(1, 1, ph, pw, generator=gen, dtype=dtype)
    return probe, weights


def _is_power_of_two(s: float) -> bool:
    return math.frexp(s)[0] == 0.5


class _Probe:
    """One batched run of a strategy on one box: a random map (for the gradient) and impulses.

    Batch element 0 is the random map with values in ``[0.05, 1)`` (:func:`_random_probe`),
    elements ``1 .. M`` hold one impulse each; a single call and a single backward of
    ``sum(w * out[0])`` give the influence map and the impulse responses.

    For roiviz's own strategies (and callables marked with :func:`local`) and a power-of-two
    ``spatial_scale``, everything runs on a window of the map: the box's cells plus 2 cells of
    margin, clipped to the map. The box is
    shifted by a whole number of cells, which is exact in floating point for such scales, and
    the strategies read nothing outside the window (the integer crop lies within a cell of the
    box, ROI Align's bilinear taps within one cell of its samples), and where the window meets
    the map's edge they see the same edge. Any other strategy or scale gets the full map.
    """

    def __init__(
        self, box: tuple[int, float, float, float, float], output_size: tuple[int, int], s: float,
        height: int, width: int, seed: int, windowed: bool,
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
    ) -> None:
        ph, pw = output_size
        self.device, self.dtype = torch.device(device), dtype
        self.output_size, self.s, self.seed = output_size, s, seed
        self.height, self.width = height, width
        self.points = _impulse_points(box, s, ph, pw, height, width)
        _, x1, y1, x2, y2 = box
        ky, kx = _feature_kernel((y2 - y1) * s / ph, ph), _feature_kernel((x2 - x1) * s / pw, pw)
        self.profiles = [(_feature_profile(y, height, ky), _feature_profile(x, width, kx)) for y, x in self.points]
        #: Where each feature really is: the centroid of what lies on the map.
        self.centres = [(py[1], px[1]) for py, px in self.profiles]
        self.full = (0, height, 0, width)
        self.full_coords = torch.tensor(box[1:], dtype=self.dtype).to(self.device)
        # The window, if the scale allows an exact shift; runs on it only when asked to.
        self.window, self.coords = self.full, self.full_coords
        if windowed and _is_power_of_two(s):
            _, x1, y1, x2, y2 = box
            ax0 = min(max(math.floor(x1 * s) - 2, 0), width)
            ax1 = max(min(math.ceil(x2 * s) + 3, width), ax0)
            ay0 = min(max(math.floor(y1 * s) - 2, 0), height)
            ay1 = max(min(math.ceil(y2 * s) + 3, height), ay0)
            coords = torch.tensor(box[1:], dtype=self.dtype)
            shift = torch.tensor([ax0 / s, ay0 / s, ax0 / s, ay0 / s], dtype=self.dtype)
            moved = coords - shift
            exact = bool(((moved.double() + shift.double()) == coords.double()).all())
            if ax1 > ax0 and ay1 > ay0 and exact:
                self.window, self.coords = (ay0, ay1, ax0, ax1), moved.to(self.device)
        self._impulse_maps: dict[tuple[int, int, int, int], Tensor] = {}

    def impulses(self, window: tuple[int, int, int, int]) -> Tensor:
        """``[M, 1, h, w]``: the point feature ``k`` around ``points[k]`` (built once per window)."""
        if window not in self._impulse_maps:
            wy0, wy1, wx0, wx1 = window
            m = len(self.points)
            maps = np.zeros((m, wy1 - wy0, wx1 - wx0))
            for k, ((py, _), (px, _)) in enumerate(self.profiles):
                maps[k] = np.outer(py[wy0:wy1], px[wx0:wx1])
            maps = torch.from_numpy(maps)
            self._impulse_maps[window] = maps.to(self.dtype)[:, None].to(self.device)
        return self._impulse_maps[window]

    def run(
        self, fn: Callable[..., Tensor], grad: bool = True, impulses: bool = True, windowed: bool | None = None
    ) -> tuple[Tensor | None, Tensor]:
        """``(influence [H, W] or None, impulse responses [M, PH, PW])`` from one call of ``fn``.

        The influence is ``|d sum(w * out[0]) / d probe|`` on the full map (zero outside the
        window); ``w`` are the cached random output weights. ``windowed`` (default: whether
        ``fn`` is :func:`local`) runs on the window.
        """
        if windowed is None:
            windowed = _is_local(fn)
        window, coords = (self.window, self.coords) if windowed else (self.full, self.full_coords)
        wy0, wy1, wx0, wx1 = window
        parts = []
        weights = None
        if grad:
            probe, weights = _random_probe(self.height, self.width, *self.output_size, self.seed, self.dtype)
            # Slicing the one map of the whole input keeps results identical with and without a window.
            parts.append(probe[:, :, wy0:wy1, wx0:wx1].to(self.device))
        m = len(self.points) if impulses else 0
        if m:
            parts.append(self.impulses(window))
        if not parts:
            return None, torch.zeros(0, *self.output_size, dtype=self.dtype, device=self.device)
        batch = torch.cat(parts).contiguous()  # [grad + M, 1, h, w]
        name = getattr(fn, "__name__", repr(fn))
        with torch.enable_grad() if grad else torch.no_grad():
            batch.requires_grad_(grad)
            with trusted_boxes():
                index = torch.arange(batch.shape[0], dtype=self.dtype, device=self.device)[:, None]
                rois = torch.cat([index, coords.expand(batch.shape[0], 4)], dim=1)  # [K, 5]
                out = fn(batch, rois, self.output_size, self.s)  # [K, 1, PH, PW]
            expected = (batch.shape[0], 1, *self.output_size)
            if not isinstance(out, Tensor) or tuple(out.shape) != expected:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"strategy {name!r} returned {got}, expected a tensor of shape {expected}")
            influence = None
            if grad:
                influence = torch.zeros(self.height, self.width, dtype=self.dtype, device=self.device)
                if out.requires_grad:
                    (g,) = torch.autograd.grad((out[:1] * weights.to(self.device)).sum(), batch)  # type: ignore[union-attr]
                    influence[wy0:wy1, wx0:wx1] = g[0, 0].abs()
                elif bool(out[:1].any()):
                    # An all-zero output without a graph reads nothing (e.g. a box off the map);
                    # a non-zero one was computed outside autograd, so we cannot tell.
                    raise ValueError(
                        f"strategy {name!r} gives no gradient with respect to its input; coverage needs a differentiable strategy"
                    )
        responses = out.detach()[int(grad) :, 0]  # [M, PH, PW]
        return influence, responses


# --------------------------------------------------------------------------------------------
# Coverage and leak
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Coverage:
    """Which cells influence a strategy's output for one box (see :func:`coverage`).

    Attributes
    ----------
    coverage : float
        Influencing box cells / box cells (``nan`` if the box holds no cell centre).
    leak : int
        Influencing cells outside the box.
    leak_fraction : float
        ``leak`` / area of the box on the map, in cells (``nan`` for a box of zero area).
    box_cells, influenced : int
        Cells in the box; influencing cells in total.
    influence : Tensor[H, W]
        ``|d(sum(w * out)) / d(input)|`` at the random probe (see :func:`influence_map`).
    inside : Tensor[H, W] bool
        The box's cells (:func:`box_mask`).
    """

    coverage: float
    leak: int
    leak_fraction: float
    box_cells: int
    influenced: int
    influence: Tensor
    inside: Tensor


def influence_map(
    strategy: StrategyLike, box: Box, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    height: int = 0, width: int = 0, *, probe: Tensor | None = None, seed: int = 0,
) -> Tensor:
    """``Tensor[H, W]``: ``|d L / d input|`` with ``L = sum(w * strategy(input, box))``.

    ``w`` are random weights in ``[0.5, 1.5)``, one per output cell, and ``input`` is a random
    map with values in ``[0.05, 1)`` (both seeded by ``seed``), or ``probe`` (``Tensor[1, C, H,
    W]``, e.g. the real feature map; then the gradient is summed over channels). A cell
    *influences* the output when this is non-zero; :func:`coverage` counts it when it exceeds
    ``1e-5`` times the largest value, because float32 rounding can turn a bilinear weight that
    is exactly 0 (a sample on a cell centre) into ~1e-7. Positive weights mean contributions never
    cancel for strategies with non-negative coefficients (all of roiviz's); for any other
    strategy an exact cancellation has probability zero.

    This is influence *at that input*: a max-based strategy (``adaptive_max``, ``roi_pool``)
    passes gradient only to the winning cell of each bin, so it reads one cell per bin; the
    others could win on another input, but here they do not count.

    Examples
    --------
    >>> influence_map("roi_align", (2, 2, 6, 6), 2, 1.0, 8, 8).gt(0).int()[1:7, 1:7]
    tensor([[0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 1, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 0]], dtype=torch.int32)
    """
    ph_pw = check_output_size(output_size)
    s = check_spatial_scale(spatial_scale)
    fn = _strategy_fn(strategy)
    if probe is not None:
        probe = check_input(probe, "probe")
        n, _, height, width = probe.shape
        parsed = parse_box(box, n)
        x = probe.detach().clone().requires_grad_(True)
        rois = torch.tensor([parsed], dtype=x.dtype, device=x.device)
        w = 0.5 + torch.rand(1, 1, *ph_pw, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
        with torch.enable_grad(), trusted_boxes():
            out = fn(x, rois, ph_pw, s)
            (g,) = torch.autograd.grad((out * w.to(x.device)).sum(), x)
        return g[parsed[0]].abs().sum(0)
    height, width = _check_map_size(height, width)
    parsed = parse_box(box)
    influence, _ = _Probe(parsed, ph_pw, s, height, width, seed, windowed=True).run(fn, impulses=False)
    return influence  # type: ignore[return-value]


#: A cell influences when its gradient exceeds this fraction of the largest one: bilinear
#: weights that are exactly 0 in exact arithmetic can come out as ~1e-7 after float32 rounding.
_INFLUENCE_RTOL = 1e-5


def _coverage_from(
    grad: Tensor, parsed: tuple[int, float, float, float, float], s: float, inside: Tensor | None = None
) -> Coverage:
    height, width = grad.shape
    if inside is None:
        inside = box_mask(parsed, s, height, width).to(grad.device)
    hit = grad > _INFLUENCE_RTOL * grad.max() if grad.numel() else grad > 0
    n_box = int(inside.sum())
    covered = int((hit & inside).sum())
    leak = int((hit & ~inside).sum())
    area = _clipped_area(parsed, s, height, width)
    return Coverage(
        coverage=covered / n_box if n_box else math.nan,
        leak=leak,
        leak_fraction=leak / area if area > 0 else math.nan,
        box_cells=n_box,
        influenced=int(hit.sum()),
        influence=grad.detach(),
        inside=inside,
    )


def _coverage_many(influences: Tensor, inside: Tensor, area: float) -> tuple[list[float], list[int], list[float]]:
    """``(coverage, leak, leak_fraction)`` lists for the influence maps ``[S, H, W]`` of ``S`` strategies."""
    peak = influences.flatten(1).amax(1)[:, None, None]  # [S, 1, 1]
    hit = influences > _INFLUENCE_RTOL * peak  # [S, H, W]
    n_box = int(inside.sum())
    covered = (hit & inside).flatten(1).sum(1).tolist()
    leak = (hit & ~inside).flatten(1).sum(1).tolist()
    return (
        [c / n_box if n_box else math.nan for c in covered],
        [int(v) for v in leak],
        [v / area if area > 0 else math.nan for v in leak],
    )


def coverage(
    strategy: StrategyLike, box: Box, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    height: int = 0, width: int = 0, *, seed: int = 0,
) -> Coverage:
    """Coverage and leak of one strategy on one box of a ``height x width`` map.

    ``coverage = |influencing cells in the box| / |cells in the box|`` and ``leak = |influencing
    cells outside the box|``, ``leak_fraction = leak / box area`` (area of the box's part on the
    map, in cells). Cells are the box's by the cell-centre rule (:func:`box_cells`); a cell
    influences the output when :func:`influence_map` is non-zero there.

    Examples
    --------
    >>> c = coverage("adaptive_avg", (2, 2, 6, 6), 2, 1.0, 10, 10)  # integer crop 2..6: 5x5 cells
    >>> c.coverage, c.leak, c.leak_fraction  # all 16 box cells, plus 9 cells of row/column 6
    (1.0, 9, 0.5625)
    >>> c = coverage("crop", (0, 0, 10, 10), 5, 1.0, 12, 12)  # a 5x5 cut of a 10x10 box
    >>> c.coverage, c.leak
    (0.25, 0)
    """
    grad = influence_map(strategy, box, output_size, spatial_scale, height, width, seed=seed)
    return _coverage_from(grad, parse_box(box), check_spatial_scale(spatial_scale))


# --------------------------------------------------------------------------------------------
# Misalignment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Misalignment:
    """Where point features land (see :func:`misalignment`).

    Attributes
    ----------
    mean : float
        Mean distance, in input cells, between an impulse and where the output puts it
        (``nan`` when no impulse gave a response).
    dx, dy : float
        Mean signed displacement (found minus true), in cells: a systematic shift.
    responded, impulses : int
        Impulses that gave a response, and impulses placed.
    points, found : Tensor[M, 2]
        True and found ``(y, x)`` of each impulse in map coordinates (``nan`` rows in ``found``
        for impulses without response).
    """

    mean: float
    dx: float
    dy: float
    responded: int
    impulses: int
    points: Tensor
    found: Tensor


def _misalignment_from(
    responses: Tensor, points: list[tuple[float, float]], parsed: tuple[int, float, float, float, float], s: float
) -> Misalignment:
    _, x1, y1, x2, y2 = parsed
    m, ph, pw = responses.shape
    pts = torch.tensor(points, dtype=torch.float64).reshape(m, 2)
    r = responses.detach().abs().double().cpu()  # [M, PH, PW]
    total = r.sum(dim=(1, 2))  # [M]
    ok = total > 1e-6  # an impulse carries mass 1
    ii = torch.arange(ph, dtype=torch.float64)
    jj = torch.arange(pw, dtype=torch.float64)
    safe = torch.where(ok, total, torch.ones_like(total))
    ci = (r.sum(2) * ii).sum(1) / safe  # [M] centroid row, output cells
    cj = (r.sum(1) * jj).sum(1) / safe
    # Output cell (i, j) stands for the point y1*s + (i + 0.5) * bh / PH of the box.
    fy = y1 * s + (ci + 0.5) * (y2 - y1) * s / ph
    fx = x1 * s + (cj + 0.5) * (x2 - x1) * s / pw
    found = torch.stack([fy, fx], dim=1)  # [M, 2]
    found[~ok] = math.nan
    n = int(ok.sum())
    if n == 0:
        return Misalignment(math.nan, math.nan, math.nan, 0, m, pts, found)
    d = found[ok] - pts[ok]  # [n, 2]
    return Misalignment(
        mean=float(d.norm(dim=1).mean()),
        dx=float(d[:, 1].mean()),
        dy=float(d[:, 0].mean()),
        responded=n,
        impulses=m,
        points=pts,
        found=found,
    )


def _misalignment_means(
    responses: Tensor, points: list[tuple[float, float]], parsed: tuple[int, float, float, float, float], s: float
) -> list[float]:
    """:attr:`Misalignment.mean` for the responses ``[S, M, PH, PW]`` of ``S`` strategies at once."""
    _, x1, y1, x2, y2 = parsed
    n_s, m, ph, pw = responses.shape
    if m == 0:
        return [math.nan] * n_s
    r = np.abs(responses.detach().cpu().double().numpy())  # [S, M, PH, PW]
    rows, cols = r.sum(3), r.sum(2)  # [S, M, PH], [S, M, PW]
    total = rows.sum(2)  # [S, M]
    ok = total > 1e-6  # an impulse carries mass 1
    safe = np.where(ok, total, 1.0)
    ci = (rows * np.arange(ph)).sum(2) / safe  # [S, M]
    cj = (cols * np.arange(pw)).sum(2) / safe
    pts = np.asarray(points, dtype=np.float64)  # [M, 2]
    dy = y1 * s + (ci + 0.5) * (y2 - y1) * s / ph - pts[:, 0]
    dx = x1 * s + (cj + 0.5) * (x2 - x1) * s / pw - pts[:, 1]
    dist = np.where(ok, np.hypot(dx, dy), 0.0).sum(1)  # [S]
    count = ok.sum(1)
    return [float(d / c) if c else math.nan for d, c in zip(dist, count, strict=True)]


def misalignment(
    strategy: StrategyLike, box: Box, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    height: int = 0, width: int = 0,
) -> Misalignment:
    """How far, in input cells, a point feature moves between the box and the output.

    Point features are placed at bin centres of the ideal ``PH x PW`` grid over the box,
    ``p = (y1*s + (i + 0.5) * bh / PH, x1*s + (j + 0.5) * bw / PW)``, for rows ``i`` in
    ``{1, PH // 2, PH - 2}`` (interior bins) when ``PH >= 3``, else every row, and likewise
    columns: up to 9, one per map, skipped when off the map and clamped into its edge cells.
    Each is a unit mass split bilinearly between the cells around ``p`` (centroid exactly
    ``p``), widened on each axis by a symmetric kernel that keeps the centroid: a tent about
    two bins wide with 3 or more bins, so that sub-bin shifts move the response smoothly and a
    sparse sampler such as ROI Align cannot step over it; with 1 or 2 bins, whose edge bins
    have no outer neighbour to spill into, a box filter that keeps it within its bin (see
    ``_feature_kernel``). Where the map cuts a feature, the centroid of what is left is used.

    For each, the strategy's output ``r`` gives the response centroid ``(ci, cj) = sum(|r| *
    (i, j)) / sum(|r|)`` in output cells, mapped back into the box by the same ideal grid:
    ``found = (y1*s + (ci + 0.5) * bh / PH, x1*s + (cj + 0.5) * bw / PW)``. The metric is the
    mean of ``|found - p|`` over the features that gave any response (one the strategy never
    reads is lost, which :func:`coverage` counts instead); ``nan`` when none did.

    The ideal grid is what a head assumes: output cell ``(i, j)`` stands for bin ``(i, j)`` of
    the box. ROI Align (aligned) is at or near 0; ROI Pool and RoIWarp (``resize``) show the
    shift of their rounding and of the extra row and column of their integer crop; crop and
    pad, which do not rescale, show how far their cells are from the positions a head expects
    whenever the box and the output differ in size.

    Examples
    --------
    >>> misalignment("roi_align", (2, 2, 6, 6), 2, 1.0, 8, 8).mean
    0.0
    >>> m = misalignment("roi_pool", (2, 2, 6, 6), 2, 1.0, 8, 8)
    >>> round(m.mean, 4), m.dx, m.dy  # bins 2..4 and 4..6 of the 5-cell crop overlap at cell 4
    (0.8536, -0.5, -0.5)
    """
    ph_pw = check_output_size(output_size)
    s = check_spatial_scale(spatial_scale)
    height, width = _check_map_size(height, width)
    parsed = parse_box(box)
    fn = _strategy_fn(strategy)
    probe = _Probe(parsed, ph_pw, s, height, width, 0, windowed=True)
    _, responses = probe.run(fn, grad=False)
    return _misalignment_from(responses, probe.centres, parsed, s)


# --------------------------------------------------------------------------------------------
# Reconstruction
# --------------------------------------------------------------------------------------------


def _true_crop_bounds(parsed: tuple[int, float, float, float, float], s: float, height: int, width: int) -> tuple[int, int, int, int] | None:
    r0, r1, c0, c1 = box_cells(parsed, s, height, width)
    _, x1, y1, x2, y2 = parsed
    # The part of the box on the map; None when there is none.
    ya, yb = max(y1 * s, 0.0), min(y2 * s, float(height))
    xa, xb = max(x1 * s, 0.0), min(x2 * s, float(width))
    if yb < ya or xb < xa or (yb == ya and (ya == 0 or ya == height)) or (xb == xa and (xa == 0 or xa == width)):
        return None
    if r1 <= r0:  # no cell centre inside: the cell under the middle of the box
        r0 = min(max(math.floor((ya + yb) / 2), 0), height - 1)
        r1 = r0 + 1
    if c1 <= c0:
        c0 = min(max(math.floor((xa + xb) / 2), 0), width - 1)
        c1 = c0 + 1
    return r0, r1, c0, c1


def _psnr_many(outputs: Tensor, crop: Tensor) -> list[float]:
    """PSNR of each of ``outputs [S, C, PH, PW]`` resized onto ``crop [C, h, w]``, one interpolate."""
    crop = crop.double()
    rec = F.interpolate(outputs.double(), size=crop.shape[-2:], mode="bilinear", align_corners=False)  # [S, C, h, w]
    mses = ((rec - crop) ** 2).mean(dim=(1, 2, 3)).tolist()
    peak = float(crop.max() - crop.min())
    if peak == 0.0:
        peak = float(crop.abs().max()) or 1.0
    return [math.inf if mse == 0.0 else 10.0 * math.log10(peak * peak / mse) for mse in mses]


def reconstruction_psnr(output: Tensor, input: Tensor, box: Box, spatial_scale: float = 1.0) -> float:
    """PSNR in dB of the output resized back onto the box's true crop.

    ``rec = F.interpolate(output, (h, w), mode="bilinear", align_corners=False)`` where ``h x w``
    is the true crop: the box's cells by the cell-centre rule (:func:`box_cells`), or, along an
    axis where the box holds no cell centre, the one cell under the middle of the box's part on
    the map. Then ``PSNR = 10 * log10(peak**2 / mean((rec - crop)**2))`` over all channels,
    with ``peak = max(crop) - min(crop)`` (``max|crop|`` for a constant crop, 1 if it is all 0):
    ``inf`` when exact, higher is better. ``nan`` for a box wholly off the map.

    Parameters
    ----------
    output : Tensor[C, PH, PW] or Tensor[1, C, PH, PW]
        One ROI's output from a strategy.
    input : Tensor[N, C, H, W]
        The map the strategy read.
    box : (x1, y1, x2, y2) or (batch_index, x1, y1, x2, y2)
        In image pixels.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.rand(1, 2, 12, 12)
    >>> out = roiviz.crop(x, torch.tensor([[0, 2., 3., 9., 10.]]), 7)
    >>> reconstruction_psnr(out, x, (2, 3, 9, 10))  # 7x7 box at scale 1: crop is exact
    inf
    """
    input = check_input(input)
    parsed = parse_box(box, input.shape[0])
    s = check_spatial_scale(spatial_scale)
    if not isinstance(output, Tensor):
        raise TypeError(f"output must be a Tensor[C, PH, PW], got {type(output).__name__}")
    if output.dim() == 4 and output.shape[0] == 1:
        output = output[0]
    if output.dim() != 3 or output.shape[0] != input.shape[1]:
        raise ValueError(f"output must be Tensor[C, PH, PW] with C={input.shape[1]}, got shape {tuple(output.shape)}")
    bounds = _true_crop_bounds(parsed, s, input.shape[2], input.shape[3])
    if bounds is None:
        return math.nan
    r0, r1, c0, c1 = bounds
    return _psnr_many(output.detach()[None], input[parsed[0], :, r0:r1, c0:c1].detach())[0]


# --------------------------------------------------------------------------------------------
# All metrics, all strategies: the table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyMetrics:
    """The metrics of one strategy on one box (formulas in :func:`strategy_metrics`)."""

    strategy: str
    coverage: float
    leak: int
    leak_fraction: float
    quant_lost: int
    quant_gained: int
    aspect_distortion: float
    psnr: float
    misalignment: float


_COLUMNS = (
    # (header, field, format kind, explanation)
    ("strategy", "strategy", "s", "strategy name"),
    ("coverage", "coverage", "%", "box cells that influence the output / box cells"),
    ("leak", "leak", "d", "cells outside the box that influence the output"),
    ("leak/area", "leak_fraction", "%", "leak / box area in cells"),
    ("q_lost", "quant_lost", "d", "box cells dropped by the integer crop"),
    ("q_gained", "quant_gained", "d", "cells outside the box added by the integer crop"),
    ("aspect", "aspect_distortion", "+", "log((box w/h) / (PW/PH)) of the stretched region"),
    ("PSNR_dB", "psnr", "f1", "output resized back vs the true crop"),
    ("misalign", "misalignment", "f2", "mean displacement of impulses, input cells"),
)


#: The metric groups :func:`strategy_metrics` can compute (its ``include`` argument).
METRICS: tuple[str, ...] = ("coverage", "quantization", "aspect", "psnr", "misalignment")


def _check_include(include: object) -> frozenset[str]:
    if include is None:
        return frozenset(METRICS)
    if isinstance(include, str) or not isinstance(include, Collection):
        raise TypeError(f"include must be a collection of metric names from {METRICS}, got {include!r}")
    unknown = [m for m in include if m not in METRICS]
    if unknown:
        raise ValueError(f"include has unknown metrics {unknown}; known metrics: {', '.join(METRICS)}")
    return frozenset(include)


def _fmt(value: object, kind: str) -> str:
    if kind == "s":
        return str(value)
    if kind == "d":
        return "n/a" if value == -1 else str(value)  # -1: not computed or not applicable
    v = float(value)  # type: ignore[arg-type]
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if kind == "%":
        return f"{100 * v:.1f}%"
    if kind == "+":
        return f"{v:+.3f}"
    return f"{v:.{kind[1]}f}"


class MetricsTable(Sequence[StrategyMetrics]):
    """A read-only list of :class:`StrategyMetrics`, one per strategy, that prints as a table.

    ``table[0]`` and ``table["roi_align"]`` both work; ``str(table)`` / :meth:`to_text` give
    aligned columns, :meth:`_repr_html_` an HTML table (Jupyter shows it), :meth:`as_dicts` plain
    dicts. Unknown values print as ``n/a``.
    """

    def __init__(self, rows: Sequence[StrategyMetrics]) -> None:
        rows = tuple(rows)
        for r in rows:
            if not isinstance(r, StrategyMetrics):
                raise TypeError(f"MetricsTable holds StrategyMetrics records, got {type(r).__name__}")
        names = [r.strategy for r in rows]
        if len(set(names)) != len(names):
            raise ValueError(f"MetricsTable needs distinct strategy names, got {names}")
        self._rows = rows
        self._index = {r.strategy: i for i, r in enumerate(rows)}

    @overload
    def __getitem__(self, key: int | str) -> StrategyMetrics: ...
    @overload
    def __getitem__(self, key: slice) -> MetricsTable: ...

    def __getitem__(self, key: int | str | slice) -> StrategyMetrics | MetricsTable:
        if isinstance(key, str):
            try:
                return self._rows[self._index[key]]
            except KeyError:
                raise KeyError(f"no strategy {key!r} in this table; it has: {', '.join(self._index)}") from None
        if isinstance(key, slice):
            return MetricsTable(self._rows[key])
        return self._rows[key]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[StrategyMetrics]:
        return iter(self._rows)

    def __contains__(self, item: object) -> bool:
        return item in self._index if isinstance(item, str) else item in self._rows

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetricsTable) and self._rows == other._rows

    __hash__ = None  # type: ignore[assignment]

    @property
    def strategies(self) -> list[str]:
        """The strategy names, in order."""
        return list(self._index)

    def as_dicts(self) -> list[dict[str, object]]:
        """One plain ``dict`` per record (field name -> value)."""
        return [dataclasses.asdict(r) for r in self._rows]

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = [c[0] for c in _COLUMNS]
        body = [[_fmt(getattr(r, field), kind) for _, field, kind, _ in _COLUMNS] for r in self._rows]
        return header, body

    def to_text(self) -> str:
        """Aligned plain-text columns: names left-aligned, numbers right-aligned."""
        header, body = self._cells()
        widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        return "\n".join([line(header), *(line(b) for b in body)])

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        header, body = self._cells()
        head = "".join(
            f'<th title="{html.escape(c[3])}">{html.escape(h)}</th>' for h, c in zip(header, _COLUMNS, strict=True)
        )
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in cells) + "</tr>" for cells in body
        )
        return f'<table class="roiviz-metrics"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def strategy_metrics(
    input: Tensor,
    box: Box,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    strategies: Sequence[StrategyLike] | Mapping[str, Callable[..., Tensor]] | None = None,
    *,
    outputs: Mapping[str, Tensor] | None = None,
    include: Collection[str] | None = None,
    seed: int = 0,
) -> MetricsTable:
    """Every metric for every strategy on one box, as a :class:`MetricsTable`.

    Parameters
    ----------
    input : Tensor[N, C, H, W]
        The image or feature map.
    box : (x1, y1, x2, y2) or (batch_index, x1, y1, x2, y2)
        In image pixels (a tuple, list, numpy array or tensor of 4 or 5 numbers); a 4-tuple
        means batch element 0.
    output_size : int or (int, int)
        ``(PH, PW)``.
    spatial_scale : float
        Image pixels to map cells.
    strategies : list of names or callables, mapping name -> callable, or None
        Default: all of :data:`roiviz.STRATEGIES`, in order. A callable must take
        ``(input, boxes, output_size, spatial_scale)`` and treat channels and batch elements
        independently (every roiviz strategy does).
    outputs : mapping name -> Tensor, optional
        Outputs already computed for this box (``[1, C, PH, PW]`` or ``[C, PH, PW]``), to skip
        recomputing them for the PSNR.
    include : collection of str, optional
        The metrics to compute, among :data:`METRICS` (default: all). Left-out metrics are
        ``nan`` (``-1`` for the integer ones), printed ``n/a``. ``("quantization", "aspect",
        "psnr")`` with ``outputs`` given runs no strategy at all: the cheapest live update.
    seed : int
        Seed of the random probe map and output weights (coverage, leak).

    Returns
    -------
    MetricsTable
        One :class:`StrategyMetrics` per strategy, with (``s = spatial_scale``):

        - ``coverage``, ``leak``, ``leak_fraction``: :func:`coverage`, from the gradient of a
          randomly weighted sum of the outputs on a random map;
        - ``quant_lost``, ``quant_gained``: :func:`quantization` counts for the strategies in
          :data:`QUANTIZING`, ``0`` for ``roi_align`` and ``prroi_pool`` (continuous box), ``-1``
          (printed ``n/a``) for other strategies;
        - ``aspect_distortion``: :func:`aspect_distortion`;
        - ``psnr``: :func:`reconstruction_psnr` of the real output;
        - ``misalignment``: :func:`misalignment` ``.mean``.

        ``leak`` is ``-1`` when coverage is not included; ``quant_*`` are ``-1`` when not
        included or for a strategy outside :data:`QUANTIZING` other than those two.

    Cost: per strategy, one call with one backward on a batch of the random probe and up to 9
    impulse maps (one channel each; on a window around the box for roiviz's strategies and
    those marked :func:`local`, else on the whole map), plus one call on the real input unless
    ``outputs`` has it.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> t = strategy_metrics(x, (0, 0, 7, 7), 7, strategies=["crop", "roi_align"])
    >>> print(t)
    strategy   coverage  leak  leak/area  q_lost  q_gained  aspect  PSNR_dB  misalign
    crop         100.0%     0       0.0%       0        15  +0.000      inf      0.00
    roi_align    100.0%    15      30.6%       0         0  +0.000     17.6      0.00
    """
    input = check_input(input)
    n, _c, height, width = input.shape
    ph_pw = check_output_size(output_size)
    s = check_spatial_scale(spatial_scale)
    parsed = parse_box(box, n)
    items = _resolve(strategies)
    if outputs is not None and not isinstance(outputs, Mapping):
        raise TypeError(f"outputs must be a mapping strategy name -> Tensor, got {type(outputs).__name__}")
    include = _check_include(include)
    if not items:  # nothing to measure (e.g. every strategy switched off in the Explorer)
        return MetricsTable([])
    c_n = input.shape[1]
    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    probe = _Probe(parsed, ph_pw, s, height, width, seed, True, input.device, dtype)
    want_cov, want_mis = "coverage" in include, "misalignment" in include
    quant = quantization(parsed, s, height, width, dtype) if "quantization" in include else None
    bounds = _true_crop_bounds(parsed, s, height, width) if "psnr" in include else None
    inside = box_mask(parsed, s, height, width).to(input.device) if want_cov else None
    real_rois = torch.tensor([parsed], dtype=dtype, device=input.device)
    recon: list[Tensor] = []
    influences: list[Tensor] = []
    responses: list[Tensor] = []
    for name, fn in items:
        influence, response = probe.run(fn, grad=want_cov, impulses=want_mis)
        if influence is not None:
            influences.append(influence)
        responses.append(response)
        if bounds is not None:
            if outputs is not None and name in outputs:
                out = outputs[name].detach()
                out = out[0] if out.dim() == 4 and out.shape[0] == 1 else out
                if tuple(out.shape) != (c_n, *ph_pw):
                    raise ValueError(
                        f"outputs[{name!r}] must have shape [1, {c_n}, {ph_pw[0]}, {ph_pw[1]}], got {tuple(outputs[name].shape)}"
                    )
            else:
                with torch.no_grad(), trusted_boxes():
                    out = fn(input, real_rois, ph_pw, s)[0]  # [C, PH, PW]
            recon.append(out)
    # Every metric for all strategies at once: a few vectorised reductions instead of S small ones.
    n_s = len(items)
    nan = [math.nan] * n_s
    cov, leak, leak_fraction = nan, [-1] * n_s, nan
    if want_cov:
        cov, leak, leak_fraction = _coverage_many(torch.stack(influences), inside, _clipped_area(parsed, s, height, width))  # type: ignore[arg-type]
    mis = _misalignment_means(torch.stack(responses), probe.centres, parsed, s) if want_mis else nan
    psnr = nan
    if bounds is not None:
        r0, r1, c0, c1 = bounds
        psnr = _psnr_many(torch.stack(recon), input[parsed[0], :, r0:r1, c0:c1].detach())
    rows = []
    for k, (name, _) in enumerate(items):
        lost, gained = -1, -1
        if quant is not None:
            if name in QUANTIZING:
                lost, gained = quant.lost, quant.gained
            elif name in ("roi_align", "prroi_pool"):
                lost, gained = 0, 0
        aspect = math.nan
        if "aspect" in include and name in STRATEGIES:
            aspect = _aspect(name, parsed, ph_pw, s, quant.crop if quant is not None else None, height, width)
        rows.append(
            StrategyMetrics(
                strategy=name,
                coverage=cov[k],
                leak=leak[k],
                leak_fraction=leak_fraction[k],
                quant_lost=lost,
                quant_gained=gained,
                aspect_distortion=aspect,
                psnr=psnr[k],
                misalignment=mis[k],
            )
        )
    return MetricsTable(rows)
