"""Precise RoI Pooling (Jiang et al., IoU-Net, ECCV 2018): the exact average of each bin.

ROI Align *samples* each bin (``sampling_ratio`` points per side); Precise RoI Pooling
integrates. The feature map is read as a continuous surface, the bilinear interpolation of its
cells, and each output bin is that surface's integral over the bin divided by the bin's area:
no sampling parameter, and an output that is a smooth function of the box coordinates, so the
gradient with respect to ``x1, y1, x2, y2`` is continuous and generally non-zero (ROI Align's is
piecewise, and torchvision returns none). IoU-Net uses that gradient to refine boxes.

The closed form used here
-------------------------
The bilinear surface is ``f(y, x) = sum_ij X[i, j] * tri(y - i) * tri(x - j)`` with the hat
``tri(t) = max(0, 1 - |t|)``, so its integral over a bin ``[y0, y1] x [x0, x1]`` separates:

    integral = sum_ij X[i, j] * wy[i] * wx[j],   wx[j] = integral of tri over [x0 - j, x1 - j],

which is ``(b - a) * (1 - |a + b| / 2)`` on each side of 0 (:func:`hat_weight`: a product with
the interval's length, so it stays accurate for bins of any size). Each bin touches at most
``ceil(bin) + 2`` cells per axis. The derivative of ``wx[j]`` with respect to the edge ``x1`` is
``tri(x1 - j)``: the box
gradient is the surface integrated along the bin's edges, minus the mean times the edge length,
over the area, as the reference CUDA kernel (vacancy/PreciseRoIPooling) computes it.

Implementations
---------------
- CPU tensors: numba loops over ROIs, bins and cells (:func:`_forward_kernel`), ROIs in
  parallel; the input gradient runs blocks of channels in parallel and ROIs in order inside a
  block, the box gradient ROIs in parallel (each writes its own row): deterministic, no atomics.
  Geometry and sums are in float64, results in the compute dtype.
- Other devices, or ``ROIVIZ_KERNELS=torch``: the same weights as tensors, one gather per
  pair of taps (:func:`_prroi_pool_torch`), differentiated by autograd (also twice).
  It reads the largest bin on the host (the loop bound): one synchronisation on a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import check_aligned, check_input, check_output_size, check_spatial_scale
from ..boxes import BoxesLike, compute_dtype, to_rois
from ._common import cpu_kernels_enabled

try:
    import numba
    from numba import njit

    from . import _numba
except ImportError:  # pragma: no cover - numba is a dependency; the torch path still works
    numba = None


__all__ = ["PrRoIPool", "prroi_pool"]

def prroi_pool(
    input: Tensor,
    boxes: BoxesLike,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    aligned: bool = False,
) -> Tensor:
    """Precise RoI Pooling: the exact mean of the bilinearly interpolated map over each bin.

    Differentiable with respect to ``input`` and to the box coordinates: when ``boxes``
    requires grad, ``boxes.grad`` gets ``d / d (x1, y1, x2, y2)`` (the batch index column,
    in the ``[K, 5]`` form, gets 0).

    Parameters
    ----------
    input : Tensor[N, C, H, W]
        The feature map; float16, bfloat16, float32 or float64 (half types are computed in
        float32 and returned in their own dtype).
    boxes : Tensor[K, 5] or list of Tensor[L, 4]
        ``(batch_index, x1, y1, x2, y2)`` rows, or one ``(x1, y1, x2, y2)`` tensor per image,
        in input-image pixels, with ``x1 <= x2`` and ``y1 <= y2``.
    output_size : int or (int, int)
        ``(PH, PW)``, the number of bins; an int ``n`` means ``(n, n)``.
    spatial_scale : float
        Factor from image pixels to feature cells, e.g. ``1/16`` for a stride-16 map.
    aligned : bool
        ``False`` (the default): the published convention, box ``x * spatial_scale`` in map
        coordinates where cell ``i`` sits at the point ``i``. ``True`` shifts the box by half
        a cell first, as ``roi_align(aligned=True)`` does (cell ``i`` centred on ``i + 0.5``
        in image terms); :data:`roiviz.STRATEGIES` uses ``True``.

    Returns
    -------
    Tensor[K, C, PH, PW]
        In ``input``'s dtype and device.

    Convention
    ----------
    With ``offset = 0.5 if aligned else 0``, the box spans ``x1 * scale - offset`` to
    ``x2 * scale - offset`` (likewise in y) and is cut into ``PH x PW`` equal bins. The
    surface is the bilinear interpolation of the cells, which sit at integer points, with
    **zeros outside the map**: it fades linearly to 0 between the border cell and one cell
    beyond, and is 0 farther out. A bin is divided by its **whole area**, inside the map or
    not, so a bin partly outside is darkened and a box wholly outside gives 0. A bin of
    **zero area** (``x1 == x2`` or ``y1 == y2``) gives 0, and neither gradient flows
    through it. All three as in the reference CUDA kernel. Inside ``[0, H - 1] x [0, W - 1]``
    and for boxes of at least one cell, this is the limit of :func:`roiviz.roi_align` with the
    same ``aligned`` as ``sampling_ratio`` grows (ROI Align clamps to the border instead of
    fading, and with ``aligned=False`` widens boxes to one cell).
    See :func:`roiviz.reference.prroi_pool` for the same thing as plain loops.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.prroi_pool(x, torch.tensor([[0, 0., 0., 3., 3.]]), 1)  # mean of a linear surface
    tensor([[[[7.5000]]]])
    >>> boxes = torch.tensor([[0, 0.5, 0.5, 2., 2.]], requires_grad=True)
    >>> roiviz.prroi_pool(x, boxes, 2).sum().backward()
    >>> boxes.grad  # the surface is x + 4 y: 4 bins whose centres move half as far as an edge
    tensor([[0., 2., 8., 2., 8.]])
    """
    input = check_input(input)
    ph_n, pw_n = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    aligned = check_aligned(aligned)
    rois = to_rois(boxes, input)  # [K, 5] in the compute dtype, still attached to boxes' graph
    offset = 0.5 if aligned else 0.0
    if input.device.type == "cpu" and cpu_kernels_enabled():
        out = _PrRoIPoolFunction.apply(input, rois, ph_n, pw_n, scale, offset)
    else:
        out = _prroi_pool_torch(input, rois, ph_n, pw_n, scale, offset)
    return out.to(input.dtype)


# --------------------------------------------------------------------------------------------
# The portable path: tensors and autograd
# --------------------------------------------------------------------------------------------


def hat_weight(a: Tensor, b: Tensor) -> Tensor:
    """The integral of the hat ``tri(u) = max(0, 1 - |u|)`` over ``[a, b]`` (``a <= b``).

    Split at 0: ``(r - l) * (1 + (l + r) / 2)`` over ``[l, r] = [a, b] ∩ [-1, 0]`` plus
    ``(r - l) * (1 - (l + r) / 2)`` over ``[a, b] ∩ [0, 1]``. Its derivative in ``b`` is
    ``tri(b)`` (and ``-tri(a)`` in ``a``), also at 0, where the left piece carries it.

    Examples
    --------
    >>> hat_weight(torch.tensor([-2., -0.5, 0.0]), torch.tensor([2., 0.5, 1e-30]))
    tensor([1.0000e+00, 7.5000e-01, 1.0000e-30])
    """
    left_a, left_b = (torch.where(v <= 0, torch.where(v > -1, v, -torch.ones_like(v)), torch.zeros_like(v)) for v in (a, b))
    right_a, right_b = (torch.where(v > 0, torch.where(v < 1, v, torch.ones_like(v)), torch.zeros_like(v)) for v in (a, b))
    return ((left_b - left_a) * (1 + (left_a + left_b) / 2)
            + (right_b - right_a) * (1 - (right_a + right_b) / 2))


def _axis_weights(lo: Tensor, hi: Tensor, size: int, n_taps: int) -> tuple[Tensor, Tensor]:
    """Cells and weights of every bin ``[lo, hi]`` along one axis of ``size`` cells.

    Returns ``(index, weight)``, each ``[K, P, n_taps]``: tap ``t`` is cell
    ``clamp(floor(lo), 0, size - 1) + t``, weighted ``hat_weight(lo - j, hi - j)``; taps past the
    map get weight 0 (and a valid index).
    """
    first = torch.floor(lo.detach()).long().clamp(0, size - 1)  # [K, P]
    index = first[..., None] + torch.arange(n_taps, device=lo.device)  # [K, P, T]
    j = index.to(lo.dtype)
    weight = hat_weight(lo[..., None] - j, hi[..., None] - j)  # [K, P, T]
    inside = index < size
    return index.clamp(max=size - 1), torch.where(inside, weight, torch.zeros_like(weight))


def _prroi_pool_torch(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: float, offset: float) -> Tensor:
    """The portable path: sums of gathered cells; autograd gives both gradients."""
    n_n, c_n, height, width = input.shape
    k_n = rois.shape[0]
    x = input.to(compute_dtype(input.dtype)).permute(0, 2, 3, 1)  # [N, H, W, C]
    dtype = x.dtype
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset  # [K]
    bin_w = (rois[:, 3] * scale - offset - start_w).clamp(min=0) / pw_n
    bin_h = (rois[:, 4] * scale - offset - start_h).clamp(min=0) / ph_n
    lo_w = start_w[:, None] + bin_w[:, None] * torch.arange(pw_n, dtype=dtype, device=x.device)  # [K, PW]
    lo_h = start_h[:, None] + bin_h[:, None] * torch.arange(ph_n, dtype=dtype, device=x.device)  # [K, PH]
    hi_w, hi_h = lo_w + bin_w[:, None], lo_h + bin_h[:, None]
    area = bin_h * bin_w  # [K]
    # An empty sum of x keeps the result in the graph (backward gives zeros) when nothing is read.
    acc = x.new_zeros(k_n, ph_n, pw_n, c_n) + x.reshape(-1)[:0].sum()  # [K, PH, PW, C]
    if k_n and height and width:
        bins = torch.stack([bin_h, bin_w]).detach()
        bins = torch.where(torch.isfinite(bins), bins, torch.zeros_like(bins))
        n_h = min(int(bins[0].max()) + 3, height)  # taps per axis: ceil(bin) + 2 at most (a host read)
        n_w = min(int(bins[1].max()) + 3, width)
        iy, wy = _axis_weights(lo_h, hi_h, height, n_h)  # [K, PH, TH]
        ix, wx = _axis_weights(lo_w, hi_w, width, n_w)  # [K, PW, TW]
        batch = rois[:, 0].detach().long().clamp(0, n_n - 1)[:, None, None]  # [K, 1, 1]
        for t in range(n_h):
            rows = iy[:, :, t, None]  # [K, PH, 1]
            for u in range(n_w):
                w = (wy[:, :, t, None] * wx[:, None, :, u])[..., None]  # [K, PH, PW, 1]
                acc = acc + w * x[batch, rows, ix[:, None, :, u]]  # [K, PH, PW, C]
    ok = area > 0
    safe_area = torch.where(ok, area, torch.ones_like(area))  # no 0/0 in the graph
    out = torch.where(ok[:, None, None, None], acc / safe_area[:, None, None, None], torch.zeros_like(acc))
    return out.permute(0, 3, 1, 2).contiguous()  # [K, C, PH, PW]


# --------------------------------------------------------------------------------------------
# The CPU path: numba kernels
# --------------------------------------------------------------------------------------------


class _PrRoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: float, offset: float) -> Tensor:
        dtype = compute_dtype(input.dtype)
        geometry = rois.detach().to(torch.float64).contiguous().numpy()
        k_n, c_n = rois.shape[0], input.shape[1]
        if k_n and input.numel():
            x = _numba.channels_last(input)  # [N, H, W, C] in the compute dtype
            out = _numba.empty((k_n, c_n, ph_n, pw_n), dtype)  # every element is written
            _numba.launch(_forward_kernel, x.numpy(), geometry, scale, offset, out.numpy(), units=k_n, work=out.numel())
        else:
            out = torch.zeros(k_n, c_n, ph_n, pw_n, dtype=dtype)
        ctx.save_for_backward(input, rois)
        ctx.geometry = (ph_n, pw_n, scale, offset)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, rois = ctx.saved_tensors
        _, _, scale, offset = ctx.geometry
        dtype = compute_dtype(input.dtype)
        go = _numba.channels_last(grad_output).numpy()  # [K, PH, PW, C] in the compute dtype
        geometry = rois.detach().to(torch.float64).contiguous().numpy()
        n_n, c_n, height, width = input.shape
        grad_input = grad_rois = None
        busy = rois.shape[0] > 0 and input.numel() > 0
        if ctx.needs_input_grad[0]:
            gx = _numba.empty((n_n, height, width, c_n), dtype, zero=True)  # [N, H, W, C]
            if busy:
                # One block of channels per thread (long, vectorised inner loops); at least 16.
                block = max(16, -(-gx.shape[3] // max(1, torch.get_num_threads())))
                _numba.launch(_input_grad_kernel, go, geometry, scale, offset, gx.numpy(), block, units=-(-gx.shape[3] // block),
                              work=go.size)
            grad_input = gx.permute(0, 3, 1, 2).to(input.dtype)
        if ctx.needs_input_grad[1]:
            gb = np.zeros(geometry.shape, dtype=np.float64)
            if busy:
                x = _numba.channels_last(input)  # [N, H, W, C] in the compute dtype
                _numba.launch(_box_grad_kernel, x.numpy(), go, geometry, scale, offset, gb, units=gb.shape[0], work=go.size)
            grad_rois = torch.from_numpy(gb).to(rois.dtype)
        return grad_input, grad_rois, None, None, None, None


if numba is not None:
    # Launched through roiviz.ops._numba.launch, which runs ranges [lo, hi) of units on threads.
    @njit(cache=True, inline="always")
    def _hat_weight(a, b):
        """The integral of the hat over ``[a, b]``, as :func:`hat_weight`."""
        la, lb = min(max(a, -1.0), 0.0), min(max(b, -1.0), 0.0)
        ra, rb = min(max(a, 0.0), 1.0), min(max(b, 0.0), 1.0)
        return (lb - la) * (1.0 + 0.5 * (la + lb)) + (rb - ra) * (1.0 - 0.5 * (ra + rb))

    @njit(cache=True, inline="always")
    def _hat(t):
        """``tri(t) = max(0, 1 - |t|)``: the weight of a cell ``t`` away, and ``hat_weight``'s slope."""
        return max(0.0, 1.0 - abs(t))

    @njit(cache=True)
    def _roi_geometry(roi, scale, offset, ph_n, pw_n, n_n):
        """``(batch, start_h, start_w, bin_h, bin_w)`` of one ROI; ``batch = -1`` when it reads nothing.

        Unchecked boxes (:func:`roiviz.trusted_boxes`) may be NaN or index no image: they read
        nothing and give 0, rather than reading outside the arrays.
        """
        start_w = roi[1] * scale - offset
        start_h = roi[2] * scale - offset
        bin_w = max(roi[3] * scale - offset - start_w, 0.0) / pw_n
        bin_h = max(roi[4] * scale - offset - start_h, 0.0) / ph_n
        b = roi[0]
        ok = (np.isfinite(start_w) and np.isfinite(start_h) and np.isfinite(bin_w) and np.isfinite(bin_h)
              and b >= 0 and b < n_n and bin_w * bin_h > 0.0)
        return (int(b) if ok else -1), start_h, start_w, bin_h, bin_w

    @njit(cache=True)
    def _axis_taps(start, bin_size, n_bins, size, first, weight):
        """For every bin ``p`` of one axis: its first cell and the weights of its cells.

        Bin ``p`` is ``[start + p * bin, start + p * bin + bin]``; cell ``first[p] + t`` has
        weight ``weight[p, t] = hat_weight(lo - j, hi - j)`` (0 for cells past the map).
        """
        n_taps = weight.shape[1]
        for p in range(n_bins):
            lo = start + bin_size * p
            hi = lo + bin_size
            f = min(max(math.floor(lo), 0.0), size - 1.0)
            first[p] = int(f)
            for t in range(n_taps):
                j = first[p] + t
                weight[p, t] = _hat_weight(lo - j, hi - j) if j < size else 0.0

    @njit(cache=True)
    def _n_taps(bin_size, size):
        """Cells a bin of ``bin_size`` can touch along an axis of ``size``: ``ceil(bin) + 2`` at most."""
        return int(min(np.floor(bin_size) + 3.0, size))  # in floats: a huge (trusted) box must not overflow

    @njit(cache=True, nogil=True)
    def _forward_kernel(x, rois, scale, offset, out, lo, hi):
        """``out[k, :, p, q] = sum_ij wy[p, i] wx[q, j] x[b, i, j, :] / area`` for ROIs ``lo .. hi``.

        Geometry in float64; the weights and the sums in the data's type (as ROI Align sums)."""
        n_n, height, width, c_n = x.shape
        _, _, ph_n, pw_n = out.shape  # [K, C, PH, PW]: written directly, channels first
        for k in range(lo, hi):
            b, start_h, start_w, bin_h, bin_w = _roi_geometry(rois[k], scale, offset, ph_n, pw_n, n_n)
            if b < 0:
                out[k] = 0.0
                continue
            # Weights in the data's type, so that the channel loop is one type (and vectorises).
            fy = np.empty(ph_n, np.int64)
            wy = np.empty((ph_n, _n_taps(bin_h, height)), x.dtype)
            fx = np.empty(pw_n, np.int64)
            wx = np.empty((pw_n, _n_taps(bin_w, width)), x.dtype)
            _axis_taps(start_h, bin_h, ph_n, height, fy, wy)
            _axis_taps(start_w, bin_w, pw_n, width, fx, wx)
            area = bin_h * bin_w
            acc = np.empty(c_n, x.dtype)
            for p in range(ph_n):
                for q in range(pw_n):
                    acc[:] = 0.0
                    for t in range(wy.shape[1]):
                        if wy[p, t] == 0.0:
                            continue
                        i = fy[p] + t
                        for u in range(wx.shape[1]):
                            w = wy[p, t] * wx[q, u]
                            if w == 0.0:
                                continue
                            j = fx[q] + u
                            for c in range(c_n):
                                acc[c] += w * x[b, i, j, c]
                    for c in range(c_n):
                        out[k, c, p, q] = acc[c] / area

    @njit(cache=True, nogil=True)
    def _input_grad_kernel(go, rois, scale, offset, gx, block, lo, hi):
        """``gx[b, i, j, c] += go[k, p, q, c] * wy wx / area`` for channel blocks ``lo .. hi``
        (blocks in parallel, ROIs in order).

        Each input element receives its terms in the same order (ROI, bin, tap) whatever the
        number of threads or the ``block`` of channels, so the result is deterministic.
        """
        n_n, height, width, c_n = gx.shape
        k_n, ph_n, pw_n, _ = go.shape
        for c_block in range(lo, hi):
            inv_area = np.empty(1, gx.dtype)  # 1 / area in the data's type, like the weights
            c0 = c_block * block
            c1 = min(c0 + block, c_n)
            for k in range(k_n):
                b, start_h, start_w, bin_h, bin_w = _roi_geometry(rois[k], scale, offset, ph_n, pw_n, n_n)
                if b < 0:
                    continue
                fy = np.empty(ph_n, np.int64)
                wy = np.empty((ph_n, _n_taps(bin_h, height)), gx.dtype)
                fx = np.empty(pw_n, np.int64)
                wx = np.empty((pw_n, _n_taps(bin_w, width)), gx.dtype)
                _axis_taps(start_h, bin_h, ph_n, height, fy, wy)
                _axis_taps(start_w, bin_w, pw_n, width, fx, wx)
                inv_area[0] = 1.0 / (bin_h * bin_w)
                for p in range(ph_n):
                    for q in range(pw_n):
                        for t in range(wy.shape[1]):
                            if wy[p, t] == 0.0:
                                continue
                            i = fy[p] + t
                            for u in range(wx.shape[1]):
                                w = wy[p, t] * wx[q, u] * inv_area[0]
                                if w == 0.0:
                                    continue
                                j = fx[q] + u
                                for c in range(c0, c1):
                                    gx[b, i, j, c] += w * go[k, p, q, c]

    @njit(cache=True, nogil=True)
    def _box_grad_kernel(x, go, rois, scale, offset, gb, lo, hi):
        """``gb[k] = d loss / d (batch, x1, y1, x2, y2)`` for ROIs ``lo .. hi``, each its own row.

        For bin ``[y0, y1] x [x0, x1]`` with ``z[i, j] = sum_c go[c] x[i, j, c]``, the loss term
        ``L = sum_ij wy[i] wx[j] z[i, j] / A`` moves with the right edge as
        ``dL/dx1 = (sum_ij wy[i] tri(x1 - j) z[i, j] - L * (y1 - y0)) / A`` (the left edge:
        ``-tri(x0 - j)`` and ``+ L * (y1 - y0)``); bin edges move with the box edges by
        ``1 - q / PW`` and ``q / PW`` (left edge of bin ``q``), times ``scale``.
        """
        n_n, height, width, c_n = x.shape
        _, ph_n, pw_n, _ = go.shape
        for k in range(lo, hi):
            b, start_h, start_w, bin_h, bin_w = _roi_geometry(rois[k], scale, offset, ph_n, pw_n, n_n)
            if b < 0:
                continue  # no gradient through a bin of zero area (or an unreadable box)
            fy = np.empty(ph_n, np.int64)
            wy = np.empty((ph_n, _n_taps(bin_h, height)))
            fx = np.empty(pw_n, np.int64)
            wx = np.empty((pw_n, _n_taps(bin_w, width)))
            _axis_taps(start_h, bin_h, ph_n, height, fy, wy)
            _axis_taps(start_w, bin_w, pw_n, width, fx, wx)
            area = bin_h * bin_w
            g_x1 = g_y1 = g_x2 = g_y2 = 0.0
            for p in range(ph_n):
                y0 = start_h + bin_h * p
                y1 = y0 + bin_h
                for q in range(pw_n):
                    x0 = start_w + bin_w * q
                    x1 = x0 + bin_w
                    loss = d_x0 = d_x1 = d_y0 = d_y1 = 0.0
                    for t in range(wy.shape[1]):
                        i = fy[p] + t
                        if i >= height:
                            break
                        for u in range(wx.shape[1]):
                            j = fx[q] + u
                            if j >= width:
                                break
                            z = 0.0
                            for c in range(c_n):
                                z += go[k, p, q, c] * x[b, i, j, c]
                            loss += wy[p, t] * wx[q, u] * z
                            d_x0 -= wy[p, t] * _hat(x0 - j) * z
                            d_x1 += wy[p, t] * _hat(x1 - j) * z
                            d_y0 -= _hat(y0 - i) * wx[q, u] * z
                            d_y1 += _hat(y1 - i) * wx[q, u] * z
                    loss /= area
                    d_x0 = (d_x0 + loss * bin_h) / area
                    d_x1 = (d_x1 - loss * bin_h) / area
                    d_y0 = (d_y0 + loss * bin_w) / area
                    d_y1 = (d_y1 - loss * bin_w) / area
                    g_x1 += d_x0 * (1.0 - q / pw_n) + d_x1 * (1.0 - (q + 1) / pw_n)
                    g_x2 += d_x0 * (q / pw_n) + d_x1 * ((q + 1) / pw_n)
                    g_y1 += d_y0 * (1.0 - p / ph_n) + d_y1 * (1.0 - (p + 1) / ph_n)
                    g_y2 += d_y0 * (p / ph_n) + d_y1 * ((p + 1) / ph_n)
            gb[k, 1] = g_x1 * scale
            gb[k, 2] = g_y1 * scale
            gb[k, 3] = g_x2 * scale
            gb[k, 4] = g_y2 * scale


class PrRoIPool(nn.Module):
    """Module form of :func:`prroi_pool`; see it for the arguments.

    Examples
    --------
    >>> import roiviz
    >>> roiviz.PrRoIPool(7, spatial_scale=1 / 16)
    PrRoIPool(output_size=(7, 7), spatial_scale=0.0625, aligned=False)
    """

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, aligned: bool = False) -> None:
        super().__init__()
        self.output_size = check_output_size(output_size)
        self.spatial_scale = check_spatial_scale(spatial_scale)
        self.aligned = check_aligned(aligned)

    def forward(self, input: Tensor, rois: BoxesLike) -> Tensor:
        return prroi_pool(input, rois, self.output_size, self.spatial_scale, self.aligned)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"aligned={self.aligned})")
