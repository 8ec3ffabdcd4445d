"""prroi_pool: the numba path, the torch path and the reference loops; limits, conventions, gradients."""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from _cases import roi_cases
from conftest import TOLERANCES
from hypothesis import given, settings

import roiviz
from roiviz import reference
from roiviz.ops._common import KERNELS_ENV
from roiviz.ops.prroi_pool import hat_weight

PATHS = ["numba", "torch"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch) -> str:
    """Run the test once on each CPU implementation (``ROIVIZ_KERNELS``)."""
    monkeypatch.setenv(KERNELS_ENV, request.param)
    return request.param


def _boxes(dtype=torch.float64) -> torch.Tensor:
    """Inside, across the border, far outside, zero-area, tiny, and on exact cell edges."""
    return torch.tensor([
        [0, 1.2, 0.3, 7.7, 5.1],
        [1, -2.0, 3.0, 14.0, 11.5],
        [0, 20.0, 20.0, 25.0, 26.0],
        [1, 3.0, 3.0, 3.0, 6.0],
        [0, 4.1, 2.2, 4.3, 2.9],
        [1, 2.0, 1.0, 6.0, 9.0],
    ], dtype=dtype)


# ------------------------------------------------------------------ smoke, shapes, module


def test_shapes_list_form_and_module():
    x = torch.randn(2, 5, 10, 12)
    per_image = [torch.tensor([[1.0, 2.0, 6.0, 7.0]]), torch.tensor([[0.0, 0.0, 3.0, 3.0], [2.0, 2.0, 9.0, 5.0]])]
    as_tensor = torch.tensor([[0, 1.0, 2.0, 6.0, 7.0], [1, 0.0, 0.0, 3.0, 3.0], [1, 2.0, 2.0, 9.0, 5.0]])
    out = roiviz.prroi_pool(x, as_tensor, (3, 4), 0.5)
    assert out.shape == (3, 5, 3, 4) and out.dtype == torch.float32
    torch.testing.assert_close(roiviz.prroi_pool(x, per_image, (3, 4), 0.5), out, rtol=0, atol=0)
    module = roiviz.PrRoIPool((3, 4), 0.5)
    assert repr(module) == "PrRoIPool(output_size=(3, 4), spatial_scale=0.5, aligned=False)"
    torch.testing.assert_close(module(x, as_tensor), out, rtol=0, atol=0)
    assert "prroi_pool" in (roiviz.PrRoIPool.__doc__ or "")


def test_registered_after_roi_align_with_aligned_true():
    names = list(roiviz.STRATEGIES)
    assert names.index("prroi_pool") == names.index("roi_align") + 1
    x, boxes = torch.randn(1, 2, 8, 8), torch.tensor([[0, 1.0, 2.0, 5.0, 7.0]])
    torch.testing.assert_close(roiviz.STRATEGIES["prroi_pool"](x, boxes, 3, 1.0),
                               roiviz.prroi_pool(x, boxes, 3, 1.0, aligned=True))


def test_empty_boxes_and_gradient(path):
    x = torch.randn(1, 3, 5, 5, requires_grad=True)
    out = roiviz.prroi_pool(x, torch.zeros(0, 5), 2)
    assert out.shape == (0, 3, 2, 2)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# ------------------------------------------------------------------ the three implementations agree


@pytest.mark.parametrize("aligned", [False, True])
def test_paths_match_reference_float64(path, aligned):
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64)
    boxes = _boxes()
    got = roiviz.prroi_pool(x, boxes, (3, 4), 0.9, aligned)
    torch.testing.assert_close(got, reference.prroi_pool(x, boxes, (3, 4), 0.9, aligned), **TOLERANCES[torch.float64])


@pytest.mark.parametrize("aligned", [False, True])
def test_gradients_match_reference_float64(path, aligned):
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64, requires_grad=True)
    boxes = _boxes().requires_grad_()
    grad = torch.randn(6, 3, 3, 4, dtype=torch.float64)
    (roiviz.prroi_pool(x, boxes, (3, 4), 0.9, aligned) * grad).sum().backward()
    grad_input, grad_rois = reference.prroi_pool_backward(x, boxes, grad, 0.9, aligned)
    torch.testing.assert_close(x.grad, grad_input, **TOLERANCES[torch.float64])
    torch.testing.assert_close(boxes.grad, grad_rois, **TOLERANCES[torch.float64])
    assert boxes.grad[:, 0].eq(0).all()  # the batch index gets no gradient


def test_numba_and_torch_paths_agree_on_a_detector_sized_call(monkeypatch):
    x = torch.randn(2, 16, 25, 34, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(40, 2, generator=gen, dtype=torch.float64) * 300
    wh = torch.rand(40, 2, generator=gen, dtype=torch.float64) * 250
    boxes = torch.cat([torch.randint(0, 2, (40, 1), generator=gen).double(), xy, xy + wh], 1).requires_grad_()
    grad = torch.randn(40, 16, 7, 7, dtype=torch.float64)
    results = []
    for choice in PATHS:
        monkeypatch.setenv(KERNELS_ENV, choice)
        x.grad = boxes.grad = None
        out = roiviz.prroi_pool(x, boxes, 7, 1 / 16, aligned=True)
        (out * grad).sum().backward()
        results.append((out.detach(), x.grad.clone(), boxes.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **TOLERANCES[torch.float64])


@settings(max_examples=40, deadline=None)
@given(case=roi_cases(max_rois=3, max_side=7))
def test_random_cases_match_reference(case):
    """Both paths, forward and both gradients, against the loops (boxes in, across, outside, zero-area)."""
    k, c = case.boxes.shape[0], case.input.shape[1]
    grad = torch.randn(k, c, *case.output_size, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    expected = reference.prroi_pool(case.input, case.boxes, case.output_size, case.spatial_scale)
    grad_input, grad_rois = reference.prroi_pool_backward(case.input, case.boxes, grad, case.spatial_scale)
    for choice in PATHS:
        os.environ[KERNELS_ENV] = choice
        try:
            x = case.input.clone().requires_grad_()
            boxes = case.boxes.clone().requires_grad_()
            out = roiviz.prroi_pool(x, boxes, case.output_size, case.spatial_scale)
            (out * grad).sum().backward()
        finally:
            del os.environ[KERNELS_ENV]
        tol = {"atol": 1e-9, "rtol": 1e-9}  # the kernels' closed form and the loops' cells sum differently
        # The mean divides an integral by the bin's area, so its rounding grows as eps / side
        # for a thin bin (8.1e-9 for a 2e-8-thin bin, found by hypothesis).
        sides = (case.boxes[:, 3:] - case.boxes[:, 1:3]) * case.spatial_scale
        bins = sides / torch.tensor(case.output_size[::-1], dtype=sides.dtype)  # [K, (w, h)]
        thinnest = min(1.0, float(bins[bins > 0].min())) if (bins > 0).any() else 1.0
        scale_of_x = float(case.input.abs().max()) if case.input.numel() else 0.0
        torch.testing.assert_close(out, expected, atol=1e-9 + 1e-15 * scale_of_x / thinnest, rtol=1e-9)
        # Gradients divide by the bin's area: the box gradient is a difference of two nearly
        # equal numbers over it, so its rounding grows as eps / side**2 (6.9e-4 for a 1e-6-thin
        # box, found by hypothesis): boxes thinner than 1e-3 cells are not compared there.
        if ((sides > 0) & (sides < 1e-3)).any():
            continue
        torch.testing.assert_close(x.grad, grad_input, **tol)
        torch.testing.assert_close(boxes.grad, grad_rois, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_against_float64(path, dtype):
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64)
    boxes = _boxes()
    expected = roiviz.prroi_pool(x, boxes, (3, 4), 0.9)
    got = roiviz.prroi_pool(x.to(dtype), boxes.to(dtype), (3, 4), 0.9)
    assert got.dtype == dtype
    # The boxes themselves are rounded to dtype too: compare with the float64 result of those.
    expected = roiviz.prroi_pool(x.to(dtype).double(), boxes.to(dtype).double(), (3, 4), 0.9)
    torch.testing.assert_close(got.double(), expected, **{k: 2 * v for k, v in TOLERANCES[dtype].items()})


def test_backward_is_deterministic_whatever_the_threads():
    x = torch.randn(2, 40, 12, 12, requires_grad=True)
    boxes = (torch.rand(30, 5) * torch.tensor([0, 6, 6, 0, 0]) + torch.tensor([0, 0, 0, 6, 6.0])).requires_grad_()
    boxes.data[:, 0] = torch.arange(30) % 2
    grads = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 3, 1):  # other channel blocks, same sums
            torch.set_num_threads(threads)
            x.grad = boxes.grad = None
            roiviz.prroi_pool(x, boxes, 5, 1.0).pow(2).sum().backward()
            grads.append((x.grad.clone(), boxes.grad.clone()))
    finally:
        torch.set_num_threads(before)
    for gx, gb in grads[1:]:
        assert torch.equal(grads[0][0], gx) and torch.equal(grads[0][1], gb)


# ------------------------------------------------------------------ the dense-sampling limit


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_converges_to_prroi_pool_as_sampling_grows(aligned):
    """ROI Align's mean of n x n samples is a midpoint rule for PrRoI's integral: error -> 0 as n grows.

    Inside ``[0, H - 1] x [0, W - 1]`` and for boxes of at least one cell, the two surfaces
    are the same (at the border ROI Align clamps where PrRoI fades to 0; with
    ``aligned=False`` ROI Align widens smaller boxes to one cell).
    """
    x = torch.randn(1, 4, 12, 14, dtype=torch.float64)
    off = 0.5 if aligned else 0.0
    boxes = torch.tensor([[0, 1.3, 0.7, 9.9, 10.2], [0, 0.0, 0.0, 13.0, 11.0], [0, 4.2, 3.1, 5.6, 4.4]], dtype=torch.float64)
    boxes[:, 1:] += off  # the same map region for both conventions
    exact = roiviz.prroi_pool(x, boxes, (3, 2), 1.0, aligned)
    errors = [float((roiviz.roi_align(x, boxes, (3, 2), 1.0, n, aligned) - exact).abs().max()) for n in (2, 8, 32, 128)]
    assert all(b < a / 3 for a, b in itertools.pairwise(errors)), errors  # about 1/n^2
    assert errors[-1] < 1e-3, errors


def test_limit_holds_on_the_stride_16_strategy():
    x = torch.randn(2, 3, 20, 24, dtype=torch.float64)
    boxes = torch.tensor([[0, 40.0, 30.0, 300.0, 250.0], [1, 100.0, 8.0, 180.0, 90.0]], dtype=torch.float64)
    exact = roiviz.STRATEGIES["prroi_pool"](x, boxes, 7, 1 / 16)
    dense = roiviz.roi_align(x, boxes, 7, 1 / 16, sampling_ratio=200, aligned=True)
    torch.testing.assert_close(dense, exact, atol=1e-4, rtol=0)


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("contiguous", [True, False])
def test_gradcheck_input_and_boxes(path, contiguous):
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    if not contiguous:
        x = x.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
        assert not x.is_contiguous()
    x.requires_grad_()
    batch = torch.tensor([[0.0], [1.0], [1.0]], dtype=torch.float64)
    coords = torch.tensor([[1.3, 0.4, 5.1, 6.2], [-1.6, 2.2, 8.9, 9.3], [2.5, 3.25, 3.9, 4.1]],
                          dtype=torch.float64, requires_grad=True)
    # gradcheck perturbs every entry, so the batch index is joined on inside: [K, 5] all the same.
    assert torch.autograd.gradcheck(lambda t, b: roiviz.prroi_pool(t, torch.cat([batch, b], 1), (2, 3), 0.8), (x, coords))


def test_gradcheck_boxes_in_list_form(path):
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    a = torch.tensor([[0.3, 0.6, 4.2, 3.3]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.1, 1.7, 2.9, 5.4], [2.2, 0.1, 5.5, 2.6]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: roiviz.prroi_pool(x, [p, q], 2, 1.0, aligned=True), (a, b))


def test_box_gradient_where_roi_align_has_none(path):
    """Where ROI Align's samples all sit in flat regions (or are clamped at the border) its output
    does not move with the box; PrRoI's bins still see their edges move, so the gradient is not 0.
    """
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[..., 4:8, 4:8] = 1.0  # an object on a flat background
    # The surface is 1 on [4, 7], fades on [3, 4] and [7, 8]. ROI Align's 2 x 2 samples per bin
    # of this box sit at 1.625, 2.875 | 4.125, 5.375: all on flat ground, also after a small shift.
    box = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, 1, dtype=torch.float64)
    # ROI Align (2 x 2 samples per bin, aligned) does not move for a small shift of x1: its
    # samples stay inside flat cells.
    shifts = torch.tensor([[0, 0, 0, 0, 0], [0, 0.05, 0, 0, 0], [0, 0, -0.05, 0, 0], [0, 0, 0, 0.05, 0], [0, 0, 0, 0, -0.05]])
    align = [roiviz.roi_align(x, box.detach() + d, 2, 1.0, 2, False) for d in shifts.double()]
    assert all(torch.equal(align[0], a) for a in align[1:])
    out = roiviz.prroi_pool(x, box, 2, 1.0)
    out.sum().backward()
    assert (box.grad[0, 1:].abs() > 1e-3).all(), box.grad
    assert torch.autograd.gradcheck(lambda b: roiviz.prroi_pool(x, torch.cat([zero, b], 1), 2, 1.0),
                                    (box.detach()[:, 1:].requires_grad_(),))
    # Half outside the map: the fading border still gives a gradient (ROI Align clamps there).
    edge = torch.tensor([[-1.5, 3.0, 2.0, 9.0]], dtype=torch.float64, requires_grad=True)
    x2 = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda b: roiviz.prroi_pool(x2, torch.cat([zero, b], 1), 2, 1.0), (edge,))


def test_hat_weight_is_the_integral_of_the_hat():
    t = torch.linspace(-1.5, 1.5, 61, dtype=torch.float64, requires_grad=True)  # includes -1, 0, 1
    start = torch.full_like(t, -2.0)
    value = hat_weight(start, t)
    (slope,) = torch.autograd.grad(value.sum(), t)
    torch.testing.assert_close(slope, (1 - t.detach().abs()).clamp(min=0), rtol=0, atol=1e-15)
    assert value[0] == 0 and value[-1] == 1 and value[30].item() == pytest.approx(0.5, abs=1e-15)
    (slope_a,) = torch.autograd.grad(hat_weight(t, torch.full_like(t, 2.0)).sum(), t)
    torch.testing.assert_close(slope_a, -(1 - t.detach().abs()).clamp(min=0), rtol=0, atol=1e-15)
    tiny = hat_weight(torch.tensor([0.3], dtype=torch.float64), torch.tensor([0.3 + 1e-12], dtype=torch.float64))
    assert tiny.item() == pytest.approx(0.7e-12, rel=1e-3)  # no cancellation for tiny bins


# ------------------------------------------------------------------ conventions


def test_convention_zero_area_bins_give_zero_and_no_gradient(path):
    x = (torch.rand(1, 2, 6, 6, dtype=torch.float64) + 1).requires_grad_()
    boxes = torch.tensor([[0, 2.0, 1.0, 2.0, 4.0], [0, 1.0, 3.5, 4.0, 3.5]], dtype=torch.float64, requires_grad=True)
    out = roiviz.prroi_pool(x, boxes, 2)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x)) and torch.equal(boxes.grad, torch.zeros_like(boxes))


def test_convention_outside_the_map_fades_to_zero_and_counts_in_the_area(path):
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    # Far outside: 0, and no gradient.
    far = torch.tensor([[0, 10.0, 10.0, 14.0, 12.0]], dtype=torch.float64, requires_grad=True)
    out = roiviz.prroi_pool(x, far, 1)
    assert out.item() == 0
    out.sum().backward()
    assert torch.equal(far.grad, torch.zeros_like(far))
    # Inside [0, 3]: the mean of ones is 1. Across the right border, [2, 5] x [0, 3]: the
    # surface is 1 up to x = 3, falls linearly to 0 at x = 4, then 0: (1 + 1/2 + 0) / 3.
    assert roiviz.prroi_pool(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64), 1).item() == 1
    across = roiviz.prroi_pool(x, torch.tensor([[0, 2.0, 0.0, 5.0, 3.0]], dtype=torch.float64), 1).item()
    assert across == pytest.approx(0.5, abs=1e-12)


def test_thin_box_tends_to_the_mean_along_its_edge(path):
    """A box 1e-200 cells tall: the mean of the surface along the segment, not 0 (only exactly 0 is)."""
    x = torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]], dtype=torch.float64)
    box = torch.tensor([[0, 0.0, 0.0, 1.0, 1e-200]], dtype=torch.float64)
    assert roiviz.prroi_pool(x, box, 1).item() == pytest.approx(3.0, rel=1e-12)  # row 0 runs from 2 to 4


def test_convention_aligned_shifts_by_half_a_cell():
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    boxes = torch.tensor([[0, 2.0, 1.0, 10.0, 12.0]], dtype=torch.float64)
    torch.testing.assert_close(roiviz.prroi_pool(x, boxes, 3, 0.5, aligned=True),
                               roiviz.prroi_pool(x, boxes - torch.tensor([0, 1, 1, 1, 1.0]), 3, 0.5))


def test_trusted_boxes_that_are_invalid_do_not_crash(path):
    x = torch.randn(1, 2, 5, 5)
    bad = torch.tensor([[0, float("nan"), 0.0, 3.0, 3.0], [3, 0.0, 0.0, 2.0, 2.0], [0, 1e30, 0.0, 1e31, 2.0]])
    with roiviz.trusted_boxes():
        out = roiviz.prroi_pool(x, bad, 2)
    assert out.shape == (3, 2, 2, 2)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((torch.zeros(4, 4), torch.zeros(1, 5), 2), ValueError, "input"),
        ((torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 5), 2), TypeError, "input"),
        ((torch.zeros(1, 1, 4, 4), torch.zeros(1, 4), 2), ValueError, "boxes"),
        ((torch.zeros(1, 1, 4, 4), torch.tensor([[0, 3.0, 0.0, 1.0, 1.0]]), 2), ValueError, "boxes"),
        ((torch.zeros(1, 1, 4, 4), torch.tensor([[1, 0.0, 0.0, 1.0, 1.0]]), 2), ValueError, "batch index"),
        ((torch.zeros(1, 1, 4, 4), "boxes", 2), TypeError, "boxes"),
        ((torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 0), ValueError, "output_size"),
        ((torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), (2, 2.5)), TypeError, "output_size"),
    ],
)
def test_bad_input_names_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        roiviz.prroi_pool(*args)


def test_bad_scale_aligned_and_switch(monkeypatch):
    x, boxes = torch.zeros(1, 1, 4, 4), torch.zeros(1, 5)
    with pytest.raises(ValueError, match="spatial_scale"):
        roiviz.prroi_pool(x, boxes, 2, spatial_scale=0.0)
    with pytest.raises(TypeError, match="aligned"):
        roiviz.prroi_pool(x, boxes, 2, aligned=1)
    with pytest.raises(TypeError, match="aligned"):
        roiviz.PrRoIPool(2, aligned="yes")
    monkeypatch.setenv(KERNELS_ENV, "cuda")
    with pytest.raises(ValueError, match=KERNELS_ENV):
        roiviz.prroi_pool(x, boxes, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_cuda_takes_the_torch_path_and_matches_the_cpu(dtype):
    x = torch.randn(2, 3, 10, 12, dtype=dtype)
    boxes = _boxes(dtype)
    grad = torch.randn(6, 3, 3, 4, dtype=dtype)
    results = []
    for device in ("cpu", "cuda"):
        xd = x.to(device).requires_grad_()
        bd = boxes.to(device).requires_grad_()
        out = roiviz.prroi_pool(xd, bd, (3, 4), 0.9, aligned=True)
        (out * grad.to(device)).sum().backward()
        assert out.device.type == device
        results.append([t.detach().cpu() for t in (out, xd.grad, bd.grad)])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, **{k: 4 * v for k, v in TOLERANCES[dtype].items()})
