"""ROI Pool (Girshick, Fast R-CNN, 2015), exactly as torchvision.ops.roi_pool computes it.

The box is rounded to whole cells, cut into ``PH x PW`` bins whose edges are rounded again
(start down, end up, so neighbouring bins overlap), and each bin keeps its maximum. The output
size is fixed by ``output_size`` whatever the box: it is the rounding, not the size, that ROI
Pool gets wrong.

How it is computed (every way exact: a max has no rounding)
------------------------------------------------------------
The input is copied channels last, ``[N*H*W, C]``, so that a cell is one row of ``C``
contiguous numbers and gathering cells is a row copy.

- **Many ROIs on a small map** (a detector head): one stride-1 ``max_pool2d`` of the whole map
  per bin shape ``(a, b)`` that occurs, then one table look-up per bin (:func:`_forward_maps`).
- **Otherwise**: ROIs grouped by their largest bin, and every cell of every bin gathered in
  cache-sized chunks and reduced with ``maximum``. Without a gradient to track, and when the
  bins are a few cells wide (a mask head: 14x14 bins of 1-3 cells), row tables go first
  (:func:`_build_row_tables`): table ``b`` holds the max of ``b`` consecutive cells of a row, so
  a bin of ``r x s`` cells costs ``r`` gathered rows instead of ``r * s``.
  Each chunk's maxima go to the output, channels first, in one ``index_copy_`` from a buffer
  whose rows are padded by a cache line (see the note at the padding).

A cost estimate picks the way. Steps outside a bin read a row of -FLT_MAX, the kernel's start
value, and empty bins a row of zeros; the input's NaN and -inf (when there are any) are read as
-FLT_MAX, so plain max reproduces the kernel's strict ``>``. All ways read the bin sizes on the
host (the loop bounds), which on a GPU is a synchronisation; roi_align with a fixed sampling
ratio has none.

On the mask-head workload of the benchmark (W3, two threads, 25-29 ms) the forward is bound
by memory: the channels-last copy (NaN and -inf rewritten on the way) ~5 ms, the two row
tables ~5, the gathers and the output writes ~10 (a 40 MB output, in recycled memory: see
:func:`~roiviz.ops._common.output_empty`), the maxima ~2.5, and Python and index arithmetic
the rest (timed step by step, 2026-11-24). The gradient's argmax is found only when autograd
records a graph: it needs every cell of every bin and costs two to three times the forward.
It is saved channels first, ``[C, K, PH*PW]``, so that the backward adds every output into
its cell one channel at a time, in the kernel's order (bit-exact; checked against the loops
of :func:`roiviz.reference.roi_pool_backward`): W3 backward 40 -> 24 ms.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..boxes import BoxesLike, compute_dtype, round_half_away
from . import _triton
from ._common import output_empty, prepare, workspace

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
    if input.is_cuda and _triton.available():  # Triton kernels, deterministic backward (ops/_triton.py)
        return _triton.roi_pool(input, rois, ph_n, pw_n, scale)
    # The argmax is only worth finding when a graph is recorded: under no_grad a feature map that
    # requires grad still shows up in ctx.needs_input_grad, and tracking triples the forward's cost.
    track = torch.is_grad_enabled() and input.requires_grad
    return _RoIPoolFunction.apply(input, rois.detach(), ph_n, pw_n, scale, track)


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


#: Bytes of gathered cells + running max per chunk of ROIs: small enough to stay in the L2 cache.
CHUNK_BYTES = 1 << 22
#: Cost of one max-pooled map per map cell, against one visited bin cell (see :func:`_forward_maps`).
MAP_COST = 2.0
#: Cost of one row of a row-maxima table, against one visited bin cell (see :func:`_build_row_tables`).
ROW_TABLE_COST = 1.0
#: Widest bin served from row-maxima tables (each table is as large as the input).
ROW_TABLE_WIDTHS = 8


def _cell_index(rois: Tensor, edges: tuple[Tensor, Tensor, Tensor, Tensor], bh_max: int, bw_max: int,
                height: int, width: int, sentinel: int) -> Tensor:
    """``[bh_max * bw_max, K * PH * PW]``: the input row read at step ``(r, s)`` of every bin.

    Step ``(r, s)`` visits cell ``(hstart + r, wstart + s)`` (row-major, the kernel's order); a
    step outside its bin reads row ``sentinel``, which holds ``-FLT_MAX`` and so never wins.
    """
    hstart, hend, wstart, wend = edges  # [K, PH], [K, PW]
    rows = hstart[:, :, None] + torch.arange(bh_max, device=rois.device)  # [K, PH, R]
    cols = wstart[:, :, None] + torch.arange(bw_max, device=rois.device)  # [K, PW, S]
    base = (rois[:, 0].long()[:, None, None] * height + rows) * width  # [K, PH, R]
    flat = base[:, :, None, :, None] + cols[:, None, :, None, :]  # [K, PH, PW, R, S]
    inside = (rows < hend[:, :, None])[:, :, None, :, None] & (cols < wend[:, :, None])[:, None, :, None, :]
    flat = torch.where(inside, flat, sentinel)
    empty_bin = (hend <= hstart)[:, :, None, None, None] | (wend <= wstart)[:, None, :, None, None]
    flat = torch.where(empty_bin, sentinel + 1, flat)  # an empty bin reads only the zero row: 0
    return flat.flatten(3).flatten(0, 2).t().contiguous()  # [R*S, K*PH*PW]




def _row_table_index(rois: Tensor, edges: tuple[Tensor, Tensor, Tensor, Tensor], bh_max: int,
                     height: int, width: int, sentinel: int) -> Tensor:
    """``[bh_max, K * PH * PW]``: the row of the row-maxima table read at step ``r`` of every bin.

    Bin ``(ph, pw)`` of width ``b`` reads, at step ``r``, entry ``(hstart + r, wstart)`` of table
    ``b`` (the max of ``b`` consecutive cells of a row, see :func:`_build_row_tables`); a step
    below its bin reads row ``sentinel`` (-FLT_MAX) and an empty bin reads only the zero row.
    """
    hstart, hend, wstart, wend = edges  # [K, PH], [K, PW]
    n_cells = sentinel  # N*H*W: the size of every table
    bw = (wend - wstart).clamp(min=1)  # [K, PW]
    base = torch.where(bw > 1, 2 + (bw - 1) * n_cells, 0) + wstart  # [K, PW]: table and column
    rows = hstart[:, :, None] + torch.arange(bh_max, device=rois.device)  # [K, PH, R]
    flat = (rois[:, 0].long()[:, None, None] * height + rows) * width  # [K, PH, R]
    flat = flat[:, :, None, :] + base[:, None, :, None]  # [K, PH, PW, R]
    flat = torch.where((rows < hend[:, :, None])[:, :, None, :], flat, sentinel)
    empty_bin = (hend <= hstart)[:, :, None, None] | (wend <= wstart)[:, None, :, None]
    flat = torch.where(empty_bin, sentinel + 1, flat)  # an empty bin reads only the zero row: 0
    return flat.flatten(0, 2).t().contiguous()  # [R, K*PH*PW]


def _build_row_tables(table: Tensor, n_cells: int, widths: int) -> None:
    """Fill tables ``2 .. widths`` after the input: table ``b`` row ``i`` = max of input rows ``i .. i+b-1``.

    ``table`` is ``[2 + widths * n_cells, C]``: the channels-last input (rows ``0 .. n_cells``),
    the -FLT_MAX and zero rows, then table ``b`` from row ``2 + (b - 1) * n_cells``. Entries whose
    cells run past a map row are never read (a bin ends inside its row). Max is exact, and
    idempotent: table ``b`` is the max of two neighbouring rows of table ``b - 1``, which reads
    one table where ``max(table b - 1, input)`` would read two (a pass over memory less).
    """
    prev = table[:n_cells]
    for b in range(2, widths + 1):
        start = 2 + (b - 1) * n_cells
        prev = torch.maximum(prev[: n_cells - b + 1], prev[1 : n_cells - b + 2], out=table[start : start + n_cells - b + 1])


def _bin_extents(edges: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Per ROI, the rows and columns of its largest bin, at least 1: ``[K]`` each."""
    hstart, hend, wstart, wend = edges
    return (hend - hstart).amax(1).clamp(min=1), (wend - wstart).amax(1).clamp(min=1)


def _group(bh: Tensor, bw: Tensor, width: int) -> list[tuple[int, int, np.ndarray]]:
    """ROIs grouped by ``(rows, cols)`` steps: ``[(rows, cols, ROI indices), ...]`` (read on the host)."""
    keys = (bh * (width + 2) + bw).cpu().numpy()
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    bounds = [*starts.tolist(), len(keys)]
    return [(int(key) // (width + 2), int(key) % (width + 2), order[a:b])
            for key, a, b in zip(uniq.tolist(), bounds[:-1], bounds[1:], strict=True)]


def _bin_shapes(edges: tuple[Tensor, Tensor, Tensor, Tensor], empty_bin: Tensor, width: int) -> list[tuple[int, int]]:
    """The distinct ``(rows, cols)`` shapes of the non-empty bins (read on the host)."""
    hstart, hend, wstart, wend = edges
    code = (hend - hstart)[:, :, None] * (width + 2) + (wend - wstart)[:, None, :]  # [K, PH, PW]
    # Counted, not sorted: the codes are small (rows * (W + 2) + cols), and sorting every bin
    # was half a millisecond of a W3 forward.
    present = torch.bincount(code[~empty_bin]).nonzero()[:, 0]
    return [(c // (width + 2), c % (width + 2)) for c in present.tolist()]


def _row_maxima(x: Tensor, b: int, cache: dict[int, Tensor]) -> Tensor:
    """``[N, H, W - b + 1, C]``: the max of cells ``w .. w + b - 1`` of each row (max is exact)."""
    if b == 1:
        return x
    if b not in cache:
        shorter = _row_maxima(x, b - 1, cache)
        n_n, height, width, c_n = x.shape
        wb = width - b + 1
        out = workspace(f"pool_rows{b}", (n_n, height, wb, c_n), x.dtype, x.device)
        cache[b] = torch.maximum(shorter[:, :, :wb], x[:, :, b - 1 : b - 1 + wb], out=out)
    return cache[b]


def _forward_maps(x: Tensor, rois: Tensor, edges: tuple[Tensor, Tensor, Tensor, Tensor], empty_bin: Tensor,
                  pairs: list[tuple[int, int]], out: Tensor, track: bool,
                  shape: tuple[int, int, int]) -> tuple[Tensor, Tensor | None]:
    """ROI Pool by table look-up: one max-pooled map per bin shape, then one row per bin.

    For many ROIs on a small map (a detector head: 1024 boxes on 50x68 cells) it is cheaper to
    max-pool the whole map once per bin shape ``(a, b)`` that occurs (``max_pool2d``, stride 1,
    whose first-maximum rule is the kernel's) than to visit every cell of every bin: the max of
    bin ``[hstart, hstart + a) x [wstart, wstart + b)`` is then entry ``(hstart, wstart)`` of the
    ``(a, b)`` map. ``x`` is the sanitised channels-last copy ``[N*H*W + 1, C]``; the saved
    argmax is the input cell ``n*H*W + h*W + w`` of each output (int32), ``N*H*W`` for none.
    """
    k_n, c_n, ph_n, pw_n = out.shape
    n_n, height, width = shape
    hstart, hend, wstart, wend = edges
    x4 = x[: n_n * height * width].view(n_n, height, width, c_n).permute(0, 3, 1, 2)  # [N, C, H, W] channels-last
    # Table row 0: empty bins (value 0, no argmax); then each map, flattened to rows of C.
    sizes = [n_n * (height - a + 1) * (width - b + 1) for a, b in pairs]
    table = workspace("pool_table", (1 + sum(sizes), c_n), x.dtype, x.device)
    table[0].zero_()
    cells = workspace("pool_cells", (1 + sum(sizes), c_n), torch.int32, x.device) if track else None
    if cells is not None:
        cells[0].fill_(n_n * height * width)  # no argmax: the trash row of the backward
    plane = (torch.arange(n_n, device=x.device) * (height * width))[:, None, None, None]  # [N, 1, 1, 1]
    offsets = torch.zeros(max(a for a, _ in pairs) + 1, max(b for _, b in pairs) + 1, dtype=torch.long,
                          device=x.device)
    row = 1
    row_maxima: dict[int, Tensor] = {}
    for (a, b), size in zip(pairs, sizes, strict=True):
        ha, wb = height - a + 1, width - b + 1
        dst = table[row : row + size].view(n_n, ha, wb, c_n)
        if (a, b) == (1, 1):
            dst.copy_(x4.permute(0, 2, 3, 1))
            index = torch.arange(height * width, device=x.device).view(1, height, width, 1) if track else None
        elif track:
            pooled, index = F.max_pool2d(x4, (a, b), 1, return_indices=True)
            dst.copy_(pooled.permute(0, 2, 3, 1))
            index = index.permute(0, 2, 3, 1)
        else:  # no indices needed: separable running maxima, written straight into the table
            rows_max = _row_maxima(x4.permute(0, 2, 3, 1), b, row_maxima)  # [N, H, W - b + 1, C]
            if a == 1:
                dst.copy_(rows_max)
            else:
                torch.maximum(rows_max[:, :ha], rows_max[:, 1 : 1 + ha], out=dst)
                for i in range(2, a):
                    torch.maximum(dst, rows_max[:, i : i + ha], out=dst)
        if cells is not None:
            cells[row : row + size].view(n_n, ha, wb, c_n).copy_(index + plane)
        offsets[a, b] = row
        row += size
    # The table row of every bin: [K, PH, PW].
    bh = (hend - hstart).clamp(min=1)[:, :, None].expand(k_n, ph_n, pw_n)
    bw = (wend - wstart).clamp(min=1)[:, None, :].expand(k_n, ph_n, pw_n)
    inside = ~empty_bin
    bh, bw = torch.where(inside, bh, 1), torch.where(inside, bw, 1)
    first = offsets[bh.clamp(max=offsets.shape[0] - 1), bw.clamp(max=offsets.shape[1] - 1)]
    batch = rois[:, 0].long()[:, None, None]
    at = first + ((batch * (height - bh + 1) + hstart[:, :, None]) * (width - bw + 1) + wstart[:, None, :])
    at = torch.where(inside, at, 0).view(-1)  # [K*PH*PW]
    bins = ph_n * pw_n
    # The saved argmax is channels first, [C, K, PH*PW] (see the backward), written from each
    # chunk's look-ups like the output: through a buffer whose rows are padded by a cache line.
    arg = output_empty((c_n, k_n, bins), torch.int32, x.device) if track else None
    kc = min(k_n, max(1, CHUNK_BYTES // (2 * bins * c_n * x.element_size())))
    pad = max(1, 64 // x.element_size())  # rows padded by a cache line, see _forward
    buf = workspace("pool_best", (kc * bins, c_n + pad), x.dtype, x.device)[:, :c_n]
    won_buf = workspace("pool_won", (kc * bins, c_n + pad), torch.int32, x.device)[:, :c_n] if track else None
    for a in range(0, k_n, kc):
        b = min(a + kc, k_n)
        rows = at[a * bins : b * bins]
        vals = torch.index_select(table, 0, rows, out=buf[: (b - a) * bins])
        if arg is not None:
            won = torch.index_select(cells, 0, rows, out=won_buf[: (b - a) * bins])
            won.masked_fill_(vals <= -_FLT_MAX, n_n * height * width)  # nothing beat the start value
            arg[:, a:b].copy_(won.unflatten(0, (b - a, bins)).permute(2, 0, 1))
        out[a:b].view(b - a, c_n, bins).copy_(vals.unflatten(0, (b - a, bins)).transpose(1, 2))
    return out, arg


def _forward(input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor,
             track: bool) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Output ``[K, C, PH, PW]`` (compute dtype) and, if ``track``, where each output's maximum is.

    Many ROIs on a small map take :func:`_forward_maps`; otherwise every cell of every bin is
    visited in chunks. Either way the saved argmax ``[C, K, PH*PW]`` (int32) is the input cell
    ``n*H*W + h*W + w`` of each output's first maximum, or ``N*H*W`` when no cell beat the start
    value (only -inf/NaN) or ``N*H*W + 1`` for an empty bin: the kernel's argmax -1, whose
    gradient is dropped (both rows are trash rows of the backward).

    """
    n_n, c_n, height, width = input.shape
    k_n = rois.shape[0]
    edges = roi_pool_bin_edges(rois, scale, ph_n, pw_n, height, width)
    hstart, hend, wstart, wend = edges
    dtype = compute_dtype(input.dtype)
    out = output_empty((k_n, c_n, ph_n, pw_n), dtype, input.device)
    bins = ph_n * pw_n
    arg = None
    if k_n == 0:
        return out, arg, edges
    # The bin sizes decide how many steps to take: data-dependent, so they are read on the host
    # (a synchronisation on a GPU). ROIs are grouped by their largest bin so that small boxes do
    # not pay for the steps of large ones.
    bh, bw = _bin_extents(edges)
    groups = _group(bh, bw, width)
    if track:
        arg = output_empty((c_n, k_n, bins), torch.int32, input.device)  # channels first, see the backward
    empty_bin = (hend <= hstart)[:, :, None] | (wend <= wstart)[:, None, :]  # [K, PH, PW]
    pairs = _bin_shapes(edges, empty_bin, width)
    sentinel = n_cells = n_n * height * width
    direct_cost = sum(r * s * len(members) for r, s, members in groups) * bins
    use_maps = bool(pairs) and len(pairs) * MAP_COST * n_cells < direct_cost
    # Without the argmax, bins can take the max along a row from a table instead of stepping
    # through it: table b holds the max of b consecutive cells of a row (b - 1 passes over the
    # map), so a bin of r x s cells costs r gathered rows instead of r * s.
    widths = int(bw.max())
    row_cost = sum(r * (s - 1) * len(members) for r, s, members in groups) * bins
    use_rows = (not track and not use_maps and 1 < widths <= ROW_TABLE_WIDTHS
                and (widths - 1) * ROW_TABLE_COST * n_cells < row_cost)
    # Channels-last copy of the input, a row of -FLT_MAX (read by steps outside their bin) and a
    # row of 0 (read by empty bins), then any row tables: [N*H*W + 2 (+ tables), C]. NaN and
    # -inf become -FLT_MAX: like the start value they then never win, exactly as under the
    # kernel's strict '>', and plain max / argmax (first occurrence) reproduce it.
    table = workspace("pool_input", (n_cells + 2 + (widths - 1) * n_cells * use_rows, c_n), dtype, input.device)
    x = table[: n_cells + 2]
    if track or input.dtype != torch.float32:
        x[:n_cells].view(n_n, height, width, c_n).copy_(input.permute(0, 2, 3, 1))
        low = x[:n_cells].amin()  # NaN if any NaN, -inf if any -inf: only then is a rewrite needed
        # Only an input value at or below -FLT_MAX (or NaN) can leave a bin without an argmax.
        below_start = bool(torch.isnan(low) | (low <= -_FLT_MAX))
        if below_start:
            torch.nan_to_num_(x[:n_cells], nan=-_FLT_MAX, posinf=float("inf"), neginf=-_FLT_MAX).clamp_(min=-_FLT_MAX)
    else:  # no argmax to find, and nothing in float32 below -FLT_MAX but -inf: rewrite while copying
        torch.nan_to_num(input.permute(0, 2, 3, 1), nan=-_FLT_MAX, posinf=float("inf"), neginf=-_FLT_MAX,
                         out=x[:n_cells].view(n_n, height, width, c_n))  # cheaper than copy, then check
        below_start = False
    x[sentinel].fill_(-_FLT_MAX)
    x[sentinel + 1].zero_()
    if use_maps:
        out, cells = _forward_maps(x, rois, edges, empty_bin, pairs, out, track, (n_n, height, width))
        return out, cells, edges
    if use_rows:
        _build_row_tables(table, n_cells, widths)
        x = table
        groups = _group(bh, torch.ones_like(bw), width)  # the width no longer costs steps
    # Chunks of ROIs whose gathered cells [steps, kc*PH*PW, C] stay in the cache.
    kc_most = max(1, CHUNK_BYTES // (bins * c_n * x.element_size()))
    need = max(r * s * min(max(1, kc_most // (r * s)), len(m)) for r, s, m in groups)
    cells_buf = workspace("pool_cells_visited", (need * bins, c_n), dtype, x.device)
    # Each chunk's maxima [kc*PH*PW, C], still in the cache, are copied channels first into
    # ``out``. The rows of that buffer are padded by a cache line: with a row stride of 1 KiB
    # (C = 256 floats) the transposing read hits the same few L1 sets over and over, and the
    # copy is 2x slower (W3: 13 ms -> 5 ms on one thread).
    stride = c_n + max(1, 64 // x.element_size())
    best_buf = workspace("pool_best", (min(k_n, kc_most) * bins, stride), dtype, x.device)[:, :c_n]
    if track:
        most = (min(k_n, kc_most) * bins, c_n)
        step_buf = workspace("pool_step", most, torch.long, x.device)
        # The winning cells, rows padded by a cache line: they are copied channels first.
        cell_buf = workspace("pool_won", (1, most[0], stride), torch.int32, x.device)[:, :, :c_n]
        run_buf = workspace("pool_run", most, torch.bool, x.device)
        below_buf = workspace("pool_below", most, torch.bool, x.device)
        steps_most = max(r * s for r, s, _ in groups)
        count_buf = workspace("pool_count", most, torch.uint8 if steps_most <= 256 else torch.int32, x.device)
    for r_n, s_n, members in groups:
        steps = r_n * s_n
        ids = torch.from_numpy(members).to(input.device)
        sub_edges = tuple(e[ids] for e in edges)
        if use_rows:
            index = _row_table_index(rois[ids], sub_edges, r_n, height, width, sentinel)  # [steps, kg*PH*PW]
        else:
            index = _cell_index(rois[ids], sub_edges, r_n, s_n, height, width, sentinel)
        index32 = index.to(torch.int32) if track else None  # gathered as the saved argmax
        kc = max(1, kc_most // steps)
        for a in range(0, len(members), kc):
            b = min(a + kc, len(members))
            n = (b - a) * bins
            best = best_buf[:n]
            if steps == 1 and not track:  # one cell (or table entry) per bin: gathered into place
                torch.index_select(x, 0, index[0, a * bins : b * bins], out=best)
            else:
                cells = torch.index_select(x, 0, index[:, a * bins : b * bins].reshape(-1), out=cells_buf[: steps * n])
                cells = cells.view(steps, n, c_n)
            if steps == 1:
                if track:
                    best.copy_(cells[0])
            elif steps <= 4:  # a few maxima (amax would first fill ``best`` with -inf)
                acc = cells[0]  # accumulated in the cached cells unless the argmax needs them
                for i in range(1, steps - 1):
                    acc = torch.maximum(acc, cells[i], out=best if track else cells[0])
                torch.maximum(acc, cells[steps - 1], out=best)
            else:
                torch.amax(cells, 0, out=best)
            if track:
                # The kernel's strict '>' in row-major order keeps the first maximum: its step is
                # the number of leading steps below the maximum (cells hold no NaN). Counted with
                # small bool / uint8 passes, ~3x cheaper than ``max`` with indices over dim 0.
                run = torch.lt(cells[0], best, out=run_buf[:n])  # still before the first maximum
                count = count_buf[:n].copy_(run)
                below = below_buf[:n]
                for i in range(1, steps - 1):
                    run.logical_and_(torch.lt(cells[i], best, out=below))
                    count.add_(run)
                step = step_buf[:n].copy_(count)
                # The input row read at the winning step: the cell, or a sentinel row (the
                # -FLT_MAX row, or the zero row of an empty bin: both mean "no argmax").
                steps_index = index32[:, a * bins : b * bins, None].expand(steps, n, c_n)
                cell = torch.gather(steps_index, 0, step[None], out=cell_buf[:, :n])[0]  # [n, C] int32
                if below_start:
                    cell.masked_fill_(best <= -_FLT_MAX, sentinel)  # nothing beat the start value
                arg.index_copy_(1, ids[a:b], cell.view(b - a, bins, c_n).permute(2, 0, 1))
            out.index_copy_(0, ids[a:b], best.unflatten(0, (b - a, ph_n, pw_n)).permute(0, 3, 1, 2))
    return out, arg, edges


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input: Tensor, rois: Tensor, ph_n: int, pw_n: int, scale: Tensor, track: bool) -> Tensor:
        out, arg, _ = _forward(input, rois, ph_n, pw_n, scale, track=track and ctx.needs_input_grad[0])
        ctx.save_for_backward(arg)
        ctx.input_shape = input.shape
        ctx.input_dtype = input.dtype
        return out.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (arg,) = ctx.saved_tensors
        n_n, c_n, height, width = ctx.input_shape
        k_n = grad_out.shape[0]
        dtype = compute_dtype(ctx.input_dtype)
        device = grad_out.device
        n_cells = n_n * height * width
        # Channels first, [C, N*H*W + 2]: plus trash columns N*H*W, N*H*W + 1 for the outputs
        # with no argmax. Each channel's row (109 KB for W3) stays in the cache while its
        # outputs are added into it, reading the argmax and the gradient in order: a third of
        # the time of the same scatter channels last, which jumped between rows C apart. The
        # buffers are reused (fresh memory costs a page fault per 4 KiB); only grad_nchw is returned.
        grad_in = workspace("pool_grad_in", (c_n, n_cells + 2), dtype, device).zero_()
        if k_n:
            grad = workspace("pool_grad_rows", (c_n, k_n, grad_out[0, 0].numel()), dtype, device)
            grad.copy_(grad_out.reshape(k_n, c_n, -1).transpose(0, 1))  # [C, K, PH*PW]
            index = workspace("pool_grad_index", (c_n, arg[0].numel()), torch.long, device).copy_(arg.view(c_n, -1))
            # Each output sends its gradient to its first maximum, in the kernel's order per channel.
            grad_in.scatter_add_(1, index, grad.view(c_n, -1))
        grad_nchw = output_empty((n_n, c_n, height, width), ctx.input_dtype, grad_out.device)
        grad_nchw.view(n_n, c_n, -1).copy_(grad_in[:, :n_cells].view(c_n, n_n, -1).transpose(0, 1))
        return grad_nchw, None, None, None, None, None


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
