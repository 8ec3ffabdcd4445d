"""Other frameworks' ROI conventions, each computed exactly as that framework computes it.

The questions people ask most about ROI ops are about *conventions*: where a framework thinks
pixel ``i`` is, whether a box is shifted by half a cell, what "max" means. Each function here
implements one framework's op with that framework's argument names, layouts and float order, so
that a port can be checked line by line against it:

- :func:`roi_align_onnx` — ONNX ``RoiAlign`` (opset 16) as ONNX Runtime's CPU kernel computes
  it: NCHW, ``rois[K, 4] = (x1, y1, x2, y2)`` plus a separate ``batch_indices[K]``;
  ``coordinate_transformation_mode`` ``"half_pixel"`` (shift by half a cell: torchvision's
  ``aligned=True``) or ``"output_half_pixel"`` (no shift: ``aligned=False``, the pre-16
  behaviour); ``mode="max"`` takes, per sample, the largest of the four *weighted* taps
  ``w_i * v_i`` and then the largest over the samples — not the max of interpolated values.
- :func:`roi_align_mmcv` — mmcv's ``roi_align`` (``mmcv.ops.roi_align``) as its CUDA kernel
  computes it: ``rois[K, 5]``, ``aligned=True`` by default, ``sampling_ratio=0`` adaptive;
  ``pool_mode="max"`` takes the largest *interpolated* value among the samples of a bin.
- :func:`crop_and_resize` — TensorFlow's ``tf.image.crop_and_resize``: NHWC, boxes
  ``(y1, x1, y2, x2)`` normalised so that ``0`` is the centre of the first pixel and ``1`` the
  centre of the last; ``crop_size[0]`` samples from ``y1`` to ``y2`` *inclusive of both ends*
  (endpoint sampling, no bins, one sample per output), so it is not ROI Align.

The legacy Detectron convention (``aligned=False``) and Detectron2's (``aligned=True``) are
:func:`roiviz.roi_align` itself, which is torchvision's ``roi_align``: nothing to add here.
ONNX's ``avg`` mode and mmcv's ``avg`` mode compute the same numbers as
:func:`roiviz.roi_align` with ``aligned = (mode == "half_pixel")`` and ``aligned`` respectively
(tested), apart from what happens to NaN/inf at cell ``(0, 0)`` (ONNX Runtime multiplies it by a
zero weight for samples outside the map).

Every function takes and returns torch tensors, runs on any device (vectorised over boxes and
bins; it loops only over the samples of a bin, in the framework's order, so that float32
results are bit-identical to the framework's CPU kernel — a large adaptive grid therefore
costs one pass per sample), and raises :class:`TypeError` or
:class:`ValueError` naming the argument on bad input. The ``*_loops`` functions are the same
conventions written as plain per-element loops: the oracles the tests compare against.

Where each framework samples (index space: pixel ``i``'s value sits at coordinate ``i``):
:func:`sample_points`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "boxes_for_crop_and_resize",
    "crop_and_resize",
    "crop_and_resize_loops",
    "roi_align_mmcv",
    "roi_align_mmcv_loops",
    "roi_align_onnx",
    "roi_align_onnx_loops",
    "sample_points",
]

#: mmcv's CUDA kernel starts a max-pooled bin at ``-FLT_MAX``; a bin with no samples keeps it.
MMCV_MAX_INIT = -float(np.finfo(np.float32).max)


# --------------------------------------------------------------------------------------------
# Input checks (each names the argument, what was expected and what was given)
# --------------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_float_map(t: object, name: str, layout: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be a 4-D tensor {layout}, got shape {tuple(t.shape)}")
    return t


def _check_int_arg(value: object, name: str, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if int(value) < minimum:  # type: ignore[call-overload]
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def _check_scale(value: object, name: str = "spatial_scale") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _check_choice(value: object, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_boxes(boxes: object, name: str, columns: int, like: Tensor) -> Tensor:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [K, {columns}], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != columns:
        raise ValueError(f"{name} must have shape [K, {columns}], got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {boxes.dtype}")
    if boxes.device != like.device:
        raise ValueError(f"{name} is on {boxes.device} but the feature map is on {like.device}")
    if boxes.device.type != "meta" and boxes.numel() and not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return boxes


def _check_indices(indices: object, name: str, k: int, batch: int, like: Tensor) -> Tensor:
    if not isinstance(indices, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [K], got {type(indices).__name__}")
    if indices.dim() != 1 or indices.shape[0] != k:
        raise ValueError(f"{name} must have shape [K] = [{k}] (one per box), got {tuple(indices.shape)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {indices.dtype}")
    if indices.device != like.device:
        raise ValueError(f"{name} is on {indices.device} but the feature map is on {like.device}")
    if indices.device.type != "meta" and k:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= batch:
            raise ValueError(f"{name} must lie in [0, {batch}) (the batch size), got values in [{lo}, {hi}]")
    return indices.long()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


# --------------------------------------------------------------------------------------------
# The sample grid shared by ONNX Runtime and mmcv (Caffe2's RoIAlign, which both started from)
# --------------------------------------------------------------------------------------------


def _axis_samples(start: Tensor, bin_size: Tensor, grid: Tensor, max_grid: int, pooled: int, size: int):
    """Every sample along one axis, in the kernels' float expressions.

    Returns ``(inside, low, high, l, h)``, each ``[K, P, G]``: whether the coordinate lies in
    ``[-1, size]``, the two cells it interpolates between, and its two linear weights
    (``l`` for ``high``, ``h = 1 - l`` for ``low``), after the kernels' clamping.
    """
    dtype = start.dtype
    p = torch.arange(pooled, device=start.device, dtype=dtype)[None, :, None]  # [1, P, 1]
    i = torch.arange(max_grid, device=start.device, dtype=dtype)[None, None, :] + 0.5  # [1, 1, G]
    g = grid.to(dtype).clamp(min=1)[:, None, None]  # [K, 1, 1]; clamped: G=0 takes no sample anyway
    b = bin_size[:, None, None]  # [K, 1, 1]
    coord = start[:, None, None] + p * b + i * b / g  # [K, P, G]: start + p*bin + (i+.5)*bin/grid
    inside = (coord >= -1.0) & (coord <= size)  # [K, P, G]
    c = coord.clamp(min=0)  # "if (y <= 0) y = 0"
    low = c.to(torch.int64)  # truncation, as the C cast (c >= 0 here)
    at_end = low >= size - 1
    low = torch.where(at_end, size - 1, low)
    high = torch.where(at_end, size - 1, low + 1)
    c = torch.where(at_end, low.to(dtype), c)
    l_ = c - low.to(dtype)
    h_ = 1.0 - l_
    return inside, low, high, l_, h_


def _caffe2_geometry(rois4: Tensor, scale: float, offset: float, clamp_one: bool, ph_n: int, pw_n: int,
                     sampling_ratio: int):
    """Box start, bin size and sample-grid size per box, for rois ``(x1, y1, x2, y2)``."""
    dtype = rois4.dtype
    scale_t = torch.tensor(scale, dtype=dtype, device=rois4.device)
    start_w = rois4[:, 0] * scale_t - offset  # [K]
    start_h = rois4[:, 1] * scale_t - offset
    end_w = rois4[:, 2] * scale_t - offset
    end_h = rois4[:, 3] * scale_t - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if clamp_one:  # "Force malformed ROIs to be 1x1"
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_h = roi_h / ph_n
    bin_w = roi_w / pw_n
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.int64)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.int64)
    else:  # adaptive: ceil(roi_size / pooled_size) samples per bin side (<= 0: none)
        grid_h = torch.ceil(roi_h / ph_n).to(torch.int64)
        grid_w = torch.ceil(roi_w / pw_n).to(torch.int64)
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w


def _std_max(a: Tensor, b: Tensor) -> Tensor:
    """C++'s ``std::max(a, b)``: ``(a < b) ? b : a`` (keeps ``a`` when either is NaN)."""
    return torch.where(a < b, b, a)


def _caffe2_pool(X: Tensor, batch: Tensor, rois4: Tensor, ph_n: int, pw_n: int, scale: float,
                 sampling_ratio: int, offset: float, clamp_one: bool, flavour: str) -> Tensor:
    """The RoIAlign loop of ONNX Runtime (``flavour`` ``ort_avg``/``ort_max``) and mmcv
    (``mmcv_avg``/``mmcv_max``); vectorised over boxes and bins, looping over samples in order.
    """
    n_n, c_n, height, width = X.shape
    k_n = rois4.shape[0]
    dtype = _compute_dtype(X.dtype)
    rois4 = rois4.to(dtype)
    x = X.to(dtype).permute(0, 2, 3, 1).reshape(n_n, height * width, c_n)  # [N, H*W, C]
    start_h, start_w, bin_h, bin_w, grid_h, grid_w = _caffe2_geometry(
        rois4, scale, offset, clamp_one, ph_n, pw_n, sampling_ratio)
    max_gh = max(int(grid_h.max()), 0) if k_n else 0
    max_gw = max(int(grid_w.max()), 0) if k_n else 0
    ys = _axis_samples(start_h, bin_h, grid_h, max_gh, ph_n, height)  # each [K, PH, GH]
    xs = _axis_samples(start_w, bin_w, grid_w, max_gw, pw_n, width)  # each [K, PW, GW]
    b = batch[:, None, None]  # [K, 1, 1]

    init = MMCV_MAX_INIT if flavour == "mmcv_max" else 0.0
    acc = torch.full((k_n, ph_n, pw_n, c_n), init, dtype=dtype, device=X.device)  # [K, PH, PW, C]
    first = torch.ones(k_n, 1, 1, 1, dtype=torch.bool, device=X.device)  # ORT max: "max_flag"
    for iy in range(max_gh):
        y_in, y_lo, y_hi, ly, hy = (t[:, :, iy, None] for t in ys)  # [K, PH, 1]
        for ix in range(max_gw):
            x_in, x_lo, x_hi, lx, hx = (t[:, None, :, ix] for t in xs)  # [K, 1, PW]
            in_grid = ((iy < grid_h) & (ix < grid_w))[:, None, None, None]  # [K, 1, 1, 1]
            inside = y_in & x_in  # [K, PH, PW]
            weights = (hy * hx, hy * lx, ly * hx, ly * lx)  # each [K, PH, PW]
            cells = (y_lo * width + x_lo, y_lo * width + x_hi, y_hi * width + x_lo, y_hi * width + x_hi)
            if flavour.startswith("ort"):
                # ORT pre-computes position 0 and weight 0 for a sample outside the map.
                zero = torch.zeros((), dtype=dtype, device=X.device)
                weights = tuple(torch.where(inside, w, zero)[..., None] for w in weights)  # [K, PH, PW, 1]
                cells = tuple(torch.where(inside, c, 0) for c in cells)
            else:
                weights = tuple(w[..., None] for w in weights)
            v1, v2, v3, v4 = (x[b, c] for c in cells)  # each [K, PH, PW, C]
            w1, w2, w3, w4 = weights
            if flavour == "ort_max":
                val = _std_max(_std_max(_std_max(w1 * v1, w2 * v2), w3 * v3), w4 * v4)
                new = torch.where(first, val, _std_max(acc, val))
                first = first & ~in_grid
            else:
                val = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4  # [K, PH, PW, C]
                if flavour.startswith("mmcv"):  # bilinear_interpolate returns 0 outside the map
                    val = torch.where(inside[..., None], val, torch.zeros((), dtype=dtype, device=X.device))
                new = torch.where(val > acc, val, acc) if flavour == "mmcv_max" else acc + val
            acc = torch.where(in_grid, new, acc)
    if flavour in ("ort_avg", "mmcv_avg"):
        count = (grid_h * grid_w).clamp(min=1).to(dtype)[:, None, None, None]  # [K, 1, 1, 1]
        acc = acc / count
    return acc.permute(0, 3, 1, 2).contiguous().to(X.dtype)  # [K, C, PH, PW]


# --------------------------------------------------------------------------------------------
# ONNX RoiAlign-16 (ONNX Runtime's CPU kernel)
# --------------------------------------------------------------------------------------------


def roi_align_onnx(
    X: Tensor,
    rois: Tensor,
    batch_indices: Tensor,
    *,
    output_height: int = 1,
    output_width: int = 1,
    sampling_ratio: int = 0,
    spatial_scale: float = 1.0,
    mode: str = "avg",
    coordinate_transformation_mode: str = "half_pixel",
) -> Tensor:
    """ONNX ``RoiAlign`` (opset 16), exactly as ONNX Runtime's CPU kernel computes it.

    Parameters
    ----------
    X : Tensor[N, C, H, W]
        The feature map (float32 or float64 as in ONNX Runtime; half types are computed in
        float32 and returned in their own dtype).
    rois : Tensor[K, 4]
        ``(x1, y1, x2, y2)`` in input-image coordinates.
    batch_indices : Tensor[K]
        Integer image index of each roi, in ``[0, N)``.
    output_height, output_width : int
        The pooled size (ONNX's defaults: 1).
    sampling_ratio : int
        Samples per bin side; ``0`` (ONNX's default) is adaptive, ``ceil(roi_size / output_size)``.
    spatial_scale : float
        From image coordinates to feature cells; ONNX stores it as float32, so it is rounded
        to float32 first.
    mode : {"avg", "max"}
        ``"avg"``: the mean of the interpolated samples. ``"max"``: ONNX Runtime's max — for
        each sample, the largest of its four weighted taps ``w_i * v_i``; then the largest over
        the samples of the bin (a bin without samples gives 0).
    coordinate_transformation_mode : {"half_pixel", "output_half_pixel"}
        ``"half_pixel"`` (the default since opset 16) shifts the box by ``-0.5`` cell, like
        torchvision's ``aligned=True``; ``"output_half_pixel"`` does not shift and raises a box
        smaller than one cell to one cell, like ``aligned=False`` (and like opset 10).

    Returns
    -------
    Tensor[K, C, output_height, output_width]

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_align_onnx(x, torch.tensor([[0., 0., 4., 4.]]), torch.tensor([0]),
    ...                output_height=2, output_width=2, sampling_ratio=2)
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])

    ONNX Runtime's "max" is the max of the *weighted* taps, which can be below the mean:

    >>> box, idx = torch.tensor([[0.5, 0.5, 3.5, 3.5]]), torch.tensor([0])
    >>> roi_align_onnx(x, box, idx, sampling_ratio=2, mode="avg").item()
    7.5
    >>> roi_align_onnx(x, box, idx, sampling_ratio=2, mode="max").item()
    5.625
    """
    X = _check_float_map(X, "X", "[N, C, H, W]")
    if not X.is_floating_point():
        raise TypeError(f"X must be a floating-point tensor, got {X.dtype}")
    rois = _check_boxes(rois, "rois", 4, X)
    batch = _check_indices(batch_indices, "batch_indices", rois.shape[0], X.shape[0], X)
    ph_n = _check_int_arg(output_height, "output_height", 1)
    pw_n = _check_int_arg(output_width, "output_width", 1)
    sampling_ratio = _check_int_arg(sampling_ratio, "sampling_ratio", 0)
    scale = float(np.float32(_check_scale(spatial_scale)))
    mode = _check_choice(mode, "mode", ("avg", "max"))
    ctm = _check_choice(coordinate_transformation_mode, "coordinate_transformation_mode",
                        ("half_pixel", "output_half_pixel"))
    half_pixel = ctm == "half_pixel"
    return _caffe2_pool(X, batch, rois, ph_n, pw_n, scale, sampling_ratio,
                        offset=0.5 if half_pixel else 0.0, clamp_one=not half_pixel, flavour=f"ort_{mode}")


# --------------------------------------------------------------------------------------------
# mmcv roi_align (its CUDA kernel)
# --------------------------------------------------------------------------------------------


def roi_align_mmcv(
    input: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    pool_mode: str = "avg",
    aligned: bool = True,
) -> Tensor:
    """mmcv's ``roi_align``, exactly as its CUDA kernel computes it.

    Parameters
    ----------
    input : Tensor[N, C, H, W]
    rois : Tensor[K, 5]
        ``(batch_index, x1, y1, x2, y2)`` rows.
    output_size : int or (int, int)
    spatial_scale : float
    sampling_ratio : int
        ``0`` (mmcv's default) is adaptive, ``ceil(roi_size / output_size)`` per side.
    pool_mode : {"avg", "max"}
        ``"max"`` is the largest *interpolated* sample of the bin (a sample outside the map is
        0); a bin with no samples gives ``-FLT_MAX`` (mmcv's CPU kernel starts at ``-10000``
        instead — the only difference between the two).
    aligned : bool
        ``True`` (mmcv's default) shifts the box by ``-0.5`` cell (Detectron2's convention);
        ``False`` does not shift and raises boxes smaller than one cell to one cell.

    Returns
    -------
    Tensor[K, C, PH, PW]

    Notes
    -----
    With ``aligned=True`` a box with ``x2 < x1`` or ``y2 < y1`` is refused, as mmcv's CPU kernel
    does (its CUDA kernel silently returns 0 or ``-FLT_MAX`` for it).

    Examples
    --------
    >>> import torch
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_align_mmcv(x, torch.tensor([[0, 0.5, 0.5, 3.5, 3.5]]), 1, sampling_ratio=2, pool_mode="max").item()
    11.25
    """
    input = _check_float_map(input, "input", "[N, C, H, W]")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    rois = _check_boxes(rois, "rois", 5, input)
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise TypeError(f"output_size must be an int or a pair of ints, got {output_size!r}")
    ph_n = _check_int_arg(output_size[0], "output_size[0]", 1)
    pw_n = _check_int_arg(output_size[1], "output_size[1]", 1)
    scale = _check_scale(spatial_scale)
    sampling_ratio = _check_int_arg(sampling_ratio, "sampling_ratio", 0)
    pool_mode = _check_choice(pool_mode, "pool_mode", ("avg", "max"))
    if not isinstance(aligned, bool):
        raise TypeError(f"aligned must be True or False, got {aligned!r}")
    k_n = rois.shape[0]
    batch_f = rois[:, 0]
    if rois.device.type != "meta" and k_n:
        if not bool((batch_f == batch_f.round()).all()):
            raise ValueError("rois[:, 0] (the batch index) must hold whole numbers")
        lo, hi = int(batch_f.min()), int(batch_f.max())
        if lo < 0 or hi >= input.shape[0]:
            raise ValueError(f"rois[:, 0] (the batch index) must lie in [0, {input.shape[0]}), got [{lo}, {hi}]")
        if aligned and bool(((rois[:, 3] < rois[:, 1]) | (rois[:, 4] < rois[:, 2])).any()):
            raise ValueError("rois must have x1 <= x2 and y1 <= y2 when aligned=True (mmcv refuses them)")
    rois4 = rois[:, 1:].to(_compute_dtype(input.dtype))
    scale_t = float(np.float32(scale))  # mmcv's launcher takes a C float, then casts it to scalar_t
    return _caffe2_pool(input, batch_f.long(), rois4, ph_n, pw_n, scale_t, sampling_ratio,
                        offset=0.5 if aligned else 0.0, clamp_one=not aligned, flavour=f"mmcv_{pool_mode}")


# --------------------------------------------------------------------------------------------
# TensorFlow tf.image.crop_and_resize (its CPU kernel)
# --------------------------------------------------------------------------------------------


def _crop_coords(lo: Tensor, hi: Tensor, crop: int, size: int) -> Tensor:
    """TF's sample coordinates along one axis, float32 ``[K, crop]``: ``crop`` points from
    ``lo * (size - 1)`` to ``hi * (size - 1)`` inclusive; one point (the centre) if ``crop == 1``.
    """
    if crop > 1:
        step = (hi - lo) * (size - 1) / (crop - 1)  # [K] float32, TF's height_scale
        i = torch.arange(crop, device=lo.device, dtype=torch.float32)  # [crop]
        return lo[:, None] * (size - 1) + i[None, :] * step[:, None]  # [K, crop]
    # "0.5 * (y1 + y2) * (image_height - 1)" is evaluated in double, then stored as float.
    centre = (0.5 * (lo + hi).double() * (size - 1)).float()  # [K]
    return centre[:, None]  # [K, 1]


def crop_and_resize(
    image: Tensor,
    boxes: Tensor,
    box_indices: Tensor,
    crop_size: Sequence[int],
    method: str = "bilinear",
    extrapolation_value: float = 0.0,
) -> Tensor:
    """TensorFlow's ``tf.image.crop_and_resize``, exactly as its CPU kernel computes it.

    Parameters
    ----------
    image : Tensor[batch, image_height, image_width, depth]
        NHWC, any real dtype; values are converted to float32, as TF does.
    boxes : Tensor[num_boxes, 4]
        ``(y1, x1, y2, x2)`` normalised: ``y`` maps to ``y * (image_height - 1)`` in index space,
        so ``0`` is the centre of the first row and ``1`` the centre of the last. ``y1 > y2`` is
        allowed and gives an upside-down crop; values outside ``[0, 1]`` sample outside the
        image, which gives ``extrapolation_value``. Computed in float32.
    box_indices : Tensor[num_boxes]
        Integer image index of each box, in ``[0, batch)``.
    crop_size : (int, int)
        ``(crop_height, crop_width)``, both positive.
    method : {"bilinear", "nearest"}
        ``"nearest"`` rounds each coordinate half away from zero (C's ``roundf``).
    extrapolation_value : float
        The value of samples outside the image.

    Returns
    -------
    Tensor[num_boxes, crop_height, crop_width, depth], float32

    Convention
    ----------
    Sample ``i`` of ``crop_height`` lies at ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (crop_height - 1)``:
    the first and last samples sit *on* the box's end points, one sample per output, no
    averaging; with ``crop_height == 1`` the single sample is the centre
    ``0.5 * (y1 + y2) * (H - 1)``. A row or column whose coordinate lies outside
    ``[0, H - 1]`` is ``extrapolation_value``.

    Examples
    --------
    >>> import torch
    >>> img = torch.arange(16.).reshape(1, 4, 4, 1)
    >>> crop_and_resize(img, torch.tensor([[0., 0., 1., 1.]]), torch.tensor([0]), (2, 2))[..., 0]
    tensor([[[ 0.,  3.],
             [12., 15.]]])
    """
    image = _check_float_map(image, "image", "[batch, image_height, image_width, depth]")
    if image.is_complex() or image.dtype == torch.bool:
        raise TypeError(f"image must hold real numbers, got {image.dtype}")
    n_n, height, width, _ = image.shape
    if height <= 0 or width <= 0:
        raise ValueError(f"image dimensions must be positive, got image_height={height}, image_width={width}")
    boxes = _check_boxes(boxes, "boxes", 4, image)
    k_n = boxes.shape[0]
    batch = _check_indices(box_indices, "box_indices", k_n, n_n, image)
    if isinstance(crop_size, Tensor):
        crop_size = crop_size.tolist()
    if not isinstance(crop_size, (tuple, list)) or len(crop_size) != 2:
        raise TypeError(f"crop_size must be a pair of ints (crop_height, crop_width), got {crop_size!r}")
    ch_n = _check_int_arg(crop_size[0], "crop_size[0]", 1)
    cw_n = _check_int_arg(crop_size[1], "crop_size[1]", 1)
    method = _check_choice(method, "method", ("bilinear", "nearest"))
    if isinstance(extrapolation_value, bool) or not isinstance(extrapolation_value, numbers.Real):
        raise TypeError(f"extrapolation_value must be a real number, got {extrapolation_value!r}")

    b = boxes.float()
    in_y = _crop_coords(b[:, 0], b[:, 2], ch_n, height)  # [K, CH]
    in_x = _crop_coords(b[:, 1], b[:, 3], cw_n, width)  # [K, CW]
    ok = ((in_y >= 0) & (in_y <= height - 1))[:, :, None] & ((in_x >= 0) & (in_x <= width - 1))[:, None, :]
    img = image.float()
    bi = batch[:, None, None]  # [K, 1, 1]
    if method == "bilinear":
        top = torch.floor(in_y).clamp(0, height - 1)  # clamped only to gather; masked below
        bottom = torch.ceil(in_y).clamp(0, height - 1)
        left = torch.floor(in_x).clamp(0, width - 1)
        right = torch.ceil(in_x).clamp(0, width - 1)
        y_lerp = (in_y - top)[:, :, None, None]  # [K, CH, 1, 1]
        x_lerp = (in_x - left)[:, None, :, None]  # [K, 1, CW, 1]
        t, bo = top.long()[:, :, None], bottom.long()[:, :, None]  # [K, CH, 1]
        le, ri = left.long()[:, None, :], right.long()[:, None, :]  # [K, 1, CW]
        top_left, top_right = img[bi, t, le], img[bi, t, ri]  # [K, CH, CW, D]
        bottom_left, bottom_right = img[bi, bo, le], img[bi, bo, ri]
        top_ = top_left + (top_right - top_left) * x_lerp
        bottom_ = bottom_left + (bottom_right - bottom_left) * x_lerp
        out = top_ + (bottom_ - top_) * y_lerp
    else:
        def round_half_away(v: Tensor, size: int) -> Tensor:  # roundf for v >= 0
            f = torch.floor(v)
            return (f + (v - f >= 0.5).to(v.dtype)).clamp(0, size - 1).long()

        out = img[bi, round_half_away(in_y, height)[:, :, None], round_half_away(in_x, width)[:, None, :]]
    fill = torch.tensor(float(extrapolation_value), dtype=torch.float32, device=image.device)
    return torch.where(ok[..., None], out, fill).contiguous()  # [K, CH, CW, D]


# --------------------------------------------------------------------------------------------
# Where each convention samples
# --------------------------------------------------------------------------------------------


def sample_points(
    convention: str, box: Sequence[float], output_size: int | tuple[int, int], image_size: tuple[int, int],
    sampling_ratio: int = 2,
) -> tuple[Tensor, Tensor]:
    """The sample coordinates one convention uses for one box, in index space.

    Index space is where every framework here interpolates: pixel ``i``'s value sits at
    coordinate ``i`` (so pixel ``i`` covers ``[i - 0.5, i + 0.5]``). The box is given once, in
    the usual *continuous* image coordinates where pixel ``i`` covers ``[i, i + 1]`` — what a
    detector's boxes mean — and passed to each framework the way its users pass it:

    - ``"aligned"`` (torchvision/Detectron2 ``aligned=True``, ONNX ``half_pixel``, mmcv default):
      samples at ``x1 - 0.5 + (p + (i + 0.5) / g) * bin``.
    - ``"legacy"`` (``aligned=False``, ONNX ``output_half_pixel``, Detectron): the same without
      the ``-0.5``, i.e. shifted half a pixel right and down.
    - ``"crop_and_resize"`` (TF, box normalised as ``x / (W - 1)``, the common recipe): one
      sample per output, from ``x1`` to ``x2`` inclusive.

    Parameters
    ----------
    convention : {"aligned", "legacy", "crop_and_resize"}
    box : (x1, y1, x2, y2)
    output_size : int or (int, int)
    image_size : (height, width)
    sampling_ratio : int
        Samples per bin side for the ROI Align conventions (ignored by ``crop_and_resize``).

    Returns
    -------
    (ys, xs) : Tensor[PH * g], Tensor[PW * g]
        float64 coordinates along each axis (every sample is one ``(y, x)`` pair of these).

    Examples
    --------
    >>> sample_points("aligned", (0, 0, 4, 4), 2, (4, 4))[1]
    tensor([0., 1., 2., 3.], dtype=torch.float64)
    >>> sample_points("legacy", (0, 0, 4, 4), 2, (4, 4))[1]
    tensor([0.5000, 1.5000, 2.5000, 3.5000], dtype=torch.float64)
    >>> sample_points("crop_and_resize", (0, 0, 4, 4), 2, (5, 5))[1]
    tensor([0., 4.], dtype=torch.float64)
    """
    convention = _check_choice(convention, "convention", ("aligned", "legacy", "crop_and_resize"))
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    ph_n, pw_n = output_size
    height, width = image_size
    x1, y1, x2, y2 = (float(v) for v in box)

    def axis(lo: float, hi: float, n: int, size: int) -> Tensor:
        if convention == "crop_and_resize":
            a, b = lo / (size - 1), hi / (size - 1)  # normalised, then TF maps back with (size - 1)
            if n == 1:
                return torch.tensor([0.5 * (a + b) * (size - 1)], dtype=torch.float64)
            return torch.tensor([a * (size - 1) + i * (b - a) * (size - 1) / (n - 1) for i in range(n)],
                                dtype=torch.float64)
        offset = 0.5 if convention == "aligned" else 0.0
        start, end = lo - offset, hi - offset
        length = end - start if convention == "aligned" else max(end - start, 1.0)
        bin_ = length / n
        g = sampling_ratio
        return torch.tensor([start + p * bin_ + (i + 0.5) * bin_ / g for p in range(n) for i in range(g)],
                            dtype=torch.float64)

    return axis(y1, y2, ph_n, height), axis(x1, x2, pw_n, width)


# --------------------------------------------------------------------------------------------
# The same conventions as plain loops: the oracles (slow, one output element at a time)
# --------------------------------------------------------------------------------------------


def _np(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.float64: np.float64}[dtype]


def _caffe2_sample(plane: np.ndarray, y, x, height: int, width: int, T: type):
    """Caffe2's bilinear sample (as ORT's pre_calc and mmcv's bilinear_interpolate write it).

    Returns ``None`` outside the map, else ``[(w1, v1), (w2, v2), (w3, v3), (w4, v4)]``.
    """
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return None
    y = T(0) if y <= 0 else y
    x = T(0) if x <= 0 else x
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly, lx = T(y - y_low), T(x - x_low)
    hy, hx = T(1) - ly, T(1) - lx
    return [(hy * hx, plane[y_low, x_low]), (hy * lx, plane[y_low, x_high]),
            (ly * hx, plane[y_high, x_low]), (ly * lx, plane[y_high, x_high])]


def _caffe2_loops(X: Tensor, batch: list[int], rois4: np.ndarray, ph_n: int, pw_n: int, scale: float,
                  sampling_ratio: int, aligned: bool, flavour: str) -> Tensor:
    T = _np(X.dtype)
    x = X.detach().cpu().numpy()
    _, c_n, height, width = x.shape
    out = np.zeros((len(batch), c_n, ph_n, pw_n), dtype=T)
    offset = T(0.5) if aligned else T(0)
    for k, roi in enumerate(rois4.astype(T)):
        start_w, start_h = roi[0] * T(scale) - offset, roi[1] * T(scale) - offset
        end_w, end_h = roi[2] * T(scale) - offset, roi[3] * T(scale) - offset
        roi_w, roi_h = end_w - start_w, end_h - start_h
        if not aligned:
            roi_w, roi_h = max(roi_w, T(1)), max(roi_h, T(1))
        bin_h, bin_w = roi_h / T(ph_n), roi_w / T(pw_n)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / T(ph_n))
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / T(pw_n))
        for c in range(c_n):
            plane = x[batch[k], c]
            for ph in range(ph_n):
                for pw in range(pw_n):
                    acc, first = (T(MMCV_MAX_INIT) if flavour == "mmcv_max" else T(0)), True
                    for iy in range(gh):
                        y = start_h + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(gh)
                        for ix in range(gw):
                            xx = start_w + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(gw)
                            taps = _caffe2_sample(plane, y, xx, height, width, T)
                            if flavour == "ort_max":
                                # ORT: position 0, weight 0 outside the map; std::max(a, b) = a < b ? b : a
                                taps = taps or [(T(0), plane[0, 0])] * 4
                                val = taps[0][0] * taps[0][1]
                                for w, v in taps[1:]:
                                    val = w * v if val < w * v else val
                                acc = val if first or acc < val else acc
                                first = False
                                continue
                            if taps is None:
                                val = T(0) if flavour.startswith("mmcv") else T(0) * plane[0, 0]
                            else:
                                (w1, v1), (w2, v2), (w3, v3), (w4, v4) = taps
                                val = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4
                            if flavour == "mmcv_max":
                                acc = val if val > acc else acc
                            else:
                                acc = acc + val
                    if flavour in ("ort_avg", "mmcv_avg"):
                        acc = acc / T(max(gh * gw, 1))
                    out[k, c, ph, pw] = acc
    return torch.from_numpy(out).to(X.device)


def roi_align_onnx_loops(X: Tensor, rois: Tensor, batch_indices: Tensor, *, output_height: int = 1,
                         output_width: int = 1, sampling_ratio: int = 0, spatial_scale: float = 1.0,
                         mode: str = "avg", coordinate_transformation_mode: str = "half_pixel") -> Tensor:
    """:func:`roi_align_onnx` as plain loops over boxes, channels, bins and samples (float32/64).

    >>> import torch
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_align_onnx_loops(x, torch.tensor([[0.5, 0.5, 3.5, 3.5]]), torch.tensor([0]), sampling_ratio=2,
    ...                      mode="max").item()
    5.625
    """
    return _caffe2_loops(X, [int(b) for b in batch_indices], rois.detach().cpu().numpy(), output_height,
                         output_width, float(np.float32(spatial_scale)), sampling_ratio,
                         coordinate_transformation_mode == "half_pixel", f"ort_{mode}")


def roi_align_mmcv_loops(input: Tensor, rois: Tensor, output_size: int | tuple[int, int],
                         spatial_scale: float = 1.0, sampling_ratio: int = 0, pool_mode: str = "avg",
                         aligned: bool = True) -> Tensor:
    """:func:`roi_align_mmcv` as plain loops (float32/64).

    >>> import torch
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roi_align_mmcv_loops(x, torch.tensor([[0, 0.5, 0.5, 3.5, 3.5]]), 1, sampling_ratio=2, pool_mode="max").item()
    11.25
    """
    ph_n, pw_n = (output_size, output_size) if isinstance(output_size, int) else output_size
    r = rois.detach().cpu().numpy()
    return _caffe2_loops(input, [int(b) for b in r[:, 0]], r[:, 1:], ph_n, pw_n,
                         float(np.float32(spatial_scale)), sampling_ratio, aligned, f"mmcv_{pool_mode}")


def crop_and_resize_loops(image: Tensor, boxes: Tensor, box_indices: Tensor, crop_size: Sequence[int],
                          method: str = "bilinear", extrapolation_value: float = 0.0) -> Tensor:
    """:func:`crop_and_resize` as TF's CPU loop, one output element at a time.

    >>> import torch
    >>> img = torch.arange(16.).reshape(1, 4, 4, 1)
    >>> crop_and_resize_loops(img, torch.tensor([[0., 0., 1., 1.]]), torch.tensor([0]), (2, 2))[..., 0]
    tensor([[[ 0.,  3.],
             [12., 15.]]])
    """
    f32 = np.float32
    img = image.detach().cpu().numpy().astype(f32)
    bx = boxes.detach().cpu().numpy().astype(f32)
    _, height, width, depth = img.shape
    ch_n, cw_n = (int(v) for v in crop_size)
    out = np.empty((bx.shape[0], ch_n, cw_n, depth), dtype=f32)
    fill = f32(extrapolation_value)

    def c_roundf(v: np.float32) -> int:  # C's roundf for v >= 0: halves go up (v - floor(v) is exact)
        f = math.floor(v)
        return f + 1 if v - f >= 0.5 else f

    for b, (y1, x1, y2, x2) in enumerate(bx):
        b_in = int(box_indices[b])
        height_scale = (y2 - y1) * f32(height - 1) / f32(ch_n - 1) if ch_n > 1 else f32(0)
        width_scale = (x2 - x1) * f32(width - 1) / f32(cw_n - 1) if cw_n > 1 else f32(0)
        for y in range(ch_n):
            in_y = (y1 * f32(height - 1) + f32(y) * height_scale if ch_n > 1
                    else f32(0.5 * float(y1 + y2) * (height - 1)))
            for x in range(cw_n):
                in_x = (x1 * f32(width - 1) + f32(x) * width_scale if cw_n > 1
                        else f32(0.5 * float(x1 + x2) * (width - 1)))
                if not (0 <= in_y <= height - 1 and 0 <= in_x <= width - 1):
                    out[b, y, x] = fill
                elif method == "bilinear":
                    top, bottom = math.floor(in_y), math.ceil(in_y)
                    left, right = math.floor(in_x), math.ceil(in_x)
                    y_lerp, x_lerp = in_y - f32(top), in_x - f32(left)
                    tl, tr = img[b_in, top, left], img[b_in, top, right]
                    bl, br = img[b_in, bottom, left], img[b_in, bottom, right]
                    top_v = tl + (tr - tl) * x_lerp
                    bottom_v = bl + (br - bl) * x_lerp
                    out[b, y, x] = top_v + (bottom_v - top_v) * y_lerp
                else:
                    out[b, y, x] = img[b_in, c_roundf(in_y), c_roundf(in_x)]
    return torch.from_numpy(out).to(image.device)


def boxes_for_crop_and_resize(boxes: Tensor, image_height: int, image_width: int,
                              crop_size: int | tuple[int, int]) -> Tensor:
    """Normalised TF boxes that make ``crop_and_resize`` sample where ROI Align samples.

    For pixel boxes ``(x1, y1, x2, y2)`` (pixel ``i`` covers ``[i, i + 1]``), returns
    ``(y1, x1, y2, x2)`` in TF's normalised form such that
    ``crop_and_resize(image, result, idx, crop_size)`` samples exactly the points of
    ``roi_align(..., output_size=crop_size, sampling_ratio=1, aligned=True)``: the bin centres
    ``x1 - 0.5 + (p + 0.5) * (x2 - x1) / PW``. That is the correction detectors built on TF
    (tensorpack's ``crop_and_resize`` wrapper) apply. Inside the image the two agree up to float
    rounding; outside it TF uses ``extrapolation_value`` where ROI Align clamps or gives 0.

    Examples
    --------
    >>> boxes_for_crop_and_resize(torch.tensor([[0., 0., 4., 4.]]), 5, 5, 2)
    tensor([[0.1250, 0.1250, 0.6250, 0.6250]])
    """
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a Tensor[K, 4] of (x1, y1, x2, y2), got {getattr(boxes, 'shape', boxes)!r}")
    ch_n, cw_n = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    b = boxes.double()

    def axis(lo: Tensor, hi: Tensor, n: int, size: int) -> tuple[Tensor, Tensor]:
        bin_ = (hi - lo) / n
        first = lo - 0.5 + 0.5 * bin_  # index-space centre of the first bin
        last = lo - 0.5 + (n - 0.5) * bin_
        return first / (size - 1), last / (size - 1)

    y1, y2 = axis(b[:, 1], b[:, 3], ch_n, image_height)
    x1, x2 = axis(b[:, 0], b[:, 2], cw_n, image_width)
    return torch.stack([y1, x1, y2, x2], dim=1).to(boxes.dtype)
