"""ROI Pool (Girshick, Fast R-CNN, 2015), exactly as torchvision.ops.roi_pool computes it.

The box is rounded to whole cells, cut into ``PH x PW`` bins whose edges are rounded again
(start down, end up, so neighbouring bins overlap), and each bin keeps its maximum. The output
size is fixed by ``output_size`` whatever the box: it is the rounding, not the size, that ROI
Pool gets wrong.

How it is computed (every way exact: a max has no rounding)
------------------------------------------------------------
- **CPU tensors** take the compiled loops of :mod:`roiviz.ops._numba`: torchvision's kernel
  reading the input channels last (a copy of the map, or of each ROI's cells), or a channel
  plane at a time below 16 channels, ROIs in parallel, saving the argmax like torchvision;
  the backward adds each output's gradient to its argmax, channels in parallel and ROIs in
  order inside a channel (torchvision's order: bit-exact, deterministic).
- **CUDA tensors** take :mod:`roiviz.ops._triton` when Triton is importable (the same scan,
  deterministic backward).
- **Other devices** (and CUDA without Triton), or ``ROIVIZ_KERNELS=torch``, or no numba, take
  :func:`_roi_pool_gather`:
  the same strict ``>`` scan, one step of every bin at a time, in PyTorch operations. It reads
  the size of the largest bin on the host (its loop bound; a synchronisation on a GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import check_eager
from ..boxes import BoxesLike, compute_dtype, pool_bin_edges
from . import _triton
from ._common import cpu_kernels_enabled
from ._door import autocast_on, boxes_in_graph, empty_problem, empty_result, roi_arguments

__all__ = ["RoIPool", "roi_pool"]

_FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: the kernel's start value, for every dtype


@torch.fx.wrap  # a leaf of torch.fx graphs, as in torchvision (symbolic tracing cannot read boxes)
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
        In ``input``'s dtype, also under :func:`torch.autocast` (computed in float32 for half
        types, like torchvision). Differentiable w.r.t. ``input``; ``boxes`` get no gradient.
        No boxes, no images, no channels or a 0 in ``output_size`` give an empty result.

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
    # ---- Front door (roiviz.ops._door): checks, box parsing, torchvision's edge cases, autocast.
    # Below it the kernels see a non-empty problem, detached rois [K, 5] and autocast off.
    if autocast_on(input):  # torchvision computes in float32 (float64 stays) and returns input.dtype
        with torch.autocast(input.device.type, enabled=False):
            return roi_pool(input, boxes, output_size, spatial_scale)
    check_eager("roi_pool", input=input, boxes=boxes)
    input, rois, ph_n, pw_n, scale = roi_arguments(input, boxes, output_size, spatial_scale)
    if empty_problem(input, rois, ph_n, pw_n):
        return boxes_in_graph(empty_result(input, rois.shape[0], ph_n, pw_n), boxes)
    # ---- End of the front door.
    return boxes_in_graph(_compute(input, rois, ph_n, pw_n, scale), boxes)


# -------------------------------------------------------------------------------------------
# Which implementation computes it (the arguments are checked above).
# -------------------------------------------------------------------------------------------


def _compute(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> Tensor:
    """The compiled CPU kernels when they apply (see :func:`~roiviz.ops._common.cpu_kernels_enabled`),
    else the gathers."""
    if input.is_cuda and _triton.available():  # Triton kernels, deterministic backward (ops/_triton.py)
        return _triton.roi_pool(input, rois, ph_n, pw_n, scale)
    if input.device.type == "cpu" and cpu_kernels_enabled():
        if torch.is_grad_enabled() and input.requires_grad:
            return _RoIPoolCPU.apply(input, rois, ph_n, pw_n, scale)[0]
        return _roi_pool_cpu(input, rois, ph_n, pw_n, scale, with_argmax=False)[0]
    return _roi_pool_gather(input, rois, ph_n, pw_n, scale)


def _roi_pool_cpu(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor,
                  with_argmax: bool) -> tuple[Tensor, Tensor]:
    """The compiled forward: ``(out, argmax)``; without a gradient to come, no argmax (an empty
    tensor): half the memory written, the same ``out``."""
    from . import _numba  # imports numba (a second) on first use, not with roiviz

    r = rois.detach().numpy()
    xs, region_rows = _numba.forward_input(input, r, scale.item(), _numba.POOL_PLANES_BELOW)  # in the compute dtype
    out = _numba.empty((r.shape[0], input.shape[1], ph_n, pw_n), compute_dtype(input.dtype))
    # The argmax is the cell h * W + w: int16 when every cell number fits (a W1 map has 3,400
    # cells), so the forward writes, the graph keeps and the backward reads half of int32's bytes.
    index = torch.int16 if input.shape[2] * input.shape[3] <= torch.iinfo(torch.int16).max else torch.int32
    argmax = _numba.empty(tuple(out.shape) if with_argmax else (0, 0, 0, 0), index)
    if out.numel():
        _numba.launch(_numba.roi_pool_forward, xs, r, xs.dtype.type(scale.item()), ph_n, pw_n, region_rows,
                      out.numpy(), argmax.numpy(), units=r.shape[0], work=out.numel())
    return out.to(input.dtype), argmax


class _RoIPoolCPU(torch.autograd.Function):
    """roi_pool on CPU tensors through the compiled kernels of :mod:`roiviz.ops._numba`.

    Used only when a gradient will be needed (else :func:`_roi_pool_cpu` runs without argmax).
    The forward saves the argmax ``[K, C, PH, PW]`` (int32, as torchvision's) and the batch
    index of every ROI; nothing is kept between calls.
    """

    @staticmethod
    def forward(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> tuple[Tensor, Tensor]:
        return _roi_pool_cpu(input, rois, ph_n, pw_n, scale, with_argmax=True)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        input, rois = inputs[0], inputs[1]
        ctx.mark_non_differentiable(output[1])
        # Else autograd hands backward a zero tensor the size of argmax (49 MiB for W1), made
        # and written for nothing.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(output[1], rois.detach()[:, 0].long())
        ctx.input_shape, ctx.input_dtype = input.shape, input.dtype

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, _grad_argmax: Tensor | None):
        from . import _numba

        argmax, batch = ctx.saved_tensors
        n_n, c_n, height, width = ctx.input_shape
        dtype = compute_dtype(ctx.input_dtype)
        grad_in = _numba.empty((n_n, c_n, height * width), dtype, zero=True)
        if grad_out is not None and grad_out.numel():  # None: no gradient reached the output
            k_n = grad_out.shape[0]
            grad = grad_out.to(dtype).reshape(k_n, c_n, -1).contiguous()  # [K, C, PH*PW]
            block = _numba.pool_grad_block(height * width, grad_in.element_size())
            _numba.launch(_numba.roi_pool_backward, grad.numpy(), argmax.view(k_n, c_n, -1).numpy(), batch.numpy(),
                          grad_in.numpy(), block, units=-(-c_n // block), work=grad_out.numel())
        return grad_in.view(ctx.input_shape).to(ctx.input_dtype), None, None, None, None


def _roi_pool_gather(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> Tensor:
    """The portable path: torchvision's strict ``>`` scan in PyTorch operations, any device.

    Step ``(r, s)`` of every bin (row-major, the kernel's order) reads cell
    ``(hstart + r, wstart + s)`` of every channel and keeps it where it is inside the bin and
    greater than the best so far, from ``-FLT_MAX`` (0 for an empty bin). The output is then
    gathered from the input at the winning cells, so that autograd sends each gradient to its
    first maximum; outputs without one keep their start value and get no gradient. Memory is
    a few ``[K*PH*PW, C]`` tensors whatever the bin size; the number of steps (the largest bin)
    is read on the host.
    """
    n_n, c_n, height, width = input.shape
    k_n = rois.shape[0]
    rows = input.permute(0, 2, 3, 1).reshape(n_n * height * width, c_n)  # differentiable view
    edges = pool_bin_edges(rois.detach(), scale, ph_n, pw_n, height, width)
    hstart, hend, wstart, wend = edges
    empty_bin = (hend <= hstart)[:, :, None] | (wend <= wstart)[:, None, :]  # [K, PH, PW]
    dtype = compute_dtype(input.dtype)
    start = torch.where(empty_bin, 0.0, -_FLT_MAX).to(dtype).reshape(-1, 1)  # [K*PH*PW, 1]
    best = start.expand(-1, c_n).contiguous()  # [K*PH*PW, C]
    arg = torch.full(best.shape, -1, dtype=torch.long, device=input.device)
    if best.numel():
        bh_max = int((hend - hstart).clamp(min=0).max())  # the loop bounds: a host read
        bw_max = int((wend - wstart).clamp(min=0).max())
        batch = rois[:, 0].detach().long()[:, None, None]
        values = rows.detach().to(dtype)
        for r in range(bh_max):
            h = hstart + r  # [K, PH]
            for s in range(bw_max):
                w = wstart + s  # [K, PW]
                inside = (h < hend)[:, :, None] & (w < wend)[:, None, :]  # [K, PH, PW]
                cell = (batch * height + h.clamp(max=height - 1)[:, :, None]) * width + w.clamp(max=width - 1)[:, None, :]
                cell = cell.reshape(-1)
                v = values[cell]  # [K*PH*PW, C]
                win = (v > best) & inside.reshape(-1, 1)
                best = torch.where(win, v, best)
                arg = torch.where(win, cell[:, None], arg)
    found = arg >= 0
    picked = rows.gather(0, arg.clamp(min=0)).to(dtype)  # the input at the first maximum
    out = torch.where(found, picked, best)  # [K*PH*PW, C]
    return out.view(k_n, ph_n, pw_n, c_n).permute(0, 3, 1, 2).contiguous().to(input.dtype)


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

        self.output_size = check_output_size(output_size, allow_empty=True)
        self.spatial_scale = check_spatial_scale(spatial_scale)

    def forward(self, input: Tensor, rois: BoxesLike) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"
