"""Helpers shared by the ROI ops: argument checking and the channels-last view they gather from."""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import torch

from .._checks import check_input, check_output_size, check_spatial_scale
from ..boxes import BoxesLike, compute_dtype, to_rois


def prepare(
    input: torch.Tensor, boxes: BoxesLike, output_size: object, spatial_scale: object
) -> tuple[torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """Check the common arguments once.

    Returns ``(input, rois [K, 5], PH, PW, scale)`` where ``scale`` is a 0-dim tensor in the
    compute dtype: the C++ kernels multiply ``x1 * spatial_scale`` in the input's type, and so
    must we to quantise exactly as they do.
    """
    input = check_input(input)
    ph, pw = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    rois = to_rois(boxes, input)
    scale_t = torch.tensor(scale, dtype=compute_dtype(input.dtype), device=input.device)
    return input, rois, ph, pw, scale_t


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` as a contiguous ``[N, H, W, C]`` in the compute dtype.

    Gathering whole channel vectors (``x[b, y, x]`` is ``C`` contiguous numbers) is what makes
    both implementations fast: one index per position instead of one per element, and a
    contiguous innermost loop over channels in the compiled kernels.
    """
    n, c, h, w = input.shape
    out = torch.empty((n, h, w, c), dtype=compute_dtype(input.dtype), device=input.device)
    return out.copy_(input.permute(0, 2, 3, 1))


#: Environment variable choosing the CPU implementation of roi_align and roi_pool: ``numba``
#: (the default: the compiled loops of :mod:`roiviz.ops._numba`) or ``torch`` (the portable
#: gathers that every other device uses). Read at each call.
KERNELS_ENV = "ROIVIZ_KERNELS"


def cpu_kernels_enabled() -> bool:
    """Whether CPU tensors take the compiled kernels: numba is installed and not switched off.

    Raises :class:`ValueError` when ``ROIVIZ_KERNELS`` is set to something else than ``numba``
    or ``torch``.

    Examples
    --------
    >>> import os
    >>> cpu_kernels_enabled() == (_HAVE_NUMBA and os.environ.get("ROIVIZ_KERNELS", "numba") == "numba")
    True
    """
    choice = os.environ.get(KERNELS_ENV, "numba").strip().lower() or "numba"
    if choice not in ("numba", "torch"):
        raise ValueError(f"the environment variable {KERNELS_ENV} must be 'numba' or 'torch', got {choice!r}")
    return _HAVE_NUMBA and choice == "numba"


_HAVE_NUMBA = importlib.util.find_spec("numba") is not None


class AlignGeometry(NamedTuple):
    """Per-ROI geometry of ROI Align, each ``Tensor[K]`` in the compute dtype."""

    start_h: torch.Tensor
    start_w: torch.Tensor
    bin_h: torch.Tensor
    bin_w: torch.Tensor
    grid_h: torch.Tensor
    grid_w: torch.Tensor


def align_geometry(
    rois: torch.Tensor, scale: torch.Tensor, ph_n: int, pw_n: int, sampling_ratio: int, aligned: bool
) -> AlignGeometry:
    """Box start, bin size and sampling grid of every ROI, in torchvision's expressions and order.

    Sample ``i`` of bin ``p`` then lies at ``start + p * bin + (i + 0.5) * bin / grid``.
    """
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


def axis_taps(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, g_max: int, n_bins: int,
              size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample of every bin along one axis of ``size`` cells: ``(ok, low, high, l, h)``.

    :func:`sample_coords` then :func:`interpolation_1d`, each ``[K, n_bins, g_max]``; ``ok`` is
    False for the samples the kernel does not count (outside ``[-1, size]``) or does not take
    (beyond an adaptive grid).

    Examples
    --------
    >>> ok, low, high, l, h = axis_taps(torch.tensor([0.]), torch.tensor([2.]), torch.tensor([1.]), 2, 1, 4)
    >>> ok.tolist(), low.tolist(), l.tolist()
    ([[[True, False]]], [[[1, 3]]], [[[0.0, 0.0]]])
    """
    coord = sample_coords(start, bin_size, grid, g_max, n_bins)  # [K, P, G]
    inside, low, high, lo_w, hi_w = interpolation_1d(coord, size)
    ok = inside & (torch.arange(g_max, device=start.device) < grid[:, None, None])
    return ok, low, high, lo_w, hi_w


def interpolation_1d(
    coord: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's bilinear rule along one axis of ``size`` cells.

    Returns ``(inside, low, high, l, h)``: whether the coordinate is within ``[-1, size]``,
    the two neighbouring indices and their weights ``l = c - low`` and ``h = 1 - l`` (the
    coordinate clamped to ``[0, size - 1]`` first, as the kernel does).

    Examples
    --------
    >>> inside, low, high, l, h = interpolation_1d(torch.tensor([-2.0, 0.25, 3.5]), 4)
    >>> inside.tolist(), low.tolist(), high.tolist(), l.tolist(), h.tolist()
    ([False, True, True], [0, 0, 3], [1, 1, 3], [0.0, 0.25, 0.0], [1.0, 0.75, 1.0])
    """
    inside = (coord >= -1.0) & (coord <= size)
    # Outside samples are masked by the caller; zero them so that far-away or NaN coordinates
    # (0/0 when an adaptive grid is empty) cannot overflow the integer cast below.
    c = torch.where(inside, coord, torch.zeros_like(coord)).clamp(min=0.0)
    low = c.long()  # truncation == floor for c >= 0
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    lo_w = c - low.to(c.dtype)
    hi_w = 1.0 - lo_w
    return inside, low, high, lo_w, hi_w

