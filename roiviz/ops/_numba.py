"""The CPU kernels of roi_align and roi_pool: torchvision's loops, compiled by numba.

Each kernel is the loop nest of torchvision's C++ kernel (``roi_align_kernel.cpp``,
``roi_pool_kernel.cpp``) with the same float operations in the same order for every output
element, so that float32 and float64 results, forward and backward, are torchvision's bit for
bit. Three things differ, none of which changes a number:

- the input is read channels last (``[N, H, W, C]``), so that the innermost loop runs over
  contiguous channels (the sample positions and weights are shared by every channel);
- the forward runs ROIs in parallel (each ROI writes only its own outputs);
- the backward runs blocks of channels in parallel and, inside a block, ROIs in order, so the
  terms added into an input cell arrive in torchvision's order: no atomics, deterministic.

Every arithmetic operation is done in the tensor's type ``T`` (float32 or float64): a Python
int or float constant would promote float32 arithmetic to float64 in numba, so each constant
goes through :func:`as_type` first. Half types are computed in float32 by the callers.

The kernels are compiled on first use and cached on disk (``cache=True``): next to this file
when it is writable, else in numba's per-user cache (or ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np
import torch
from numba import njit, prange
from numba.extending import overload

__all__ = ["channels_last", "launch", "roi_align_backward", "roi_align_forward", "roi_pool_backward", "roi_pool_forward"]

#: numba's ``workqueue`` threading layer must not be entered by two threads at once; calls
#: from several Python threads take turns (each call is itself parallel).
_LOCK = threading.Lock()
_FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: roi_pool's start value, in every dtype
#: Channels per block of the roi_align backward (blocks run in parallel). A compile-time
#: constant, so that the innermost loops are vectorised whole; 64 float32 are 4 cache lines.
GRAD_BLOCK = 64

# GNU OpenMP (numba's choice when it finds it) cannot run in a forked child, such as a
# DataLoader worker, once the parent has used it; the workqueue layer can. A user's own
# choice (NUMBA_THREADING_LAYER) wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"


def as_type(value, like):  # pragma: no cover - only called in compiled code
    """``value`` converted to the type of the scalar ``like`` (C's ``static_cast<T>``)."""
    raise NotImplementedError


@overload(as_type)
def _as_type(value, like):
    target = like

    def impl(value, like):
        return target(value)

    return impl


@njit(cache=True)
def _align_axis(start, bin_size, grid, n_bins, size, like):
    """One axis of torchvision's ``pre_calc_for_bilinear_interpolate``, for every sample.

    Sample ``i`` of bin ``p`` (entry ``p * grid + i``) lies at
    ``start + p * bin + (i + .5) * bin / grid``. Returns ``(ok, low, high, l, h)``: whether
    it is inside ``[-1, size]``, its two neighbours and their weights ``l`` and ``h = 1 - l``
    after clamping, exactly as the C++ computes them (0 for samples outside), in ``like``'s
    dtype.
    """
    n = n_bins * grid
    ok = np.empty(n, np.bool_)
    low = np.zeros(n, np.int64)
    high = np.zeros(n, np.int64)
    lw = np.zeros(n, like.dtype)
    hw = np.zeros(n, like.dtype)
    one = as_type(1, start)
    for p in range(n_bins):
        for i in range(grid):
            c = start + as_type(p, start) * bin_size + as_type(i + 0.5, start) * bin_size / as_type(grid, start)
            j = p * grid + i
            # As torchvision: !(in range), so that NaN counts as outside.
            ok[j] = c >= -1.0 and c <= size
            if not ok[j]:
                continue
            if c <= 0:
                c = as_type(0, start)
            lo = int(c)
            if lo >= size - 1:
                lo = size - 1
                hi = lo
                c = as_type(lo, start)
            else:
                hi = lo + 1
            low[j] = lo
            high[j] = hi
            lw[j] = c - as_type(lo, start)
            hw[j] = one - lw[j]
    return ok, low, high, lw, hw


@njit(cache=True)
def _align_box(roi, scale, ph_n, pw_n, sampling_ratio, aligned):
    """Box start, bin size and grid of one ROI: torchvision's expressions, in its order."""
    offset = as_type(0.5 if aligned else 0.0, scale)
    start_w = roi[1] * scale - offset
    start_h = roi[2] * scale - offset
    end_w = roi[3] * scale - offset
    end_h = roi[4] * scale - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:  # legacy: malformed boxes are forced to 1x1
        roi_w = max(roi_w, as_type(1, scale))
        roi_h = max(roi_h, as_type(1, scale))
    bin_h = roi_h / as_type(ph_n, scale)
    bin_w = roi_w / as_type(pw_n, scale)
    if sampling_ratio > 0:
        grid_h = sampling_ratio
        grid_w = sampling_ratio
    else:  # ceil(roi_height / pooled_height): the same quotient as the bin size
        grid_h = int(np.ceil(bin_h))
        grid_w = int(np.ceil(bin_w))
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w


@njit(cache=True)
def _align_forward_roi(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out):
    """Every output of ROI ``k``: torchvision's forward loop for one ROI."""
    height, width, c_n = x.shape[1], x.shape[2], x.shape[3]
    b = int(rois[k, 0])
    start_h, start_w, bin_h, bin_w, gh, gw = _align_box(rois[k], scale, ph_n, pw_n, sampling_ratio, aligned)
    count = as_type(max(gh * gw, 1), scale)
    gh = max(gh, 0)
    gw = max(gw, 0)
    y_ok, y_lo, y_hi, ly, hy = _align_axis(start_h, bin_h, gh, ph_n, height, rois)
    x_ok, x_lo, x_hi, lx, hx = _align_axis(start_w, bin_w, gw, pw_n, width, rois)
    rows = x.reshape((-1, c_n))  # [N*H*W, C]: plain row indices, no array views per sample
    base = b * height
    tile = np.empty((ph_n * pw_n, c_n), x.dtype)  # this ROI's sums, channels last
    zero = as_type(0, scale)
    for ph in range(ph_n):
        for pw in range(pw_n):
            acc = tile[ph * pw_n + pw]
            acc[:] = zero
            for iy in range(gh):
                j = ph * gh + iy
                for ix in range(gw):
                    i = pw * gw + ix
                    if y_ok[j] and x_ok[i]:
                        w1 = hy[j] * hx[i]
                        w2 = hy[j] * lx[i]
                        w3 = ly[j] * hx[i]
                        w4 = ly[j] * lx[i]
                        p1 = (base + y_lo[j]) * width + x_lo[i]
                        p2 = (base + y_lo[j]) * width + x_hi[i]
                        p3 = (base + y_hi[j]) * width + x_lo[i]
                        p4 = (base + y_hi[j]) * width + x_hi[i]
                    else:  # torchvision still adds 0 * input[0] (NaN if that is inf or NaN)
                        w1 = w2 = w3 = w4 = zero
                        p1 = p2 = p3 = p4 = base * width
                    for c in range(c_n):
                        acc[c] += w1 * rows[p1, c] + w2 * rows[p2, c] + w3 * rows[p3, c] + w4 * rows[p4, c]
    # Written channels first in one pass: out[k] is contiguous, and a bin at a time would write
    # C numbers PH*PW apart.
    for c in range(c_n):
        for ph in range(ph_n):
            for pw in range(pw_n):
                out[k, c, ph, pw] = tile[ph * pw_n + pw, c] / count


@njit(parallel=True, cache=True)
def roi_align_forward(x, rois, scale, ph_n, pw_n, sampling_ratio, aligned, out):
    """``out[K, C, PH, PW]`` from ``x[N, H, W, C]``: torchvision's forward, ROIs in parallel."""
    for k in prange(rois.shape[0]):
        _align_forward_roi(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out)


@njit(cache=True)
def _align_backward_block(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, c0, image, height, width, rows):
    """Channels ``c0 .. c0 + GRAD_BLOCK`` of image ``image`` of torchvision's backward, added
    into ``rows[N*H*W, GRAD_BLOCK]``: its ROIs, their bins and samples in torchvision's order."""
    n = GRAD_BLOCK  # a constant: the compiler vectorises these short loops without a remainder
    t1 = np.empty(n, grad.dtype)
    t2 = np.empty(n, grad.dtype)
    t3 = np.empty(n, grad.dtype)
    t4 = np.empty(n, grad.dtype)
    for k in range(rois.shape[0]):
        if int(rois[k, 0]) != image:
            continue
        base = image * height
        start_h, start_w, bin_h, bin_w, gh, gw = _align_box(rois[k], scale, ph_n, pw_n, sampling_ratio, aligned)
        if gh <= 0 or gw <= 0:
            continue
        count = as_type(gh * gw, scale)
        # Dividing by a power of two is multiplying by its inverse, bit for bit (the same real
        # number, rounded once either way), and several times cheaper.
        pow2 = (gh * gw) & (gh * gw - 1) == 0
        inverse = as_type(1, scale) / count
        y_ok, y_lo, y_hi, ly, hy = _align_axis(start_h, bin_h, gh, ph_n, height, rois)
        x_ok, x_lo, x_hi, lx, hx = _align_axis(start_w, bin_w, gw, pw_n, width, rois)
        for ph in range(ph_n):
            for pw in range(pw_n):
                g = grad[k, ph, pw, c0 : c0 + GRAD_BLOCK]
                for iy in range(gh):
                    j = ph * gh + iy
                    if not y_ok[j]:
                        continue
                    for ix in range(gw):
                        i = pw * gw + ix
                        if not x_ok[i]:
                            continue
                        w1 = hy[j] * hx[i]
                        w2 = hy[j] * lx[i]
                        w3 = ly[j] * hx[i]
                        w4 = ly[j] * lx[i]
                        # torchvision's terms grad * w / count first, then four plain additions:
                        # each loop touches two arrays, so it vectorises (four rows that may be
                        # one row, at the border, need more overlap checks than the compiler makes).
                        if pow2:
                            for c in range(n):
                                t1[c] = g[c] * w1 * inverse
                                t2[c] = g[c] * w2 * inverse
                                t3[c] = g[c] * w3 * inverse
                                t4[c] = g[c] * w4 * inverse
                        else:
                            for c in range(n):
                                t1[c] = g[c] * w1 / count
                                t2[c] = g[c] * w2 / count
                                t3[c] = g[c] * w3 / count
                                t4[c] = g[c] * w4 / count
                        p = (base + y_lo[j]) * width + x_lo[i]
                        for c in range(n):
                            rows[p, c] += t1[c]
                        p = (base + y_lo[j]) * width + x_hi[i]
                        for c in range(n):
                            rows[p, c] += t2[c]
                        p = (base + y_hi[j]) * width + x_lo[i]
                        for c in range(n):
                            rows[p, c] += t3[c]
                        p = (base + y_hi[j]) * width + x_hi[i]
                        for c in range(n):
                            rows[p, c] += t4[c]


@njit(parallel=True, cache=True)
def roi_align_backward(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, n_n, height, width, grad_in):
    """Add ``grad[K, PH, PW, C]`` into ``grad_in[C / B, N*H*W, B]`` (zeros; ``B = GRAD_BLOCK``
    channels per block, ``C`` padded to a multiple of it): torchvision's backward.

    Each (channel block, image) pair runs in parallel with the others, on its own contiguous
    part of ``grad_in`` (435 KB for the benchmark's detector head, which stays in the L2
    cache); inside one, ROIs, bins and samples go in torchvision's order, so every cell
    receives its terms in that order.
    """
    for unit in prange(grad_in.shape[0] * n_n):
        blk = unit // n_n
        _align_backward_block(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, blk * GRAD_BLOCK, unit % n_n,
                              height, width, grad_in[blk])


@njit(cache=True)
def _round_half_away(v):
    """C's ``round``: to the nearest integer, halves away from zero (exact)."""
    whole = np.trunc(v)
    if abs(v - whole) >= 0.5:
        whole += np.sign(v)
    return int(whole)


@njit(cache=True)
def _pool_forward_roi(x, rois, k, scale, ph_n, pw_n, out, argmax):
    """``out`` and ``argmax`` ``[K, C, PH, PW]`` from ``x[N, H, W, C]``: torchvision's forward.

    ``argmax`` is the cell ``h * W + w`` of the first maximum (strict ``>`` in row-major
    order, from ``-FLT_MAX``), or -1 when nothing beat the start value or the bin is empty.
    An empty ``argmax`` (``argmax.size == 0``) is not written: no gradient will be needed.
    """
    height, width, c_n = x.shape[1], x.shape[2], x.shape[3]
    b = int(rois[k, 0])
    start_w = _round_half_away(rois[k, 1] * scale)
    start_h = _round_half_away(rois[k, 2] * scale)
    end_w = _round_half_away(rois[k, 3] * scale)
    end_h = _round_half_away(rois[k, 4] * scale)
    roi_w = max(end_w - start_w + 1, 1)  # malformed boxes are forced to 1x1
    roi_h = max(end_h - start_h + 1, 1)
    bin_h = as_type(roi_h, scale) / as_type(ph_n, scale)
    bin_w = as_type(roi_w, scale) / as_type(pw_n, scale)
    rows = x.reshape((-1, c_n))  # [N*H*W, C]
    base = b * height
    best_tile = np.empty((ph_n * pw_n, c_n), x.dtype)  # this ROI's results, channels last
    arg_tile = np.empty((ph_n * pw_n, c_n), np.int32)
    for ph in range(ph_n):
        hstart = int(np.floor(as_type(ph, scale) * bin_h))
        hend = int(np.ceil(as_type(ph + 1, scale) * bin_h))
        hstart = min(max(hstart + start_h, 0), height)
        hend = min(max(hend + start_h, 0), height)
        for pw in range(pw_n):
            wstart = int(np.floor(as_type(pw, scale) * bin_w))
            wend = int(np.ceil(as_type(pw + 1, scale) * bin_w))
            wstart = min(max(wstart + start_w, 0), width)
            wend = min(max(wend + start_w, 0), width)
            empty = hend <= hstart or wend <= wstart
            best = best_tile[ph * pw_n + pw]
            arg = arg_tile[ph * pw_n + pw]
            best[:] = as_type(0 if empty else -_FLT_MAX, scale)
            arg[:] = -1
            for h in range(hstart, hend):
                for w in range(wstart, wend):
                    p = (base + h) * width + w
                    cell = np.int32(h * width + w)
                    for c in range(c_n):  # as selects of loaded values, which vectorise
                        v = rows[p, c]
                        old = best[c]
                        old_arg = arg[c]
                        win = v > old
                        best[c] = v if win else old
                        arg[c] = cell if win else old_arg
    # Written channels first in one pass (out[k] is contiguous).
    for c in range(c_n):
        for ph in range(ph_n):
            for pw in range(pw_n):
                out[k, c, ph, pw] = best_tile[ph * pw_n + pw, c]
    if argmax.size:
        for c in range(c_n):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    argmax[k, c, ph, pw] = arg_tile[ph * pw_n + pw, c]


@njit(parallel=True, cache=True)
def roi_pool_forward(x, rois, scale, ph_n, pw_n, out, argmax):
    """``out`` and ``argmax`` ``[K, C, PH, PW]`` from ``x[N, H, W, C]``: torchvision's forward,
    ROIs in parallel. ``argmax`` is the cell ``h * W + w`` of the first maximum (strict ``>``
    in row-major order, from ``-FLT_MAX``), or -1 when nothing beat the start value or the bin
    is empty; an empty ``argmax`` is skipped (a forward without gradient)."""
    for k in prange(rois.shape[0]):
        _pool_forward_roi(x, rois, k, scale, ph_n, pw_n, out, argmax)


@njit(parallel=True, cache=True)
def roi_pool_backward(grad, argmax, batch, grad_in):
    """Add ``grad[K, C, P]`` into ``grad_in[N, C, H*W]`` (zeros) at ``argmax[K, C, P]``.

    Channels run in parallel; inside one, ROIs and bins go in torchvision's order.
    """
    for c in prange(grad.shape[1]):
        _pool_backward_channel(grad, argmax, batch, grad_in, c)


@njit(cache=True)
def _pool_backward_channel(grad, argmax, batch, grad_in, c):
    """Channel ``c`` of :func:`roi_pool_backward`: ROIs and bins in torchvision's order."""
    for k in range(grad.shape[0]):
        plane = grad_in[batch[k], c]
        for p in range(grad.shape[2]):
            a = argmax[k, c, p]
            if a != -1:
                plane[a] += grad[k, c, p]


@njit(parallel=True, cache=True)
def _to_channels_last(x, out):
    """``out[N, H, W, C] = x[N, C, H, W]``, rows of the map in parallel."""
    n_n, c_n, height, width = x.shape
    for i in prange(n_n * height):
        b = i // height
        y = i % height
        for w in range(width):
            for c in range(c_n):
                out[b, y, w, c] = x[b, c, y, w]


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """:func:`roiviz.ops._common.channels_last` for the kernels: the same contiguous
    ``[N, H, W, C]`` in the compute dtype, made by numba's threads when the input is a
    contiguous float32 or float64 map, and a view (no copy) when it is already channels last
    in memory (``memory_format=torch.channels_last``). The kernels only read it.

    Why not torch's ``copy_``: torch's OpenMP threads keep spinning for a while after their
    parallel region and steal the cores from the numba kernel that follows (measured on a
    2-core VM: a W1 roi_align forward took 3-9 ms longer).
    """
    from ._common import channels_last as torch_channels_last

    if input.dtype not in (torch.float32, torch.float64) or input.numel() == 0:
        return torch_channels_last(input)
    if input.is_contiguous(memory_format=torch.channels_last):  # already [N, H, W, C] in memory
        return input.detach().permute(0, 2, 3, 1).contiguous()
    if not input.is_contiguous():
        return torch_channels_last(input)
    n_n, c_n, height, width = input.shape
    out = torch.empty((n_n, height, width, c_n), dtype=input.dtype)
    launch(_to_channels_last, input.detach().numpy(), out.numpy(), work=input.numel())
    return out


# ------------------------------------------------------------------ serial twins, and launching
# The same loops on the calling thread: each parallel kernel above has a twin that runs its
# units in order (the same units, so the same results bit for bit).


@njit(cache=True)
def _roi_align_forward_serial(x, rois, scale, ph_n, pw_n, sampling_ratio, aligned, out):
    for k in range(rois.shape[0]):
        _align_forward_roi(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out)


@njit(cache=True)
def _roi_align_backward_serial(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, n_n, height, width, grad_in):
    for unit in range(grad_in.shape[0] * n_n):
        blk = unit // n_n
        _align_backward_block(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, blk * GRAD_BLOCK, unit % n_n,
                              height, width, grad_in[blk])


@njit(cache=True)
def _roi_pool_forward_serial(x, rois, scale, ph_n, pw_n, out, argmax):
    for k in range(rois.shape[0]):
        _pool_forward_roi(x, rois, k, scale, ph_n, pw_n, out, argmax)


@njit(cache=True)
def _roi_pool_backward_serial(grad, argmax, batch, grad_in):
    for c in range(grad.shape[1]):
        _pool_backward_channel(grad, argmax, batch, grad_in, c)


@njit(cache=True)
def _to_channels_last_serial(x, out):
    n_n, c_n, height, width = x.shape
    for b in range(n_n):
        for y in range(height):
            for w in range(width):
                for c in range(c_n):
                    out[b, y, w, c] = x[b, c, y, w]


_SERIAL = {
    roi_align_forward: _roi_align_forward_serial,
    roi_align_backward: _roi_align_backward_serial,
    roi_pool_forward: _roi_pool_forward_serial,
    roi_pool_backward: _roi_pool_backward_serial,
    _to_channels_last: _to_channels_last_serial,
}

#: Below this many elements of work (outputs, or input cells) a kernel runs on the calling
#: thread: waking numba's workqueue threads costs about 0.1 ms, more than a whole small call.
SERIAL_BELOW = 1 << 15


def launch(kernel, *args, work: int | None = None) -> None:
    """Run a compiled kernel: on the calling thread when ``work`` is below
    :data:`SERIAL_BELOW` or torch runs one thread (its serial twin), else in parallel with
    torch's intra-op thread count, one caller at a time."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    serial = _SERIAL.get(kernel)
    if serial is not None and (threads == 1 or (work is not None and work < SERIAL_BELOW)):
        serial(*args)
        return
    with _LOCK:
        numba.set_num_threads(threads)
        kernel(*args)
