"""The input gradient of ROI Align, bit for bit as torchvision's CPU kernel computes it.

A float sum depends on the order of its terms. torchvision's CPU backward visits the output
elements ``(k, c, ph, pw)`` in order and, for each sample ``(iy, ix)`` of the bin, adds
``grad * w / count`` to each of the sample's four taps, ``(y_low, x_low)``, ``(y_low, x_high)``,
``(y_high, x_low)``, ``(y_high, x_high)``: one rounded float addition per term. So cell
``(c, y, x)`` of the input gradient is the running sum of its terms in the order
``(k, ph, pw, iy, ix, tap)``. We add the very same terms in the very same order:

1. **Entries**: for every ``(k, ph, pw, iy, ix, tap)`` the destination cell and the weight ``w``
   (the product of the two 1-D weights, as the kernel forms it), laid out
   ``[K, PH * PW * GH * GW * 4]`` -- torchvision's order, flattened, each built by one
   broadcast of a per-axis part. Samples the kernel skips (outside the map, or beyond an
   adaptive grid) get weight 0 and a spare row that is thrown away; when they are many (mixed
   adaptive grids leave about half the entries empty) they are dropped instead (``_sum_compact``).
2. **Terms**: per chunk of consecutive ROIs, one broadcast product
   ``grad[k, ph, pw, :] * w`` gives the ``[entries, C]`` terms (channels last).
3. **Sums**: one ``scatter_add_`` per chunk into the channels-last gradient. On the CPU it
   adds, for every destination row, the source rows in their order (tested against plain
   loops in :func:`roiviz.reference.roi_align_backward`), and the chunks run in ROI order.

The division by ``count = grid_h * grid_w``: for a ROI whose count is a power of two (any
``sampling_ratio`` of 1, 2, 4, ..., and most adaptive grids) it is folded into the weights,
``g * (w / count)``, which rounds to the same float as ``(g * w) / count`` unless the term is
below ``FLT_MIN`` (1.2e-38; then it may differ in the last bit of a subnormal number). Other
counts are divided term by term, exactly as the kernel does.

It costs ``4 * GH * GW`` channel vectors per output bin, written once and read once: more
memory traffic than the separable window products of the forward pass. That is the price of
summing in torchvision's order: on the detector workload W1 (1024 boxes, 256 channels, 7x7,
``sampling_ratio=2``, 800k terms of 256 channels) about 70 ms, where transposed window
products took about 40 ms but differed from torchvision by up to 1e-5; torchvision's own
backward takes about 640 ms (``docs/benchmarks.md``). On a GPU, ``scatter_add_`` uses atomic
additions whose order varies, so this exactness is a CPU property.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._common import (
    align_geometry,
    axis_taps,
    from_channels_last,
    output_empty,
    workspace,
)

#: Bytes of terms per chunk of ROIs. Measured on the benchmark workloads: each operation costs
#: tens of microseconds of thread start-up, so W1's small ROIs (0.8 MiB of terms each) gain
#: 15 % from 16 MiB chunks over 4 MiB ones, while W3's large ones (3.2 MiB) run best one at a
#: time (20 % slower two at a time): ROIs of at least ONE_ROI_BYTES go alone.
CHUNK_BYTES = 1 << 24
ONE_ROI_BYTES = 1 << 20
#: Spare rows that receive the skipped samples, spread so that no single row is a hot spot.
SPARE_ROWS = 64
#: Below this fraction of counted samples (adaptive grids of mixed sizes), the skipped entries are
#: dropped before the products (a gather) instead of being multiplied and sent to the spare rows.
COMPACT_BELOW = 0.75


def _axis_taps(start: Tensor, bin_size: Tensor, grid: Tensor, g_max: int, n_bins: int,
               size: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(cells, weights, ok)`` along one axis: ``[K, n_bins, g_max, 2]`` for (low, high) taps."""
    ok, low, high, lo_w, hi_w = axis_taps(start, bin_size, grid, g_max, n_bins, size)
    return torch.stack([low, high], -1), torch.stack([hi_w, lo_w], -1), ok


def roi_align_input_grad(
    grad_out: Tensor, rois: Tensor, input_shape: tuple[int, int, int, int], scale: Tensor,
    sampling_ratio: int, aligned: bool, out_dtype: torch.dtype | None = None,
) -> Tensor:
    """The gradient of ``roi_align`` with respect to its input, summed in torchvision's order.

    Parameters
    ----------
    grad_out : Tensor[K, C, PH, PW]
        Gradient of the output, in the compute dtype (float32 or float64).
    rois : Tensor[K, 5]
        Checked boxes in the compute dtype.
    input_shape : (N, C, H, W)
    scale : Tensor
        0-dim spatial scale in the compute dtype.
    sampling_ratio : int
    aligned : bool
    out_dtype : torch.dtype, optional
        dtype of the result (the input's, e.g. float16); default ``grad_out``'s.

    Returns
    -------
    Tensor[N, C, H, W]
        A fresh contiguous tensor.

    Examples
    --------
    One 2x2 bin average of a 4x4 map: each of the four samples spreads 1/4 over its taps.

    >>> rois = torch.tensor([[0, 0., 0., 4., 4.]])
    >>> g = roi_align_input_grad(torch.ones(1, 1, 1, 1), rois, (1, 1, 4, 4), torch.tensor(1.0), 2, True)
    >>> g[0, 0]
    tensor([[0.0625, 0.0625, 0.0625, 0.0625],
            [0.0625, 0.0625, 0.0625, 0.0625],
            [0.0625, 0.0625, 0.0625, 0.0625],
            [0.0625, 0.0625, 0.0625, 0.0625]])
    """
    n_n, c_n, height, width = input_shape
    k_n, _, ph_n, pw_n = grad_out.shape
    dtype, device = grad_out.dtype, grad_out.device
    cells = n_n * height * width
    # Channels last plus the spare rows; a reused buffer (fresh memory costs a page fault per 4 KiB).
    grad_in = workspace("align_grad_in", (cells + SPARE_ROWS, c_n), dtype, device).zero_()
    if k_n:
        g = align_geometry(rois, scale, ph_n, pw_n, sampling_ratio, aligned)
        if sampling_ratio > 0:
            gh_max = gw_max = sampling_ratio
        else:  # the adaptive loop bound is read on the host
            gh_max, gw_max = max(int(g.grid_h.max()), 1), max(int(g.grid_w.max()), 1)
        ty, wy, oky = _axis_taps(g.start_h, g.bin_h, g.grid_h, gh_max, ph_n, height)  # [K, PH, GH, 2], ok [K, PH, GH]
        tx, wx, okx = _axis_taps(g.start_w, g.bin_w, g.grid_w, gw_max, pw_n, width)  # [K, PW, GW, 2], ok [K, PW, GW]
        count = (g.grid_h * g.grid_w).clamp(min=1.0)  # [K]
        power_of_two = torch.frexp(count).mantissa == 0.5
        # Fold count into the weight where that is exact, (wy / count) * wx == (wy * wx) / count
        # for a power of two; divide the terms where it is not.
        fold = torch.where(power_of_two, count, 1.0)[:, None, None, None]
        divide = (~power_of_two).cpu().numpy()
        divisor = torch.where(power_of_two, 1.0, count).view(k_n, 1, 1, 1)
        # Entries [K, PH, PW, GH, GW, 2 (y tap), 2 (x tap)]: torchvision's order, each built by
        # one broadcast of a per-axis part. Skipped samples get weight 0.
        shape_y, shape_x = (k_n, ph_n, 1, gh_max, 1, 2, 1), (k_n, 1, pw_n, 1, gw_max, 1, 2)
        rows_part = (rois[:, 0].long()[:, None, None, None] * height + ty) * width  # [K, PH, GH, 2]
        dest = (rows_part.view(shape_y) + tx.view(shape_x)).view(k_n, -1)
        wy = torch.where(oky[..., None], wy / fold, 0.0)
        wx = torch.where(okx[..., None], wx, 0.0)
        weight = (wy.view(shape_y) * wx.view(shape_x)).view(k_n, ph_n * pw_n, -1, 1)  # hy*hx, hy*lx, ly*hx, ly*lx
        n_terms = (oky.flatten(1).sum(1) * okx.flatten(1).sum(1) * 4).cpu().numpy()  # the kernel's terms per ROI
        grad_bins = grad_out.reshape(k_n, c_n, ph_n * pw_n).transpose(1, 2)  # [K, PH*PW, C], a view
        n_entries, counted = dest.shape[1], int(n_terms.sum())
        ok = (oky.view(*shape_y[:-2], 1, 1) & okx.view(*shape_x[:-2], 1, 1)).expand(k_n, ph_n, pw_n, gh_max, gw_max, 2, 2)
        if counted >= COMPACT_BELOW * k_n * n_entries:
            if counted < k_n * n_entries:  # skipped samples: their (0) terms go to spare rows
                spare = cells + torch.arange(n_entries, device=device) % SPARE_ROWS
                dest = torch.where(ok.reshape(k_n, -1), dest, spare)
            _sum_dense(grad_in, grad_bins, dest, weight, divisor, divide)
        else:
            _sum_compact(grad_in, grad_bins, dest, weight, divisor, divide, ok.reshape(k_n, -1), n_terms)
    return from_channels_last(grad_in[:cells], output_empty(input_shape, out_dtype or dtype, device))


class ExactGradFunction(torch.autograd.Function):
    """Base of the CPU ``roi_align`` functions: their forwards differ, their backward is this one.

    A subclass's ``forward(ctx, input, rois, ph_n, pw_n, scale, sampling_ratio, aligned)`` calls
    :meth:`remember` and returns the output; the input gradient is
    :func:`roi_align_input_grad` (the boxes get none, as in torchvision).
    """

    @staticmethod
    def remember(ctx, input: Tensor, rois: Tensor, scale: Tensor, sampling_ratio: int, aligned: bool) -> None:
        """Keep what the backward needs (the boxes and the arguments, not the input)."""
        ctx.save_for_backward(rois)
        ctx.input_shape, ctx.input_dtype = input.shape, input.dtype
        ctx.args = (scale, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (rois,) = ctx.saved_tensors  # in the compute dtype
        grad_in = roi_align_input_grad(grad_out.to(rois.dtype), rois, ctx.input_shape, *ctx.args,
                                       out_dtype=ctx.input_dtype)
        return grad_in, None, None, None, None, None, None


def _sum_dense(grad_in: Tensor, grad_bins: Tensor, dest: Tensor, weight: Tensor, divisor: Tensor,
               divide: np.ndarray) -> None:
    """Every entry, skipped samples included (weight 0, sent to a spare row): one broadcast product."""
    k_n, bins, c_n = grad_bins.shape
    taps = weight.shape[2]
    per_roi = bins * taps * c_n * grad_bins.element_size()
    kc = 1 if per_roi >= ONE_ROI_BYTES else min(k_n, max(1, CHUNK_BYTES // per_roi))
    buf = workspace("align_grad_terms", (kc, bins, taps, c_n), grad_bins.dtype, grad_bins.device)
    rows_buf = workspace("align_grad_rows", (kc, bins, c_n), grad_bins.dtype, grad_bins.device)
    index = dest[:, :, None].expand(k_n, dest.shape[1], c_n)  # [K, entries, C], no copy
    # Few operations per chunk (each costs microseconds of dispatch; W1 has 205 chunks).
    for a in range(0, k_n, kc):
        b = min(a + kc, k_n)
        # The chunk's output gradient, channels last: copied per chunk, so it stays in the cache.
        rows = rows_buf[: b - a].copy_(grad_bins[a:b])  # [kc, PH*PW, C]
        terms = torch.mul(rows[:, :, None], weight[a:b], out=buf[: b - a])  # [kc, PH*PW, taps, C]
        if divide[a:b].any():
            terms.div_(divisor[a:b])
        grad_in.scatter_add_(0, index[a:b].flatten(0, 1), terms.view(-1, c_n))


def _sum_compact(grad_in: Tensor, grad_bins: Tensor, dest: Tensor, weight: Tensor, divisor: Tensor,
                 divide: np.ndarray, terms_per_roi: Tensor, n_terms: np.ndarray) -> None:
    """Only the kernel's terms (a gather of output rows first): for adaptive grids of mixed sizes,
    where the largest grid leaves many entries empty (about half on the benchmark workloads)."""
    k_n, bins, c_n = grad_bins.shape
    taps = weight.shape[2]
    keep = terms_per_roi.reshape(-1).nonzero().squeeze(1)  # the kernel's terms, in its order
    dest, weight, row = dest.view(-1)[keep], weight.reshape(-1)[keep], keep // taps  # row: k * PH*PW + bin
    divisor = divisor.view(-1)[keep // (bins * taps)] if divide.any() else None
    # Chunks of whole ROIs holding about CHUNK_BYTES of terms (one ROI more at most).
    starts = np.concatenate([[0], np.cumsum(n_terms)])
    chunk_id = starts[:-1] // max(1, CHUNK_BYTES // (c_n * grad_bins.element_size()))
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(chunk_id)) + 1, [k_n]]).tolist()
    chunks = list(itertools.pairwise(bounds))
    buf = workspace("align_grad_terms", (max(int(starts[b] - starts[a]) for a, b in chunks), c_n),
                    grad_bins.dtype, grad_bins.device)
    rows_buf = workspace("align_grad_rows", (max(b - a for a, b in chunks) * bins, c_n),
                         grad_bins.dtype, grad_bins.device)
    for a, b in chunks:
        ea, eb = int(starts[a]), int(starts[b])
        rows = rows_buf[: (b - a) * bins].view(b - a, bins, c_n).copy_(grad_bins[a:b]).view(-1, c_n)
        terms = torch.index_select(rows, 0, row[ea:eb] - a * bins, out=buf[: eb - ea])
        terms.mul_(weight[ea:eb, None])
        if divisor is not None and np.any(divide[a:b]):
            terms.div_(divisor[ea:eb, None])
        grad_in.scatter_add_(0, dest[ea:eb, None].expand(eb - ea, c_n), terms)
