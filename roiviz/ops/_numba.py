"""The CPU kernels of roi_align and roi_pool: torchvision's loops, compiled by numba.

Each kernel is the loop nest of torchvision's C++ kernel (``roi_align_kernel.cpp``,
``roi_pool_kernel.cpp``) with the same float operations in the same order for every output
element, so that float32 and float64 results, forward and backward, are torchvision's bit for
bit. Four things differ, none of which changes a number:

- the input is read channels last, so that the innermost loop runs over contiguous channels
  (the sample positions and weights are shared by every channel): a forward reads either a
  channels-last copy of the whole map (``[N, H, W, C]``) or, where the ROIs cover the map about
  once, a copy of each ROI's cells made just before its samples read them; a map of a few
  channels (an RGB picture) is read as it is, a channel plane at a time, like torchvision
  (:func:`forward_input`);
- the forward runs ROIs in parallel (each ROI writes only its own outputs);
- the backward runs blocks of channels in parallel and, inside a block, ROIs in order, so the
  terms added into an input cell arrive in torchvision's order: no atomics, deterministic;
- a division by a power of two (roi_align's sample count, forward and backward) is a
  multiplication by its inverse: the same real number, rounded once either way.

Each kernel computes a range ``[lo, hi)`` of independent units (ROIs, channel blocks, rows)
and releases the GIL (``nogil``); :func:`launch` runs the ranges on as many Python threads as
torch uses. Why not numba's ``parallel=True``: every ``prange`` kernel compiles for 1-2 s on
first use, twice over with the serial twin that small calls need, and its thread pool cannot
be entered by two threads at once nor used in a forked child (a DataLoader worker) after the
parent used it. Threads started per call keep nothing between calls.

Every arithmetic operation is done in the tensor's type ``T`` (float32 or float64): a Python
int or float constant would promote float32 arithmetic to float64 in numba, so each constant
goes through :func:`as_type` first. Half types are computed in float32 by the callers.

The kernels are compiled on first use and cached on disk (``cache=True``): next to this file
when it is writable, else in numba's per-user cache (or ``NUMBA_CACHE_DIR``). They use numba's
``error_model="numpy"``: a division by zero gives inf or NaN, as in the C++, instead of raising
(Python's model), and the zero checks it drops let more loops vectorise (roi_pool's forward
kernel ran 5-8 % faster in an A/B).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..boxes import compute_dtype

__all__ = ["blocks_to_nchw", "channels_last", "compile_kernels", "empty", "forward_input", "launch", "pool_grad_block", "roi_align_backward", "roi_align_forward", "roi_pool_backward", "roi_pool_forward"]

_FLT_MAX = 3.4028234663852886e38  # C's FLT_MAX: roi_pool's start value, in every dtype
#: Channels per block of the roi_align backward (blocks run in parallel). A compile-time
#: constant, so that the innermost loops are vectorised whole; 64 float32 are 4 cache lines.
GRAD_BLOCK = 64
#: Padding of a forward's scratch tile ``[PH*PW, C + TILE_PAD]`` (one ROI's results, channels
#: last), in elements. The results are written out channels first, reading the tile down its
#: columns (8 rows at a time, :func:`_write_channels_first`). Rows of 256 float32 are 1 KiB
#: apart, and addresses 1 KiB apart share 4 of the L1 cache's 64 sets, so a column of 196 rows
#: evicts itself and every element comes from L2; 16 more elements per row spread a column over
#: all the sets (see docs/benchmarks.md).
TILE_PAD = 16
#: Below this many channels roi_pool's forward reads the map as it is, ``[N, C, H, W]``, one
#: channel plane at a time, each bin's maximum and argmax in registers (:data:`PLANES`): loops
#: over a few channels do not amortise a channels-last copy, nor vectors of maxima in memory,
#: each cell's update waiting on the last one's stores (an RGB picture, the notebooks' map, has 3).
POOL_PLANES_BELOW = 16
#: The same for roi_align's forward, which gains less: a channel at a time, each sample's four
#: weight products are made once per channel instead of once for all channels, and with many
#: samples (``sampling_ratio=-1`` on large boxes) that costs more than the copy from 6 channels.
ALIGN_PLANES_BELOW = 5
#: :func:`forward_input`'s ``region_rows`` for a map read as it is: no copy, no scratch array.
PLANES = -1


def as_type(value, like):  # pragma: no cover - only called in compiled code
    """``value`` converted to the type of the scalar ``like`` (C's ``static_cast<T>``)."""
    raise NotImplementedError


@overload(as_type)
def _as_type(value, like):
    target = like

    def impl(value, like):
        return target(value)

    return impl


@intrinsic
def _prefetch(typingctx, arr, at):
    """Ask for the cache line of ``arr.flat[at]`` to be brought to the L2 cache: a hint that
    changes no result (``llvm.prefetch``; a no-op where the CPU has no such instruction)."""
    if not (isinstance(at, types.Integer) and at.bitwidth == 64):
        return None
    sig = types.void(arr, at)

    def codegen(context, builder, signature, args):
        arr_v, at_v = args
        data = context.make_array(signature.args[0])(context, builder, arr_v).data
        address = builder.bitcast(builder.gep(data, [at_v]), cgutils.voidptr_t)
        i32 = ir.IntType(32)
        # The name carries the pointer type as the IR layer spells it (p0i8, or p0 where
        # pointers are opaque), as numba's own llvm.memcpy does.
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
                                            "llvm.prefetch." + address.type.intrinsic_name)
        # read (0), locality 2 (kept in L2 and L3, not forced into L1), data cache (1)
        builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


_SHUFFLES = {  # step: (first, second) halves of each pair, for 8-element vectors a and b (b = 8..15)
    4: ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]),
    2: ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]),
    1: ([0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15]),
}


@intrinsic
def _transpose8(typingctx, src, src_at, src_row, dst, dst_at, dst_row):
    """Write the 8x8 block of ``src`` (flat) whose element ``(i, j)`` is
    ``src[src_at + i * src_row + j]`` to ``dst[dst_at + j * dst_row + i]``: eight vector loads,
    24 shuffles, eight vector stores (a loop of single elements cannot be vectorised: its loads
    are a column). The caller keeps the block inside both arrays; nothing is checked here.
    """
    if not all(isinstance(t, types.Integer) and t.bitwidth == 64 for t in (src_at, src_row, dst_at, dst_row)):
        return None  # the offsets are used as 64-bit integers below
    sig = types.void(src, src_at, src_row, dst, dst_at, dst_row)

    def codegen(context, builder, signature, args):
        src_v, src_at_v, src_row_v, dst_v, dst_at_v, dst_row_v = args
        src_data = context.make_array(signature.args[0])(context, builder, src_v).data
        dst_data = context.make_array(signature.args[3])(context, builder, dst_v).data
        element = context.get_data_type(signature.args[0].dtype)
        align = signature.args[0].dtype.bitwidth // 8
        vector = ir.VectorType(element, 8)
        i32, i64 = ir.IntType(32), ir.IntType(64)

        def address(data, at, row, i):
            offset = builder.add(at, builder.mul(row, ir.Constant(i64, i)))
            return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

        rows = [builder.load(address(src_data, src_at_v, src_row_v, i), align=align) for i in range(8)]
        # Swap the off-diagonal 4x4 blocks, then 2x2 blocks inside them, then single elements.
        for step in (4, 2, 1):
            first, second = (ir.Constant(ir.VectorType(i32, 8), [ir.Constant(i32, m) for m in mask])
                             for mask in _SHUFFLES[step])
            for i in range(8):
                if not i & step:
                    a, b = rows[i], rows[i + step]
                    rows[i] = builder.shuffle_vector(a, b, first)
                    rows[i + step] = builder.shuffle_vector(a, b, second)
        for i in range(8):
            builder.store(rows[i], address(dst_data, dst_at_v, dst_row_v, i), align=align)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, error_model="numpy")
def _transpose(src, s0, s_row, dst, d0, d_row, rows, cols):
    """``dst[d0 + j * d_row + i] = src[s0 + i * s_row + j]`` for ``i < rows``, ``j < cols`` (flat
    arrays): a ``rows x cols`` block of ``src`` written transposed into ``dst``.

    Types of 4 bytes or less go in 8x8 blocks (:func:`_transpose8`), down ``dst``'s rows in the
    outer loop, the last columns of 8 or more in a block that overlaps the one before (it
    writes some elements twice, the same values); the rest and the edges one element at a time
    (8x8 float64 blocks were slower than single elements).

    Examples
    --------
    >>> src = np.arange(9 * 20, dtype=np.float32)  # 9 rows of 20
    >>> dst = np.empty(17 * 9, np.float32)
    >>> _transpose(src, 0, 20, dst, 0, 9, 9, 17)
    >>> bool((dst.reshape(17, 9) == src.reshape(9, 20)[:, :17].T).all())
    True
    """
    j8 = cols - cols % 8 if src.itemsize <= 4 else 0
    i8 = rows - rows % 8
    for j0 in range(0, j8, 8):
        for i0 in range(0, i8, 8):
            _transpose8(src, s0 + i0 * s_row + j0, s_row, dst, d0 + j0 * d_row + i0, d_row)
        for j in range(j0, j0 + 8):
            for i in range(i8, rows):
                dst[d0 + j * d_row + i] = src[s0 + i * s_row + j]
    if 8 <= j8 < cols:
        j0 = cols - 8
        for i0 in range(0, i8, 8):
            _transpose8(src, s0 + i0 * s_row + j0, s_row, dst, d0 + j0 * d_row + i0, d_row)
        for j in range(j8, cols):
            for i in range(i8, rows):
                dst[d0 + j * d_row + i] = src[s0 + i * s_row + j]
        return
    for j in range(j8, cols):
        for i in range(rows):
            dst[d0 + j * d_row + i] = src[s0 + i * s_row + j]


@njit(cache=True, error_model="numpy")
def _write_channels_first(tile, out):
    """``out[C, PH, PW]`` (contiguous) from ``tile[PH*PW, C + TILE_PAD]``: one ROI's results,
    turned from channels last to channels first (:func:`_transpose`)."""
    cells = out.shape[1] * out.shape[2]
    _transpose(tile.reshape(-1), 0, tile.shape[1], out.reshape(-1), 0, cells, cells, out.shape[0])


@njit(cache=True, error_model="numpy")
def _read_region(x, b, y0, rh, x0, rw, region):
    """Cells ``(y0 .. y0 + rh) x (x0 .. x0 + rw)`` of image ``b`` of ``x[N, C, H, W]``, channels
    last: ``region[(y - y0) * rw + x - x0, c] = x[b, c, y, x]``, and ``region[rh * rw, c] =
    x[b, c, 0, 0]`` (what a roi_align sample outside the map reads). Returns ``region``, or a
    larger array of the same row length when it has fewer than ``rh * rw + 1`` rows."""
    c_n, height, width = x.shape[1], x.shape[2], x.shape[3]
    if region.shape[0] < rh * rw + 1:
        region = np.empty((rh * rw + 1, region.shape[1]), region.dtype)
    src = x.reshape(-1)
    dst = region.reshape(-1)
    row = region.shape[1]
    plane = height * width
    for y in range(rh):  # the [C, rw] slice of map row y0 + y, turned into rw rows of C
        if y + 1 < rh and rw > 0:
            # The next row's C runs lie a channel plane apart from each other: too far for the
            # hardware prefetchers, which follow a stream inside a page; asking for them now
            # overlaps their latency with this row's turn.
            at = (b * c_n * height + y0 + y + 1) * width + x0
            for c in range(c_n):
                _prefetch(src, at + c * plane)
                _prefetch(src, at + c * plane + rw - 1)
        _transpose(src, (b * c_n * height + y0 + y) * width + x0, plane, dst, y * rw * row, row, c_n, rw)
    _transpose(src, b * c_n * plane, plane, dst, rh * rw * row, row, c_n, 1)
    return region


@njit(cache=True, error_model="numpy")
def _widen(start, n, size):
    """``(start, n)`` of a run of cells inside ``0 .. size``, grown to 8 cells where it is shorter
    and the map is that wide (moved left if needed), so that :func:`_read_region` moves whole
    8x8 blocks (:func:`_transpose` ends a longer run with a block overlapping the one before).

    Examples
    --------
    >>> _widen(5, 3, 68), _widen(65, 3, 68), _widen(2, 13, 68), _widen(0, 3, 5)
    ((5, 8), (60, 8), (2, 13), (0, 3))
    """
    if n == 0 or n >= 8 or size < 8:
        return start, n
    return min(start, size - 8), 8


@njit(cache=True, error_model="numpy")
def _sample_span(ok, low, high):
    """``(first, n)``: the cells from the lowest ``low`` to the highest ``high`` of the samples
    that are inside the map (``n = 0`` when none is)."""
    first = -1
    last = -1
    for j in range(ok.size):
        if ok[j]:
            first = low[j] if first < 0 else min(first, low[j])
            last = max(last, high[j])
    if first < 0:
        return 0, 0
    return first, last - first + 1


@njit(cache=True, error_model="numpy")
def _map_shape(x, regional):
    """``(C, H, W)`` of a forward's map: ``x[N, C, H, W]`` itself when ``regional``, else its
    channels-last copy ``x[N, H, W, C]`` (see :func:`forward_input`)."""
    if regional:
        return x.shape[1], x.shape[2], x.shape[3]
    return x.shape[3], x.shape[1], x.shape[2]


@njit(cache=True, error_model="numpy")
def _cell_rows(x, b, y0, rh, x0, rw, region):
    """Where a forward kernel reads the cells of image ``b``: ``(rows, oy, stride, ox, outside,
    region)``, with cell ``(y, x)`` of the map at row ``(y + oy) * stride + x + ox`` of
    ``rows[:, C]`` (plain row indices, no array views per sample) and cell ``(0, 0)`` at row
    ``outside`` (what a roi_align sample outside the map reads).

    With a scratch array (``region`` of one row or more), ``x`` is the map ``[N, C, H, W]`` and
    ``rows`` is ``region``, holding cells ``y0 .. y0 + rh`` x ``x0 .. x0 + rw`` channels last
    (:func:`_read_region`; ``region`` is returned, grown if it was too small). Without,
    ``x`` is the channels-last copy ``[N, H, W, C]`` and ``rows`` all of it.
    """
    if region.shape[0] > 0:
        region = _read_region(x, b, y0, rh, x0, rw, region)
        return region, -y0, rw, -x0, rh * rw, region
    c_n, height, width = _map_shape(x, False)
    return x.reshape((-1, c_n)), b * height, width, 0, b * height * width, region


@njit(cache=True, nogil=True, error_model="numpy")
def region_cells(rois, scale, height, width):
    """``(total, largest)``: the cells a forward reading each ROI's part of an ``height x width``
    map reads, summed over the ROIs and for the largest, estimated from the boxes (rows
    ``floor(y1 * scale) - 1 .. ceil(y2 * scale) + 1`` inside the map, columns likewise, rounded
    up to 8); a box with a coordinate that is not finite counts as the whole map.

    Examples
    --------
    >>> region_cells(np.array([[0, 8.0, 8.0, 24.0, 16.0]]), 0.5, 50, 68)
    (112, 112)
    """
    total = 0
    largest = 0
    for k in range(rois.shape[0]):
        y1 = rois[k, 2] * scale
        y2 = rois[k, 4] * scale
        x1 = rois[k, 1] * scale
        x2 = rois[k, 3] * scale
        if np.isfinite(y1) and np.isfinite(y2) and np.isfinite(x1) and np.isfinite(x2):
            y_lo = min(max(np.floor(y1) - 1, 0), height - 1)
            y_hi = min(max(np.ceil(y2) + 1, 0), height - 1)
            x_lo = min(max(np.floor(x1) - 1, 0), width - 1)
            x_hi = min(max(np.ceil(x2) + 1, 0), width - 1)
            rows = int(max(y_hi - y_lo + 1, 1))
            cols = min((int(max(x_hi - x_lo + 1, 1)) + 7) // 8 * 8, width)
            cells = rows * cols
        else:
            cells = height * width
        total += cells
        largest = max(largest, cells)
    return total, largest


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
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


@njit(cache=True, error_model="numpy")
def _align_samples(rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, height, width):
    """A forward's samples of ROI ``k``: ``(count, gh, gw, y_axis, x_axis)``, the divisor of
    each bin's sum (torchvision's ``max(grid_h * grid_w, 1)``), the grid (0 where the adaptive
    grid is negative) and :func:`_align_axis` of each axis."""
    start_h, start_w, bin_h, bin_w, gh, gw = _align_box(rois[k], scale, ph_n, pw_n, sampling_ratio, aligned)
    count = as_type(max(gh * gw, 1), scale)
    gh = max(gh, 0)
    gw = max(gw, 0)
    y_axis = _align_axis(start_h, bin_h, gh, ph_n, height, rois)
    x_axis = _align_axis(start_w, bin_w, gw, pw_n, width, rois)
    return count, gh, gw, y_axis, x_axis


@njit(cache=True, error_model="numpy")
def _align_forward_roi(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out, tile, region):
    """Every output of ROI ``k``: torchvision's forward loop for one ROI, its sums kept in
    ``tile[PH*PW, C + TILE_PAD]`` (channels last) until they are written.

    ``x`` is the channels-last map ``[N, H, W, C]`` when ``region`` has no rows, else the map
    itself ``[N, C, H, W]``, whose cells this ROI reads are first copied channels last into
    ``region`` (:func:`_cell_rows`). Returns ``region`` (grown if it was too small)."""
    regional = region.shape[0] > 0
    c_n, height, width = _map_shape(x, regional)
    b = int(rois[k, 0])
    count, gh, gw, y_axis, x_axis = _align_samples(rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, height, width)
    y_ok, y_lo, y_hi, ly, hy = y_axis
    x_ok, x_lo, x_hi, lx, hx = x_axis
    y0, rh, x0, rw = 0, 0, 0, 0
    if regional:
        y0, rh = _sample_span(y_ok, y_lo, y_hi)
        x0, rw = _sample_span(x_ok, x_lo, x_hi)
        x0, rw = _widen(x0, rw, width)
    rows, oy, stride, ox, outside, region = _cell_rows(x, b, y0, rh, x0, rw, region)
    zero = as_type(0, scale)
    n = gh * gw
    # A division by a power of two is a multiplication by its inverse, bit for bit (the same
    # real number, rounded once either way), and several times cheaper.
    inverse = as_type(1, scale) / count
    by_inverse = n > 0 and n & (n - 1) == 0
    for ph in range(ph_n):
        for pw in range(pw_n):
            acc = tile[ph * pw_n + pw]
            if n == 0:  # torchvision: 0 / count
                for c in range(c_n):
                    acc[c] = zero / count
                continue
            # torchvision's ``sum = 0; sum += sample (each); sum /= count``, with the start and
            # the division done in the first and last sample's pass over the channels: one
            # pass per sample (a 1x1 grid, common with sampling_ratio=-1, makes one in all).
            s = 0
            for iy in range(gh):
                j = ph * gh + iy
                for ix in range(gw):
                    i = pw * gw + ix
                    if y_ok[j] and x_ok[i]:
                        w1 = hy[j] * hx[i]
                        w2 = hy[j] * lx[i]
                        w3 = ly[j] * hx[i]
                        w4 = ly[j] * lx[i]
                        p1 = (oy + y_lo[j]) * stride + ox + x_lo[i]
                        p2 = (oy + y_lo[j]) * stride + ox + x_hi[i]
                        p3 = (oy + y_hi[j]) * stride + ox + x_lo[i]
                        p4 = (oy + y_hi[j]) * stride + ox + x_hi[i]
                    else:  # torchvision still adds 0 * input[0] (NaN if that is inf or NaN)
                        w1 = w2 = w3 = w4 = zero
                        p1 = p2 = p3 = p4 = outside
                    first = s == 0  # the sum starts from 0, as torchvision's
                    s += 1
                    if s < n:
                        for c in range(c_n):
                            acc[c] = (zero if first else acc[c]) + (w1 * rows[p1, c] + w2 * rows[p2, c]
                                                                    + w3 * rows[p3, c] + w4 * rows[p4, c])
                    elif by_inverse:
                        for c in range(c_n):
                            acc[c] = ((zero if first else acc[c]) + (w1 * rows[p1, c] + w2 * rows[p2, c]
                                                                     + w3 * rows[p3, c] + w4 * rows[p4, c])) * inverse
                    else:
                        for c in range(c_n):
                            acc[c] = ((zero if first else acc[c]) + (w1 * rows[p1, c] + w2 * rows[p2, c]
                                                                     + w3 * rows[p3, c] + w4 * rows[p4, c])) / count
    # Written channels first in one pass: out[k] is contiguous, and a bin at a time would write
    # C numbers PH*PW apart.
    _write_channels_first(tile, out[k])
    return region


@njit(cache=True, error_model="numpy")
def _align_forward_planes(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out):
    """Every output of ROI ``k`` from the map as it is, ``x[N, C, H, W]``, a channel at a time
    (:data:`ALIGN_PLANES_BELOW`): the same float operations as :func:`_align_forward_roi`, in the same
    order, each output's sum in a register."""
    c_n, height, width = x.shape[1], x.shape[2], x.shape[3]
    b = int(rois[k, 0])
    count, gh, gw, y_axis, x_axis = _align_samples(rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, height, width)
    y_ok, y_lo, y_hi, ly, hy = y_axis
    x_ok, x_lo, x_hi, lx, hx = x_axis
    zero = as_type(0, scale)
    n = gh * gw
    inverse = as_type(1, scale) / count  # exact where n is a power of two (_align_forward_roi)
    by_inverse = n > 0 and n & (n - 1) == 0
    for c in range(c_n):
        plane = x[b, c]
        corner = plane[0, 0]  # what a sample outside the map reads, with weights 0
        dst = out[k, c]
        for ph in range(ph_n):
            for pw in range(pw_n):
                acc = zero
                for iy in range(gh):
                    j = ph * gh + iy
                    for ix in range(gw):
                        i = pw * gw + ix
                        if y_ok[j] and x_ok[i]:
                            acc += (hy[j] * hx[i] * plane[y_lo[j], x_lo[i]] + hy[j] * lx[i] * plane[y_lo[j], x_hi[i]]
                                    + ly[j] * hx[i] * plane[y_hi[j], x_lo[i]] + ly[j] * lx[i] * plane[y_hi[j], x_hi[i]])
                        else:
                            acc += zero * corner + zero * corner + zero * corner + zero * corner
                dst[ph, pw] = acc * inverse if by_inverse else acc / count


@njit(cache=True, nogil=True, error_model="numpy")
def roi_align_forward(x, rois, scale, ph_n, pw_n, sampling_ratio, aligned, region_rows, out, lo, hi):
    """``out[K, C, PH, PW]`` from ``x[N, H, W, C]``, or from ``x[N, C, H, W]`` read a ROI's cells at
    a time through a scratch array of ``region_rows`` cells when that is more than 0, or a
    channel plane at a time when it is :data:`PLANES` (see :func:`forward_input`):
    torchvision's forward for ROIs ``lo .. hi``."""
    if region_rows == PLANES:
        for k in range(lo, hi):
            _align_forward_planes(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out)
        return
    c_n = out.shape[1]
    tile = np.empty((ph_n * pw_n, c_n + TILE_PAD), x.dtype)  # one for the range: 200 KB for a 14x14 head
    region = np.empty((region_rows, c_n + TILE_PAD), x.dtype)
    for k in range(lo, hi):
        region = _align_forward_roi(x, rois, k, scale, ph_n, pw_n, sampling_ratio, aligned, out, tile, region)


@njit(cache=True, error_model="numpy")
def _align_backward_block(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, c0, image, height, width, rows):
    """Channels ``c0 .. c0 + GRAD_BLOCK`` of image ``image`` of torchvision's backward, added
    into ``rows[N*H*W, GRAD_BLOCK]``: its ROIs, their bins and samples in torchvision's order."""
    n = GRAD_BLOCK  # a constant: the compiler vectorises these short loops without a remainder
    c_n = grad.shape[1]
    t1 = np.empty(n, grad.dtype)
    t2 = np.empty(n, grad.dtype)
    t3 = np.empty(n, grad.dtype)
    t4 = np.empty(n, grad.dtype)
    # This ROI's gradient for the block, channels last: [PH*PW, B], channels past C zero. Its
    # source, grad[k, c0:c0 + B], is one contiguous run of the NCHW gradient.
    tile = np.zeros((ph_n * pw_n, n), grad.dtype)
    for k in range(rois.shape[0]):
        if int(rois[k, 0]) != image:
            continue
        base = image * height
        start_h, start_w, bin_h, bin_w, gh, gw = _align_box(rois[k], scale, ph_n, pw_n, sampling_ratio, aligned)
        if gh <= 0 or gw <= 0:
            continue
        for c in range(min(n, c_n - c0)):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    tile[ph * pw_n + pw, c] = grad[k, c0 + c, ph, pw]
        count = as_type(gh * gw, scale)
        # Dividing by a power of two is multiplying by its inverse, bit for bit (the same real
        # number, rounded once either way), and several times cheaper.
        pow2 = (gh * gw) & (gh * gw - 1) == 0
        inverse = as_type(1, scale) / count
        y_ok, y_lo, y_hi, ly, hy = _align_axis(start_h, bin_h, gh, ph_n, height, rois)
        x_ok, x_lo, x_hi, lx, hx = _align_axis(start_w, bin_w, gw, pw_n, width, rois)
        for ph in range(ph_n):
            for pw in range(pw_n):
                g = tile[ph * pw_n + pw]
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


@njit(cache=True, nogil=True, error_model="numpy")
def roi_align_backward(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, n_n, height, width, grad_in, lo, hi):
    """Add ``grad[K, C, PH, PW]`` into ``grad_in[C / B, N*H*W, B]`` (zeros; ``B = GRAD_BLOCK``
    channels per block, the last block padded): torchvision's backward.

    Units ``lo .. hi`` of ``C / B * N``: each (channel block, image) pair is a unit, which runs in
    parallel with the others on its own contiguous part of ``grad_in`` (435 KB for the benchmark's detector head, which stays in the L2
    cache); inside one, ROIs, bins and samples go in torchvision's order, so every cell
    receives its terms in that order.
    """
    for unit in range(lo, hi):
        blk = unit // n_n
        _align_backward_block(grad, rois, scale, ph_n, pw_n, sampling_ratio, aligned, blk * GRAD_BLOCK, unit % n_n,
                              height, width, grad_in[blk])


@njit(cache=True, error_model="numpy")
def _round_half_away(v):
    """C's ``round``: to the nearest integer, halves away from zero (exact)."""
    whole = np.trunc(v)
    if abs(v - whole) >= 0.5:
        whole += np.sign(v)
    return int(whole)


@njit(cache=True, error_model="numpy")
def _pool_bins(roi, scale, ph_n, pw_n, height, width):
    """``(hs, he, ws, we)``: the rows ``hs[ph] .. he[ph]`` and columns ``ws[pw] .. we[pw]`` of
    each bin of ``roi``, inside the map (torchvision's expressions, in its order)."""
    start_w = _round_half_away(roi[1] * scale)
    start_h = _round_half_away(roi[2] * scale)
    end_w = _round_half_away(roi[3] * scale)
    end_h = _round_half_away(roi[4] * scale)
    roi_w = max(end_w - start_w + 1, 1)  # malformed boxes are forced to 1x1
    roi_h = max(end_h - start_h + 1, 1)
    bin_h = as_type(roi_h, scale) / as_type(ph_n, scale)
    bin_w = as_type(roi_w, scale) / as_type(pw_n, scale)
    hs = np.empty(ph_n, np.int64)
    he = np.empty(ph_n, np.int64)
    for ph in range(ph_n):
        hs[ph] = min(max(int(np.floor(as_type(ph, scale) * bin_h)) + start_h, 0), height)
        he[ph] = min(max(int(np.ceil(as_type(ph + 1, scale) * bin_h)) + start_h, 0), height)
    ws = np.empty(pw_n, np.int64)
    we = np.empty(pw_n, np.int64)
    for pw in range(pw_n):
        ws[pw] = min(max(int(np.floor(as_type(pw, scale) * bin_w)) + start_w, 0), width)
        we[pw] = min(max(int(np.ceil(as_type(pw + 1, scale) * bin_w)) + start_w, 0), width)
    return hs, he, ws, we


@njit(cache=True, error_model="numpy")
def _pool_forward_planes(x, rois, k, scale, ph_n, pw_n, out, argmax):
    """``out`` and ``argmax`` of ROI ``k`` from the map as it is, ``x[N, C, H, W]``, a channel at
    a time (:data:`POOL_PLANES_BELOW`): the comparisons of :func:`_pool_forward_roi`, in the same
    order, each bin's maximum and argmax in registers."""
    c_n, height, width = x.shape[1], x.shape[2], x.shape[3]
    b = int(rois[k, 0])
    hs, he, ws, we = _pool_bins(rois[k], scale, ph_n, pw_n, height, width)
    track = argmax.size > 0
    for c in range(c_n):
        plane = x[b, c]
        for ph in range(ph_n):
            for pw in range(pw_n):
                empty = he[ph] <= hs[ph] or we[pw] <= ws[pw]
                top = as_type(0 if empty else -_FLT_MAX, scale)
                where = -1
                for h in range(hs[ph], he[ph]):
                    for w in range(ws[pw], we[pw]):
                        v = plane[h, w]
                        if v > top:  # strict: the first maximum in row-major order; NaN never wins
                            top = v
                            where = h * width + w
                out[k, c, ph, pw] = top
                if track:
                    argmax[k, c, ph, pw] = where


@njit(cache=True, error_model="numpy")
def _pool_forward_roi(x, rois, k, scale, ph_n, pw_n, out, argmax, best_tile, arg_tile, region):
    """``out`` and ``argmax`` ``[K, C, PH, PW]`` from ``x[N, H, W, C]`` (or ``x[N, C, H, W]`` read
    through ``region``, as in :func:`_align_forward_roi`): torchvision's forward. Returns ``region``.

    ``argmax`` is the cell ``h * W + w`` of the first maximum (strict ``>`` in row-major
    order, from ``-FLT_MAX``), or -1 when nothing beat the start value or the bin is empty.
    An empty ``argmax`` (``argmax.size == 0``) is not written: no gradient will be needed.
    """
    regional = region.shape[0] > 0
    c_n, height, width = _map_shape(x, regional)
    b = int(rois[k, 0])
    hs, he, ws, we = _pool_bins(rois[k], scale, ph_n, pw_n, height, width)
    y0, rh, x0, rw = 0, 0, 0, 0
    if regional:  # the bins' starts and ends grow with their index
        y0, rh = hs[0], max(he[ph_n - 1] - hs[0], 0)
        x0, rw = _widen(ws[0], max(we[pw_n - 1] - ws[0], 0), width)
    rows, oy, stride, ox, _, region = _cell_rows(x, b, y0, rh, x0, rw, region)
    track = argmax.size > 0
    for ph in range(ph_n):
        hstart, hend = hs[ph], he[ph]
        for pw in range(pw_n):
            wstart, wend = ws[pw], we[pw]
            empty = hend <= hstart or wend <= wstart
            best = best_tile[ph * pw_n + pw]
            arg = arg_tile[ph * pw_n + pw]
            start = as_type(0 if empty else -_FLT_MAX, scale)
            for c in range(c_n):
                best[c] = start
            if track:
                for c in range(c_n):
                    arg[c] = -1
            for h in range(hstart, hend):
                for w in range(wstart, wend):
                    p = (oy + h) * stride + ox + w
                    if not track:  # the same strict > (NaN never wins), without the argmax
                        for c in range(c_n):
                            v = rows[p, c]
                            old = best[c]
                            best[c] = v if v > old else old
                        continue
                    cell = as_type(h * width + w, arg[0])  # int16 or int32, as argmax
                    for c in range(c_n):  # as selects of loaded values, which vectorise
                        v = rows[p, c]
                        old = best[c]
                        old_arg = arg[c]
                        win = v > old
                        best[c] = v if win else old
                        arg[c] = cell if win else old_arg
    # Written channels first in one pass (out[k] is contiguous).
    _write_channels_first(best_tile, out[k])
    if track:
        _write_channels_first(arg_tile, argmax[k])
    return region


@njit(cache=True, nogil=True, error_model="numpy")
def roi_pool_forward(x, rois, scale, ph_n, pw_n, region_rows, out, argmax, lo, hi):
    """``out`` and ``argmax`` ``[K, C, PH, PW]`` from ``x[N, H, W, C]`` (or ``x[N, C, H, W]`` with
    ``region_rows``, or a plane at a time with :data:`PLANES`, as :func:`roi_align_forward`):
    torchvision's forward, for ROIs ``lo .. hi``. ``argmax`` is the cell ``h * W + w`` of the
    first maximum (strict ``>`` in row-major order, from ``-FLT_MAX``), or -1 when nothing beat
    the start value or the bin is empty; an empty ``argmax`` is skipped (a forward without
    gradient)."""
    if region_rows == PLANES:
        for k in range(lo, hi):
            _pool_forward_planes(x, rois, k, scale, ph_n, pw_n, out, argmax)
        return
    c_n = out.shape[1]
    best_tile = np.empty((ph_n * pw_n, c_n + TILE_PAD), x.dtype)  # one ROI's results, channels last
    arg_tile = np.empty((ph_n * pw_n, c_n + TILE_PAD), argmax.dtype)
    region = np.empty((region_rows, c_n + TILE_PAD), x.dtype)
    for k in range(lo, hi):
        region = _pool_forward_roi(x, rois, k, scale, ph_n, pw_n, out, argmax, best_tile, arg_tile, region)


@njit(cache=True, nogil=True, error_model="numpy")
def roi_pool_backward(grad, argmax, batch, grad_in, block, lo, hi):
    """Add ``grad[K, C, P]`` into ``grad_in[N, C, H*W]`` (zeros) at ``argmax[K, C, P]``, for
    blocks ``lo .. hi`` of ``block`` channels (see :func:`pool_grad_block`).

    Blocks run in parallel; inside one, ROIs, then channels, then bins go in order, so every
    cell receives its terms in torchvision's order (ROIs, then bins). A block reads
    ``block * P`` contiguous numbers of ``grad`` and ``argmax`` per ROI, where one channel at a
    time would read ``P`` (49 for a 7x7 head) and jump ``C * P``.
    """
    c_n = grad.shape[1]
    for unit in range(lo, hi):
        for k in range(grad.shape[0]):
            planes = grad_in[batch[k]]
            for c in range(unit * block, min((unit + 1) * block, c_n)):
                plane = planes[c]
                for p in range(grad.shape[2]):
                    a = argmax[k, c, p]
                    if a != -1:
                        plane[a] += grad[k, c, p]


def pool_grad_block(cells: int, itemsize: int) -> int:
    """Channels per block of :func:`roi_pool_backward`: as many input-gradient planes of
    ``cells`` elements as fit in 512 KiB (L2-resident while the block's ROIs add into them), 1 to 32.

    Examples
    --------
    >>> pool_grad_block(50 * 68, 4), pool_grad_block(100 * 136, 4), pool_grad_block(1000 * 1000, 4)
    (32, 9, 1)
    """
    return max(1, min(32, (1 << 19) // (cells * itemsize)))


@njit(cache=True, error_model="numpy")
def _channels_last_row(x, out, i):
    """Row ``i`` (image ``i // H``, row ``i % H``) of :func:`_to_channels_last`: a ``[C, W]``
    slice (rows ``H*W`` apart) turned into ``[W, C]`` (:func:`_transpose`)."""
    c_n, height, width = x.shape[1], x.shape[2], x.shape[3]
    b = i // height
    y = i % height
    _transpose(x.reshape(-1), (b * c_n * height + y) * width, height * width,  # from x[b, 0, y, 0]
               out.reshape(-1), (b * height + y) * width * c_n, c_n, c_n, width)  # to out[b, y, 0, 0]


@njit(cache=True, nogil=True, error_model="numpy")
def _to_channels_last(x, out, lo, hi):
    """``out[N, H, W, C] = x[N, C, H, W]`` for rows ``lo .. hi`` of ``N*H``."""
    for i in range(lo, hi):
        _channels_last_row(x, out, i)


@njit(cache=True, error_model="numpy")
def _blocks_to_nchw_unit(blocks, out, unit):
    """Channel block ``unit // N`` of image ``unit % N`` of :func:`_blocks_to_nchw`."""
    n_n, c_n, cells = out.shape
    block = blocks.shape[2]
    b = unit % n_n
    c0 = (unit // n_n) * block
    rows = blocks[unit // n_n]
    for j in range(cells):
        for c in range(min(block, c_n - c0)):
            out[b, c0 + c, j] = rows[b * cells + j, c]


@njit(cache=True, nogil=True, error_model="numpy")
def _blocks_to_nchw(blocks, out, lo, hi):
    """``out[N, C, H*W]`` from ``blocks[C / B, N*H*W, B]`` (the roi_align backward's layout), for
    units ``lo .. hi`` of ``C / B * N``."""
    for unit in range(lo, hi):
        _blocks_to_nchw_unit(blocks, out, unit)


#: numpy's dtypes of the tensors the kernels read and write.
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.int16: np.int16, torch.int32: np.int32}


def empty(shape: tuple[int, ...], dtype: torch.dtype, zero: bool = False) -> torch.Tensor:
    """A new CPU tensor of ``shape`` (zeros if ``zero``) in memory that numpy allocates.

    Why numpy's: on Linux, numpy asks the kernel for transparent huge pages for arrays of 4 MiB
    and more (its default; ``NUMPY_MADVISE_HUGEPAGE=0`` turns it off), and torch's allocator
    does not. Every output of an op is fresh memory, and the first write to fresh memory costs
    a page fault per page: 12,544 of them for a 49 MiB roi_align output in 4 KiB pages, more
    time than the kernel's arithmetic on a virtual machine; 25 in 2 MiB pages. Where the system
    gives no huge pages, nothing changes.

    The tensor owns the array (freed with its last reference) and behaves as any CPU tensor
    (autograd, pickling, shared memory, DataLoader workers), but for one thing: its storage
    cannot grow (``resize_`` to more elements raises ``RuntimeError``).

    Examples
    --------
    >>> t = empty((2, 3), torch.float32, zero=True)
    >>> t.dtype, t.shape, t.sum().item()
    (torch.float32, torch.Size([2, 3]), 0.0)
    """
    make = np.zeros if zero else np.empty
    return torch.from_numpy(make(shape, dtype=_NUMPY[dtype]))


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """:func:`roiviz.ops._common.channels_last` for the kernels: the same contiguous
    ``[N, H, W, C]`` in the compute dtype, made by numba's threads when the input is a
    contiguous float32 or float64 map, and a view (no copy) when it is already channels last
    in memory (``memory_format=torch.channels_last``). The kernels only read it.

    Why not torch's ``copy_``: torch's OpenMP threads keep spinning for a while after their
    parallel region and steal the cores from the numba kernel that follows (measured on a
    2-core VM: a W1 roi_align forward took 3-9 ms longer).

    Examples
    --------
    >>> x = torch.arange(6.).reshape(1, 3, 1, 2)
    >>> channels_last(x)[0, 0].tolist()
    [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    """
    from ._common import channels_last as torch_channels_last

    n_n, c_n, height, width = input.shape
    fast = input.dtype in (torch.float32, torch.float64) and input.is_contiguous() and input.numel() > 0
    if not fast:
        if input.dtype in (torch.float32, torch.float64) and input.is_contiguous(memory_format=torch.channels_last):
            return input.detach().permute(0, 2, 3, 1)  # already [N, H, W, C] in memory: no copy
        return torch_channels_last(input.detach())
    out = empty((n_n, height, width, c_n), input.dtype)
    launch(_to_channels_last, input.detach().numpy(), out.numpy(), units=n_n * height, work=input.numel())
    return out


#: A forward reads the map a ROI's cells at a time (:func:`forward_input`) when the cells its
#: ROIs cover add up to at most this many times the map's cells (estimated by
#: :func:`region_cells`; below the crossover of about 5 measured on W3's map by
#: ``benchmarks/region_vs_copy.py``, where the two ways are within 5 % of each other)...
REGION_RATIO = 4.0
#: ... and the largest ROI's cells, all channels, take at most this many bytes (they stay in
#: the L2 cache while the ROI's samples read them) ...
REGION_BYTES = 2 << 20
#: ... and the map takes at least this many bytes (a smaller one's copy stays in the cache, and
#: is then cheaper than copying cells that several ROIs share once per ROI).
REGION_MIN_BYTES = 4 << 20


def forward_input(input: torch.Tensor, rois: np.ndarray, scale: float, planes_below: int) -> tuple[np.ndarray, int]:
    """What a forward kernel reads: ``(x, region_rows)``.

    With fewer than ``planes_below`` channels (:data:`POOL_PLANES_BELOW`,
    :data:`ALIGN_PLANES_BELOW`), the map as it is, ``[N, C, H, W]`` (contiguous, in the compute
    dtype), read a channel plane at a time (``region_rows`` is :data:`PLANES`). Else either the
    map itself, where each ROI's kernel first copies the cells it reads, channels last, into a
    scratch array of ``region_rows`` cells (grown if a ROI needs more) that stays in the cache;
    or (``region_rows`` 0) a channels-last copy of the whole map, ``[N, H, W, C]``
    (:func:`channels_last`). The results are the same bit for bit; what differs is the memory
    moved. The copy writes the whole map once more and the kernels read it back: cheaper when
    the ROIs overlap a lot (a detector head's 1,000 boxes on a small map). Reading each ROI's
    cells from the map itself moves less when the ROIs cover the map a few times at most (a
    mask head's 100 boxes an image on a large map), and needs no map-sized allocation.
    Regional when the map is a contiguous float32 or float64 tensor of
    :data:`REGION_MIN_BYTES` or more and the estimate of :func:`region_cells` is within
    :data:`REGION_RATIO` of the map and :data:`REGION_BYTES` of scratch.
    """
    _, c_n, height, width = input.shape
    if c_n < planes_below:
        return input.detach().to(compute_dtype(input.dtype)).contiguous().numpy(), PLANES
    if (input.dtype in (torch.float32, torch.float64) and input.is_contiguous() and rois.shape[0]
            and input.numel() * input.element_size() >= REGION_MIN_BYTES):
        total, largest = region_cells(rois, float(scale), height, width)
        if total * c_n <= REGION_RATIO * input.numel() and largest * c_n * input.element_size() <= REGION_BYTES:
            return input.detach().numpy(), largest + 1  # and the row that samples outside the map read
    return channels_last(input).numpy(), 0


def blocks_to_nchw(blocks: torch.Tensor, n_n: int, c_n: int, height: int, width: int) -> torch.Tensor:
    """``[N, C, H, W]`` from the roi_align backward's ``[C / B, N*H*W, B]`` blocks."""
    out = empty((n_n, c_n, height * width), blocks.dtype)
    launch(_blocks_to_nchw, blocks.numpy(), out.numpy(), units=blocks.shape[0] * n_n, work=out.numel())
    return out.view(n_n, c_n, height, width)


# ------------------------------------------------------------------ launching

#: Below this many elements of work (outputs, or input cells) a kernel runs on the calling
#: thread alone: starting a thread costs tens of microseconds, more than a whole small call.
SERIAL_BELOW = 1 << 15


def launch(kernel, *args, units: int, work: int) -> None:
    """Run ``kernel(*args, lo, hi)`` over the units ``0 .. units`` (independent of each other).

    On the calling thread when ``work`` (elements written or read) is below
    :data:`SERIAL_BELOW` or torch runs one thread (``torch.get_num_threads()``); else on that
    many threads, started for this call and joined before it returns, which take ranges of
    about ``units / (4 * threads)`` units in turn (units differ in cost: a large box has more
    samples). The units are the same whichever thread computes them, so the result is too.
    """
    threads = min(torch.get_num_threads(), units)
    if threads <= 1 or work < SERIAL_BELOW:
        kernel(*args, 0, units)
        return
    n_ranges = min(units, 4 * threads)
    bounds = [units * i // n_ranges for i in range(n_ranges + 1)]
    ranges = iter(range(n_ranges))  # shared: next() is atomic under the GIL
    errors: list[BaseException] = []

    def work_through() -> None:
        try:
            for i in ranges:
                kernel(*args, bounds[i], bounds[i + 1])
        except BaseException as error:  # re-raised in the caller below
            errors.append(error)

    helpers = [threading.Thread(target=work_through, name="roiviz-kernel", daemon=True) for _ in range(threads - 1)]
    for helper in helpers:
        helper.start()
    work_through()
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ compiling ahead of time


def compile_kernels(dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)) -> float:
    """Compile every CPU kernel for ``dtypes`` now (or load it from the disk cache); the seconds taken.

    Runs ``roi_align`` (fixed and adaptive sampling), ``roi_pool`` and ``prroi_pool``, forward and
    backward, on tiny inputs: exactly the kernels and argument types that real calls use, so
    that a first call in a notebook only loads them. ``make lab`` and ``make test`` run it
    (``roiviz compile``) after installing.

    Examples
    --------
    >>> compile_kernels((torch.float32,)) >= 0.0
    True
    """
    import time

    from .. import prroi_pool, roi_align, roi_pool

    start = time.perf_counter()
    boxes = torch.tensor([[0, 0.5, 0.5, 3.0, 2.5]])
    for dtype in dtypes:
        x = torch.rand(1, 3, 4, 5, dtype=dtype, requires_grad=True)
        b = boxes.to(dtype)
        for out in (roi_align(x, b, 2, 1.0, 2), roi_align(x, b, 2, 1.0, -1, True), roi_pool(x, b, 2),
                     prroi_pool(x, b.clone().requires_grad_(), 2)):
            out.sum().backward()
        # A map of more cells than int16 holds: roi_pool's argmax is int32 there.
        wide = torch.rand(1, 1, 1, 1 << 15, dtype=dtype, requires_grad=True)
        roi_pool(wide, b, 2).sum().backward()
        region_cells(b.numpy(), 1.0, 4, 5)  # called for maps of REGION_MIN_BYTES and more
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """``roiviz compile``: :func:`compile_kernels` from the command line."""
    import argparse

    parser = argparse.ArgumentParser(prog="roiviz compile", description="Compile the CPU kernels now (numba, "
                                     "cached on disk), so that the first call in a notebook does not wait for it.")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    args = parser.parse_args(argv)
    seconds = compile_kernels(tuple(getattr(torch, name) for name in args.dtypes))
    print(f"roiviz: CPU kernels ready for {', '.join(args.dtypes)} in {seconds:.1f} s")
    return 0
