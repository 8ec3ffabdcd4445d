"""The front door of the ROI ops: what every op does before its kernels run.

- every argument is checked (:mod:`roiviz._checks`) and the boxes are parsed into one
  ``Tensor[K, 5]`` (:func:`roiviz.boxes.to_rois`), detached: like torchvision, box coordinates
  get no gradient (``boxes.grad`` stays ``None``), yet the output is differentiable when boxes
  require grad (:func:`boxes_in_graph`), as torchvision's is;
- torchvision's edge cases are answered here, so the kernels only ever see a non-empty problem:
  no boxes, an empty batch, zero channels or a 0 in ``output_size`` give an empty or all-zero
  ``Tensor[K, C, PH, PW]`` that is still part of the autograd graph;
- under :func:`torch.autocast` the ops compute as torchvision registers them for autocast
  (``csrc/ops/autocast/roi_align_kernel.cpp``): in float32 for half inputs, in float64 for
  float64 ones, returning the input's own dtype. When :func:`autocast_on`, an op calls itself
  again inside ``torch.autocast(device_type, enabled=False)``, so that no matrix product inside
  runs in a half type.
"""

from __future__ import annotations

import torch

from .._checks import check_input, check_output_size, check_spatial_scale
from ..boxes import BoxesLike, compute_dtype, to_rois

__all__ = ["autocast_on", "boxes_in_graph", "empty_problem", "empty_result", "roi_arguments"]


def roi_arguments(
    input: torch.Tensor, boxes: BoxesLike, output_size: object, spatial_scale: object
) -> tuple[torch.Tensor, torch.Tensor, int, int, torch.Tensor]:
    """Check the common arguments once: ``(input, rois [K, 5], PH, PW, scale)``.

    ``rois`` is detached, in the compute dtype; ``scale`` is a 0-dim tensor in that dtype (the
    C++ kernels multiply ``x1 * spatial_scale`` in the input's type, and so must we to quantise
    exactly as they do). ``PH`` or ``PW`` may be 0 (see :func:`empty_problem`).
    """
    input = check_input(input)
    ph, pw = check_output_size(output_size, allow_empty=True)
    scale = check_spatial_scale(spatial_scale)
    rois = to_rois(boxes, input).detach()
    # torch.full, not torch.tensor: no copy from the host, which on a GPU would synchronise.
    scale_t = torch.full((), scale, dtype=compute_dtype(input.dtype), device=input.device)
    return input, rois, ph, pw, scale_t


def empty_problem(input: torch.Tensor, rois: torch.Tensor, ph_n: int, pw_n: int) -> bool:
    """Whether the output has no element or there is no image to read (``K``, ``C``, ``N``, ``PH`` or ``PW`` is 0)."""
    return rois.shape[0] == 0 or input.shape[0] == 0 or input.shape[1] == 0 or ph_n == 0 or pw_n == 0


def empty_result(input: torch.Tensor, k_n: int, ph_n: int, pw_n: int) -> torch.Tensor:
    """Zeros ``[K, C, PH, PW]`` in ``input``'s dtype, differentiable w.r.t. ``input`` (gradient 0).

    The zeros are joined to the graph through an empty sum of ``input`` (a view, no copy), not
    ``0 * input``, which would be NaN where ``input`` is inf.

    Examples
    --------
    >>> x = torch.ones(2, 3, 4, 4, requires_grad=True)
    >>> out = empty_result(x, 0, 7, 7)
    >>> out.shape, out.requires_grad
    (torch.Size([0, 3, 7, 7]), True)
    """
    out = input.new_zeros((k_n, input.shape[1], ph_n, pw_n))
    if input.requires_grad and torch.is_grad_enabled():
        out = out + input[:0].sum()
    return out


def autocast_on(input: object) -> bool:
    """Whether autocast is enabled for ``input``'s device type (then the op reruns with it off)."""
    if not isinstance(input, torch.Tensor):
        return False
    try:
        return torch.is_autocast_enabled(input.device.type)
    except RuntimeError:  # a device type autocast does not know (e.g. meta): nothing to turn off
        return False


class _NoBoxGradient(torch.autograd.Function):
    """The output unchanged, in the graph of the boxes, which get no gradient (``None``)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, *boxes: torch.Tensor) -> torch.Tensor:
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (grad, *(None for _ in ctx.needs_input_grad[1:]))


def boxes_in_graph(out: torch.Tensor, boxes: BoxesLike) -> torch.Tensor:
    """``out``, differentiable when some box tensor requires grad, as torchvision's output is.

    torchvision's ``roi_align``/``roi_pool`` return an output that requires grad whenever the
    input *or the boxes* do, and give the boxes no gradient: code that calls ``backward()`` on
    it must not fail because only the boxes required grad. The gradient reaching the boxes is
    ``None``, so ``boxes.grad`` stays ``None``.

    Examples
    --------
    >>> boxes = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    >>> out = boxes_in_graph(torch.ones(1, 1, 2, 2), boxes)
    >>> out.requires_grad, out.sum().backward(), boxes.grad
    (True, None, None)
    """
    if out.requires_grad or not torch.is_grad_enabled():
        return out
    tensors = [boxes] if isinstance(boxes, torch.Tensor) else [b for b in boxes if isinstance(b, torch.Tensor)]
    needing = [b for b in tensors if b.requires_grad]
    return _NoBoxGradient.apply(out, *needing) if needing else out
