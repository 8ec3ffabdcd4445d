"""Triton kernels for ROI Align and ROI Pool on CUDA tensors, with a deterministic backward.

:func:`roiviz.roi_align` and :func:`roiviz.roi_pool` call :func:`roi_align` / :func:`roi_pool`
here for CUDA tensors when :func:`available` (Triton importable, ``ROIVIZ_TRITON`` not ``0``).
The same kernels run on the CPU under Triton's interpreter (``TRITON_INTERPRET=1``), which is
how ``tests/test_triton.py`` checks them bit for bit against :mod:`roiviz.reference` without a GPU.

Design constraints
------------------
- **Same floats as the reference.** Every value is computed with torchvision's expressions in
  its order (see :func:`roiviz.reference.roi_align`), and every launch passes
  ``enable_fp_fusion=False``: Triton would otherwise contract ``a * b + c`` into one FMA (one
  rounding instead of two). Divisions go through :func:`_div`, which compiles to ``div.rn``
  (correctly rounded): Triton's ``/`` on float32 is the faster, approximate ``div.full.f32``.
  ``tests/test_triton.py`` compiles every kernel for Hopper (sm_90) on the CPU and checks
  that the PTX holds no ``fma`` and no other division. torchvision's own CUDA kernels are
  compiled with FMA contraction, so they may differ from its CPU kernels (and from these) by
  an ulp or so.
- **Deterministic backward, without floating-point atomics.** Each input gradient element is
  written by exactly one program, which adds its contributions in the reference's order:

  * ROI Align: the taps ``(k, ph, pw, iy, ix, tap)`` do not depend on the channel. One kernel
    writes each tap's input cell and weight; a stable ``torch.sort`` by cell keeps, per cell,
    the taps in that order; ``torch.searchsorted`` gives each cell its segment, and a gather
    kernel sums ``grad * w / count`` over it, for a block of cells and channels.
  * ROI Pool: the forward saves each output's winning cell. The cells of every bin do not
    depend on the channel either: one kernel lists them, a stable sort by cell keeps
    ``(k, ph, pw)`` order per cell, and the same gather kernel adds, per channel, the gradient
    of the bins whose maximum the cell was.
- **No host synchronisation** with a fixed ``sampling_ratio``, forward or backward: sizes come
  from shapes only (``searchsorted`` finds segments on the device). The adaptive forward has
  none either (the kernel loops to each box's own grid); its backward reads the largest grid
  once, to size the tap list. ROI Pool's forward loops to each bin's own size and reads
  nothing; its backward reads the largest bin once, to size the list of bin cells.
- Half types are computed in float32 and returned in their dtype, as on the CPU.
- Block sizes are fixed constants (below), chosen for readability; they have not been tuned
  on a GPU.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..boxes import compute_dtype

try:  # Triton ships with CUDA builds of torch; without it the portable path runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["available", "roi_align", "roi_pool"]

#: Bins and channels per program of the forward kernels.
BLOCK_P = 32
BLOCK_C = 64
#: Input cells per program of the backward's gather kernel.
BLOCK_CELLS = 32
_FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: ROI Pool's start value, for every dtype


def available() -> bool:
    """Whether the Triton kernels are used for CUDA tensors.

    True when ``triton`` imports and the environment variable ``ROIVIZ_TRITON`` is not ``"0"``
    (read at each call, so a process can switch back to the portable path).

    Examples
    --------
    >>> isinstance(available(), bool)
    True
    """
    return triton is not None and os.environ.get("ROIVIZ_TRITON", "1") != "0"


def _launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """Launch ``kernel`` on ``grid`` without FMA contraction (see the module docstring).

    Every launch goes through here, so that a test can run the host-side plan on the ``meta``
    device with the launches replaced (proving that the plan reads nothing on the host).
    """
    kernel[grid](*args, enable_fp_fusion=False, **meta)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int, most: int) -> int:
    """The power of two at or above ``n`` (at least 16), at most ``most``."""
    return min(max(16, 1 << max(0, n - 1).bit_length()), most)


if triton is not None:
    FLT_MAX: tl.constexpr = tl.constexpr(_FLT_MAX)

    @triton.jit
    def _div(a, b):
        """``a / b`` correctly rounded: ``div.rn`` in PTX, for float32 and float64 alike."""
        if a.dtype == tl.float64:
            return a / b  # Triton's float64 division is div.rn.f64 (its precise_divf is float32-only)
        else:
            return tl.fdiv(a, b, ieee_rounding=True)  # plain '/' would be div.full.f32 (approximate)

    @triton.jit
    def _as_float(n, like):
        """Integer ``n`` (an argument, or a constant where Triton specialised it) in ``like``'s float type."""
        return tl.zeros_like(like) + n

    @triton.jit
    def _align_roi(rois_ptr, k, scale, PH, PW, SR: tl.constexpr, ALIGNED: tl.constexpr):
        """Batch index, box start, bin size and sampling grid of ROI ``k``, in torchvision's order."""
        roi = rois_ptr + k * 5
        batch = tl.load(roi).to(tl.int64)
        if ALIGNED:
            start_w = tl.load(roi + 1) * scale - 0.5
            start_h = tl.load(roi + 2) * scale - 0.5
            end_w = tl.load(roi + 3) * scale - 0.5
            end_h = tl.load(roi + 4) * scale - 0.5
        else:
            start_w = tl.load(roi + 1) * scale
            start_h = tl.load(roi + 2) * scale
            end_w = tl.load(roi + 3) * scale
            end_h = tl.load(roi + 4) * scale
        roi_w = end_w - start_w
        roi_h = end_h - start_h
        if not ALIGNED:  # legacy: force malformed ROIs to be at least 1x1
            roi_w = tl.maximum(roi_w, 1.0)
            roi_h = tl.maximum(roi_h, 1.0)
        bin_h = _div(roi_h, _as_float(PH, roi_h))
        bin_w = _div(roi_w, _as_float(PW, roi_w))
        if SR > 0:
            grid_h = tl.full([], SR, tl.int32)
            grid_w = tl.full([], SR, tl.int32)
        else:  # ceil(roi_height / pooled_height): the same division as the bin size
            grid_h = tl.ceil(bin_h).to(tl.int32)
            grid_w = tl.ceil(bin_w).to(tl.int32)
        return batch, start_h, start_w, bin_h, bin_w, grid_h, grid_w

    @triton.jit
    def _coord(start, p, bin_size, i, grid):
        """Sample ``i`` of bin ``p``: ``start + p * bin + (i + 0.5) * bin / grid``, left to right."""
        return start + p.to(bin_size.dtype) * bin_size + _div(
            (i + 0.5) * bin_size, grid.to(bin_size.dtype))

    @triton.jit
    def _taps_1d(coord, size):
        """torchvision's bilinear rule along one axis: ``(inside, low, high, l, h)``."""
        inside = (coord >= -1.0) & (coord <= size)
        c = tl.where(inside & (coord > 0), coord, 0.0)  # `if (y <= 0) y = 0`; outside: anything valid
        low = c.to(tl.int32)  # truncation == floor for c >= 0
        at_end = low >= size - 1
        low = tl.where(at_end, size - 1, low)
        high = tl.where(at_end, low, low + 1)
        c = tl.where(at_end, low.to(c.dtype), c)
        lo_w = c - low.to(c.dtype)
        hi_w = 1.0 - lo_w
        return inside, low, high, lo_w, hi_w

    @triton.jit
    def _align_fwd_kernel(x_ptr, rois_ptr, scale_ptr, out_ptr, C, H, W, sxn, sxc, sxh, sxw, PH, PW,
                          SR: tl.constexpr, ALIGNED: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
        # Program (k, block of bins, block of channels): a [BP, BC] tile of output k.
        k = tl.program_id(0)
        scale = tl.load(scale_ptr)
        batch, start_h, start_w, bin_h, bin_w, grid_h, grid_w = _align_roi(rois_ptr, k, scale, PH, PW, SR, ALIGNED)
        p = tl.program_id(1) * BP + tl.arange(0, BP)  # [BP]
        c = tl.program_id(2) * BC + tl.arange(0, BC)  # [BC]
        p_ok = p < PH * PW
        c_ok = c < C
        ph = p // PW
        pw = p % PW
        plane = x_ptr + batch * sxn + c.to(tl.int64)[None, :] * sxc  # [1, BC]
        acc = tl.zeros([BP, BC], dtype=x_ptr.dtype.element_ty)
        for iy in range(grid_h):
            y_in, y_lo, y_hi, ly, hy = _taps_1d(_coord(start_h, ph, bin_h, iy, grid_h), H)  # [BP]
            for ix in range(grid_w):
                x_in, x_lo, x_hi, lx, hx = _taps_1d(_coord(start_w, pw, bin_w, ix, grid_w), W)
                ok = (y_in & x_in & p_ok)[:, None] & c_ok[None, :]  # [BP, BC]
                r_lo = (y_lo.to(tl.int64) * sxh)[:, None]
                r_hi = (y_hi.to(tl.int64) * sxh)[:, None]
                c_lo = (x_lo.to(tl.int64) * sxw)[:, None]
                c_hi = (x_hi.to(tl.int64) * sxw)[:, None]
                v1 = tl.load(plane + r_lo + c_lo, mask=ok, other=0.0)
                v2 = tl.load(plane + r_lo + c_hi, mask=ok, other=0.0)
                v3 = tl.load(plane + r_hi + c_lo, mask=ok, other=0.0)
                v4 = tl.load(plane + r_hi + c_hi, mask=ok, other=0.0)
                w1 = (hy * hx)[:, None]
                w2 = (hy * lx)[:, None]
                w3 = (ly * hx)[:, None]
                w4 = (ly * lx)[:, None]
                # w1*v1 + w2*v2 + w3*v3 + w4*v4, left to right; a sample outside adds nothing.
                acc = tl.where(ok, acc + (w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4), acc)
        count = tl.maximum(grid_h * grid_w, 1).to(acc.dtype)
        out = _div(acc, count)
        n_bins = PH * PW
        dst = out_ptr + (k.to(tl.int64) * C + c.to(tl.int64)[None, :]) * n_bins + p[:, None]  # [K, C, PH, PW]
        tl.store(dst, out, mask=p_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _align_taps_kernel(rois_ptr, scale_ptr, cell_ptr, w_ptr, count_ptr, H, W, PH, PW, G, TRASH,
                           SR: tl.constexpr, ALIGNED: tl.constexpr, BP: tl.constexpr):
        # Program (k, block of bins): writes the 4 taps of every sample of ROI k into the slots
        # [k, p, iy, ix, tap] of a [K, PH*PW, G, G, 4] list, as (input cell, weight); a tap
        # that does not exist (sample outside the map, or beyond an adaptive grid) gets TRASH.
        k = tl.program_id(0)
        scale = tl.load(scale_ptr)
        batch, start_h, start_w, bin_h, bin_w, grid_h, grid_w = _align_roi(rois_ptr, k, scale, PH, PW, SR, ALIGNED)
        p = tl.program_id(1) * BP + tl.arange(0, BP)
        n_bins = PH * PW
        p_ok = p < n_bins
        ph = p // PW
        pw = p % PW
        if tl.program_id(1) == 0:
            tl.store(count_ptr + k, tl.maximum(grid_h * grid_w, 1).to(count_ptr.dtype.element_ty))
        base = batch * H * W
        for iy in range(G):
            y_in, y_lo, y_hi, ly, hy = _taps_1d(_coord(start_h, ph, bin_h, iy, grid_h), H)
            for ix in range(G):
                x_in, x_lo, x_hi, lx, hx = _taps_1d(_coord(start_w, pw, bin_w, ix, grid_w), W)
                ok = y_in & x_in & (iy < grid_h) & (ix < grid_w)
                slot = (((k.to(tl.int64) * n_bins + p) * G + iy) * G + ix) * 4  # [BP]
                rows_lo = base + y_lo.to(tl.int64) * W
                rows_hi = base + y_hi.to(tl.int64) * W
                tl.store(cell_ptr + slot, tl.where(ok, rows_lo + x_lo, TRASH), mask=p_ok)
                tl.store(cell_ptr + slot + 1, tl.where(ok, rows_lo + x_hi, TRASH), mask=p_ok)
                tl.store(cell_ptr + slot + 2, tl.where(ok, rows_hi + x_lo, TRASH), mask=p_ok)
                tl.store(cell_ptr + slot + 3, tl.where(ok, rows_hi + x_hi, TRASH), mask=p_ok)
                tl.store(w_ptr + slot, hy * hx, mask=p_ok)
                tl.store(w_ptr + slot + 1, hy * lx, mask=p_ok)
                tl.store(w_ptr + slot + 2, ly * hx, mask=p_ok)
                tl.store(w_ptr + slot + 3, ly * lx, mask=p_ok)

    @triton.jit
    def _gather_bwd_kernel(seg_ptr, order_ptr, w_ptr, count_ptr, g_ptr, grad_ptr, n_cells, C, HW, TAPS_PER_ROI,
                           TAPS_PER_BIN, POOL: tl.constexpr, BS: tl.constexpr, BC: tl.constexpr):
        # Program (block of input cells, block of channels): each cell adds its contributions in
        # sorted (= the reference's) order. ROI Align: grad[cell] += g[k, p, c] * w / count[k]
        # for every tap. ROI Pool (POOL): grad[cell] += g[k, p, c] for every bin that holds the
        # cell and whose maximum it was (w_ptr is then the saved argmax, [K, PH*PW, C]).
        cell = tl.program_id(0) * BS + tl.arange(0, BS)  # [BS] flat n*H*W + y*W + x
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        cell_ok = cell < n_cells
        c_ok = c < C
        first = tl.load(seg_ptr + cell, mask=cell_ok, other=0)
        length = (tl.load(seg_ptr + cell + 1, mask=cell_ok, other=0) - first).to(tl.int32)
        acc = tl.zeros([BS, BC], dtype=g_ptr.dtype.element_ty)
        for j in range(tl.max(length, axis=0)):
            live = j < length  # [BS]
            tap = tl.load(order_ptr + first + j, mask=live, other=0)
            row = tap // TAPS_PER_BIN  # k * PH*PW + p: the row of the channels-last gradient
            ok = live[:, None] & c_ok[None, :]
            g = tl.load(g_ptr + row[:, None] * C + c[None, :], mask=ok, other=0.0)
            if POOL:
                won = tl.load(w_ptr + row[:, None] * C + c[None, :], mask=ok, other=-1)
                acc = tl.where(ok & (won == (cell % HW)[:, None]), acc + g, acc)
            else:
                w = tl.load(w_ptr + tap, mask=live, other=0.0)
                cnt = tl.load(count_ptr + tap // TAPS_PER_ROI, mask=live, other=1.0)
                acc = tl.where(ok, acc + _div(g * w[:, None], cnt[:, None]), acc)
        cell = cell.to(tl.int64)  # after the loop: the argmax compared with it is an int32
        dst = grad_ptr + ((cell // HW) * C * HW + cell % HW)[:, None] + c.to(tl.int64)[None, :] * HW  # NCHW
        tl.store(dst, acc, mask=cell_ok[:, None] & c_ok[None, :])

    @triton.jit
    def _round_half_away(v):
        """C's ``round``: to the nearest integer, halves away from zero (exact: ``v - trunc(v)`` is)."""
        t = v.to(tl.int32)  # truncation
        frac = v - t.to(v.dtype)
        return tl.where(frac >= 0.5, t + 1, tl.where(frac <= -0.5, t - 1, t))

    @triton.jit
    def _pool_bins(rois_ptr, k, scale, p, PH, PW, H, W):
        """ROI Pool's bins ``p`` of ROI ``k``, clipped to the map: batch, hstart, hend, wstart, wend."""
        roi = rois_ptr + k * 5
        batch = tl.load(roi).to(tl.int64)
        start_w = _round_half_away(tl.load(roi + 1) * scale)
        start_h = _round_half_away(tl.load(roi + 2) * scale)
        end_w = _round_half_away(tl.load(roi + 3) * scale)
        end_h = _round_half_away(tl.load(roi + 4) * scale)
        roi_w = tl.maximum(end_w - start_w + 1, 1)  # malformed ROIs are forced to 1x1
        roi_h = tl.maximum(end_h - start_h + 1, 1)
        dtype = scale.dtype
        bin_h = _div(roi_h.to(dtype), _as_float(PH, scale))
        bin_w = _div(roi_w.to(dtype), _as_float(PW, scale))
        ph = p // PW
        pw = p % PW
        hstart = tl.minimum(tl.maximum(tl.floor(ph.to(dtype) * bin_h).to(tl.int32) + start_h, 0), H)
        hend = tl.minimum(tl.maximum(tl.ceil((ph + 1).to(dtype) * bin_h).to(tl.int32) + start_h, 0), H)
        wstart = tl.minimum(tl.maximum(tl.floor(pw.to(dtype) * bin_w).to(tl.int32) + start_w, 0), W)
        wend = tl.minimum(tl.maximum(tl.ceil((pw + 1).to(dtype) * bin_w).to(tl.int32) + start_w, 0), W)
        return batch, hstart, hend, wstart, wend

    @triton.jit
    def _pool_fwd_kernel(x_ptr, rois_ptr, scale_ptr, out_ptr, arg_ptr, C, H, W, sxn, sxc, sxh, sxw, PH, PW,
                         TRACK: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
        # Program (k, block of bins, block of channels), torchvision's roi_pool_forward_kernel
        # for a [BP, BC] tile: each bin's maximum by strict '>' in row-major order (the first
        # maximum wins), from -FLT_MAX; an empty bin gives 0. With TRACK, the winner's cell
        # h*W + w is saved channels last, [K, PH*PW, C], for the backward (-1: none).
        k = tl.program_id(0)
        scale = tl.load(scale_ptr)
        p = tl.program_id(1) * BP + tl.arange(0, BP)
        c = tl.program_id(2) * BC + tl.arange(0, BC)
        p_ok = p < PH * PW
        c_ok = c < C
        batch, hstart, hend, wstart, wend = _pool_bins(rois_ptr, k, scale, p, PH, PW, H, W)
        rows = tl.where(p_ok, hend - hstart, 0)
        cols = tl.where(p_ok, wend - wstart, 0)
        empty = (rows <= 0) | (cols <= 0)
        dtype = x_ptr.dtype.element_ty
        best = tl.where(empty, 0.0, -FLT_MAX).to(dtype)[:, None] + tl.zeros([BP, BC], dtype=dtype)
        won = tl.full([BP, BC], -1, tl.int32)
        plane = batch * sxn + c.to(tl.int64)[None, :] * sxc  # [1, BC]
        for r in range(tl.max(rows, axis=0)):
            for s in range(tl.max(cols, axis=0)):
                h = hstart + r
                w = wstart + s
                inside = ((r < rows) & (s < cols))[:, None] & c_ok[None, :]  # [BP, BC]
                at = plane + (h.to(tl.int64) * sxh + w.to(tl.int64) * sxw)[:, None]
                v = tl.load(x_ptr + at, mask=inside, other=0.0)
                better = inside & (v > best)
                best = tl.where(better, v, best)
                won = tl.where(better, (h * W + w)[:, None], won)
        mask = p_ok[:, None] & c_ok[None, :]
        dst = (k.to(tl.int64) * C + c.to(tl.int64)[None, :]) * (PH * PW) + p[:, None]  # [K, C, PH, PW]
        tl.store(out_ptr + dst, best, mask=mask)
        if TRACK:
            tl.store(arg_ptr + (k.to(tl.int64) * (PH * PW) + p[:, None]) * C + c[None, :], won, mask=mask)

    @triton.jit
    def _pool_cells_kernel(rois_ptr, scale_ptr, cell_ptr, H, W, PH, PW, R, S, TRASH, BP: tl.constexpr):
        # Program (k, block of bins): slot [k, p, r, s] of a [K, PH*PW, R, S] list holds the
        # input cell n*H*W + h*W + w that is step (r, s) of bin p (row-major), or TRASH past the
        # bin's end. It does not depend on the channel; R, S bound every bin's size.
        k = tl.program_id(0)
        scale = tl.load(scale_ptr)
        p = tl.program_id(1) * BP + tl.arange(0, BP)
        p_ok = p < PH * PW
        batch, hstart, hend, wstart, wend = _pool_bins(rois_ptr, k, scale, p, PH, PW, H, W)
        for r in range(R):
            for s in range(S):
                inside = (hstart + r < hend) & (wstart + s < wend)
                cell = batch * H * W + ((hstart + r) * W + wstart + s).to(tl.int64)
                slot = ((k.to(tl.int64) * (PH * PW) + p) * R + r) * S + s
                tl.store(cell_ptr + slot, tl.where(inside, cell, TRASH), mask=p_ok)

def _segments(keys: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Stable order of ``keys`` and the start of each key ``0 .. n`` in it (``[n + 1]``), on the device.

    Keys equal to ``n`` (or above) are dropped taps: they sort last, past the end of segment
    ``n - 1``. No host read: ``searchsorted`` finds the segments.
    """
    sorted_keys, order = torch.sort(keys, stable=True)
    bounds = torch.searchsorted(sorted_keys, torch.arange(n + 1, dtype=keys.dtype, device=keys.device))
    return bounds, order


def _index_dtype(n: int) -> torch.dtype:
    """int32 keys when they fit (half the bytes to sort), else int64."""
    return torch.int32 if n < 2**31 - 1 else torch.int64


def _grid_bound(rois: Tensor, scale: Tensor, size: int, column: int, aligned: bool) -> int:
    """The largest adaptive grid along one axis, ``ceil(roi_size / size)``: read on the host.

    ``column`` is the box's start column in ``rois``: 1 (``x1``) for the width, 2 (``y1``) for
    the height; the end is two columns on. The same float operations as the kernel's.
    """
    off = 0.5 if aligned else 0.0
    extent = (rois[:, column + 2] * scale - off) - (rois[:, column] * scale - off)
    if not aligned:
        extent = extent.clamp(min=1.0)
    return int(torch.ceil(extent / size).max()) if rois.shape[0] else 0


class _RoIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
                aligned: bool) -> Tensor:
        _, c_n, height, width = input.shape
        k_n = rois.shape[0]
        dtype = compute_dtype(input.dtype)
        x = input.detach().to(dtype).contiguous(memory_format=torch.channels_last)  # channels contiguous
        out = torch.empty(k_n, c_n, ph_n, pw_n, dtype=dtype, device=input.device)
        sr = max(sampling_ratio, 0)
        if out.numel():
            grid = (k_n, _cdiv(ph_n * pw_n, BLOCK_P), _cdiv(c_n, BLOCK_C))
            _launch(_align_fwd_kernel, grid, x, rois, scale, out, c_n, height, width, *x.stride(), ph_n, pw_n,
                    SR=sr, ALIGNED=aligned, BP=BLOCK_P, BC=BLOCK_C)
        ctx.save_for_backward(rois, scale)
        ctx.args = (ph_n, pw_n, sr, aligned, input.shape, input.dtype)
        return out.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        rois, scale = ctx.saved_tensors
        ph_n, pw_n, sr, aligned, shape, in_dtype = ctx.args
        return _align_backward(grad_out, rois, scale, ph_n, pw_n, sr, aligned, shape, in_dtype), *([None] * 6)


def _align_backward(grad_out: Tensor, rois: Tensor, scale: Tensor, ph_n: int, pw_n: int, sr: int, aligned: bool,
                    shape: torch.Size, in_dtype: torch.dtype) -> Tensor:
    """The input gradient of ROI Align: taps listed, sorted by cell, gathered per cell (see the module)."""
    n_n, c_n, height, width = shape
    k_n, bins = rois.shape[0], ph_n * pw_n
    dtype, device = compute_dtype(in_dtype), grad_out.device
    n_cells = n_n * height * width
    grad = torch.zeros(shape, dtype=dtype, device=device)
    if sr > 0:
        g_max = sr
    else:  # the adaptive grid sizes the tap list: one host read
        g_max = max(_grid_bound(rois, scale, ph_n, 2, aligned), _grid_bound(rois, scale, pw_n, 1, aligned))
    n_taps = k_n * bins * g_max * g_max * 4
    if n_taps == 0 or c_n == 0 or n_cells == 0:
        return grad.to(in_dtype)
    cells = torch.empty(n_taps, dtype=_index_dtype(n_cells + 1), device=device)
    weights = torch.empty(n_taps, dtype=dtype, device=device)
    count = torch.empty(k_n, dtype=dtype, device=device)
    _launch(_align_taps_kernel, (k_n, _cdiv(bins, BLOCK_P)), rois, scale, cells, weights, count, height, width,
            ph_n, pw_n, g_max, n_cells, SR=sr, ALIGNED=aligned, BP=BLOCK_P)
    bounds, order = _segments(cells, n_cells)
    g = grad_out.to(dtype).permute(0, 2, 3, 1).contiguous()  # [K, PH, PW, C]: a bin's channels contiguous
    block_c = _pow2(c_n, BLOCK_C)
    _launch(_gather_bwd_kernel, (_cdiv(n_cells, BLOCK_CELLS), _cdiv(c_n, block_c)), bounds, order, weights, count,
            g, grad, n_cells, c_n, height * width, bins * g_max * g_max * 4, g_max * g_max * 4,
            POOL=False, BS=BLOCK_CELLS, BC=block_c)
    return grad.to(in_dtype)


def roi_align(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, sampling_ratio: int,
              aligned: bool) -> Tensor:
    """ROI Align with the Triton kernels; arguments as checked by the front door (:func:`roiviz.ops._door.roi_arguments`).

    ``rois`` is ``[K, 5]`` and ``scale`` a 0-dim tensor, both in the compute dtype on ``input``'s
    device. Differentiable in ``input`` (deterministic backward); not in the boxes.
    """
    return _RoIAlignFunction.apply(input, rois.detach().contiguous(), ph_n, pw_n, scale, sampling_ratio,
                                   bool(aligned))


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, track: bool) -> Tensor:
        _, c_n, height, width = input.shape
        k_n = rois.shape[0]
        dtype = compute_dtype(input.dtype)
        x = input.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        out = torch.empty(k_n, c_n, ph_n, pw_n, dtype=dtype, device=input.device)
        track = track and ctx.needs_input_grad[0]
        # The winning cell of every output, channels last: [K, PH*PW, C] (int32, -1 for none).
        arg = torch.empty((k_n, ph_n * pw_n, c_n) if track else (0,), dtype=torch.int32, device=input.device)
        if out.numel():
            grid = (k_n, _cdiv(ph_n * pw_n, BLOCK_P), _cdiv(c_n, BLOCK_C))
            _launch(_pool_fwd_kernel, grid, x, rois, scale, out, arg, c_n, height, width, *x.stride(), ph_n, pw_n,
                    TRACK=track, BP=BLOCK_P, BC=BLOCK_C)
        ctx.save_for_backward(rois, scale, arg)
        ctx.args = (ph_n, pw_n, input.shape, input.dtype)
        return out.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        rois, scale, arg = ctx.saved_tensors
        ph_n, pw_n, shape, in_dtype = ctx.args
        return _pool_backward(grad_out, rois, scale, arg, ph_n, pw_n, shape, in_dtype), None, None, None, None, None


def _bin_bound(rois: Tensor, scale: Tensor, ph_n: int, pw_n: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns that bound every ROI Pool bin: one host read.

    A box of ``e`` cells (``round(x2 * s) - round(x1 * s) + 1 <= ceil((x2 - x1) * s) + 2``) cut
    into ``n`` bins has bins of at most ``ceil(e / n) + 1`` cells (``floor`` start, ``ceil``
    end), one more for float rounding, and none wider than the map.
    """
    extent = torch.ceil((rois[:, 3:5] - rois[:, 1:3]) * scale) + 2  # [K, 2]: width, height
    bound = torch.stack([torch.ceil(extent[:, 1] / ph_n), torch.ceil(extent[:, 0] / pw_n)]) + 2  # [2, K]
    rows, cols = bound.amax(1).tolist()
    return int(min(rows, height)), int(min(cols, width))


def _pool_backward(grad_out: Tensor, rois: Tensor, scale: Tensor, arg: Tensor, ph_n: int, pw_n: int,
                   shape: torch.Size, in_dtype: torch.dtype) -> Tensor:
    """The input gradient of ROI Pool: bin cells listed, sorted by cell, gathered per cell (see the module).

    Every input cell visits the bins that hold it in ``(k, ph, pw)`` order (a stable sort of the
    channel-independent list of bin cells) and adds, channel by channel, the gradient of those
    whose maximum it was: the reference's order, with no atomics.
    """
    n_n, c_n, height, width = shape
    k_n, bins = rois.shape[0], ph_n * pw_n
    dtype, device = compute_dtype(in_dtype), grad_out.device
    n_cells = n_n * height * width
    grad = torch.zeros(shape, dtype=dtype, device=device)
    if arg.numel() == 0 or n_cells == 0:
        return grad.to(in_dtype)
    rows, cols = _bin_bound(rois, scale, ph_n, pw_n, height, width)
    if rows <= 0 or cols <= 0:
        return grad.to(in_dtype)
    cells = torch.empty(k_n * bins * rows * cols, dtype=_index_dtype(n_cells + 1), device=device)
    _launch(_pool_cells_kernel, (k_n, _cdiv(bins, BLOCK_P)), rois, scale, cells, height, width, ph_n, pw_n,
            rows, cols, n_cells, BP=BLOCK_P)
    bounds, order = _segments(cells, n_cells)
    g = grad_out.to(dtype).permute(0, 2, 3, 1).contiguous()  # [K, PH, PW, C], like the argmax
    block_c = _pow2(c_n, BLOCK_C)
    _launch(_gather_bwd_kernel, (_cdiv(n_cells, BLOCK_CELLS), _cdiv(c_n, block_c)), bounds, order, arg, arg,
            g, grad, n_cells, c_n, height * width, bins * rows * cols, rows * cols,
            POOL=True, BS=BLOCK_CELLS, BC=block_c)
    return grad.to(in_dtype)


def roi_pool(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor) -> Tensor:
    """ROI Pool with the Triton kernels; arguments as checked by the front door (:func:`roiviz.ops._door.roi_arguments`).

    The argmax is saved only when autograd records a graph (deterministic backward).
    """
    track = torch.is_grad_enabled() and input.requires_grad
    return _RoIPoolFunction.apply(input, rois.detach().contiguous(), ph_n, pw_n, scale, track)
