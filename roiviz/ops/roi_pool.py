"""ROI Pool (Girshick, Fast R-CNN, 2015), exactly as torchvision.ops.roi_pool computes it.

The box is rounded to whole cells, cut into ``PH x PW`` bins whose edges are rounded again
(start down, end up, so neighbouring bins overlap), and each bin keeps its maximum. The output
size is fixed by ``output_size`` whatever the box: it is the rounding, not the size, that ROI
Pool gets wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..boxes import BoxesLike, round_half_away
from ._common import channels_last, prepare

__all__ = ["RoIPool", "roi_pool", "roi_pool_bin_edges"]

_FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: the kernel's start value, for every dtype


def roi_pool(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """ROI Pool: max over each quantised bin of each box; always ``[K, C, PH, PW]``.

    Same arguments, box formats and results as :func:`torchvision.ops.roi_pool`, forward and
    backward (the gradient of a bin goes to its first maximum, in row-major order).

    Parameters
    ----------
    input : Tensor[N, C, H, W]
        The feature map (float16, bfloat16, float32 or float64).
    boxes : Tensor[K, 5] or list of Tensor[L, 4]
        ``(batch_index, x1, y1, x2, y2)`` rows, or one ``(x1, y1, x2, y2)`` tensor per image.
    output_size : int or (int, int)
        ``(PH, PW)``; an int ``n`` means ``(n, n)``.
    spatial_scale : float
        Factor from image pixels to feature cells.

    Returns
    -------
    Tensor[K, C, PH, PW]

    Convention
    ----------
    The box covers cells ``round(x1 * scale) .. round(x2 * scale)`` inclusive (halves away from
    zero), at least one cell. With ``bin = size / PW``, bin ``p`` spans cells
    ``floor(p * bin) .. ceil((p + 1) * bin) - 1`` from the box start, clipped to the map. An
    empty bin (wholly outside the map) gives 0. See :func:`roiviz.reference.roi_pool`.

    Examples
    --------
    The example of d2l.ai, section 14.8 (note the overlapping bins: row 1 is in both):

    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> rois = torch.tensor([[0, 0., 0., 20., 20.], [0, 0., 10., 30., 30.]])
    >>> roiviz.roi_pool(x, rois, output_size=(2, 2), spatial_scale=0.1)
    tensor([[[[ 5.,  6.],
              [ 9., 10.]]],
    <BLANKLINE>
    <BLANKLINE>
            [[[ 9., 11.],
              [13., 15.]]]])
    """
    input, rois, ph_n, pw_n, scale = prepare(input, boxes, output_size, spatial_scale)
    return _RoIPoolFunction.apply(input, rois.detach(), ph_n, pw_n, scale)


def roi_pool_bin_edges(
    rois: Tensor, scale: Tensor, ph_n: int, pw_n: int, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bin edges of every ROI, clipped to the map: ``hstart, hend [K, PH]``, ``wstart, wend [K, PW]``.

    Row ``h`` is in bin ``ph`` when ``hstart <= h < hend``. ``scale`` is a 0-dim tensor in the
    rois' dtype (the kernel rounds in that dtype).
    """
    q = round_half_away(rois[:, 1:5] * scale)  # [K, 4] as floats, like the kernel's ints
    start_w, start_h, end_w, end_h = q.long().unbind(1)
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


def _forward(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Output ``[K, PH, PW, C]`` (compute dtype) and argmax ``[K, PH, PW, C]`` (flat ``h * W + w``, -1 if empty)."""
    _, c_n, height, width = input.shape
    k_n = rois.shape[0]
    hstart, hend, wstart, wend = roi_pool_bin_edges(rois, scale, ph_n, pw_n, height, width)
    x = channels_last(input)  # [N, H, W, C]
    batch = rois[:, 0].long()[:, None, None]  # [K, 1, 1]
    # The largest bin decides how many cells to visit: data-dependent, so it reads the boxes.
    max_bh = int((hend - hstart).max()) if k_n else 0
    max_bw = int((wend - wstart).max()) if k_n else 0
    best = x.new_full((k_n, ph_n, pw_n, c_n), -_FLT_MAX)
    arg = torch.full((k_n, ph_n, pw_n, c_n), -1, dtype=torch.long, device=x.device)
    # Visit the cells of every bin in the kernel's order (row-major) with a strict '>', so that
    # ties keep the first maximum, as torchvision's backward expects.
    for r in range(max_bh):
        row = hstart + r  # [K, PH]
        row_ok = row < hend
        row_c = row.clamp(max=height - 1)
        for s in range(max_bw):
            col = wstart + s  # [K, PW]
            col_ok = col < wend
            col_c = col.clamp(max=width - 1)
            v = x[batch, row_c[:, :, None], col_c[:, None, :]]  # [K, PH, PW, C]
            ok = (row_ok[:, :, None] & col_ok[:, None, :])[..., None]  # [K, PH, PW, 1]
            better = ok & (v > best)
            best = torch.where(better, v, best)
            flat = (row_c[:, :, None] * width + col_c[:, None, :])[..., None]  # [K, PH, PW, 1]
            arg = torch.where(better, flat, arg)
    empty = (hend <= hstart)[:, :, None] | (wend <= wstart)[:, None, :]  # [K, PH, PW]
    best = best.masked_fill(empty[..., None], 0.0)  # an empty bin is defined to be 0
    return best, arg


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> Tensor:
        best, arg = _forward(input, rois, ph_n, pw_n, scale)
        ctx.save_for_backward(rois, arg)
        ctx.input_shape = input.shape
        ctx.input_dtype = input.dtype
        return best.permute(0, 3, 1, 2).contiguous().to(input.dtype)  # [K, C, PH, PW]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        rois, arg = ctx.saved_tensors
        n_n, c_n, height, width = ctx.input_shape
        grad = grad_out.permute(0, 2, 3, 1).to(rois.dtype)  # [K, PH, PW, C]
        # Each output sends its gradient to the one input cell that was its maximum.
        hit = arg >= 0
        b = rois[:, 0].long()[:, None, None, None].expand_as(arg)
        c = torch.arange(c_n, device=arg.device).expand_as(arg)
        flat = ((b * c_n + c) * (height * width) + arg.clamp(min=0))[hit]  # into [N, C, H, W]
        grad_in = grad.new_zeros(n_n * c_n * height * width)
        grad_in.index_add_(0, flat, grad[hit])
        return grad_in.view(n_n, c_n, height, width).to(ctx.input_dtype), None, None, None, None


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`; see it for the arguments.

    Examples
    --------
    >>> import roiviz
    >>> roiviz.RoIPool((7, 7), spatial_scale=1 / 16)
    RoIPool(output_size=(7, 7), spatial_scale=0.0625)
    """

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0) -> None:
        super().__init__()
        from .._checks import check_output_size, check_spatial_scale

        self.output_size = check_output_size(output_size)
        self.spatial_scale = check_spatial_scale(spatial_scale)

    def forward(self, input: Tensor, rois: BoxesLike) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"
