"""Helpers shared by the ROI ops: argument checking and the channels-last view they gather from."""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
from typing import NamedTuple

import torch

from .._checks import check_input, check_output_size, check_spatial_scale
from ..boxes import BoxesLike, compute_dtype, to_rois


def prepare(
    input: torch.Tensor, boxes: BoxesLike, output_size: object, spatial_scale: object
) -> tuple[torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """Check the common arguments once.

    Returns ``(input, rois [K, 5], PH, PW, scale)`` where ``scale`` is a 0-dim tensor in the
    compute dtype: the C++ kernels multiply ``x1 * spatial_scale`` in the input's type, and so
    must we to quantise exactly as they do.
    """
    input = check_input(input)
    ph, pw = check_output_size(output_size)
    scale = check_spatial_scale(spatial_scale)
    rois = to_rois(boxes, input)
    # torch.full, not torch.tensor: no copy from the host, which on a GPU would synchronise.
    scale_t = torch.full((), scale, dtype=compute_dtype(input.dtype), device=input.device)
    return input, rois, ph, pw, scale_t


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` as a contiguous ``[N, H, W, C]`` in the compute dtype.

    Gathering whole channel vectors (``x[b, y, x]`` is ``C`` contiguous numbers) is what makes
    the vectorised ops fast: one index per position instead of one per element.
    """
    n, c, h, w = input.shape
    return empty((n, h, w, c), compute_dtype(input.dtype), input.device).copy_(input.permute(0, 2, 3, 1))


def from_channels_last(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Copy ``rows [N*H*W, C]`` (channels last) into the contiguous ``out [N, C, H, W]``; returns ``out``.

    Read straight from ``rows``, this transposing copy reads rows ``C`` numbers apart (1 KiB
    for 256 float32 channels), which keep landing in the same few L1 cache sets: 24 ms for a
    ``[2, 256, 100, 136]`` map here. Staging the rows first in a reused buffer whose rows are
    one cache line longer breaks that pattern: 10 ms for both copies together.

    Examples
    --------
    >>> x = torch.arange(24.).reshape(1, 2, 3, 4)
    >>> rows = x.permute(0, 2, 3, 1).reshape(-1, 2)
    >>> torch.equal(from_channels_last(rows, torch.empty(1, 2, 3, 4)), x)
    True
    """
    n, c, h, w = out.shape
    pad = max(1, 64 // rows.element_size())  # one cache line
    staged = workspace("nchw_staging", (n * h * w, c + pad), rows.dtype, rows.device)[:, :c].copy_(rows)
    return out.copy_(staged.view(n, h, w, c).permute(0, 3, 1, 2))


#: With ``ROIVIZ_HUGE_PAGES=1``, allocations at least this large are advised into huge pages.
HUGE_PAGE_BYTES = 1 << 22
_HUGE = 1 << 21
_MADV_HUGEPAGE = 14


def _load_madvise():  # pragma: no cover - platform dependent
    if not sys.platform.startswith("linux") or os.environ.get("ROIVIZ_HUGE_PAGES", "0") != "1":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_madvise = _load_madvise()


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``; with ``ROIVIZ_HUGE_PAGES=1`` a large CPU tensor asks Linux for 2 MiB pages.

    Writing fresh memory costs one page fault per 4 KiB page: for a 50 MB ROI output that is
    12,000 faults, more time than the arithmetic. ``madvise(MADV_HUGEPAGE)`` (what PyTorch's
    own ``THP_MEM_ALLOC_ENABLE=1`` does for every allocation) makes it one fault per 2 MiB.
    It is off unless the environment variable ``ROIVIZ_HUGE_PAGES=1`` is set (read at import):
    on the shared VM this was measured on, it sped the ROI ops up by 10-20 % in most processes
    but made some 2-3x slower (huge-page faults are occasionally very slow there), and a
    predictable cost matters more. Elsewhere, or if the call fails, this is plain ``torch.empty``.

    Examples
    --------
    >>> empty((2, 3), torch.float32, torch.device("cpu")).shape
    torch.Size([2, 3])
    """
    t = torch.empty(shape, dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if _madvise is not None and t.device.type == "cpu" and nbytes >= HUGE_PAGE_BYTES:
        start = (t.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)  # the whole 2 MiB pages inside t
        end = (t.data_ptr() + nbytes) & ~(_HUGE - 1)
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: a failure changes nothing
    return t


_WORKSPACE = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """A scratch tensor of ``shape`` that is reused by the next call (content undefined).

    Fresh memory costs a page fault per 4 KiB on first touch, which for the ROI ops' work
    buffers (the channels-last copy of the input: 28 MB for a ``[2, 256, 100, 136]`` map) costs
    more than the work done in them. So each thread keeps its largest buffer per ``name`` and
    hands out views of it. Never return a workspace to a caller or save it for backward: the
    next call overwrites it. :func:`clear_workspace` frees them.

    Examples
    --------
    >>> a = workspace("doc", (2, 3), torch.float32)
    >>> b = workspace("doc", (3, 2), torch.float32)
    >>> a.data_ptr() == b.data_ptr()
    True
    >>> clear_workspace()
    """
    cache = _WORKSPACE.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    key = (name, torch.device(device))
    buf = cache.get(key)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        buf = cache[key] = torch.empty(max(numel, 1), dtype=dtype, device=device)
    return buf[:numel].view(shape)


def clear_workspace() -> None:
    """Free this thread's work buffers (see :func:`workspace`).

    The CPU ops keep their largest scratch buffers between calls (about 340 MiB after a
    forward and backward of roi_align and roi_pool on a detector-sized input, W1 of
    :mod:`roiviz.bench`), and the memory of their last four large outputs for reuse once you
    drop them (:func:`output_empty`; 150 MiB there), because reusing memory is faster than
    faulting in fresh pages. Call this when you are done with ROI ops and want that memory back.

    Examples
    --------
    >>> import torch, roiviz
    >>> _ = roiviz.roi_align(torch.zeros(1, 1, 8, 8), torch.tensor([[0, 0., 0., 4., 4.]]), 2)
    >>> roiviz.clear_workspace()
    """
    _WORKSPACE.__dict__.pop("buffers", None)
    _WORKSPACE.__dict__.pop("outputs", None)


#: Returned CPU tensors at least this large are recycled by :func:`output_empty` (smaller ones
#: come from malloc's heap, which reuses memory without page faults anyway)...
RECYCLE_BYTES = 1 << 20
#: ... and at most this large: a one-off huge output is not kept alive after it is dropped.
RECYCLE_MAX_BYTES = 1 << 28
#: How many returned tensors' memory each thread keeps for reuse (the least recently used goes).
RECYCLE_SLOTS = 4
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def output_empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`empty` for a tensor that is returned or saved for backward: it may reuse the memory
    of an earlier one that nothing refers to any more.

    A large CPU tensor is a fresh ``mmap`` of zero pages from Linux, and writing it costs a page
    fault per 4 KiB: 11 ms of a 38 ms roi_align forward on W1 of :mod:`roiviz.bench` (a 49 MiB
    output). So each thread keeps the storages of its last few large outputs (four, of 1 to 256
    MiB: ``RECYCLE_*``), and hands one out again (same byte size) once its use count shows that
    no tensor, view, NumPy array or autograd graph holds it: only then is its memory as free as
    if it had been released. A storage moved to shared memory (sent to another process) is
    never reused: the other process may still read it. :func:`clear_workspace` frees the kept
    storages.

    Examples
    --------
    >>> cpu = torch.device("cpu")
    >>> a = output_empty((512, 1024), torch.float32, cpu)
    >>> ptr = a.data_ptr()
    >>> b = output_empty((512, 1024), torch.float32, cpu)  # a is alive: new memory
    >>> b.data_ptr() == ptr
    False
    >>> del a
    >>> output_empty((1024, 512), torch.float32, cpu).data_ptr() == ptr  # a's memory, reused
    True
    >>> clear_workspace()
    """
    nbytes = math.prod(shape) * dtype.itemsize
    if (device.type != "cpu" or not RECYCLE_BYTES <= nbytes <= RECYCLE_MAX_BYTES or _use_count is None
            or RECYCLE_SLOTS < 1):
        return empty(shape, dtype, device)
    kept: list[torch.UntypedStorage] = _WORKSPACE.__dict__.setdefault("outputs", [])
    for i in reversed(range(len(kept))):  # the most recently used first: its pages may be cached
        storage = kept[i]
        # A use count of 1 is our own reference: every tensor on this storage is gone.
        if storage.nbytes() == nbytes and _use_count(storage._cdata) == 1:
            del kept[i]
            if storage.is_shared():  # another process may map it: let it go
                break
            kept.append(storage)  # most recently used last
            return torch.empty(0, dtype=dtype, device=device).set_(storage, 0, shape)
    out = empty(shape, dtype, device)
    kept.append(out.untyped_storage())
    del kept[:-RECYCLE_SLOTS]
    return out


class AlignGeometry(NamedTuple):
    """Per-ROI geometry of ROI Align, each ``Tensor[K]`` in the compute dtype."""

    start_h: torch.Tensor
    start_w: torch.Tensor
    bin_h: torch.Tensor
    bin_w: torch.Tensor
    grid_h: torch.Tensor
    grid_w: torch.Tensor


def align_geometry(
    rois: torch.Tensor, scale: torch.Tensor, ph_n: int, pw_n: int, sampling_ratio: int, aligned: bool
) -> AlignGeometry:
    """Box start, bin size and sampling grid of every ROI, in torchvision's expressions and order.

    Sample ``i`` of bin ``p`` then lies at ``start + p * bin + (i + 0.5) * bin / grid``.
    """
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * scale - offset  # [K]
    start_h = rois[:, 2] * scale - offset
    roi_w = rois[:, 3] * scale - offset - start_w
    roi_h = rois[:, 4] * scale - offset - start_h
    if not aligned:  # legacy: force malformed ROIs to be at least 1x1
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full_like(roi_h, sampling_ratio)
    else:
        grid_h = torch.ceil(roi_h / ph_n)
        grid_w = torch.ceil(roi_w / pw_n)
    return AlignGeometry(start_h, start_w, roi_h / ph_n, roi_w / pw_n, grid_h, grid_w)


def sample_coords(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, g_max: int,
                  n_bins: int) -> torch.Tensor:
    """``[K, n_bins, g_max]``: where ROI Align samples along one axis, in torchvision's order.

    Sample ``i`` of bin ``p`` lies at ``start + p * bin + (i + 0.5) * bin / grid``, evaluated
    left to right as the kernel does (so float32 coordinates are bit-identical). Samples with
    ``i >= grid`` are computed too; callers mask them.

    Examples
    --------
    >>> sample_coords(torch.tensor([0.]), torch.tensor([2.]), torch.tensor([2.]), 2, 2)
    tensor([[[0.5000, 1.5000],
             [2.5000, 3.5000]]])
    """
    p = torch.arange(n_bins, dtype=start.dtype, device=start.device)[:, None]  # [P, 1]
    half = torch.arange(g_max, dtype=start.dtype, device=start.device) + 0.5  # [G]: (i + .5)
    b3 = bin_size[:, None, None]
    return start[:, None, None] + p * b3 + half * b3 / grid[:, None, None]


def axis_taps(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, g_max: int, n_bins: int,
              size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sample of every bin along one axis of ``size`` cells: ``(ok, low, high, l, h)``.

    :func:`sample_coords` then :func:`interpolation_1d`, each ``[K, n_bins, g_max]``; ``ok`` is
    False for the samples the kernel does not count (outside ``[-1, size]``) or does not take
    (beyond an adaptive grid).

    Examples
    --------
    >>> ok, low, high, l, h = axis_taps(torch.tensor([0.]), torch.tensor([2.]), torch.tensor([1.]), 2, 1, 4)
    >>> ok.tolist(), low.tolist(), l.tolist()
    ([[[True, False]]], [[[1, 3]]], [[[0.0, 0.0]]])
    """
    coord = sample_coords(start, bin_size, grid, g_max, n_bins)  # [K, P, G]
    inside, low, high, lo_w, hi_w = interpolation_1d(coord, size)
    ok = inside & (torch.arange(g_max, device=start.device) < grid[:, None, None])
    return ok, low, high, lo_w, hi_w


def interpolation_1d(
    coord: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """torchvision's bilinear rule along one axis of ``size`` cells.

    Returns ``(inside, low, high, l, h)``: whether the coordinate is within ``[-1, size]``,
    the two neighbouring indices and their weights ``l = c - low`` and ``h = 1 - l`` (the
    coordinate clamped to ``[0, size - 1]`` first, as the kernel does).

    Examples
    --------
    >>> inside, low, high, l, h = interpolation_1d(torch.tensor([-2.0, 0.25, 3.5]), 4)
    >>> inside.tolist(), low.tolist(), high.tolist(), l.tolist(), h.tolist()
    ([False, True, True], [0, 0, 3], [1, 1, 3], [0.0, 0.25, 0.0], [1.0, 0.75, 1.0])
    """
    inside = (coord >= -1.0) & (coord <= size)
    # Outside samples are masked by the caller; zero them so that far-away or NaN coordinates
    # (0/0 when an adaptive grid is empty) cannot overflow the integer cast below.
    c = torch.where(inside, coord, torch.zeros_like(coord)).clamp(min=0.0)
    low = c.long()  # truncation == floor for c >= 0
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    c = torch.where(at_end, low.to(c.dtype), c)
    lo_w = c - low.to(c.dtype)
    hi_w = 1.0 - lo_w
    return inside, low, high, lo_w, hi_w

