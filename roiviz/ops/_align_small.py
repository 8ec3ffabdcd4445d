"""The small-input path of :func:`roiviz.roi_align`: whole-map interpolation matrices, few ops.

On a teaching-sized input (a few boxes on a ``64 x 64`` map, or the Explorer's one box on every
mouse move) the arithmetic is negligible and the time goes to dispatching PyTorch operations
(a few microseconds each). So this path spends as few operations as possible: both axes are
handled at once as one ``[K, 2, P, G]`` tensor, the separable weights become two dense matrices
``ay [K, PH, H]`` and ``ax [K, PW, W]`` over the whole map, and the output is
``ay @ X[batch] @ ax^T`` (two batched products). The backward is the CPU path's
(:func:`roiviz.ops._align_grad.roi_align_input_grad`: torchvision's terms in its order,
bit-exact). No host read with a fixed ``sampling_ratio``; the adaptive grid reads its
largest grid size.

The cost grows with ``K * C * H * W``, so :func:`use_small_path` keeps it for small problems.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ._align_grad import ExactGradFunction
from ._common import channels_last

#: Largest ``K * C * H * W * max(PH, PW)`` handled here (beyond it the window path wins).
SMALL_WORK = 1 << 22


def use_small_path(k_n: int, c_n: int, height: int, width: int, ph_n: int, pw_n: int) -> bool:
    """Whether the whole-map matrices are cheap enough (see the module docstring)."""
    return k_n * c_n * height * width * max(ph_n, pw_n) <= SMALL_WORK


@functools.lru_cache(maxsize=64)
def _constants(ph_n: int, pw_n: int, height: int, width: int, g_max: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Index tensors that only depend on the shapes (cached: each creation is an op)."""
    n_bins = torch.tensor([ph_n, pw_n], dtype=dtype)  # [2]
    p = torch.arange(max(ph_n, pw_n), dtype=dtype)[:, None]  # [P, 1]
    i = torch.arange(g_max)  # [G]
    half = i.to(dtype) + 0.5  # (iy + .5)
    limit = torch.tensor([height, width])[:, None, None]  # [2, 1, 1]
    bin_ok = p < n_bins[:, None, None]  # [2, P, 1]: bins beyond PH (or PW) of the shorter axis
    return n_bins, p, i, half, limit, limit - 1, bin_ok


def roi_align_small(
    input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int, aligned: bool
) -> Tensor:
    """``roi_align`` through whole-map matrices (arguments already checked)."""
    if not (input.requires_grad and torch.is_grad_enabled()):  # skip the Function's overhead (~10 us)
        return _forward(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)
    return _RoIAlignSmall.apply(input, rois.detach(), ph_n, pw_n, scale, sampling_ratio, aligned)


class _RoIAlignSmall(ExactGradFunction):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
                aligned: bool) -> Tensor:
        ExactGradFunction.remember(ctx, input, rois, scale, sampling_ratio, aligned)
        return _forward(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)


def _forward(
    input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int, aligned: bool
) -> Tensor:
    k_n, c_n, height, width = rois.shape[0], *input.shape[1:]
    dtype = rois.dtype
    # Columns (y1, x1, y2, x2): axis 0 is y (height, PH bins), axis 1 is x (width, PW bins).
    q = rois[:, [2, 1, 4, 3]] * scale - (0.5 if aligned else 0.0)  # [K, 4]
    start = q[:, :2]  # [K, 2]
    size = q[:, 2:] - start
    if not aligned:  # legacy: force malformed ROIs to be at least 1x1
        size = size.clamp(min=1.0)
    fixed = sampling_ratio > 0
    grid = None if fixed else torch.ceil(size / torch.tensor([ph_n, pw_n], dtype=dtype))  # [K, 2]
    # The adaptive loop bound is read on the host.
    g_max = sampling_ratio if fixed else (max(int(grid.max()), 1) if k_n else 1)
    n_bins, p, i, half, limit, last, bin_ok = _constants(ph_n, pw_n, height, width, g_max, dtype)
    b4 = (size / n_bins)[:, :, None, None]  # bin size [K, 2, 1, 1]
    g4 = sampling_ratio if fixed else grid[:, :, None, None]
    # torchvision's expression, in its order: start + p * bin + (i + .5) * bin / grid.
    coord = start[:, :, None, None] + p * b4 + half * b4 / g4  # [K, 2, P, G]
    ok = (coord >= -1.0) & (coord <= limit) & bin_ok  # [K, 2, P, G]
    if not fixed:
        ok &= i < g4
    c = torch.where(ok, coord, 0.0).clamp_(min=0.0)
    low = c.long()  # truncation == floor for c >= 0
    at_end = low >= last
    low = torch.where(at_end, last, low)
    high = torch.where(at_end, low, low + 1)
    lo_w = torch.where(at_end, 0.0, c - low)  # the kernel sets c = low at the end
    inv = 1.0 / sampling_ratio if fixed else 1.0 / g4.clamp(min=1.0)
    mats = torch.zeros((k_n, 2, p.shape[0], max(height, width)), dtype=dtype)  # [K, 2, P, max(H, W)]
    mats.scatter_add_(3, low, torch.where(ok, (1.0 - lo_w) * inv, 0.0))
    mats.scatter_add_(3, high, torch.where(ok, lo_w * inv, 0.0))
    ay = mats[:, 0, :ph_n, :height]  # [K, PH, H]
    ax = mats[:, 1, :pw_n, :width]  # [K, PW, W]
    x = channels_last(input).view(input.shape[0], -1).index_select(0, rois[:, 0].long())  # [K, H*W*C]
    # Two products with transposed operands write [C, PH, PW] directly (as in _align_cpu).
    mid = torch.bmm(x.view(k_n, height, width * c_n).transpose(1, 2), ay.transpose(1, 2))  # [K, (W, C), PH]
    out = torch.bmm(mid.view(k_n, width, c_n * ph_n).transpose(1, 2), ax.transpose(1, 2))  # [K, (C, PH), PW]
    return out.view(k_n, c_n, ph_n, pw_n).to(input.dtype)
