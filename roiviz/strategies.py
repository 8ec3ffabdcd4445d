"""The ways to turn variable-size ROIs into a fixed ``[K, C, PH, PW]``, and their registry.

Every strategy has the one signature ``f(input, boxes, output_size, spatial_scale=1.0)`` and
runs batched over all ROIs (no Python loop per ROI). ``crop``, ``pad``, ``adaptive_*`` and
``resize`` start from the exact integer crop of each box (see :mod:`roiviz.boxes` for the pixel
convention, the same one ROI Pool uses); ``roi_pool``, ``roi_align`` and ``prroi_pool`` are the detector ops.

=============== ==================================================================
``crop``         cut to ``output_size``, zero-filled where smaller (top-left anchored)
``pad``          zero-padded, centred, into the ``output_size`` canvas (cut if larger)
``adaptive_max`` adaptive max pooling of the crop (bin for bin ``F.adaptive_max_pool2d``)
``adaptive_avg`` adaptive average pooling of the crop (``F.adaptive_avg_pool2d``)
``resize``       RoIWarp: the crop resized bilinearly (``F.interpolate``, half-pixel)
``roi_pool``     Fast R-CNN's quantised max pooling (:func:`roiviz.roi_pool`)
``roi_align``    Mask R-CNN's bilinear sampling, ``aligned=True, sampling_ratio=2``
``prroi_pool``   IoU-Net's exact bin integral (:func:`roiviz.prroi_pool`), ``aligned=True``
=============== ==================================================================

NaN and inf behave as in the definition of each strategy, box by box: a cell only ever reaches
the outputs of the bins that contain it (zero fill and padding are selected, never multiplied
in, so ``+inf`` stays ``+inf`` and one box's inf never reaches another box); ``adaptive_max``
propagates NaN as ``F.adaptive_max_pool2d`` does and ``adaptive_avg`` sums exactly the cells
``F.adaptive_avg_pool2d`` sums (in another order: equal up to rounding). ``resize`` multiplies each of a sample's four cells by its
weight, so a non-finite neighbour makes the sample non-finite even at weight 0 (torch's kernel
skips some zero-weight neighbours, depending on the sizes and the CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_eager, check_input, check_output_size, check_spatial_scale
from .boxes import BoxesLike, compute_dtype, crop_bounds, to_rois
from .ops.prroi_pool import prroi_pool
from .ops.roi_align import roi_align
from .ops.roi_pool import roi_pool

__all__ = [
    "STRATEGIES",
    "Strategy",
    "adaptive_avg",
    "adaptive_max",
    "crop",
    "crop_rois",
    "get_strategy",
    "pad",
    "pad_to_max",
    "resize",
]

Strategy = Callable[..., Tensor]
_ANCHORS = ("top-left", "centre")


def _arguments(
    name: str, input: Tensor, boxes: BoxesLike, output_size: object, spatial_scale: object
) -> tuple[Tensor, Tensor, int, int, float]:
    """Check a strategy's arguments once: ``(input, rois [K, 5], PH, PW, spatial_scale)``."""
    check_eager(name, input=input, boxes=boxes)
    input = check_input(input)
    ph_n, pw_n = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    return input, to_rois(boxes, input).detach(), ph_n, pw_n, scale


def _channels_last(input: Tensor) -> Tensor:
    """``[N, H, W, C]`` in the compute dtype: gathering a cell then copies ``C`` contiguous numbers."""
    return input.permute(0, 2, 3, 1).contiguous().to(compute_dtype(input.dtype))


def crop_rois(input: Tensor, boxes: BoxesLike, spatial_scale: float = 1.0) -> list[Tensor]:
    """The exact integer crop of every box: a list of ``Tensor[C, h_k, w_k]`` views.

    These are the variable sizes a conv head cannot take. The crop is the cells
    ``round(x1 * scale) .. round(x2 * scale)`` inclusive, clipped to the map (empty, with
    ``h_k`` or ``w_k`` 0, for a box wholly outside it). Building a list reads the boxes on
    the host.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.randn(2, 256, 50, 68)
    >>> boxes = torch.tensor([[0, 10., 20., 300., 200.], [1, 0., 0., 64., 64.]])
    >>> [tuple(c.shape) for c in roiviz.crop_rois(x, boxes, spatial_scale=1 / 16)]
    [(256, 13, 19), (256, 5, 5)]
    """
    check_eager("crop_rois", input=input, boxes=boxes)
    input = check_input(input)
    rois = to_rois(boxes, input).detach()
    y0, x0, h, w = crop_bounds(rois, check_spatial_scale(spatial_scale), input.shape[2], input.shape[3])
    rows = torch.stack([rois[:, 0].long(), y0, x0, h, w], dim=1).tolist()
    return [input[b, :, r : r + hh, c : c + ww] for b, r, c, hh, ww in rows]


def crop(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
    *, anchor: str = "top-left",
) -> Tensor:
    """Cut each crop to ``output_size``, zero-filling where it is smaller.

    Keeps only part of a large box: nothing is resampled, so what is kept is exact, and what
    does not fit is lost. ``anchor="centre"`` keeps the middle instead of the top-left corner
    (the crop's centre goes to the canvas centre, rounding toward the top-left).

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.crop(x, torch.tensor([[0, 1., 1., 3., 3.]]), 2)[0, 0]
    tensor([[ 5.,  6.],
            [ 9., 10.]])
    >>> roiviz.crop(x, torch.tensor([[0, 1., 1., 3., 3.]]), 2, anchor="centre")[0, 0]
    tensor([[ 5.,  6.],
            [ 9., 10.]])
    >>> roiviz.crop(x, torch.tensor([[0, 0., 0., 0., 0.]]), 2)[0, 0]
    tensor([[0., 0.],
            [0., 0.]])
    """
    if anchor not in _ANCHORS:
        raise ValueError(f"anchor must be one of {_ANCHORS}, got {anchor!r}")
    input, rois, ph_n, pw_n, scale = _arguments("crop", input, boxes, output_size, spatial_scale)
    y0, x0, h, w = crop_bounds(rois, scale, input.shape[2], input.shape[3])
    if anchor == "centre":
        dy, dx = torch.div(h - ph_n, 2, rounding_mode="floor"), torch.div(w - pw_n, 2, rounding_mode="floor")
    else:
        dy, dx = torch.zeros_like(h), torch.zeros_like(w)
    i = torch.arange(ph_n, device=input.device)
    j = torch.arange(pw_n, device=input.device)
    r = i + dy[:, None]  # [K, PH] row of the crop shown in output row i
    s = j + dx[:, None]  # [K, PW]
    ok_r = (r >= 0) & (r < h[:, None])
    ok_s = (s >= 0) & (s < w[:, None])
    return _gather(input, rois, y0[:, None] + r, ok_r, x0[:, None] + s, ok_s)


def pad(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Zero-pad each crop, centred, into an ``output_size`` canvas.

    A crop that does not fit is cut (its middle is kept): a fixed canvas cannot hold every
    box. :func:`pad_to_max` is the honest alternative, and :mod:`roiviz.metrics` reports how
    much of each box was lost.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.ones(1, 1, 8, 8)
    >>> roiviz.pad(x, torch.tensor([[0, 2., 2., 3., 3.]]), 4)[0, 0]
    tensor([[0., 0., 0., 0.],
            [0., 1., 1., 0.],
            [0., 1., 1., 0.],
            [0., 0., 0., 0.]])
    """
    return crop(input, boxes, output_size, spatial_scale, anchor="centre")


def pad_to_max(input: Tensor, boxes: BoxesLike, spatial_scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Zero-pad every crop (top-left) to the largest crop of the batch.

    Nothing is lost or resampled, but the size now depends on the batch, so a head with
    fixed weights cannot take it: this is what "pad to the maximum" really gives you.
    Returns ``(padded [K, C, Hmax, Wmax], valid [K, Hmax, Wmax])``; ``valid`` marks the real
    cells, so a masked head can ignore the padding. Reads the boxes on the host.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.ones(1, 1, 8, 8)
    >>> padded, valid = roiviz.pad_to_max(x, torch.tensor([[0, 0., 0., 2., 1.], [0, 0., 0., 0., 0.]]))
    >>> padded.shape, valid[1].int().tolist()
    (torch.Size([2, 1, 2, 3]), [[1, 0, 0], [0, 0, 0]])
    """
    check_eager("pad_to_max", input=input, boxes=boxes)
    input = check_input(input)
    rois = to_rois(boxes, input).detach()
    y0, x0, h, w = crop_bounds(rois, check_spatial_scale(spatial_scale), input.shape[2], input.shape[3])
    h_max = int(h.max()) if len(h) else 0
    w_max = int(w.max()) if len(w) else 0
    i = torch.arange(h_max, device=input.device)
    j = torch.arange(w_max, device=input.device)
    ok_r = i < h[:, None]  # [K, Hmax]
    ok_s = j < w[:, None]  # [K, Wmax]
    padded = _gather(input, rois, y0[:, None] + i, ok_r, x0[:, None] + j, ok_s)
    return padded, ok_r[:, :, None] & ok_s[:, None, :]


def adaptive_max(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Adaptive max pooling of each crop: bin for bin ``F.adaptive_max_pool2d(crop, output_size)``.

    Bin ``i`` of a crop of height ``h`` spans rows ``floor(i*h/PH) .. ceil((i+1)*h/PH) - 1``:
    every cell is seen, a box smaller than the output repeats cells. An empty crop gives 0.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.adaptive_max(x, torch.tensor([[0, 0., 0., 3., 3.]]), 2)[0, 0]
    tensor([[ 5.,  7.],
            [13., 15.]])
    """
    return _adaptive(input, boxes, output_size, spatial_scale, "max")


def adaptive_avg(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Adaptive average pooling of each crop: bin for bin ``F.adaptive_avg_pool2d(crop, output_size)``.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.adaptive_avg(x, torch.tensor([[0, 0., 0., 3., 3.]]), 2)[0, 0]
    tensor([[ 2.5000,  4.5000],
            [10.5000, 12.5000]])
    """
    return _adaptive(input, boxes, output_size, spatial_scale, "avg")


def resize(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """RoIWarp: each integer crop resized bilinearly to ``output_size``.

    Bin for bin ``F.interpolate(crop, output_size, mode="bilinear", align_corners=False)``:
    output cell ``i`` reads the crop at ``(i + 0.5) * h / PH - 0.5``. The content is kept but
    stretched to the output's aspect ratio, and the box was rounded to whole cells first.
    An empty crop gives 0.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> roiviz.resize(x, torch.tensor([[0, 0., 0., 1., 1.]]), 4)[0, 0]
    tensor([[0.0000, 0.2500, 0.7500, 1.0000],
            [1.0000, 1.2500, 1.7500, 2.0000],
            [3.0000, 3.2500, 3.7500, 4.0000],
            [4.0000, 4.2500, 4.7500, 5.0000]])
    """
    input, rois, ph_n, pw_n, scale = _arguments("resize", input, boxes, output_size, spatial_scale)
    y0, x0, h, w = crop_bounds(rois, scale, input.shape[2], input.shape[3])
    dtype = rois.dtype
    r0, r1, ly, hy = _resize_taps(h, ph_n, dtype)  # [K, PH]
    c0, c1, lx, hx = _resize_taps(w, pw_n, dtype)  # [K, PW]
    ok_r = (h > 0)[:, None].expand_as(r0)
    ok_s = (w > 0)[:, None].expand_as(c0)
    x = _channels_last(input)
    # out = hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11), as upsample_bilinear2d does.
    v00 = _gather_cl(x, rois, y0[:, None] + r0, ok_r, x0[:, None] + c0, ok_s)
    v01 = _gather_cl(x, rois, y0[:, None] + r0, ok_r, x0[:, None] + c1, ok_s)
    v10 = _gather_cl(x, rois, y0[:, None] + r1, ok_r, x0[:, None] + c0, ok_s)
    v11 = _gather_cl(x, rois, y0[:, None] + r1, ok_r, x0[:, None] + c1, ok_s)
    hy, ly = hy[:, :, None, None], ly[:, :, None, None]  # [K, PH, 1, 1]
    hx, lx = hx[:, None, :, None], lx[:, None, :, None]  # [K, 1, PW, 1]
    out = hy * (hx * v00 + lx * v01) + ly * (hx * v10 + lx * v11)  # [K, PH, PW, C]
    return out.permute(0, 3, 1, 2).contiguous().to(input.dtype)


def _resize_taps(size: Tensor, out_n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source rows ``i0, i1 [K, out]`` and weights ``l1, l0`` of half-pixel bilinear resizing."""
    scale = size.to(dtype) / out_n  # [K]
    i = torch.arange(out_n, dtype=dtype, device=size.device)
    src = (scale[:, None] * (i + 0.5) - 0.5).clamp(min=0.0)  # [K, out]
    i0 = src.long()
    i1 = i0 + (i0 < size[:, None] - 1).long()
    l1 = (src - i0.to(dtype)).clamp(0.0, 1.0)
    return i0, i1, l1, 1.0 - l1


def _adaptive(input: Tensor, boxes: BoxesLike, output_size, spatial_scale: float, mode: str) -> Tensor:
    input, rois, ph_n, pw_n, scale = _arguments(f"adaptive_{mode}", input, boxes, output_size, spatial_scale)
    y0, x0, h, w = crop_bounds(rois, scale, input.shape[2], input.shape[3])
    rs, re = _adaptive_edges(h, ph_n)  # [K, PH] rows rs .. re-1 of the crop form bin i
    ss, se = _adaptive_edges(w, pw_n)  # [K, PW]
    empty = ((re == rs)[:, :, None] | (se == ss)[:, None, :])[..., None]  # [K, PH, PW, 1]
    # The crops, zero-filled top-left into one window [K, Hmax, Wmax, C] (reads the boxes).
    k_n = rois.shape[0]
    h_max = int(h.max()) if k_n else 0
    w_max = int(w.max()) if k_n else 0
    rows = torch.arange(h_max, device=input.device)
    cols = torch.arange(w_max, device=input.device)
    window = _gather_cl(_channels_last(input), rois, y0[:, None] + rows, rows < h[:, None],
                        x0[:, None] + cols, cols < w[:, None])  # [K, Hmax, Wmax, C]
    if mode == "avg":
        # Sum over the columns of each bin, then over its rows, then divide by the bin's size.
        # Cells outside a bin are selected away, never multiplied by 0: a bin holding +inf is
        # +inf, one holding NaN (or +inf and -inf) is NaN, and no other bin is touched.
        strip = _window_sum(window, ss, se, w_max, dim=2)  # [K, Hmax, PW, C]
        out = _window_sum(strip, rs, re, h_max, dim=1)  # [K, PH, PW, C]
        size = (re - rs)[:, :, None] * (se - ss)[:, None, :]  # [K, PH, PW] cells per bin
        out = out / size.clamp(min=1)[..., None].to(out.dtype)
    else:
        # Max over the columns of each bin, then over its rows, with adaptive_max_pool2d's rule
        # (take a cell if it is greater or NaN): the first maximum in row-major order, or the
        # last NaN, which is the cell torch picks, so gradients go where torch sends them.
        strip = _running_max(window, ss, se, w_max, dim=2)  # [K, Hmax, PW, C]
        out = _running_max(strip, rs, re, h_max, dim=1)  # [K, PH, PW, C]
    out = out.masked_fill(empty, 0.0)
    return out.permute(0, 3, 1, 2).contiguous().to(input.dtype)


def _adaptive_edges(size: Tensor, out_n: int) -> tuple[Tensor, Tensor]:
    """Adaptive pooling's integer bin edges ``floor(i*size/out)`` and ``ceil((i+1)*size/out)``."""
    i = torch.arange(out_n, device=size.device)
    start = torch.div(i * size[:, None], out_n, rounding_mode="floor")
    end = torch.div((i + 1) * size[:, None] + out_n - 1, out_n, rounding_mode="floor")
    return start, end


def _window_sum(x: Tensor, start: Tensor, end: Tensor, length: int, dim: int) -> Tensor:
    """Sum of ``x`` along ``dim`` over ``start[k, i] .. end[k, i] - 1``, one output per bin ``i``.

    ``x`` is ``[K, A, B, C]``; ``dim`` is 1 or 2. Steps beyond a bin add nothing (selected, not
    multiplied, so the value read there cannot turn the sum into NaN). Empty bins sum to 0.
    """
    k_n, _, _, c_n = x.shape
    n_bins = start.shape[1]
    widest = int((end - start).max()) if k_n else 0
    shape = [k_n, x.shape[1], x.shape[2], c_n]
    shape[dim] = n_bins
    view = [k_n, 1, 1, 1]
    view[dim] = n_bins
    total = x.new_zeros(shape) + x[:0].sum()  # in the graph even when no step is taken
    for d in range(widest):
        pos = start + d  # [K, bins]
        index = pos.clamp(max=max(length - 1, 0)).view(view).expand(shape)
        total = total + torch.where((pos < end).view(view), torch.gather(x, dim, index), 0.0)
    return total


def _running_max(x: Tensor, start: Tensor, end: Tensor, length: int, dim: int) -> Tensor:
    """Max of ``x`` along ``dim`` over ``start[k, i] .. end[k, i] - 1``, one output per bin ``i``.

    ``x`` is ``[K, A, B, C]``; ``dim`` is 1 or 2. Starts from each bin's first cell and takes a
    later cell when it is greater or NaN (``adaptive_max_pool2d``'s rule). Empty bins hold an
    arbitrary value: callers mask them.
    """
    k_n, _, _, c_n = x.shape
    n_bins = start.shape[1]
    widest = int((end - start).max()) if k_n else 0
    shape = [k_n, x.shape[1], x.shape[2], c_n]
    shape[dim] = n_bins
    if widest == 0:  # no cell at all (no boxes, or every crop empty): zeros, still in the graph
        return x.new_zeros(shape) + x[:0].sum()
    view = [k_n, 1, 1, 1]
    view[dim] = n_bins
    best = None
    for d in range(widest):
        pos = start + d  # [K, bins]
        index = pos.clamp(max=max(length - 1, 0)).view(view).expand(shape)
        v = torch.gather(x, dim, index)
        if best is None:
            best = v
        else:
            take = (pos < end).view(view) & ((v > best) | torch.isnan(v))
            best = torch.where(take, v, best)
    return best


def _gather(input: Tensor, rois: Tensor, rows: Tensor, ok_r: Tensor, cols: Tensor, ok_s: Tensor) -> Tensor:
    """``input[b_k, :, rows[k, i], cols[k, j]]`` as ``[K, C, I, J]``, zero where not ok."""
    out = _gather_cl(_channels_last(input), rois, rows, ok_r, cols, ok_s)
    return out.permute(0, 3, 1, 2).contiguous().to(input.dtype)


def _gather_cl(x: Tensor, rois: Tensor, rows: Tensor, ok_r: Tensor, cols: Tensor, ok_s: Tensor) -> Tensor:
    """Channels-last gather: ``x [N, H, W, C]`` at ``rows [K, I]`` x ``cols [K, J]`` -> ``[K, I, J, C]``.

    Zero where not ok, by selection: ``0 * inf`` would be NaN, and the clamped cell read for a
    position outside the crop may hold anything.
    """
    _, height, width, _ = x.shape
    batch = rois[:, 0].long()[:, None, None]  # [K, 1, 1]
    r = rows.clamp(0, max(height - 1, 0))[:, :, None]  # [K, I, 1]
    c = cols.clamp(0, max(width - 1, 0))[:, None, :]  # [K, 1, J]
    ok = (ok_r[:, :, None] & ok_s[:, None, :])[..., None]  # [K, I, J, 1]
    return torch.where(ok, x[batch, r, c], 0.0)


def _roi_align_strategy(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """ROI Align as registered in :data:`STRATEGIES`: ``aligned=True, sampling_ratio=2``."""
    return roi_align(input, boxes, output_size, spatial_scale, sampling_ratio=2, aligned=True)


_roi_align_strategy.__name__ = "roi_align"


def _prroi_pool_strategy(
    input: Tensor, boxes: BoxesLike, output_size: int | tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """Precise RoI Pooling as registered in :data:`STRATEGIES`: ``aligned=True``, as ``roi_align``."""
    return prroi_pool(input, boxes, output_size, spatial_scale, aligned=True)


_prroi_pool_strategy.__name__ = "prroi_pool"

#: Every strategy by name, in teaching order: name -> ``f(input, boxes, output_size, spatial_scale=1.0)``.
STRATEGIES: dict[str, Strategy] = {
    "crop": crop,
    "pad": pad,
    "adaptive_max": adaptive_max,
    "adaptive_avg": adaptive_avg,
    "resize": resize,
    "roi_pool": roi_pool,
    "roi_align": _roi_align_strategy,
    "prroi_pool": _prroi_pool_strategy,
}


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``, or a ``ValueError`` that lists the known ones.

    Examples
    --------
    >>> import roiviz
    >>> roiviz.get_strategy("resize") is roiviz.resize
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"strategy name must be a str, got {type(name).__name__}")
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known strategies: {', '.join(STRATEGIES)}") from None
