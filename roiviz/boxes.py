"""Box formats and roiviz's coordinate conventions, each stated and computed here, once.

Box formats
-----------
roiviz takes boxes as torchvision does:

- a ``Tensor[K, 5]`` of rows ``(batch_index, x1, y1, x2, y2)``, or
- a list of ``N`` tensors ``Tensor[L_n, 4]`` of rows ``(x1, y1, x2, y2)``, one per image.

Coordinates are in input-image pixels; ``spatial_scale`` maps them onto the feature map.
:func:`to_rois` turns either form into one validated ``Tensor[K, 5]``, so the rest of the code
sees one form only; :func:`parse_box` does the same for one box given as 4 or 5 numbers.

Rounding
--------
:func:`round_half_away`: to the nearest integer, halves away from zero, as C's ``round`` (what
torchvision's ROI Pool kernel calls). Coordinates are multiplied by the scale in the rois' dtype
before rounding, as the kernels do, so that ties land the same way (:func:`quantize`).

Integer crops (ROI Pool and the crop strategies)
------------------------------------------------
ROI Pool, and every strategy that starts from an integer crop (``crop``, ``pad``,
``adaptive_*``, ``resize``), uses Fast R-CNN's quantisation: a box covers the feature-map cells
``round(x1 * scale) .. round(x2 * scale)`` *inclusive* (and likewise in y). The crop is then
clipped to the map (:func:`crop_bounds`). ROI Pool cuts the unclipped crop, at least one cell,
into bins ``floor(p * bin) .. ceil((p + 1) * bin) - 1`` (:func:`pool_bin_edges`).

ROI Align's sample grid
-----------------------
ROI Align does not quantise: with ``offset = 0.5 if aligned else 0``, a box spans
``start = x1 * scale - offset`` to ``x2 * scale - offset`` (at least 1 wide when not aligned),
bin ``p`` has size ``bin = roi / PW`` and sample ``i`` of a ``grid``-sample bin lies at
``start + p * bin + (i + 0.5) * bin / grid``; ``grid`` is ``sampling_ratio`` if positive,
else ``ceil(roi / PW)`` (:func:`align_geometry`, :func:`sample_coords`, :func:`sample_grid`).
Every expression is evaluated in torchvision's order and dtype, so float32 coordinates are
bit-identical to its kernels'.

:mod:`roiviz.reference` writes the same conventions again as scalar loops, on purpose: it is the
independent oracle these functions are tested against.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from ._checks import check_spatial_scale, value_checks_enabled

__all__ = [
    "AlignGeometry",
    "align_geometry",
    "compute_dtype",
    "crop_bounds",
    "parse_box",
    "pool_bin_edges",
    "quantize",
    "round_half_away",
    "sample_coords",
    "sample_grid",
    "to_rois",
]

BoxesLike = torch.Tensor | Sequence[torch.Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype roiviz computes in: float32 for half types, else the dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_rois(boxes: BoxesLike, input: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    """Validate ``boxes`` against ``input`` and return them as a ``Tensor[K, 5]``.

    The result is contiguous, on ``input``'s device, in :func:`compute_dtype` of ``input``.

    Parameters
    ----------
    boxes : Tensor[K, 5] or list of Tensor[L, 4]
        ``(batch_index, x1, y1, x2, y2)`` rows, or one ``(x1, y1, x2, y2)`` tensor per image.
    input : Tensor[N, C, H, W]
        The feature map the boxes index into (its batch size, device and dtype are used).

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> to_rois([torch.tensor([[0., 0., 4., 4.]]), torch.tensor([[1., 1., 2., 3.]])], x)
    tensor([[0., 0., 0., 4., 4.],
            [1., 1., 1., 2., 3.]])
    """
    n = input.shape[0]
    dtype = compute_dtype(input.dtype)
    if isinstance(boxes, torch.Tensor):
        _check_box_tensor(boxes, input, 5, name)
        rois = boxes.to(dtype)
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) != n:
            raise ValueError(
                f"{name} as a list must hold one Tensor[L, 4] per image: input has N={n} images, got {len(boxes)} tensors"
            )
        parts = []
        for i, b in enumerate(boxes):
            _check_box_tensor(b, input, 4, f"{name}[{i}]")
            index = torch.full((b.shape[0], 1), i, dtype=dtype, device=b.device)
            parts.append(torch.cat([index, b.to(dtype)], dim=1))
        rois = torch.cat(parts, dim=0) if parts else torch.zeros(0, 5, dtype=dtype, device=input.device)
    else:
        raise TypeError(
            f"{name} must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per image), got {type(boxes).__name__}"
        )
    rois = rois.contiguous()
    if value_checks_enabled(rois) and rois.shape[0] > 0:
        _check_box_values(rois, n, name)
    return rois


def _check_box_tensor(b: object, input: torch.Tensor, columns: int, name: str) -> None:
    form = "[K, 5] (batch_index, x1, y1, x2, y2)" if columns == 5 else "[L, 4] (x1, y1, x2, y2)"
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor{form}, got {type(b).__name__}")
    if b.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {b.layout}: call .to_dense() first")
    if b.dim() != 2 or b.shape[1] != columns:
        raise ValueError(f"{name} must have shape {form}, got {tuple(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {b.dtype}")
    if b.device != input.device:
        raise ValueError(f"{name} is on {b.device} but input is on {input.device}: put both on one device")


def _check_box_values(rois: torch.Tensor, n: int, name: str) -> None:
    # Read on the host with NumPy: one copy of the boxes (on a GPU, the one synchronisation),
    # then a few microseconds, where the same checks as torch operations cost ~50 us per call
    # on a handful of boxes (a sixth of a teaching-sized roi_align).
    a = rois.detach().cpu().numpy()
    batch = a[:, 0]
    with np.errstate(invalid="ignore"):  # NaN compares as False, which is what marks it bad
        finite = np.isfinite(a).all(axis=1)
        whole = batch == np.floor(batch)
        in_range = (batch >= 0) & (batch < n)
        ordered = (a[:, 3] >= a[:, 1]) & (a[:, 4] >= a[:, 2])
    good = finite & whole & in_range & ordered
    if good.all():
        return
    k = int(np.argmin(good))  # the first bad box
    row = [float(v) for v in a[k]]
    what = f"box {k} (batch_index, x1, y1, x2, y2) = {tuple(row)}"
    if not finite[k]:
        raise ValueError(f"{name}: {what} has a NaN or infinite coordinate")
    if not whole[k]:
        raise ValueError(f"{name}: {what} has a batch index that is not a whole number")
    if not in_range[k]:
        raise ValueError(f"{name}: {what} has batch index {row[0]:g} outside [0, {n}) for input with N={n}")
    raise ValueError(f"{name}: {what} has x2 < x1 or y2 < y1; boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")


def parse_box(box: object, n: int | None = None, name: str = "box") -> tuple[int, float, float, float, float]:
    """One box as ``(batch_index, x1, y1, x2, y2)``, from 4 or 5 numbers (a sequence, array or tensor), checked.

    Four numbers mean batch index 0. ``n`` is the input's batch size (``None``: not checked).
    The checks are :func:`to_rois`'s: finite, ``x1 <= x2``, ``y1 <= y2``, a whole batch index.

    Examples
    --------
    >>> parse_box((1, 2, 3, 4))
    (0, 1.0, 2.0, 3.0, 4.0)
    >>> parse_box(torch.tensor([1, 0., 0., 2., 2.]), n=1)
    Traceback (most recent call last):
    ...
    ValueError: box has batch index 1, which is not a whole number in [0, 1)
    """
    if isinstance(box, torch.Tensor):
        values = box.detach().cpu().double().flatten().tolist()
    elif isinstance(box, np.ndarray):
        values = box.astype(np.float64).ravel().tolist()
    elif isinstance(box, (list, tuple)):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box):
            raise TypeError(f"{name} must hold real numbers, got {box!r}")
        values = [float(v) for v in box]
    else:
        raise TypeError(
            f"{name} must be (x1, y1, x2, y2) or (batch_index, x1, y1, x2, y2) as a sequence or tensor, got {type(box).__name__}"
        )
    if len(values) == 4:
        values = [0.0, *values]
    elif len(values) != 5:
        raise ValueError(f"{name} must have 4 values (x1, y1, x2, y2) or 5 (batch_index, x1, y1, x2, y2), got {len(values)}")
    b, x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} {tuple(values)} has a NaN or infinite value")
    if b != int(b) or b < 0 or (n is not None and b >= n):
        where = f"in [0, {n})" if n is not None else ">= 0"
        raise ValueError(f"{name} has batch index {b:g}, which is not a whole number {where}")
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{name} (x1, y1, x2, y2) = {(x1, y1, x2, y2)} must have x1 <= x2 and y1 <= y2")
    return int(b), x1, y1, x2, y2


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves away from zero (C's ``round``), exactly.

    ``torch.round`` rounds halves to even, and ``floor(v + 0.5)`` is wrong for values just
    below one half in float32 (``0.49999997 + 0.5`` rounds up to ``1.0``). This is exact.

    Examples
    --------
    >>> round_half_away(torch.tensor([0.5, 1.5, 2.5, -0.5, 0.49999997]))
    tensor([ 1.,  2.,  3., -1.,  0.])
    """
    whole = torch.trunc(v)
    return whole + torch.sign(v) * ((v - whole).abs() >= 0.5).to(v.dtype)


def quantize(rois: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Fast R-CNN's integer box: ``round(x * scale)`` of ``(x1, y1, x2, y2)``, a ``LongTensor[K, 4]``.

    The product is taken in the rois' dtype, as the C++ kernels take it, so that a tie
    (``x * scale`` exactly ``n + 0.5``) rounds the same way. Both ends are *inclusive* cells.

    Examples
    --------
    >>> quantize(torch.tensor([[0, 8., 24., 40., 56.]]), 1 / 16)
    tensor([[1, 2, 3, 4]])
    """
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(check_spatial_scale(scale), dtype=rois.dtype, device=rois.device)
    return round_half_away(rois[:, 1:5] * scale).long()


def crop_bounds(
    rois: torch.Tensor, spatial_scale: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer crop of each ROI on the feature map, clipped to it.

    Returns ``(y0, x0, h, w)``, each a ``LongTensor[K]``: the crop is rows ``y0 .. y0+h-1`` and
    columns ``x0 .. x0+w-1``. ``h`` or ``w`` is 0 when the box lies wholly outside the map.
    See the module docstring for the convention.

    Examples
    --------
    >>> rois = torch.tensor([[0, 10., 20., 300., 200.]])
    >>> crop_bounds(rois, 1 / 16, 50, 68)
    (tensor([1]), tensor([1]), tensor([13]), tensor([19]))
    """
    q = quantize(rois, spatial_scale)  # [K, 4] x1, y1, x2, y2 in cells
    x0 = q[:, 0].clamp(0, width)
    y0 = q[:, 1].clamp(0, height)
    x1 = (q[:, 2] + 1).clamp(0, width)  # exclusive end
    y1 = (q[:, 3] + 1).clamp(0, height)
    return y0, x0, (y1 - y0).clamp(min=0), (x1 - x0).clamp(min=0)


def pool_bin_edges(
    rois: torch.Tensor, scale: float | torch.Tensor, ph_n: int, pw_n: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ROI Pool's bins, clipped to the map: ``hstart, hend [K, PH]`` and ``wstart, wend [K, PW]``.

    Row ``h`` is in bin ``ph`` when ``hstart <= h < hend``. The box is :func:`quantize`'d, at
    least one cell (malformed boxes become 1x1); bin ``p`` of ``bin = size / P`` cells spans
    ``floor(p * bin) .. ceil((p + 1) * bin) - 1`` from the box start, so neighbours may overlap.

    Examples
    --------
    The example of d2l.ai, section 14.8 (row and column 1 are in both bins):

    >>> pool_bin_edges(torch.tensor([[0, 0., 0., 20., 20.]]), 0.1, 2, 2, 4, 4)
    (tensor([[0, 1]]), tensor([[2, 3]]), tensor([[0, 1]]), tensor([[2, 3]]))
    """
    q = quantize(rois, scale)  # [K, 4]
    start_w, start_h, end_w, end_h = q.unbind(1)
    roi_w = (end_w - start_w + 1).clamp(min=1)  # malformed ROIs are forced to 1x1
    roi_h = (end_h - start_h + 1).clamp(min=1)
    bin_h = roi_h.to(rois.dtype) / ph_n  # [K]
    bin_w = roi_w.to(rois.dtype) / pw_n
    ph = torch.arange(ph_n, dtype=rois.dtype, device=rois.device)
    pw = torch.arange(pw_n, dtype=rois.dtype, device=rois.device)
    hstart = torch.floor(ph * bin_h[:, None]).long() + start_h[:, None]  # [K, PH]
    hend = torch.ceil((ph + 1) * bin_h[:, None]).long() + start_h[:, None]
    wstart = torch.floor(pw * bin_w[:, None]).long() + start_w[:, None]  # [K, PW]
    wend = torch.ceil((pw + 1) * bin_w[:, None]).long() + start_w[:, None]
    return hstart.clamp(0, height), hend.clamp(0, height), wstart.clamp(0, width), wend.clamp(0, width)


class AlignGeometry(NamedTuple):
    """Per-ROI geometry of ROI Align, each ``Tensor[K]`` in the rois' dtype (grids as floats)."""

    start_h: torch.Tensor
    start_w: torch.Tensor
    bin_h: torch.Tensor
    bin_w: torch.Tensor
    grid_h: torch.Tensor
    grid_w: torch.Tensor


def align_geometry(
    rois: torch.Tensor, scale: float | torch.Tensor, ph_n: int, pw_n: int, sampling_ratio: int, aligned: bool
) -> AlignGeometry:
    """Box start, bin size and samples per bin side of every ROI, in torchvision's expressions and order.

    Sample ``i`` of bin ``p`` then lies at ``start + p * bin + (i + 0.5) * bin / grid``
    (:func:`sample_coords`). ``scale`` is multiplied in the rois' dtype.

    Examples
    --------
    >>> align_geometry(torch.tensor([[0, 0., 0., 4., 6.]]), 1.0, 2, 2, -1, True)
    AlignGeometry(start_h=tensor([-0.5000]), start_w=tensor([-0.5000]), bin_h=tensor([3.]), bin_w=tensor([2.]), grid_h=tensor([3.]), grid_w=tensor([2.]))
    """
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(check_spatial_scale(scale), dtype=rois.dtype, device=rois.device)
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * scale - offset  # [K]
    start_h = rois[:, 2] * scale - offset
    roi_w = rois[:, 3] * scale - offset - start_w
    roi_h = rois[:, 4] * scale - offset - start_h
    if not aligned:  # legacy: force malformed ROIs to be at least 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_h, sampling_ratio)
    else:
        grid_h = torch.ceil(roi_h / ph_n)
        grid_w = torch.ceil(roi_w / pw_n)
    return AlignGeometry(start_h, start_w, roi_h / ph_n, roi_w / pw_n, grid_h, grid_w)


def sample_coords(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, g_max: int,
                  n_bins: int) -> torch.Tensor:
    """``[K, n_bins, g_max]``: where ROI Align samples along one axis, in torchvision's order.

    Sample ``i`` of bin ``p`` lies at ``start + p * bin + (i + 0.5) * bin / grid``, evaluated
    left to right as the kernel does (so float32 coordinates are bit-identical). Samples with
    ``i >= grid`` are computed too; callers mask them.

    Examples
    --------
    >>> sample_coords(torch.tensor([0.]), torch.tensor([2.]), torch.tensor([2.]), 2, 2)
    tensor([[[0.5000, 1.5000],
             [2.5000, 3.5000]]])
    """
    p = torch.arange(n_bins, dtype=start.dtype, device=start.device)[:, None]  # [P, 1]
    half = torch.arange(g_max, dtype=start.dtype, device=start.device) + 0.5  # [G]: (i + .5)
    b3 = bin_size[:, None, None]
    return start[:, None, None] + p * b3 + half * b3 / grid[:, None, None]


def sample_grid(
    rois: torch.Tensor, scale: float | torch.Tensor, ph_n: int, pw_n: int, sampling_ratio: int, aligned: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample coordinate of every ROI: ``(ys [K, PH, GH], xs [K, PW, GW], grid_h [K], grid_w [K])``.

    ``GH`` and ``GW`` are the largest grids (read on the host when adaptive); sample ``i`` of
    ROI ``k`` exists only for ``i < grid_h[k]`` (``grid_w[k]``). Sample ``(iy, ix)`` of bin
    ``(ph, pw)`` is the point ``(ys[k, ph, iy], xs[k, pw, ix])`` in feature-map index
    coordinates (cell ``c`` centred on ``c``).

    Examples
    --------
    >>> ys, xs, gh, gw = sample_grid(torch.tensor([[0, 0., 0., 4., 4.]]), 1.0, 1, 1, 2, True)
    >>> ys.tolist(), xs.tolist(), gh.tolist()
    ([[[0.5, 2.5]]], [[[0.5, 2.5]]], [2.0])
    """
    g = align_geometry(rois, scale, ph_n, pw_n, sampling_ratio, aligned)
    k_n = rois.shape[0]
    gh_max = sampling_ratio if sampling_ratio > 0 else (int(g.grid_h.max()) if k_n else 0)
    gw_max = sampling_ratio if sampling_ratio > 0 else (int(g.grid_w.max()) if k_n else 0)
    ys = sample_coords(g.start_h, g.bin_h, g.grid_h, gh_max, ph_n)  # [K, PH, GH]
    xs = sample_coords(g.start_w, g.bin_w, g.grid_w, gw_max, pw_n)  # [K, PW, GW]
    return ys, xs, g.grid_h, g.grid_w
