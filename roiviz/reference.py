"""Slow, plainly written reference versions of every roiviz op and strategy.

These are the test oracle and the text the notebooks teach from: Python loops over ROIs, bins
and samples, one scalar at a time, written to be read. They follow torchvision's CPU kernels
line by line, including the order of floating-point operations, so that in float32 and float64
they agree with torchvision bit for bit. Arithmetic on coordinates is done in the compute dtype
(float32 for float16/bfloat16/float32 input, float64 for float64) with numpy scalars, which
round after every operation exactly as C++ ``float``/``double`` do.

They are slow (seconds for a few ROIs of a small map). Use :mod:`roiviz` for real work.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._checks import (
    check_aligned,
    check_input,
    check_output_size,
    check_sampling_ratio,
    check_spatial_scale,
)
from .boxes import BoxesLike, compute_dtype, to_rois

__all__ = [
    "adaptive_pool",
    "bilinear_interpolate",
    "crop",
    "crop_rois",
    "pad",
    "pad_to_max",
    "prroi_bins",
    "prroi_cell_weights",
    "prroi_pool",
    "prroi_pool_backward",
    "prroi_surface",
    "resize",
    "roi_align",
    "roi_align_backward",
    "roi_align_sample_points",
    "roi_pool",
    "roi_pool_backward",
    "roi_pool_bins",
]


#: C's FLT_MAX. ROI Pool starts every bin at -FLT_MAX and keeps a cell only if it is strictly
#: greater, so a bin of -inf (or of NaN) gives -FLT_MAX, as torchvision does.
_FLT_MAX = 3.4028234663852886e38


def _np_dtype(dtype: torch.dtype) -> type:
    return np.float64 if compute_dtype(dtype) == torch.float64 else np.float32


def _c_round(v: float) -> int:
    """C's round(): halves away from zero. ``v`` holds a float32/float64 value; adding 0.5
    in Python's float64 is exact for it (no ``floor(v + 0.5)`` trap at 0.49999997f)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def _prepare(input, boxes, output_size, spatial_scale):
    input = check_input(input)
    ph, pw = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    rois = to_rois(boxes, input)
    return input, rois, ph, pw, scale


# --------------------------------------------------------------------------------------------
# ROI Pool (Fast R-CNN)
# --------------------------------------------------------------------------------------------


def roi_pool_bins(
    roi: torch.Tensor, pooled_height: int, pooled_width: int, spatial_scale: float, height: int, width: int,
    dtype: torch.dtype = torch.float32,
) -> list[list[tuple[int, int, int, int]]]:
    """The bins of one ROI as ROI Pool sees them: ``bins[ph][pw] = (hstart, hend, wstart, wend)``.

    Row ``h`` belongs to the bin when ``hstart <= h < hend``. Bins may overlap (``floor`` for
    the start, ``ceil`` for the end) and may be empty after clipping to the map.

    Examples
    --------
    >>> roi_pool_bins(torch.tensor([0, 0., 0., 20., 20.]), 2, 2, 0.1, 4, 4)
    [[(0, 2, 0, 2), (0, 2, 1, 3)], [(1, 3, 0, 2), (1, 3, 1, 3)]]
    """
    f = _np_dtype(dtype)
    scale = f(spatial_scale)
    x1, y1, x2, y2 = (f(float(v)) for v in roi[1:5])
    # round() in the compute dtype, halves away from zero, as the C++ kernel does.
    start_w, start_h = _c_round(float(x1 * scale)), _c_round(float(y1 * scale))
    end_w, end_h = _c_round(float(x2 * scale)), _c_round(float(y2 * scale))
    roi_width = max(end_w - start_w + 1, 1)  # malformed ROIs are forced to 1x1
    roi_height = max(end_h - start_h + 1, 1)
    bin_h = f(roi_height) / f(pooled_height)
    bin_w = f(roi_width) / f(pooled_width)
    bins = []
    for ph in range(pooled_height):
        row = []
        for pw in range(pooled_width):
            hstart = math.floor(f(ph) * bin_h)
            wstart = math.floor(f(pw) * bin_w)
            hend = math.ceil(f(ph + 1) * bin_h)
            wend = math.ceil(f(pw + 1) * bin_w)
            # Add the ROI offset and clip to the map.
            hstart = min(max(hstart + start_h, 0), height)
            hend = min(max(hend + start_h, 0), height)
            wstart = min(max(wstart + start_w, 0), width)
            wend = min(max(wend + start_w, 0), width)
            row.append((hstart, hend, wstart, wend))
        bins.append(row)
    return bins


def roi_pool(
    input: torch.Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> torch.Tensor:
    """Reference ROI Pool: max over each quantised bin; an empty bin gives 0.

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_pool(x, torch.tensor([[0, 0., 0., 20., 20.], [0, 0., 10., 30., 30.]]), 2, 0.1)[:, 0]
    tensor([[[ 5.,  6.],
             [ 9., 10.]],
    <BLANKLINE>
            [[ 9., 11.],
             [13., 15.]]])
    """
    input, rois, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    _, c_n, height, width = input.shape
    out = torch.zeros(rois.shape[0], c_n, ph_n, pw_n, dtype=input.dtype)
    x = input.detach().cpu()
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        bins = roi_pool_bins(rois[k].cpu(), ph_n, pw_n, scale, height, width, input.dtype)
        for c in range(c_n):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    hstart, hend, wstart, wend = bins[ph][pw]
                    if hend <= hstart or wend <= wstart:
                        continue  # an empty bin is defined to be 0
                    out[k, c, ph, pw] = _bin_max(x[b, c], bins[ph][pw])[0]
    return out.to(input.device)


def _bin_max(plane: torch.Tensor, bin_: tuple[int, int, int, int]) -> tuple[float, tuple[int, int] | None]:
    """The kernel's maximum of one bin of ``plane [H, W]`` and the cell ``(h, w)`` it came from.

    The running maximum starts at -FLT_MAX (for every dtype) and takes a cell only if it is
    strictly greater, in row-major order: the first maximum wins, and a bin of only -inf / NaN
    (or an empty bin) keeps -FLT_MAX with no cell.
    """
    hstart, hend, wstart, wend = bin_
    best, cell = -_FLT_MAX, None
    for h in range(hstart, hend):
        for w in range(wstart, wend):
            v = float(plane[h, w])
            if v > best:
                best, cell = v, (h, w)
    return best, cell


def roi_pool_backward(
    input: torch.Tensor, boxes: BoxesLike, grad_output: torch.Tensor, spatial_scale: float = 1.0
) -> torch.Tensor:
    """Reference gradient of :func:`roi_pool` with respect to ``input``, in torchvision's order.

    Every output element ``(k, c, ph, pw)`` sends its gradient to the first maximum of its bin
    (row-major, strictly greater than the running maximum, which starts at -FLT_MAX), one
    addition at a time in the order ``(k, ph, pw)`` per input cell: the order of torchvision's
    CPU kernel, so the result is bit-identical to it. A bin that is empty, or holds nothing
    above -FLT_MAX (only -inf or NaN), sends nothing. The output size is ``grad_output``'s.

    Examples
    --------
    Two boxes share the maximum 15 of a 4x4 map: it receives both gradients.

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> boxes = torch.tensor([[0, 0., 0., 3., 3.], [0, 2., 2., 3., 3.]])
    >>> roi_pool_backward(x, boxes, torch.tensor([1., 2.]).reshape(2, 1, 1, 1))[0, 0]
    tensor([[0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [0., 0., 0., 0.],
            [0., 0., 0., 3.]])
    """
    input, rois, _, _, scale = _prepare(input, boxes, 1, spatial_scale)
    k_n, (n_n, c_n, height, width) = rois.shape[0], input.shape
    if grad_output.dim() != 4 or grad_output.shape[:2] != (k_n, c_n):
        raise ValueError(f"grad_output must have shape [{k_n}, {c_n}, PH, PW], got {list(grad_output.shape)}")
    ph_n, pw_n = grad_output.shape[2:]
    grad = np.zeros((n_n, c_n, height, width), dtype=_np_dtype(input.dtype))
    g_out = grad_output.detach().cpu().to(compute_dtype(input.dtype)).numpy()
    x = input.detach().cpu()
    for k in range(k_n):
        b = int(rois[k, 0])
        bins = roi_pool_bins(rois[k].cpu(), ph_n, pw_n, scale, height, width, input.dtype)
        for c in range(c_n):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    cell = _bin_max(x[b, c], bins[ph][pw])[1]
                    if cell is not None:
                        grad[b, c, cell[0], cell[1]] += g_out[k, c, ph, pw]  # one rounded add per output
    return torch.from_numpy(grad).to(input.dtype).to(input.device)


# --------------------------------------------------------------------------------------------
# ROI Align (Mask R-CNN)
# --------------------------------------------------------------------------------------------


def bilinear_interpolate(
    channel: torch.Tensor, y: float, x: float, dtype: torch.dtype = torch.float32
) -> list[tuple[int, int, float]]:
    """The taps of one ROI Align sample: ``[(row, col, weight), ...]`` (empty when outside).

    A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` contributes nothing. Otherwise
    the point is clamped into the map and split between its four neighbours; at the last
    row/column both neighbours are that row/column.

    Examples
    --------
    >>> bilinear_interpolate(torch.zeros(4, 4), 0.25, 3.5)
    [(0, 3, 0.75), (0, 3, 0.0), (1, 3, 0.25), (1, 3, 0.0)]
    """
    f = _np_dtype(dtype)
    height, width = channel.shape
    y, x = f(y), f(x)
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    if y <= 0:
        y = f(0)
    if x <= 0:
        x = f(0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = f(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = f(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - f(y_low), x - f(x_low)
    hy, hx = f(1) - ly, f(1) - lx
    return [
        (y_low, x_low, float(hy * hx)),
        (y_low, x_high, float(hy * lx)),
        (y_high, x_low, float(ly * hx)),
        (y_high, x_high, float(ly * lx)),
    ]


def roi_align_sample_points(
    roi: torch.Tensor, pooled_height: int, pooled_width: int, spatial_scale: float,
    sampling_ratio: int, aligned: bool, dtype: torch.dtype = torch.float32,
) -> tuple[list[list[list[tuple[float, float]]]], int]:
    """Where ROI Align samples one ROI: ``points[ph][pw] = [(y, x), ...]`` and the divisor.

    The divisor is ``max(grid_h * grid_w, 1)``: samples that fall outside the map still count.

    Examples
    --------
    >>> points, count = roi_align_sample_points(torch.tensor([0, 0., 0., 4., 4.]), 1, 1, 1.0, 2, True)
    >>> points[0][0], count
    ([(0.5, 0.5), (0.5, 2.5), (2.5, 0.5), (2.5, 2.5)], 4)
    """
    f = _np_dtype(dtype)
    scale = f(spatial_scale)
    offset = f(0.5) if aligned else f(0.0)
    x1, y1, x2, y2 = (f(float(v)) for v in roi[1:5])
    start_w, start_h = x1 * scale - offset, y1 * scale - offset
    end_w, end_h = x2 * scale - offset, y2 * scale - offset
    roi_width, roi_height = end_w - start_w, end_h - start_h
    if not aligned:  # legacy: force malformed ROIs to be at least 1x1
        roi_width, roi_height = max(roi_width, f(1)), max(roi_height, f(1))
    bin_h = roi_height / f(pooled_height)
    bin_w = roi_width / f(pooled_width)
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_height / f(pooled_height))
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_width / f(pooled_width))
    count = max(grid_h * grid_w, 1)
    points = []
    for ph in range(pooled_height):
        row = []
        for pw in range(pooled_width):
            samples = []
            for iy in range(grid_h):
                y = start_h + f(ph) * bin_h + f(iy + 0.5) * bin_h / f(grid_h)
                for ix in range(grid_w):
                    x = start_w + f(pw) * bin_w + f(ix + 0.5) * bin_w / f(grid_w)
                    samples.append((float(y), float(x)))
            row.append(samples)
        points.append(row)
    return points, count


def roi_align(
    input: torch.Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False,
) -> torch.Tensor:
    """Reference ROI Align: each bin is the mean of bilinear samples on a regular grid.

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_align(x, torch.tensor([[0, 0., 0., 4., 4.]]), 1, 1.0, 2, True)
    tensor([[[[7.5000]]]])
    """
    input, rois, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    aligned = check_aligned(aligned)
    f = _np_dtype(input.dtype)
    c_n = input.shape[1]
    out = torch.zeros(rois.shape[0], c_n, ph_n, pw_n, dtype=input.dtype)
    x = input.detach().cpu().to(compute_dtype(input.dtype)).numpy()
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        points, count = roi_align_sample_points(rois[k].cpu(), ph_n, pw_n, scale, sampling_ratio, aligned, input.dtype)
        taps = [[[bilinear_interpolate(input[0, 0], y, xx, input.dtype) for y, xx in points[ph][pw]]
                 for pw in range(pw_n)] for ph in range(ph_n)]
        for c in range(c_n):
            plane = x[b, c]
            for ph in range(ph_n):
                for pw in range(pw_n):
                    total = f(0)
                    for sample in taps[ph][pw]:
                        if sample:  # w1*v1 + w2*v2 + w3*v3 + w4*v4, in that order
                            (r1, c1, w1), (r2, c2, w2), (r3, c3, w3), (r4, c4, w4) = sample
                            total += (f(w1) * plane[r1, c1] + f(w2) * plane[r2, c2]
                                      + f(w3) * plane[r3, c3] + f(w4) * plane[r4, c4])
                    out[k, c, ph, pw] = float(total / f(count))
    return out.to(input.device)


def roi_align_backward(
    input: torch.Tensor, boxes: BoxesLike, grad_output: torch.Tensor, spatial_scale: float = 1.0,
    sampling_ratio: int = -1, aligned: bool = False,
) -> torch.Tensor:
    """Reference gradient of :func:`roi_align` with respect to ``input``, in torchvision's order.

    Every output element ``(k, c, ph, pw)`` sends ``grad * w / count`` to each tap of each of
    its samples, one addition at a time, in the order ``(k, ph, pw, iy, ix, tap)`` per input
    cell: the order of torchvision's CPU kernel, so the float32 result is bit-identical to it.
    ``input`` gives the shape and dtype (its values are not used: ROI Align is linear in them);
    the output size is ``grad_output``'s.

    Examples
    --------
    One bin of a 2x2 grid over a 4x4 map: each of the four samples spreads 1/4 over its taps.

    >>> x = torch.zeros(1, 1, 4, 4)
    >>> g = roi_align_backward(x, torch.tensor([[0, 0., 0., 4., 4.]]), torch.ones(1, 1, 1, 1), 1.0, 2, True)
    >>> g[0, 0, 0]
    tensor([0.0625, 0.0625, 0.0625, 0.0625])
    """
    input, rois, _, _, scale = _prepare(input, boxes, 1, spatial_scale)
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    aligned = check_aligned(aligned)
    k_n, (n_n, c_n, height, width) = rois.shape[0], input.shape
    if grad_output.dim() != 4 or grad_output.shape[:2] != (k_n, c_n):
        raise ValueError(f"grad_output must have shape [{k_n}, {c_n}, PH, PW], got {list(grad_output.shape)}")
    ph_n, pw_n = grad_output.shape[2:]
    f = _np_dtype(input.dtype)
    grad = np.zeros((n_n, c_n, height, width), dtype=f)
    g_out = grad_output.detach().cpu().to(compute_dtype(input.dtype)).numpy()
    for k in range(k_n):
        b = int(rois[k, 0])
        points, count = roi_align_sample_points(rois[k].cpu(), ph_n, pw_n, scale, sampling_ratio, aligned, input.dtype)
        for c in range(c_n):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    g = g_out[k, c, ph, pw]
                    for y, x in points[ph][pw]:
                        for row, col, w in bilinear_interpolate(input[0, 0], y, x, input.dtype):
                            grad[b, c, row, col] += g * f(w) / f(count)  # one rounded add per term
    return torch.from_numpy(grad).to(input.dtype).to(input.device)


# --------------------------------------------------------------------------------------------
# Precise RoI Pooling (IoU-Net)
# --------------------------------------------------------------------------------------------


def prroi_surface(plane: np.ndarray, y: float, x: float) -> float:
    """The bilinear surface Precise RoI Pooling integrates, at the point ``(y, x)``.

    Cell ``(i, j)`` holds its value at the point ``(i, j)``; between cells the value is
    interpolated bilinearly, and the map is extended by zeros (so the surface fades to 0 one
    cell beyond the border).

    Examples
    --------
    >>> plane = np.array([[0., 1.], [2., 3.]])
    >>> prroi_surface(plane, 0.5, 0.5), prroi_surface(plane, 1.5, 1.0), prroi_surface(plane, 3.0, 0.0)
    (1.5, 1.5, 0.0)
    """
    total = 0.0
    for i in (math.floor(y), math.floor(y) + 1):
        for j in (math.floor(x), math.floor(x) + 1):
            total += _cell_value(plane, i, j) * (1 - abs(y - i)) * (1 - abs(x - j))
    return total


def _cell_value(plane: np.ndarray, i: int, j: int) -> float:
    height, width = plane.shape
    return float(plane[i, j]) if 0 <= i < height and 0 <= j < width else 0.0


def _ramp_integral(s: float, t: float) -> float:
    """``integral of (1 - u) du`` from ``s`` to ``t``: the weight of the near corner of a cell.

    ``t - t^2/2 - s + s^2/2`` as the paper writes it, factored so that it stays accurate when
    ``t - s`` is tiny.
    """
    return (t - s) * (1 - 0.5 * (s + t))


def prroi_cell_weights(
    h: int, w: int, y0: float, x0: float, y1: float, x1: float
) -> list[tuple[int, int, float]]:
    """``[(row, col, weight), ...]``: the four corners of cell ``[h, h+1] x [w, w+1]`` and the
    integral, over the part ``[y0, y1] x [x0, x1]`` of that cell, of each corner's bilinear weight.

    Over one cell the surface is bilinear in its four corners, so its integral there is exact:
    ``sum(weight * value)``. This is the formula of the paper and its CUDA kernel.

    Examples
    --------
    >>> prroi_cell_weights(0, 0, 0.0, 0.0, 1.0, 1.0)  # a whole cell: a quarter to each corner
    [(0, 0, 0.25), (0, 1, 0.25), (1, 0, 0.25), (1, 1, 0.25)]
    """
    near_y, far_y = _ramp_integral(y0 - h, y1 - h), _ramp_integral(h + 1 - y1, h + 1 - y0)
    near_x, far_x = _ramp_integral(x0 - w, x1 - w), _ramp_integral(w + 1 - x1, w + 1 - x0)
    return [(h, w, near_y * near_x), (h, w + 1, near_y * far_x),
            (h + 1, w, far_y * near_x), (h + 1, w + 1, far_y * far_x)]


def prroi_bins(
    roi: torch.Tensor, pooled_height: int, pooled_width: int, spatial_scale: float, aligned: bool = False
) -> list[list[tuple[float, float, float, float]]]:
    """The bins of one ROI in map coordinates: ``bins[ph][pw] = (y0, x0, y1, x1)``.

    Examples
    --------
    >>> prroi_bins(torch.tensor([0, 0., 0., 4., 2.]), 1, 2, 1.0)
    [[(0.0, 0.0, 2.0, 2.0), (0.0, 2.0, 2.0, 4.0)]]
    """
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (float(v) for v in roi[1:5])
    start_w, start_h = x1 * spatial_scale - offset, y1 * spatial_scale - offset
    bin_w = max(x2 * spatial_scale - offset - start_w, 0.0) / pooled_width
    bin_h = max(y2 * spatial_scale - offset - start_h, 0.0) / pooled_height
    return [[(start_h + bin_h * ph, start_w + bin_w * pw, start_h + bin_h * ph + bin_h, start_w + bin_w * pw + bin_w)
             for pw in range(pooled_width)] for ph in range(pooled_height)]


def _bin_cells(y0: float, x0: float, y1: float, x1: float):
    """Every cell ``(h, w)`` the bin overlaps, with the overlap ``(ya, xa, yb, xb)``."""
    for h in range(math.floor(y0), math.ceil(y1)):
        for w in range(math.floor(x0), math.ceil(x1)):
            yield h, w, (max(y0, h), max(x0, w), min(y1, h + 1), min(x1, w + 1))


def prroi_pool(
    input: torch.Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    aligned: bool = False,
) -> torch.Tensor:
    """Reference Precise RoI Pooling: the integral of the surface over each bin, over its area.

    Cell by cell, as the paper writes it (:func:`prroi_cell_weights`), in float64; a bin of
    zero area gives 0. See :func:`roiviz.prroi_pool` for the conventions.

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> prroi_pool(x, torch.tensor([[0, 0., 0., 3., 3.]]), 1)
    tensor([[[[7.5000]]]])
    """
    input, rois, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    aligned = check_aligned(aligned)
    out = torch.zeros(rois.shape[0], input.shape[1], ph_n, pw_n, dtype=torch.float64)
    x = input.detach().cpu().double().numpy()
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        bins = prroi_bins(rois[k].detach().cpu(), ph_n, pw_n, scale, aligned)
        for c in range(input.shape[1]):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    y0, x0, y1, x1 = bins[ph][pw]
                    area = (y1 - y0) * (x1 - x0)
                    if area <= 0:
                        continue
                    total = 0.0
                    for h, w, part in _bin_cells(y0, x0, y1, x1):
                        for row, col, weight in prroi_cell_weights(h, w, *part):
                            total += _cell_value(x[b, c], row, col) * weight
                    out[k, c, ph, pw] = total / area
    return out.to(input.dtype).to(input.device)


def prroi_pool_backward(
    input: torch.Tensor, boxes: BoxesLike, grad_output: torch.Tensor, spatial_scale: float = 1.0,
    aligned: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference gradients of :func:`prroi_pool`: ``(grad_input [N, C, H, W], grad_rois [K, 5])``.

    The input gradient distributes each output's gradient over the cell corners with the weights
    of :func:`prroi_cell_weights`. The box gradient is the paper's: moving the right edge ``x1``
    of a bin of mean ``m`` and area ``A`` changes ``m`` by ``(E - m * (y1 - y0)) / A``, where
    ``E`` is the surface integrated along that edge (exactly: it is linear along the edge within
    a cell); the bins' edges move with the box's edges (bin ``q`` of ``PW``: its left edge by
    ``1 - q/PW`` with ``x1`` and ``q/PW`` with ``x2``), times ``spatial_scale``. The batch index
    column gets 0; bins of zero area give nothing.

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> gi, gr = prroi_pool_backward(x, torch.tensor([[0, 0., 0., 2., 2.]]), torch.ones(1, 1, 1, 1))
    >>> gr  # the surface is x + 4 y: moving either x edge by 1 moves the mean by 1/2
    tensor([[0.0000, 0.5000, 2.0000, 0.5000, 2.0000]])
    """
    input, rois, _, _, scale = _prepare(input, boxes, 1, spatial_scale)
    aligned = check_aligned(aligned)
    k_n, (n_n, c_n, height, width) = rois.shape[0], input.shape
    if grad_output.dim() != 4 or grad_output.shape[:2] != (k_n, c_n):
        raise ValueError(f"grad_output must have shape [{k_n}, {c_n}, PH, PW], got {list(grad_output.shape)}")
    ph_n, pw_n = grad_output.shape[2:]
    x = input.detach().cpu().double().numpy()
    g_out = grad_output.detach().cpu().double().numpy()
    grad_input = np.zeros((n_n, c_n, height, width))
    grad_rois = np.zeros((k_n, 5))
    for k in range(k_n):
        b = int(rois[k, 0])
        bins = prroi_bins(rois[k].detach().cpu(), ph_n, pw_n, scale, aligned)
        for c in range(c_n):
            plane = x[b, c]
            for ph in range(ph_n):
                for pw in range(pw_n):
                    y0, x0, y1, x1 = bins[ph][pw]
                    area = (y1 - y0) * (x1 - x0)
                    g = g_out[k, c, ph, pw]
                    if area <= 0:
                        continue
                    mean = 0.0
                    for h, w, part in _bin_cells(y0, x0, y1, x1):
                        for row, col, weight in prroi_cell_weights(h, w, *part):
                            if 0 <= row < height and 0 <= col < width:
                                grad_input[b, c, row, col] += g * weight / area
                            mean += _cell_value(plane, row, col) * weight / area
                    # The surface integrated along each edge of the bin.
                    left = _edge_integral(plane, x0, y0, y1, vertical=True)
                    right = _edge_integral(plane, x1, y0, y1, vertical=True)
                    top = _edge_integral(plane, y0, x0, x1, vertical=False)
                    bottom = _edge_integral(plane, y1, x0, x1, vertical=False)
                    d_x0 = (-left + mean * (y1 - y0)) / area
                    d_x1 = (right - mean * (y1 - y0)) / area
                    d_y0 = (-top + mean * (x1 - x0)) / area
                    d_y1 = (bottom - mean * (x1 - x0)) / area
                    grad_rois[k, 1] += g * scale * (d_x0 * (1 - pw / pw_n) + d_x1 * (1 - (pw + 1) / pw_n))
                    grad_rois[k, 3] += g * scale * (d_x0 * pw / pw_n + d_x1 * (pw + 1) / pw_n)
                    grad_rois[k, 2] += g * scale * (d_y0 * (1 - ph / ph_n) + d_y1 * (1 - (ph + 1) / ph_n))
                    grad_rois[k, 4] += g * scale * (d_y0 * ph / ph_n + d_y1 * (ph + 1) / ph_n)
    return (torch.from_numpy(grad_input).to(input.dtype).to(input.device),
            torch.from_numpy(grad_rois).to(input.dtype).to(input.device))


def _edge_integral(plane: np.ndarray, at: float, lo: float, hi: float, vertical: bool) -> float:
    """The surface integrated along the segment ``x = at, y in [lo, hi]`` (or ``y = at``, x in it).

    Along the segment the surface is linear within each cell, so the integral is exact:
    ``c1 * int(1 - u) + c2 * int(u)`` over each cell's part, ``c1, c2`` its values at the ends.
    """
    total = 0.0
    for n in range(math.floor(lo), math.ceil(hi)):
        s, t = max(lo, n) - n, min(hi, n + 1) - n
        if vertical:
            c1, c2 = prroi_surface(plane, n, at), prroi_surface(plane, n + 1, at)
        else:
            c1, c2 = prroi_surface(plane, at, n), prroi_surface(plane, at, n + 1)
        total += c1 * _ramp_integral(s, t) + c2 * 0.5 * (t - s) * (t + s)
    return total


# --------------------------------------------------------------------------------------------
# Integer crops and the strategies built on them
# --------------------------------------------------------------------------------------------


def crop_rois(input: torch.Tensor, boxes: BoxesLike, spatial_scale: float = 1.0) -> list[torch.Tensor]:
    """Reference exact integer crops: a list of ``Tensor[C, h_k, w_k]`` (see :mod:`roiviz.boxes`).

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> crop_rois(x, torch.tensor([[0, 1., 1., 2., 3.]]))[0]
    tensor([[[ 5.,  6.],
             [ 9., 10.],
             [13., 14.]]])
    """
    input = check_input(input)
    scale = check_spatial_scale(spatial_scale)
    rois = to_rois(boxes, input)
    f = _np_dtype(input.dtype)
    _, _, height, width = input.shape
    crops = []
    for k in range(rois.shape[0]):
        b = int(rois[k, 0])
        x1, y1, x2, y2 = (_c_round(float(f(float(v)) * f(scale))) for v in rois[k, 1:5])
        # Inclusive integer ends, clipped to the map; may be empty.
        r0, r1 = min(max(y1, 0), height), min(max(y2 + 1, 0), height)
        c0, c1 = min(max(x1, 0), width), min(max(x2 + 1, 0), width)
        crops.append(input[b, :, r0:max(r1, r0), c0:max(c1, c0)])
    return crops


def _place(crop_: torch.Tensor, ph_n: int, pw_n: int, centre: bool) -> torch.Tensor:
    """Cut or zero-fill one crop ``[C, h, w]`` to ``[C, ph_n, pw_n]``."""
    c_n, h, w = crop_.shape
    out = torch.zeros(c_n, ph_n, pw_n, dtype=crop_.dtype, device=crop_.device)
    # Output cell (i, j) shows crop cell (i + dy, j + dx); centring uses floor((h - PH) / 2).
    dy = (h - ph_n) // 2 if centre else 0
    dx = (w - pw_n) // 2 if centre else 0
    for i in range(ph_n):
        for j in range(pw_n):
            r, s = i + dy, j + dx
            if 0 <= r < h and 0 <= s < w:
                out[:, i, j] = crop_[:, r, s]
    return out


def crop(input, boxes, output_size, spatial_scale=1.0, centre=False) -> torch.Tensor:
    """Reference ``crop``: each integer crop cut to ``output_size``, zero-filled where smaller.

    Top-left anchored; with ``centre=True`` the crop's centre goes to the canvas centre.
    """
    input, _, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    crops = crop_rois(input, boxes, scale)
    return _stack([_place(c, ph_n, pw_n, centre) for c in crops], input, ph_n, pw_n)


def pad(input, boxes, output_size, spatial_scale=1.0) -> torch.Tensor:
    """Reference ``pad``: each crop zero-padded, centred, into an ``output_size`` canvas.

    A crop larger than the canvas is cut (its centre is kept).
    """
    return crop(input, boxes, output_size, spatial_scale, centre=True)


def pad_to_max(input, boxes, spatial_scale=1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference ``pad_to_max``: crops zero-padded (top-left) to the batch's largest crop.

    Returns ``(padded [K, C, Hmax, Wmax], valid [K, Hmax, Wmax] bool)``.
    """
    input = check_input(input)
    crops = crop_rois(input, boxes, spatial_scale)
    h_max = max((c.shape[1] for c in crops), default=0)
    w_max = max((c.shape[2] for c in crops), default=0)
    out = torch.zeros(len(crops), input.shape[1], h_max, w_max, dtype=input.dtype, device=input.device)
    valid = torch.zeros(len(crops), h_max, w_max, dtype=torch.bool, device=input.device)
    for k, c in enumerate(crops):
        out[k, :, : c.shape[1], : c.shape[2]] = c
        valid[k, : c.shape[1], : c.shape[2]] = True
    return out, valid


def adaptive_pool(input, boxes, output_size, spatial_scale=1.0, mode="max") -> torch.Tensor:
    """Reference adaptive pooling of each crop: bin ``i`` spans ``floor(i*h/PH) .. ceil((i+1)*h/PH)``.

    ``mode`` is ``"max"`` or ``"avg"``. An empty crop gives zeros.

    Examples
    --------
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> adaptive_pool(x, torch.tensor([[0, 0., 0., 2., 2.]]), 2, mode="avg")[0, 0]
    tensor([[2.5000, 3.5000],
            [6.5000, 7.5000]])
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    input, _, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    outs = []
    for c in crop_rois(input, boxes, scale):
        c_n, h, w = c.shape
        out = torch.zeros(c_n, ph_n, pw_n, dtype=input.dtype, device=input.device)
        if h and w:
            for i in range(ph_n):
                r0, r1 = (i * h) // ph_n, -((-(i + 1) * h) // ph_n)
                for j in range(pw_n):
                    s0, s1 = (j * w) // pw_n, -((-(j + 1) * w) // pw_n)
                    window = c[:, r0:r1, s0:s1].reshape(c_n, -1)
                    out[:, i, j] = window.amax(dim=1) if mode == "max" else window.mean(dim=1)
        outs.append(out)
    return _stack(outs, input, ph_n, pw_n)


def resize(input, boxes, output_size, spatial_scale=1.0) -> torch.Tensor:
    """Reference ``resize`` (RoIWarp): each crop resized bilinearly, half-pixel centres.

    Output cell ``i`` reads the crop at ``(i + 0.5) * h / PH - 0.5`` (clamped at 0), as
    ``F.interpolate(mode="bilinear", align_corners=False)`` does. An empty crop gives zeros.
    """
    input, _, ph_n, pw_n, scale = _prepare(input, boxes, output_size, spatial_scale)
    outs = []
    for c in crop_rois(input, boxes, scale):
        c_n, h, w = c.shape
        out = torch.zeros(c_n, ph_n, pw_n, dtype=input.dtype, device=input.device)
        if h and w:
            for i in range(ph_n):
                y = max((i + 0.5) * h / ph_n - 0.5, 0.0)
                y0 = int(y)
                y1, ly = min(y0 + 1, h - 1), y - y0
                for j in range(pw_n):
                    x = max((j + 0.5) * w / pw_n - 0.5, 0.0)
                    x0 = int(x)
                    x1, lx = min(x0 + 1, w - 1), x - x0
                    out[:, i, j] = ((1 - ly) * ((1 - lx) * c[:, y0, x0] + lx * c[:, y0, x1])
                                    + ly * ((1 - lx) * c[:, y1, x0] + lx * c[:, y1, x1]))
        outs.append(out)
    return _stack(outs, input, ph_n, pw_n)


def _stack(outs: list[torch.Tensor], input: torch.Tensor, ph_n: int, pw_n: int) -> torch.Tensor:
    if not outs:
        return input.new_zeros(0, input.shape[1], ph_n, pw_n)
    return torch.stack(outs)
