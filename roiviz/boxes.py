"""Box formats, converted and checked at the door.

roiviz takes boxes as torchvision does:

- a ``Tensor[K, 5]`` of rows ``(batch_index, x1, y1, x2, y2)``, or
- a list of ``N`` tensors ``Tensor[L_n, 4]`` of rows ``(x1, y1, x2, y2)``, one per image.

Coordinates are in input-image pixels; ``spatial_scale`` maps them onto the feature map.
:func:`to_rois` turns either form into one validated ``Tensor[K, 5]``, so the rest of the code
sees one form only.

Pixel convention of the integer crops
-------------------------------------
ROI Pool, and every strategy that starts from an integer crop (``crop``, ``pad``,
``adaptive_*``, ``resize``), uses Fast R-CNN's quantisation: a box covers the feature-map cells
``round(x1 * scale) .. round(x2 * scale)`` *inclusive* (and likewise in y), with ``round``
rounding halves away from zero, as C's ``round`` does. The crop is then clipped to the map.
ROI Align does not quantise: it samples the continuous box (see :func:`roiviz.roi_align`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._checks import check_spatial_scale, value_checks_enabled

__all__ = ["compute_dtype", "crop_bounds", "round_half_away", "to_rois"]

BoxesLike = torch.Tensor | Sequence[torch.Tensor]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype roiviz computes in: float32 for half types, else the dtype itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def to_rois(boxes: BoxesLike, input: torch.Tensor, name: str = "boxes") -> torch.Tensor:
    """Validate ``boxes`` against ``input`` and return them as a ``Tensor[K, 5]``.

    The result is contiguous, on ``input``'s device, in :func:`compute_dtype` of ``input``.

    Parameters
    ----------
    boxes : Tensor[K, 5] or list of Tensor[L, 4]
        ``(batch_index, x1, y1, x2, y2)`` rows, or one ``(x1, y1, x2, y2)`` tensor per image.
    input : Tensor[N, C, H, W]
        The feature map the boxes index into (its batch size, device and dtype are used).

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> to_rois([torch.tensor([[0., 0., 4., 4.]]), torch.tensor([[1., 1., 2., 3.]])], x)
    tensor([[0., 0., 0., 4., 4.],
            [1., 1., 1., 2., 3.]])
    """
    n = input.shape[0]
    dtype = compute_dtype(input.dtype)
    if isinstance(boxes, torch.Tensor):
        _check_box_tensor(boxes, input, 5, name)
        rois = boxes.to(dtype)
    elif isinstance(boxes, (list, tuple)):
        if len(boxes) != n:
            raise ValueError(
                f"{name} as a list must hold one Tensor[L, 4] per image: input has N={n} images, got {len(boxes)} tensors"
            )
        parts = []
        for i, b in enumerate(boxes):
            _check_box_tensor(b, input, 4, f"{name}[{i}]")
            index = torch.full((b.shape[0], 1), i, dtype=dtype, device=b.device)
            parts.append(torch.cat([index, b.to(dtype)], dim=1))
        rois = torch.cat(parts, dim=0) if parts else torch.zeros(0, 5, dtype=dtype, device=input.device)
    else:
        raise TypeError(
            f"{name} must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per image), got {type(boxes).__name__}"
        )
    rois = rois.contiguous()
    if value_checks_enabled(rois) and rois.shape[0] > 0:
        _check_box_values(rois, n, name)
    return rois


def _check_box_tensor(b: object, input: torch.Tensor, columns: int, name: str) -> None:
    form = "[K, 5] (batch_index, x1, y1, x2, y2)" if columns == 5 else "[L, 4] (x1, y1, x2, y2)"
    if not isinstance(b, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor{form}, got {type(b).__name__}")
    if b.dim() != 2 or b.shape[1] != columns:
        raise ValueError(f"{name} must have shape {form}, got {tuple(b.shape)}")
    if not b.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {b.dtype}")
    if b.device != input.device:
        raise ValueError(f"{name} is on {b.device} but input is on {input.device}: put both on one device")


def _check_box_values(rois: torch.Tensor, n: int, name: str) -> None:
    # Read on the host with NumPy: one copy of the boxes (on a GPU, the one synchronisation),
    # then a few microseconds, where the same checks as torch operations cost ~50 us per call
    # on a handful of boxes (a sixth of a teaching-sized roi_align).
    a = rois.detach().cpu().numpy()
    batch = a[:, 0]
    with np.errstate(invalid="ignore"):  # NaN compares as False, which is what marks it bad
        finite = np.isfinite(a).all(axis=1)
        whole = batch == np.floor(batch)
        in_range = (batch >= 0) & (batch < n)
        ordered = (a[:, 3] >= a[:, 1]) & (a[:, 4] >= a[:, 2])
    good = finite & whole & in_range & ordered
    if good.all():
        return
    k = int(np.argmin(good))  # the first bad box
    row = [float(v) for v in a[k]]
    what = f"box {k} (batch_index, x1, y1, x2, y2) = {tuple(row)}"
    if not finite[k]:
        raise ValueError(f"{name}: {what} has a NaN or infinite coordinate")
    if not whole[k]:
        raise ValueError(f"{name}: {what} has a batch index that is not a whole number")
    if not in_range[k]:
        raise ValueError(f"{name}: {what} has batch index {row[0]:g} outside [0, {n}) for input with N={n}")
    raise ValueError(f"{name}: {what} has x2 < x1 or y2 < y1; boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2")


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves away from zero (C's ``round``), exactly.

    ``torch.round`` rounds halves to even, and ``floor(v + 0.5)`` is wrong for values just
    below one half in float32 (``0.49999997 + 0.5`` rounds up to ``1.0``). This is exact.

    Examples
    --------
    >>> round_half_away(torch.tensor([0.5, 1.5, 2.5, -0.5, 0.49999997]))
    tensor([ 1.,  2.,  3., -1.,  0.])
    """
    whole = torch.trunc(v)
    return whole + torch.sign(v) * ((v - whole).abs() >= 0.5).to(v.dtype)


def crop_bounds(
    rois: torch.Tensor, spatial_scale: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integer crop of each ROI on the feature map, clipped to it.

    Returns ``(y0, x0, h, w)``, each a ``LongTensor[K]``: the crop is rows ``y0 .. y0+h-1`` and
    columns ``x0 .. x0+w-1``. ``h`` or ``w`` is 0 when the box lies wholly outside the map.
    See the module docstring for the convention.

    Examples
    --------
    >>> rois = torch.tensor([[0, 10., 20., 300., 200.]])
    >>> crop_bounds(rois, 1 / 16, 50, 68)
    (tensor([1]), tensor([1]), tensor([13]), tensor([19]))
    """
    # Multiply in the rois' dtype, as the C++ kernels do, so rounding ties land the same way.
    scale = torch.tensor(check_spatial_scale(spatial_scale), dtype=rois.dtype, device=rois.device)
    q = round_half_away(rois[:, 1:] * scale).long()  # [K, 4] x1, y1, x2, y2 in cells
    x0 = q[:, 0].clamp(0, width)
    y0 = q[:, 1].clamp(0, height)
    x1 = (q[:, 2] + 1).clamp(0, width)  # exclusive end
    y1 = (q[:, 3] + 1).clamp(0, height)
    return y0, x0, (y1 - y0).clamp(min=0), (x1 - x0).clamp(min=0)
