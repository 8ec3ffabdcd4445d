"""Helpers shared by the ROI ops: argument checking and the channels-last view they gather from."""

from __future__ import annotations

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
    the vectorised ops fast: one index per position instead of one per element.
    """
    x = input.to(compute_dtype(input.dtype))
    return x.permute(0, 2, 3, 1).contiguous()
