"""Every input check of roiviz, in one place.

Each check raises :class:`TypeError` (wrong kind of thing) or :class:`ValueError` (right kind,
wrong value) with a message that names the argument, what was expected and what was given.
None of them uses ``assert``: ``python -O`` would strip it.

Value checks on boxes (finite, ``x1 <= x2``, batch index in range) have to read the boxes, which
on a GPU is one host synchronisation per call. Code that has already validated its boxes can
skip those reads with :func:`trusted_boxes`; shape, dtype and device checks always run.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence

import torch

__all__ = [
    "check_aligned",
    "check_input",
    "check_output_size",
    "check_sampling_ratio",
    "check_spatial_scale",
    "trusted_boxes",
    "value_checks_enabled",
]

_VALUE_CHECKS = True


@contextlib.contextmanager
def trusted_boxes() -> Iterator[None]:
    """Skip the data-dependent box checks inside this block.

    Shape, dtype and device are still checked. Use it when boxes are known to be valid and a
    host synchronisation per call (on CUDA) is too much; invalid boxes then give undefined
    results instead of an error.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> with roiviz.trusted_boxes():
    ...     roiviz.roi_pool(x, torch.tensor([[0, 0., 0., 3., 3.]]), 2).shape
    torch.Size([1, 1, 2, 2])
    """
    global _VALUE_CHECKS
    previous, _VALUE_CHECKS = _VALUE_CHECKS, False
    try:
        yield
    finally:
        _VALUE_CHECKS = previous


def value_checks_enabled(tensor: torch.Tensor) -> bool:
    """Whether box values should be read (never on the ``meta`` device, which has no data)."""
    return _VALUE_CHECKS and tensor.device.type != "meta"


def check_input(input: object, name: str = "input") -> torch.Tensor:
    """Check that ``input`` is a floating-point ``Tensor[N, C, H, W]`` and return it."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, C, H, W], got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D tensor [N, C, H, W], got {input.dim()}-D with shape {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {input.dtype}"
        )
    return input


def check_output_size(output_size: object, name: str = "output_size") -> tuple[int, int]:
    """Return ``output_size`` as a pair of positive ints (an int ``n`` means ``(n, n)``)."""
    if isinstance(output_size, torch.Size):
        output_size = tuple(output_size)
    if _is_int(output_size):
        pair: Sequence[object] = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(
                f"{name} must be an int or a pair (height, width), got a sequence of length {len(output_size)}: {output_size!r}"
            )
        pair = output_size
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (height, width), got {output_size!r}")
    for value in pair:
        if not _is_int(value):
            raise TypeError(f"{name} must contain ints, got {output_size!r}")
        if int(value) <= 0:  # type: ignore[call-overload]
            raise ValueError(f"{name} must be positive (an empty output has no bins), got {output_size!r}")
    return int(pair[0]), int(pair[1])  # type: ignore[call-overload]


def check_spatial_scale(spatial_scale: object, name: str = "spatial_scale") -> float:
    """Return ``spatial_scale`` as a positive, finite float."""
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {spatial_scale!r}")
    value = float(spatial_scale)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {spatial_scale!r}")
    return value


def check_sampling_ratio(sampling_ratio: object, name: str = "sampling_ratio") -> int:
    """Return ``sampling_ratio``: a positive int, or a negative int for adaptive sampling."""
    if not _is_int(sampling_ratio):
        raise TypeError(
            f"{name} must be an int (> 0 for a fixed grid, < 0 for an adaptive one), got {sampling_ratio!r}"
        )
    value = int(sampling_ratio)  # type: ignore[call-overload]
    if value == 0:
        raise ValueError(
            f"{name} must not be 0: use a positive int for that many samples per bin side, or -1 for adaptive sampling"
        )
    return value


def check_aligned(aligned: object, name: str = "aligned") -> bool:
    """Return ``aligned`` as a bool (only real bools are accepted)."""
    if not isinstance(aligned, bool):
        raise TypeError(f"{name} must be True or False, got {aligned!r}")
    return aligned


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
