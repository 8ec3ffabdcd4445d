"""ROI Align (He et al., Mask R-CNN, 2017), exactly as torchvision.ops.roi_align computes it.

Every output bin is the mean of ``grid_h x grid_w`` bilinear samples taken on a regular grid
inside the bin; nothing is rounded, so the output moves smoothly with the box.

Two implementations, one result (three with a GPU)
---------------------------------------------------
- **CPU tensors** take the compiled loops of :mod:`roiviz.ops._numba`: torchvision's kernel,
  ROIs in parallel forward and channel blocks in parallel backward, forward and input gradient
  bit-identical to torchvision's in float32 and float64.
- **CUDA tensors** take :mod:`roiviz.ops._triton` when Triton is importable: Triton kernels in
  torchvision's float order, with a deterministic backward (no floating-point atomics).
- **Other devices** (and CUDA without Triton), or ``ROIVIZ_KERNELS=torch`` on the CPU, or no
  numba, take :func:`_roi_align_gather`, which gathers the four taps of every sample in
  torchvision's float order (the forward is bit-exact, like :mod:`roiviz.reference`; autograd
  differentiates the gathers).

Which paths synchronise with the host (a stall on a GPU):

- ``sampling_ratio > 0`` on a non-CPU device: **none**, forward or backward (tested on the
  ``meta`` device, where any host read raises). Box *value* checks do read the boxes once;
  :func:`roiviz.trusted_boxes` skips them.
- ``sampling_ratio <= 0`` (adaptive): one read, ``max(ceil(roi_size / output_size))``, because
  it is the bound of the sampling loop and so decides how much work there is.
- :func:`roiviz.roi_pool` likewise reads the size of the largest bin (its loop bound).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import check_adaptive_grid, check_aligned, check_eager, check_sampling_ratio
from ..boxes import BoxesLike, align_geometry, compute_dtype
from . import _triton
from ._common import axis_taps, channels_last, cpu_kernels_enabled
from ._door import autocast_on, boxes_in_graph, empty_problem, empty_result, roi_arguments

__all__ = ["RoIAlign", "roi_align"]


@torch.fx.wrap  # a leaf of torch.fx graphs, as in torchvision (symbolic tracing cannot read boxes)
def roi_align(
    input: Tensor,
    boxes: BoxesLike,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """ROI Align: bilinear sampling of each box into a fixed ``output_size`` grid.

    Same arguments, box formats and results as :func:`torchvision.ops.roi_align`.

    Parameters
    ----------
    input : Tensor[N, C, H, W]
        The feature map; float16, bfloat16, float32 or float64 (half types are computed in
        float32 and returned in their own dtype).
    boxes : Tensor[K, 5] or list of Tensor[L, 4]
        ``(batch_index, x1, y1, x2, y2)`` rows, or one ``(x1, y1, x2, y2)`` tensor per image,
        in input-image pixels. ``x1 <= x2`` and ``y1 <= y2`` are required.
    output_size : int or (int, int)
        ``(PH, PW)``, the number of bins; an int ``n`` means ``(n, n)``.
    spatial_scale : float
        Factor from image pixels to feature cells, e.g. ``1/16`` for a stride-16 map.
    sampling_ratio : int
        Samples per bin side. ``-1`` (any value ``<= 0``, as in torchvision) chooses
        ``ceil(box_size / output_size)`` per box, which reads the boxes on the host (a
        synchronisation on GPU); a grid of more than ``2**31 - 1`` samples per bin is refused.
    aligned : bool
        ``True`` shifts the box by half a cell so that sample ``(y, x)`` means the point
        ``(y, x)`` of a map whose cell ``i`` is centred on ``i`` — the correct convention.
        ``False`` keeps the legacy Detectron behaviour (and raises tiny boxes to 1x1 cell).

    Returns
    -------
    Tensor[K, C, PH, PW]
        In ``input``'s dtype and device, also under :func:`torch.autocast` (computed in float32
        for half types, like torchvision). Differentiable w.r.t. ``input``; ``boxes`` get no
        gradient. No boxes, no images, no channels or a 0 in ``output_size`` give an empty result.

    Convention
    ----------
    With ``offset = 0.5 if aligned else 0``, a box spans ``start = x1 * scale - offset`` to
    ``end = x2 * scale - offset``; bin ``p`` has size ``(end - start) / PW``; sample ``i`` of
    ``grid`` lies at ``start + p * bin + (i + 0.5) * bin / grid``. A sample with ``y < -1``,
    ``y > H``, ``x < -1`` or ``x > W`` contributes 0 but still counts in the mean; others are
    clamped into the map and interpolated from their four neighbours.
    See :func:`roiviz.reference.roi_align` for the same thing written as plain loops.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.roi_align(x, torch.tensor([[0, 0., 0., 4., 4.]]), 2, sampling_ratio=2, aligned=True)
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])
    """
    # ---- Front door (roiviz.ops._door): checks, box parsing, torchvision's edge cases, autocast.
    # Below it the kernels see a non-empty problem, detached rois [K, 5] and autocast off.
    if autocast_on(input):  # torchvision computes in float32 (float64 stays) and returns input.dtype
        with torch.autocast(input.device.type, enabled=False):
            return roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    check_eager("roi_align", input=input, boxes=boxes)
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    aligned = check_aligned(aligned)
    input, rois, ph_n, pw_n, scale = roi_arguments(input, boxes, output_size, spatial_scale)
    if empty_problem(input, rois, ph_n, pw_n):
        return boxes_in_graph(empty_result(input, rois.shape[0], ph_n, pw_n), boxes)
    if sampling_ratio <= 0:
        check_adaptive_grid(rois, float(scale), ph_n, pw_n, aligned)
    # ---- End of the front door.
    return boxes_in_graph(_compute(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned), boxes)


# -------------------------------------------------------------------------------------------
# Which implementation computes it (the arguments are checked above).
# -------------------------------------------------------------------------------------------


def _compute(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
             aligned: bool) -> Tensor:
    """The compiled CPU kernels when they apply (see :func:`~roiviz.ops._common.cpu_kernels_enabled`),
    else the gathers."""
    if input.is_cuda and _triton.available():  # Triton kernels, deterministic backward (ops/_triton.py)
        return _triton.roi_align(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)
    if input.device.type == "cpu" and cpu_kernels_enabled():
        if torch.is_grad_enabled() and input.requires_grad:
            return _RoIAlignCPU.apply(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)
        # No gradient to come: the kernel alone (autograd.Function costs ~40 us a call).
        return _roi_align_cpu(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)
    return _roi_align_gather(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)


def _roi_align_cpu(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
                   aligned: bool) -> Tensor:
    """The compiled forward."""
    from . import _numba  # imports numba (a second) on first use, not with roiviz

    r = rois.detach().numpy()
    xs, region_rows = _numba.forward_input(input, r, scale.item(), _numba.ALIGN_PLANES_BELOW)  # in the compute dtype
    out = _numba.empty((r.shape[0], input.shape[1], ph_n, pw_n), compute_dtype(input.dtype))
    if out.numel():
        _numba.launch(_numba.roi_align_forward, xs, r, xs.dtype.type(scale.item()), ph_n, pw_n,
                      sampling_ratio, aligned, region_rows, out.numpy(), units=r.shape[0], work=out.numel())
    return out.to(input.dtype)


class _RoIAlignCPU(torch.autograd.Function):
    """roi_align on CPU tensors through the compiled kernels of :mod:`roiviz.ops._numba`, when a
    gradient will be needed (else :func:`_roi_align_cpu` runs alone).

    Nothing is kept between calls: the forward saves only the ROIs (``[K, 5]``), the backward
    allocates the input gradient and a channels-last copy of the output gradient.
    """

    @staticmethod
    def forward(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
                aligned: bool) -> Tensor:
        return _roi_align_cpu(input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        input, rois, ph_n, pw_n, scale, sampling_ratio, aligned = inputs
        ctx.save_for_backward(rois.detach())
        ctx.args = (ph_n, pw_n, float(scale.item()), sampling_ratio, aligned)
        ctx.input_shape, ctx.input_dtype = input.shape, input.dtype

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        from . import _numba

        (rois,) = ctx.saved_tensors
        ph_n, pw_n, scale, sampling_ratio, aligned = ctx.args
        n_n, c_n, height, width = ctx.input_shape
        dtype = compute_dtype(ctx.input_dtype)
        block = _numba.GRAD_BLOCK
        blocks = -(-c_n // block)
        # Blocks of channels, each contiguous: [C / B, N*H*W, B].
        grad_in = _numba.empty((blocks, n_n * height * width, block), dtype, zero=True)
        if grad_out.numel():
            grad = grad_out.to(dtype).contiguous()  # [K, C, PH, PW]
            gi = grad_in.numpy()
            _numba.launch(_numba.roi_align_backward, grad.numpy(), rois.numpy(), gi.dtype.type(scale), ph_n, pw_n,
                          sampling_ratio, aligned, n_n, height, width, gi, units=blocks * n_n,
                          work=grad_out.numel())
        grad_nchw = _numba.blocks_to_nchw(grad_in, n_n, c_n, height, width).to(ctx.input_dtype)
        return grad_nchw, None, None, None, None, None, None


def _roi_align_gather(
    input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int, aligned: bool
) -> Tensor:
    """The portable path: gathers the 4 taps of every sample, in torchvision's float order.

    With ``sampling_ratio > 0`` it reads nothing on the host (no synchronisation on a GPU);
    autograd differentiates the gathers.
    """
    _, c_n, height, width = input.shape
    k_n = rois.shape[0]
    dtype = rois.dtype  # the compute dtype
    rois = rois.detach()  # like torchvision: no gradient for box coordinates

    start_h, start_w, bin_h, bin_w, grid_h, grid_w = align_geometry(rois, scale, ph_n, pw_n, sampling_ratio, aligned)
    if sampling_ratio > 0:
        max_gh = max_gw = sampling_ratio
    else:
        # Adaptive sampling: the loop bound depends on the boxes, so read it (a host sync).
        max_gh = int(grid_h.max()) if k_n else 0
        max_gw = int(grid_w.max()) if k_n else 0
    count = (grid_h * grid_w).clamp(min=1)  # [K]

    x = channels_last(input)  # [N, H, W, C]
    batch = rois[:, 0].long()[:, None, None]  # [K, 1, 1]
    # Zeros that are part of the graph (an empty sum of x), so that backward works, giving 0,
    # even when no sample is taken (no boxes, or every adaptive grid is 0).
    acc = x.new_zeros(k_n, ph_n, pw_n, c_n) + x.reshape(-1)[:0].sum()  # [K, PH, PW, C]
    # Every sample along each axis, in torchvision's expressions and order (so float32 is bit-exact).
    ys = axis_taps(start_h, bin_h, grid_h, max_gh, ph_n, height)  # (ok, low, high, l, h), each [K, PH, GH]
    xs = axis_taps(start_w, bin_w, grid_w, max_gw, pw_n, width)
    for iy in range(max_gh):
        y_ok, y_lo, y_hi, ly, hy = (t[:, :, iy] for t in ys)  # [K, PH]
        for ix in range(max_gw):
            x_ok, x_lo, x_hi, lx, hx = (t[:, :, ix] for t in xs)  # [K, PW]
            ok = (y_ok[:, :, None] & x_ok[:, None, :]).to(dtype)[..., None]  # [K, PH, PW, 1]
            w1 = (hy[:, :, None] * hx[:, None, :])[..., None] * ok
            w2 = (hy[:, :, None] * lx[:, None, :])[..., None] * ok
            w3 = (ly[:, :, None] * hx[:, None, :])[..., None] * ok
            w4 = (ly[:, :, None] * lx[:, None, :])[..., None] * ok
            r_lo, r_hi = y_lo[:, :, None], y_hi[:, :, None]  # [K, PH, 1]
            c_lo, c_hi = x_lo[:, None, :], x_hi[:, None, :]  # [K, 1, PW]
            acc = acc + (w1 * x[batch, r_lo, c_lo] + w2 * x[batch, r_lo, c_hi]
                         + w3 * x[batch, r_hi, c_lo] + w4 * x[batch, r_hi, c_hi])  # [K, PH, PW, C]
    out = acc / count[:, None, None, None]
    return out.permute(0, 3, 1, 2).contiguous().to(input.dtype)  # [K, C, PH, PW]


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`; see it for the arguments.

    Examples
    --------
    >>> import roiviz
    >>> roiviz.RoIAlign(7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
    RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=True)
    """

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = -1,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        from .._checks import check_output_size, check_spatial_scale

        self.output_size = check_output_size(output_size, allow_empty=True)
        self.spatial_scale = check_spatial_scale(spatial_scale)
        self.sampling_ratio = check_sampling_ratio(sampling_ratio)
        self.aligned = check_aligned(aligned)

    def forward(self, input: Tensor, rois: BoxesLike) -> Tensor:
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned})")
