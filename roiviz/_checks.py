"""Every input check of roiviz, in one place.

Each check raises :class:`TypeError` (wrong kind of thing) or :class:`ValueError` (right kind,
wrong value) with a message that names the argument, what was expected and what was given.
None of them uses ``assert``: ``python -O`` would strip it.

Value checks on boxes (finite, ``x1 <= x2``, batch index in range) have to read the boxes, which
on a GPU is one host synchronisation per call. Code that has already validated its boxes can
skip those reads with :func:`trusted_boxes`; shape, dtype and device checks always run.

Settings are per context
------------------------
:func:`trusted_boxes` is a :mod:`contextvars` setting, like :class:`decimal.localcontext`: it
holds in the thread that entered the ``with`` block and nowhere else. Another thread keeps every
check, including one started inside the block (a new thread starts from a fresh context unless
it runs ``contextvars.copy_context().run``); an asyncio task created inside the block copies the
context, and so the setting, as asyncio tasks do.

What the checks refuse on purpose
---------------------------------
Beyond wrong shapes, dtypes and values, roiviz refuses with a :class:`TypeError` what it cannot
compute truthfully: sparse tensors, tensors without storage (``torch.func`` transforms such as
``vmap`` and ``grad`` wrap tensors that way) and ``torch.jit.trace`` (both would freeze or hide
the host reads of the box values). See :func:`check_eager`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "check_adaptive_grid",
    "check_aligned",
    "check_eager",
    "check_input",
    "check_output_size",
    "check_sampling_ratio",
    "check_spatial_scale",
    "trusted_boxes",
    "value_checks_enabled",
]

#: Whether box values are read and checked; per thread and per asyncio task (see the module docstring).
_VALUE_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("roiviz_value_checks", default=True)


@contextlib.contextmanager
def trusted_boxes() -> Iterator[None]:
    """Skip the data-dependent box checks inside this block.

    Shape, dtype and device are still checked. Use it when boxes are known to be valid and a
    host synchronisation per call (on CUDA) is too much; invalid boxes then give undefined
    results instead of an error. The setting holds in the current thread or asyncio task
    only (a :mod:`contextvars` variable): other threads keep every check.

    Examples
    --------
    >>> import torch, roiviz
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> with roiviz.trusted_boxes():
    ...     roiviz.roi_pool(x, torch.tensor([[0, 0., 0., 3., 3.]]), 2).shape
    torch.Size([1, 1, 2, 2])
    """
    token = _VALUE_CHECKS.set(False)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def value_checks_enabled(tensor: torch.Tensor) -> bool:
    """Whether box values should be read (never on the ``meta`` device, which has no data)."""
    return _VALUE_CHECKS.get() and tensor.device.type != "meta"


def check_input(input: object, name: str = "input") -> torch.Tensor:
    """Check that ``input`` is a dense floating-point ``Tensor[N, C, H, W]`` with ``H, W >= 1``.

    ``N`` and ``C`` may be 0 (torchvision returns an empty result); a map without rows or
    columns has nothing to sample (torchvision crashes on it), so it is refused.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, C, H, W], got {type(input).__name__}")
    if input.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {input.layout}: call .to_dense() first")
    if input.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D tensor [N, C, H, W], got {input.dim()}-D with shape {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {input.dtype}"
        )
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(
            f"{name} must have at least one row and one column (H, W >= 1), got shape {tuple(input.shape)}"
        )
    return input


def check_eager(op: str, **tensors: object) -> None:
    """Refuse, with a :class:`TypeError`, what would hide or freeze the host reads of the boxes.

    The box checks, and the loop bounds of adaptive sampling and ROI Pool, read the box values
    on the host. ``torch.jit.trace`` would record them as constants (a trace valid for one set
    of boxes only), and tensors without storage (those of ``torch.func.vmap``, ``grad``,
    ``jacrev``, ...) cannot be read at all. ``torch.compile`` is fine: it runs those reads eagerly.

    Examples
    --------
    >>> import torch
    >>> torch.func.grad(lambda x: check_eager("roi_align", input=x) or x.sum())(torch.ones(2))
    Traceback (most recent call last):
    ...
    TypeError: roi_align does not support torch.func transforms (vmap, grad, jacrev, jvp, ...): input is a tensor without storage. Call it on plain tensors (for a batch of inputs, loop over it)
    """
    if torch.jit.is_tracing():
        raise TypeError(
            f"{op} cannot be recorded by torch.jit.trace: it reads the box values on the host (checks and "
            "loop bounds), which a trace would freeze as constants. Call it eagerly or use torch.compile"
        )
    if torch.compiler.is_compiling():
        return
    for name, value in tensors.items():
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, t in items:
            if isinstance(t, torch.Tensor):
                _check_storage(op, t, name if i is None else f"{name}[{i}]")


def _check_storage(op: str, t: torch.Tensor, name: str) -> None:
    # The public way to tell: functorch's wrapped tensors raise when asked for their storage.
    if t.layout != torch.strided:
        return  # sparse and other layouts: the type checks name them
    try:
        t.untyped_storage()
    except (NotImplementedError, RuntimeError):
        raise TypeError(
            f"{op} does not support torch.func transforms (vmap, grad, jacrev, jvp, ...): {name} is a tensor "
            "without storage. Call it on plain tensors (for a batch of inputs, loop over it)"
        ) from None


def check_output_size(output_size: object, name: str = "output_size", allow_empty: bool = False) -> tuple[int, int]:
    """Return ``output_size`` as a pair of positive ints (an int ``n`` means ``(n, n)``).

    With ``allow_empty`` a 0 is accepted too (the ROI ops return an empty output for it, as
    torchvision does); the strategies need at least one bin.
    """
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
        if int(value) < 0 or (int(value) == 0 and not allow_empty):  # type: ignore[call-overload]
            need = "non-negative" if allow_empty else "positive (an empty output has no bins)"
            raise ValueError(f"{name} must be {need}, got {output_size!r}")
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
    """Return ``sampling_ratio``: a positive int (samples per bin side), or ``<= 0`` for adaptive sampling.

    As in torchvision, every value ``<= 0`` means adaptive; 0 is detectron2's and mmdetection's default.
    """
    if not _is_int(sampling_ratio):
        raise TypeError(
            f"{name} must be an int (> 0 for a fixed grid, <= 0 for an adaptive one), got {sampling_ratio!r}"
        )
    return int(sampling_ratio)  # type: ignore[call-overload]


#: Most samples per bin of an adaptive grid: torchvision counts them in a C ``int``, which overflows
#: beyond this (its result is then undefined), and a loop over more would not finish anyway.
MAX_ADAPTIVE_SAMPLES = 2**31 - 1


def check_adaptive_grid(rois: torch.Tensor, scale: float, ph_n: int, pw_n: int, aligned: bool,
                        name: str = "sampling_ratio") -> None:
    """Refuse an adaptive grid (``sampling_ratio <= 0``) of more than :data:`MAX_ADAPTIVE_SAMPLES` per bin.

    The grid is ``ceil(roi_h / PH) x ceil(roi_w / PW)`` samples, so a huge but valid box (1e30
    pixels) asks for more samples than exist. Computed on the host in the rois' dtype; skipped
    like the other value checks inside :func:`trusted_boxes`.

    Examples
    --------
    >>> check_adaptive_grid(torch.tensor([[0, 0., 0., 1e30, 1e30]]), 1.0, 7, 7, False)
    Traceback (most recent call last):
    ...
    ValueError: sampling_ratio <= 0 (adaptive) gives box 0 a grid of 1.43e+29 x 1.43e+29 samples per bin, more than 2**31 - 1 (torchvision's sample count overflows there); pass a positive sampling_ratio
    """
    if not value_checks_enabled(rois) or rois.shape[0] == 0:
        return
    a = rois.detach().cpu().numpy()
    s = np.asarray(scale, dtype=a.dtype)
    offset = np.asarray(0.5 if aligned else 0.0, dtype=a.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        roi_w = (a[:, 3] * s - offset) - (a[:, 1] * s - offset)
        roi_h = (a[:, 4] * s - offset) - (a[:, 2] * s - offset)
        grid_h = np.ceil(roi_h / a.dtype.type(ph_n)).astype(np.float64) if ph_n else np.zeros_like(roi_h, np.float64)
        grid_w = np.ceil(roi_w / a.dtype.type(pw_n)).astype(np.float64) if pw_n else np.zeros_like(roi_w, np.float64)
        ok = grid_h * grid_w <= MAX_ADAPTIVE_SAMPLES  # NaN (inf - inf) is not ok
    if ok.all():
        return
    k = int(np.argmin(ok))
    raise ValueError(
        f"{name} <= 0 (adaptive) gives box {k} a grid of {grid_h[k]:.3g} x {grid_w[k]:.3g} samples per bin, more than "
        "2**31 - 1 (torchvision's sample count overflows there); pass a positive sampling_ratio"
    )


def check_aligned(aligned: object, name: str = "aligned") -> bool:
    """Return ``aligned`` as a bool (only real bools are accepted)."""
    if not isinstance(aligned, bool):
        raise TypeError(f"{name} must be True or False, got {aligned!r}")
    return aligned


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
