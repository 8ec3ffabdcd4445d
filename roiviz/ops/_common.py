"""Helpers shared by the ROI ops' implementations: the channels-last view they read, the CPU
kernel switch, and ROI Align's bilinear taps (the box conventions themselves are in
:mod:`roiviz.boxes`)."""

from __future__ import annotations

import importlib.util
import os

import torch

from ..boxes import compute_dtype, sample_coords


def channels_last(input: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` as a contiguous ``[N, H, W, C]`` in the compute dtype.

    Gathering whole channel vectors (``x[b, y, x]`` is ``C`` contiguous numbers) is what makes
    both implementations fast: one index per position instead of one per element, and a
    contiguous innermost loop over channels in the compiled kernels.
    """
    n, c, h, w = input.shape
    out = torch.empty((n, h, w, c), dtype=compute_dtype(input.dtype), device=input.device)
    return out.copy_(input.permute(0, 2, 3, 1))


#: Environment variable choosing the CPU implementation of roi_align and roi_pool: ``numba``
#: (the default: the compiled loops of :mod:`roiviz.ops._numba`) or ``torch`` (the portable
#: gathers that every other device uses). Read at each call.
KERNELS_ENV = "ROIVIZ_KERNELS"


def cpu_kernels_enabled() -> bool:
    """Whether CPU tensors take the compiled kernels: numba is installed and not switched off.

    Raises :class:`ValueError` when ``ROIVIZ_KERNELS`` is set to something else than ``numba``
    or ``torch``.

    Examples
    --------
    >>> import os
    >>> cpu_kernels_enabled() == (_HAVE_NUMBA and os.environ.get("ROIVIZ_KERNELS", "numba") == "numba")
    True
    """
    choice = os.environ.get(KERNELS_ENV, "numba").strip().lower() or "numba"
    if choice not in ("numba", "torch"):
        raise ValueError(f"the environment variable {KERNELS_ENV} must be 'numba' or 'torch', got {choice!r}")
    return _HAVE_NUMBA and choice == "numba"


_HAVE_NUMBA = importlib.util.find_spec("numba") is not None


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

