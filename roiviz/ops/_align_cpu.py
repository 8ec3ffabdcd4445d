"""The CPU path of :func:`roiviz.roi_align`: separable weights, one window per ROI, matrix products.

Why a second algorithm
----------------------
The portable path (:func:`roiviz.ops.roi_align._roi_align_gather`) gathers the four bilinear
taps of every sample of every bin, ``16 x K x PH x PW`` channel vectors for a 2x2 grid: far more
memory traffic than the output itself. Here we use that ROI Align is *separable*: the weight of
cell ``(y, x)`` in bin ``(ph, pw)`` is ``ay[ph, y] * ax[pw, x]``, where ``ay`` sums the vertical
bilinear weights of the bin's sample rows (divided by ``grid_h``) and ``ax`` the horizontal ones
(divided by ``grid_w``); torchvision's out-of-map rule (``y < -1 or y > H``, ``x < -1 or x > W``)
is separable too. So ROI ``k`` is two small matrix products over the window ``Sy x Sx`` of cells
it touches::

    out[k] = ay[k] (PH x Sy) @ X[window of k] (Sy x Sx x C) @ ax[k]^T (Sx x PW)

computed either as one product with the Kronecker weights ``ay (x) ax`` (``[Sy*Sx, PH*PW]``) or
as two products (fewer flops for large windows); :func:`_use_kron` picks one. Both write
``[C, PH, PW]`` directly (the operands are passed transposed, never copied). ROIs are sorted by
window size and processed in chunks that stay in the cache, through work buffers allocated once
per call (fresh memory costs a page fault per 4 KiB, more than the arithmetic on it). The
backward pass is :func:`roiviz.ops._align_grad.roi_align_input_grad`, which adds the very
terms of torchvision's kernel in its order (bit-exact), not the transposed products.

What it costs in exactness
--------------------------
The sample coordinates and 1-D weights are computed with torchvision's float expressions, but
the forward sums are done in GEMM order, so float32 outputs differ from torchvision by a few
ulp (about ``1e-7`` relative) instead of being bit-identical; :mod:`roiviz.reference` remains
the bit-exact statement of the algorithm. The input gradient is bit-identical.

Synchronisation
---------------
The window sizes, and with ``sampling_ratio <= 0`` the grid sizes, are read on the host to plan
the chunks. On the CPU that read is free; on other devices it would be a host synchronisation,
so :func:`roiviz.roi_align` uses this path only for CPU tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..boxes import compute_dtype
from ._align_grad import ExactGradFunction
from ._common import (
    align_geometry,
    axis_taps,
    output_empty,
    workspace,
)

#: Bytes of window + intermediate + result per chunk of ROIs: about one core's L2 cache (4 MiB here).
CHUNK_BYTES = 1 << 22


def roi_align_cpu(
    input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int, aligned: bool
) -> Tensor:
    """``roi_align`` on CPU tensors (arguments already checked; ``rois`` in the compute dtype)."""
    return _RoIAlignCPU.apply(input, rois.detach(), ph_n, pw_n, scale, sampling_ratio, aligned)


def axis_samples(
    start: Tensor, bin_size: Tensor, grid: Tensor, g_max: int, n_bins: int, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The samples of every bin along one axis, with torchvision's bilinear rule.

    Parameters
    ----------
    start, bin_size, grid : Tensor[K]
        Box start and bin size in cells, and the samples per bin (as floats, may be 0).
    g_max : int
        The largest grid (the loop bound of the sample index).
    n_bins, size : int
        Bins along the axis, cells along the axis of the map.

    Returns
    -------
    (low, high, w_low, w_high, origin, extent)
        ``low, high [K, n_bins, g_max]``: the two neighbouring cells of each sample;
        ``w_low, w_high``: their weights divided by ``grid`` (0 for samples that do not count);
        ``origin, extent [K]``: the first cell any counted sample touches and how many cells
        from there (at least 1).

    Examples
    --------
    One bin with two samples, at 0.5 and 1.5, on a map of 4 cells:

    >>> low, high, w_low, w_high, origin, extent = axis_samples(
    ...     torch.tensor([0.]), torch.tensor([2.]), torch.tensor([2.]), 2, 1, 4)
    >>> low, high, w_low, w_high, origin, extent
    (tensor([[[0, 1]]]), tensor([[[1, 2]]]), tensor([[[0.2500, 0.2500]]]), tensor([[[0.2500, 0.2500]]]), tensor([0]), tensor([3]))
    """
    ok, low, high, lo_w, hi_w = axis_taps(start, bin_size, grid, g_max, n_bins, size)  # [K, P, G]
    inv = (1.0 / grid.clamp(min=1.0))[:, None, None]
    w_high = torch.where(ok, lo_w * inv, 0.0)
    w_low = torch.where(ok, hi_w * inv, 0.0)
    origin = torch.where(ok, low, size).flatten(1).amin(1)  # [K]
    last = torch.where(ok, high, -1).flatten(1).amax(1)
    touched = last >= 0
    origin = torch.where(touched, origin, 0)
    extent = torch.where(touched, last - origin + 1, 1)
    return low, high, w_low, w_high, origin, extent


def axis_weights(low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor, origin: Tensor, s_n: int) -> Tensor:
    """``[K, P, s_n]`` weight of cell ``origin[k] + j`` in bin ``p`` (samples summed)."""
    k_n, p_n, _ = low.shape
    weights = torch.zeros(k_n, p_n, s_n, dtype=w_low.dtype)
    # Samples that do not count (weight 0) may lie outside the window: clamp them into it.
    weights.scatter_add_(2, (low - origin[:, None, None]).clamp_(0, s_n - 1), w_low)
    return weights.scatter_add_(2, (high - origin[:, None, None]).clamp_(0, s_n - 1), w_high)


def _plan(rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int, aligned: bool,
          height: int, width: int, c_n: int) -> dict:
    """Weights, windows and chunks of all ROIs, in window-size order (reads the boxes: CPU only)."""
    start_h, start_w, bin_h, bin_w, grid_h, grid_w = align_geometry(rois, scale, ph_n, pw_n, sampling_ratio, aligned)
    if sampling_ratio > 0:
        gh_max = gw_max = sampling_ratio
    else:
        gh_max = max(int(grid_h.max()), 1)  # at least one (masked) sample: grid 0 gives 0
        gw_max = max(int(grid_w.max()), 1)
    ys = axis_samples(start_h, bin_h, grid_h, gh_max, ph_n, height)
    xs = axis_samples(start_w, bin_w, grid_w, gw_max, pw_n, width)

    # Sort by window area so that the windows of a chunk (padded to its largest) are alike, and
    # cut chunks of about CHUNK_BYTES of window + intermediate + result.
    sy, sx = ys[5].numpy(), xs[5].numpy()
    order = np.argsort(sy * sx, kind="stable")
    sy_s, sx_s = sy[order], sx[order]
    cost = (sy_s * sx_s + ph_n * pw_n + ph_n * sx_s) * c_n * rois.element_size()
    cum = np.cumsum(cost)
    chunk_id = (cum - cost) // CHUNK_BYTES  # a chunk exceeds the budget by one ROI at most
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(chunk_id)) + 1, [len(order)]])
    chunk_sy = np.maximum.reduceat(sy_s, bounds[:-1])
    chunk_sx = np.maximum.reduceat(sx_s, bounds[:-1])
    chunks = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), chunk_sy.tolist(), chunk_sx.tolist(), strict=True))

    # Each window is its chunk's size; shift its origin back where it would leave the map, so
    # that every window cell is a real cell (no clamping per chunk, one add makes the index).
    order_t = torch.from_numpy(order)
    counts = np.diff(bounds)
    y0 = torch.minimum(ys[4][order_t], torch.from_numpy(height - np.repeat(chunk_sy, counts)))
    x0 = torch.minimum(xs[4][order_t], torch.from_numpy(width - np.repeat(chunk_sx, counts)))
    ay = axis_weights(*(t[order_t] for t in ys[:4]), y0, int(chunk_sy.max()))  # [K, PH, Sy_max]
    ax = axis_weights(*(t[order_t] for t in xs[:4]), x0, int(chunk_sx.max()))  # [K, PW, Sx_max]
    base = (rois[order_t, 0].long() * height + y0) * width + x0  # [K] flat index of the window origin
    return {"order": order_t, "chunks": chunks, "ay": ay, "ax": ax, "base": base}


def _use_kron(sy: int, sx: int, ph_n: int, pw_n: int) -> bool:
    """One Kronecker GEMM or two separable ones? The Kronecker one does more flops in one product."""
    return sy * sx * ph_n * pw_n <= KRON_FACTOR * (ph_n * sy * sx + ph_n * pw_n * sx)


#: How many times the separable flops the Kronecker product may cost and still be chosen.
KRON_FACTOR = 2.0


class _Windows:
    """The flat row index of every window cell of a chunk, ``[kc * Sy * Sx]`` (offsets cached)."""

    def __init__(self, plan: dict, width: int) -> None:
        self.base, self.width, self.offsets = plan["base"], width, {}

    def __call__(self, a: int, b: int, sy: int, sx: int) -> Tensor:
        off = self.offsets.get((sy, sx))
        if off is None:
            off = self.offsets[sy, sx] = (torch.arange(sy)[:, None] * self.width + torch.arange(sx)).view(-1)
        return (self.base[a:b, None] + off).view(-1)


def _kron(ay: Tensor, ax: Tensor) -> Tensor:
    """``[kc, Sy*Sx, PH*PW]`` weights of every window cell in every bin."""
    kc, ph_n, sy = ay.shape
    pw_n, sx = ax.shape[1:]
    w = ay.transpose(1, 2)[:, :, None, :, None] * ax.transpose(1, 2)[:, None, :, None, :]  # [kc, Sy, Sx, PH, PW]
    return w.reshape(kc, sy * sx, ph_n * pw_n)


class _RoIAlignCPU(ExactGradFunction):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
                aligned: bool) -> Tensor:
        n_n, c_n, height, width = input.shape
        k_n = rois.shape[0]
        ExactGradFunction.remember(ctx, input, rois, scale, sampling_ratio, aligned)
        # Channels-last copy [N*H*W, C] into a reused buffer (not saved: the backward needs no input).
        x = workspace("align_input", (n_n, height, width, c_n), compute_dtype(input.dtype))
        x = x.copy_(input.permute(0, 2, 3, 1)).view(-1, c_n)
        out = output_empty((k_n, c_n, ph_n, pw_n), x.dtype, x.device)
        plan = _plan(rois, ph_n, pw_n, scale, sampling_ratio, aligned, height, width, c_n) if k_n else None
        if plan is None:
            return out.to(input.dtype)
        windows = _Windows(plan, width)
        sizes = [(b - a, sy, sx) for a, b, sy, sx in plan["chunks"]]
        win_buf = workspace("align_window", (max(kc * sy * sx for kc, sy, sx in sizes) * c_n,), x.dtype)
        mid_buf = workspace("align_mid", (max(kc * sx for kc, sy, sx in sizes) * c_n * ph_n,), x.dtype)
        res_buf = workspace("align_result", (max(kc for kc, _, _ in sizes) * c_n * ph_n * pw_n,), x.dtype)
        for a, b, sy, sx in plan["chunks"]:
            kc = b - a
            win = torch.index_select(x, 0, windows(a, b, sy, sx), out=win_buf[: kc * sy * sx * c_n].view(-1, c_n))
            win = win.view(kc, sy, sx * c_n)  # [kc, Sy, Sx*C]
            ay, ax = plan["ay"][a:b, :, :sy], plan["ax"][a:b, :, :sx]  # [kc, PH, Sy], [kc, PW, Sx]
            res = res_buf[: kc * c_n * ph_n * pw_n].view(kc, c_n, ph_n * pw_n)
            if _use_kron(sy, sx, ph_n, pw_n):
                torch.bmm(win.view(kc, sy * sx, c_n).transpose(1, 2), _kron(ay, ax), out=res)  # [kc, C, PH*PW]
            else:
                mid = mid_buf[: kc * sx * c_n * ph_n].view(kc, sx * c_n, ph_n)
                torch.bmm(win.transpose(1, 2), ay.transpose(1, 2), out=mid)  # [kc, (Sx, C), PH]
                torch.bmm(mid.view(kc, sx, c_n * ph_n).transpose(1, 2), ax.transpose(1, 2),
                          out=res.view(kc, c_n * ph_n, pw_n))  # [kc, (C, PH), PW]
            out.index_copy_(0, plan["order"][a:b], res.view(kc, c_n, ph_n, pw_n))
        return out.to(input.dtype)
