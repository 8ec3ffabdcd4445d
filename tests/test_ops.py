"""roi_pool and roi_align: smoke, shapes, conventions, reference, dtypes, devices, gradients."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from _cases import roi_cases
from conftest import TOLERANCES
from hypothesis import given, settings

import roiviz
from roiviz import reference

D2L_INPUT = torch.arange(16.0).reshape(1, 1, 4, 4)
D2L_BOXES = torch.tensor([[0, 0.0, 0.0, 20.0, 20.0], [0, 0.0, 10.0, 30.0, 30.0]])
ALIGN_VARIANTS = [(sr, al) for sr in (-1, 1, 2, 3) for al in (False, True)]


# ------------------------------------------------------------------ smoke and shapes


def test_issue_example_shapes():
    x = torch.randn(2, 16, 50, 68)
    boxes = torch.tensor([[0, 10.0, 20.0, 300.0, 200.0], [1, 0.0, 0.0, 64.0, 64.0]])
    y = roiviz.roi_align(x, boxes, output_size=7, spatial_scale=1 / 16, sampling_ratio=2, aligned=True)
    assert y.shape == (2, 16, 7, 7)
    assert roiviz.roi_pool(x, boxes, (3, 5), 1 / 16).shape == (2, 16, 3, 5)


@pytest.mark.parametrize("op", [roiviz.roi_pool, roiviz.roi_align])
def test_list_of_boxes_equals_tensor_form(op):
    x = torch.randn(3, 2, 9, 9)
    per_image = [torch.tensor([[0.0, 1.0, 5.0, 7.0]]), torch.zeros(0, 4), torch.tensor([[2.0, 2.0, 3.0, 8.0], [0.5, 0.5, 1.0, 1.0]])]
    as_tensor = torch.tensor([[0, 0.0, 1.0, 5.0, 7.0], [2, 2.0, 2.0, 3.0, 8.0], [2, 0.5, 0.5, 1.0, 1.0]])
    torch.testing.assert_close(op(x, per_image, 3), op(x, as_tensor, 3), rtol=0, atol=0)


@pytest.mark.parametrize("op", [roiviz.roi_pool, roiviz.roi_align])
def test_empty_boxes_give_empty_output(op, device):
    x = torch.randn(2, 5, 8, 8, device=device, requires_grad=True)
    out = op(x, torch.zeros(0, 5, device=device), (3, 4))
    assert out.shape == (0, 5, 3, 4) and out.device == x.device
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_modules_match_functions_and_repr():
    x = torch.randn(1, 3, 10, 10)
    boxes = torch.tensor([[0, 1.0, 1.0, 8.0, 6.0]])
    align = roiviz.RoIAlign((2, 3), 0.5, 2, True)
    pool = roiviz.RoIPool(4, 0.5)
    torch.testing.assert_close(align(x, boxes), roiviz.roi_align(x, boxes, (2, 3), 0.5, 2, True))
    torch.testing.assert_close(pool(x, boxes), roiviz.roi_pool(x, boxes, 4, 0.5))
    assert repr(align) == "RoIAlign(output_size=(2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)"
    assert repr(pool) == "RoIPool(output_size=(4, 4), spatial_scale=0.5)"


# ------------------------------------------------------------------ conventions


def test_convention_d2l_example():
    out = roiviz.roi_pool(D2L_INPUT, D2L_BOXES, output_size=(2, 2), spatial_scale=0.1)
    assert out[:, 0].tolist() == [[[5.0, 6.0], [9.0, 10.0]], [[9.0, 11.0], [13.0, 15.0]]]


def test_convention_roi_pool_bins_overlap():
    # A 3-cell box cut into 2 bins: floor(0 * 1.5) = 0 .. ceil(1.5) = 2 and floor(1.5) = 1 .. 3.
    bins = reference.roi_pool_bins(torch.tensor([0, 0.0, 0.0, 2.0, 2.0]), 2, 2, 1.0, 4, 4)
    assert bins[0][0] == (0, 2, 0, 2) and bins[1][1] == (1, 3, 1, 3)
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0  # the shared cell is the maximum of all four bins
    out = roiviz.roi_pool(x, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 2)
    assert out.flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_convention_roi_pool_rounds_halves_away_from_zero():
    # x * scale = 0.5 -> 1 and 2.5 -> 3 (C's round); torch.round would give 0 and 2.
    x = torch.arange(6.0).reshape(1, 1, 1, 6)
    out = roiviz.roi_pool(x, torch.tensor([[0, 1.0, 0.0, 5.0, 0.0]]), (1, 3), spatial_scale=0.5)
    assert out.flatten().tolist() == [1.0, 2.0, 3.0]  # cells 1..3, not 0..2
    assert roiviz.boxes.round_half_away(torch.tensor([0.5, 2.5, -0.5])).tolist() == [1.0, 3.0, -1.0]


def test_convention_roi_pool_empty_bin_is_zero():
    x = torch.full((1, 2, 4, 4), -5.0, requires_grad=True)
    out = roiviz.roi_pool(x, torch.tensor([[0, 10.0, 10.0, 12.0, 12.0]]), 2)  # wholly outside
    assert out.abs().sum() == 0
    out.sum().backward()
    assert x.grad.abs().sum() == 0  # nothing was pooled, nothing gets a gradient


def test_convention_roi_pool_malformed_box_is_one_cell():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = roiviz.roi_pool(x, torch.tensor([[0, 2.0, 1.0, 2.0, 1.0]]), (2, 2))
    # A zero-size box is one cell (max(end - start + 1, 1)); every bin reads cell (1, 2).
    assert out.flatten().tolist() == [6.0, 6.0, 6.0, 6.0]


def test_convention_roi_pool_gradient_goes_to_first_maximum():
    x = torch.zeros(1, 1, 3, 3, requires_grad=True)  # all ties
    roiviz.roi_pool(x, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 1).sum().backward()
    expected = torch.zeros(1, 1, 3, 3)
    expected[0, 0, 0, 0] = 1.0
    assert torch.equal(x.grad, expected)


def test_convention_roi_align_outside_samples_count_in_the_mean():
    x = torch.ones(1, 1, 4, 4)
    # aligned box from -4 to 4: of 2x2 samples at -2 and 2 (after the -0.5 shift: -2.5, 1.5),
    # the ones below -1 contribute 0 but the mean still divides by 4.
    out = roiviz.roi_align(x, torch.tensor([[0, -4.0, -4.0, 4.0, 4.0]]), 1, 1.0, 2, True)
    assert out.item() == pytest.approx(0.25)


def test_convention_roi_align_aligned_shifts_half_a_cell():
    x = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 1, 3, 8).contiguous()
    box = torch.tensor([[0, 2.0, 0.0, 4.0, 1.0]])
    legacy = roiviz.roi_align(x, box, (1, 2), 1.0, 1, aligned=False)
    aligned = roiviz.roi_align(x, box, (1, 2), 1.0, 1, aligned=True)
    # Bins of width 1 sampled at their centres: 2.5, 3.5 (legacy) and 2.0, 3.0 (aligned).
    assert legacy.flatten().tolist() == [2.5, 3.5]
    assert aligned.flatten().tolist() == [2.0, 3.0]


def test_convention_roi_align_legacy_min_size_one():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    box = torch.tensor([[0, 1.0, 1.0, 1.0, 1.0]])  # zero-area
    legacy = roiviz.roi_align(x, box, 1, 1.0, 1, aligned=False)
    assert legacy.item() == pytest.approx(7.5)  # a 1x1 box sampled at (1.5, 1.5)
    assert roiviz.roi_align(x, box, 1, 1.0, -1, aligned=True).item() == 0.0  # grid 0: nothing sampled


def test_convention_roi_align_adaptive_grid_is_ceil_of_bin_size():
    roi = torch.tensor([0, 0.0, 0.0, 10.0, 3.0])
    points, count = reference.roi_align_sample_points(roi, 2, 2, 1.0, -1, True)
    assert count == 2 * 5  # ceil(3 / 2) rows x ceil(10 / 2) columns
    assert len(points[0][0]) == count


def test_convention_roi_align_clamps_to_last_row():
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    # A sample at y = 1.8 > H - 1 is clamped to row 1, still inside [-1, H].
    out = roiviz.roi_align(x, torch.tensor([[0, 0.0, 1.8, 0.0, 1.8]]), 1, 1.0, 1, aligned=False)
    assert out.item() == pytest.approx(reference.roi_align(x, torch.tensor([[0, 0.0, 1.8, 0.0, 1.8]]), 1, 1.0, 1).item())


# ------------------------------------------------------------------ against the reference


@settings(max_examples=60, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_roi_pool_matches_reference(case):
    out = roiviz.roi_pool(case.input, case.boxes, case.output_size, case.spatial_scale)
    ref = reference.roi_pool(case.input, case.boxes, case.output_size, case.spatial_scale)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(case=roi_cases(dtype=torch.float32))
def test_roi_align_matches_reference(case):
    for sr, al in ALIGN_VARIANTS:
        out = roiviz.roi_align(case.input, case.boxes, case.output_size, case.spatial_scale, sr, al)
        ref = reference.roi_align(case.input, case.boxes, case.output_size, case.spatial_scale, sr, al)
        torch.testing.assert_close(out, ref, **TOLERANCES[torch.float32])


# ------------------------------------------------------------------ dtypes and devices


@pytest.mark.parametrize("op", ["roi_pool", "roi_align"])
def test_dtypes_and_devices(op, dtype, device):
    gen = torch.Generator().manual_seed(1)
    x64 = torch.randn(2, 4, 12, 14, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0, 1.0, 2.0, 9.5, 11.0], [1, -3.0, 4.0, 6.0, 20.0], [1, 3.0, 3.0, 3.0, 3.0]])
    kwargs = {"sampling_ratio": 2, "aligned": True} if op == "roi_align" else {}
    fn = getattr(roiviz, op)
    x = x64.to(dtype).to(device)
    out = fn(x, boxes.to(device), (3, 3), 0.5, **kwargs)
    assert out.dtype == dtype and out.device.type == device
    # The oracle: the same (rounded) input in float64 on the CPU.
    expected = fn(x.double().cpu(), boxes.double(), (3, 3), 0.5, **kwargs)
    torch.testing.assert_close(out.double().cpu(), expected, **TOLERANCES[dtype])


# ------------------------------------------------------------------ gradients


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(2, True), (-1, True), (1, False), (-1, False)])
def test_roi_align_gradcheck(contiguous, sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64)
    x = base if contiguous else base.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    assert x.is_contiguous() is contiguous
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.3, 0.6, 4.7, 5.2], [1, -2.0, 1.0, 3.0, 9.0], [1, 2.2, 2.2, 2.2, 4.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t: roiviz.roi_align(t, boxes, (2, 3), 1.0, sampling_ratio, aligned), (x,)
    )


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_roi_pool_gradcheck(contiguous):
    gen = torch.Generator().manual_seed(3)
    # Distinct values, far apart: max pooling is differentiable away from ties.
    values = torch.randperm(2 * 3 * 7 * 6, generator=gen).to(torch.float64).reshape(2, 3, 7, 6)
    x = values if contiguous else values.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 5.0], [1, 1.0, 2.0, 5.0, 6.0], [0, 8.0, 8.0, 9.0, 9.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roiviz.roi_pool(t, boxes, (2, 3), 1.0), (x,))


def test_checks_survive_python_O():
    # Validation must not rely on assert, which `python -O` strips.
    code = (
        "import torch, roiviz\n"
        "try:\n"
        "    roiviz.roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[0, 3., 0., 1., 2.]]), 2)\n"
        "except ValueError as e:\n"
        "    print('ValueError', e)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ValueError") and "x2 < x1" in out.stdout


@pytest.mark.parametrize("op", ["roi_pool", "roi_align_sr2", "roi_align_adaptive"])
@pytest.mark.parametrize("size", [(1, 3, 12, 12), (2, 64, 40, 52)], ids=["small", "large"])
def test_interleaved_calls_do_not_share_state(op, size):
    """Two forwards, then the backwards in reverse order: each output and gradient must be what
    that call alone gives (no buffer reused by a later call may back a result or a saved tensor)."""
    fn = {
        "roi_pool": lambda t, b: roiviz.roi_pool(t, b, (5, 4), 0.25),
        "roi_align_sr2": lambda t, b: roiviz.roi_align(t, b, (5, 4), 0.25, 2, True),
        "roi_align_adaptive": lambda t, b: roiviz.roi_align(t, b, (5, 4), 0.25, -1, False),
    }[op]
    gen = torch.Generator().manual_seed(7)
    n, c, h, w = size
    xa = torch.randn(*size, generator=gen, requires_grad=True)
    xb = torch.randn(*size, generator=gen, requires_grad=True)
    xy = torch.rand(300, 2, generator=gen) * torch.tensor([w * 4.0, h * 4.0])
    wh = torch.rand(300, 2, generator=gen) * 60
    ba = torch.cat([torch.randint(0, n, (300, 1), generator=gen).float(), xy, xy + wh], 1)
    bb = ba.flip(0).contiguous()
    ga, gb = torch.randn(300, c, 5, 4, generator=gen), torch.randn(300, c, 5, 4, generator=gen)

    alone_a = fn(xa, ba)
    (grad_a,) = torch.autograd.grad((alone_a * ga).sum(), xa)
    alone_b = fn(xb, bb)
    (grad_b,) = torch.autograd.grad((alone_b * gb).sum(), xb)

    out_a = fn(xa, ba)
    out_b = fn(xb, bb)
    snapshot_a = out_a.detach().clone()
    (later_b,) = torch.autograd.grad((out_b * gb).sum(), xb)
    (later_a,) = torch.autograd.grad((out_a * ga).sum(), xa)
    assert torch.equal(snapshot_a, alone_a) and torch.equal(out_a, alone_a) and torch.equal(out_b, alone_b)
    torch.testing.assert_close(later_a, grad_a, rtol=0, atol=0)
    torch.testing.assert_close(later_b, grad_b, rtol=0, atol=0)


def test_convention_roi_pool_starts_at_minus_flt_max():
    # A bin of -inf (or NaN) never beats the kernel's start value -FLT_MAX, and gets no gradient.
    x = torch.full((1, 1, 2, 2), -torch.inf, requires_grad=True)
    box = torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]])
    out = roiviz.roi_pool(x, box, 1)
    assert out.item() == -torch.finfo(torch.float32).max
    assert reference.roi_pool(x, box, 1).item() == out.item()
    out.sum().backward()
    assert x.grad.abs().sum() == 0


# ------------------------------------------------------------------ what torchvision accepts (the front door)


@pytest.mark.parametrize("op", [roiviz.roi_align, roiviz.roi_pool])
@pytest.mark.parametrize(("shape", "boxes", "output_size", "expected"), [
    ((0, 3, 5, 5), torch.zeros(0, 5), 2, (0, 3, 2, 2)),  # an empty batch
    ((2, 0, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0], [1, 1.0, 1.0, 4.0, 2.0]]), (2, 3), (2, 0, 2, 3)),  # no channels
    ((2, 3, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), 0, (1, 3, 0, 0)),  # output_size 0
    ((2, 3, 5, 5), torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), (0, 2), (1, 3, 0, 2)),
    ((0, 3, 5, 5), [], 2, (0, 3, 2, 2)),  # a list of N = 0 per-image tensors
], ids=["empty batch", "zero channels", "output 0", "output 0x2", "[] for N=0"])
def test_empty_problems_give_empty_results_like_torchvision(op, shape, boxes, output_size, expected):
    x = torch.randn(shape, requires_grad=True)
    out = op(x, boxes, output_size)
    assert out.shape == expected and out.dtype == x.dtype
    assert torch.count_nonzero(out) == 0
    out.sum().backward()  # still part of the graph, with a zero gradient
    assert x.grad.shape == x.shape and torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("op", [roiviz.roi_align, roiviz.roi_pool])
def test_an_empty_list_of_boxes_for_a_batch_is_a_clear_error(op):
    # torchvision raises ValueError("torch.cat(): expected a non-empty list of Tensors"); roiviz
    # says what the list must hold.
    with pytest.raises(ValueError, match=r"boxes as a list must hold one Tensor\[L, 4\] per image: input has N=2 images, got 0"):
        op(torch.randn(2, 3, 5, 5), [], 2)


@pytest.mark.parametrize("aligned", [False, True])
def test_sampling_ratio_zero_and_any_negative_mean_adaptive(aligned):
    x = torch.randn(2, 3, 16, 20)
    boxes = torch.tensor([[0, 1.0, 2.0, 15.0, 11.0], [1, 0.0, 0.0, 19.0, 15.0], [1, 3.0, 3.0, 3.5, 9.0]])
    adaptive = roiviz.roi_align(x, boxes, (3, 4), 1.0, -1, aligned)
    for sr in (0, -2, -100):
        torch.testing.assert_close(roiviz.roi_align(x, boxes, (3, 4), 1.0, sr, aligned), adaptive, rtol=0, atol=0)
    torch.testing.assert_close(
        adaptive, reference.roi_align(x, boxes, (3, 4), 1.0, 0, aligned), **TOLERANCES[torch.float32]
    )
    assert repr(roiviz.RoIAlign(2, sampling_ratio=0)).endswith("sampling_ratio=0, aligned=False)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("op", ["roi_align", "roi_pool"])
def test_autocast_computes_like_torchvision(op, dtype):
    """Under autocast torchvision computes in float32 (float64 stays) and returns the input's dtype;
    the reproducer: roiviz did its matrix products in bfloat16 there (error 6.8e-3)."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16, 24, 28, generator=gen).to(dtype)
    boxes = torch.tensor([[0, 1.3, 2.2, 17.9, 21.0], [1, 0.0, 0.4, 27.0, 23.0], [1, 5.5, 5.5, 9.0, 6.0]])
    kwargs = {"sampling_ratio": 2, "aligned": True} if op == "roi_align" else {}
    fn = getattr(roiviz, op)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(x, boxes, (7, 7), 0.5, **kwargs)
    assert out.dtype == dtype
    expected = fn(x, boxes, (7, 7), 0.5, **kwargs)  # outside autocast: float32 compute for half types
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_autocast_backward_matches_float32():
    x = torch.randn(2, 16, 24, 28, requires_grad=True)
    boxes = torch.tensor([[0, 1.3, 2.2, 17.9, 21.0], [1, 0.0, 0.4, 27.0, 23.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roiviz.roi_align(x, boxes, 7, 0.5, 2, True)
    out.backward(torch.ones_like(out))
    y = x.detach().clone().requires_grad_()
    roiviz.roi_align(y, boxes, 7, 0.5, 2, True).backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0)


@pytest.mark.parametrize("op", ["roi_align", "roi_align_adaptive", "roi_pool", "adaptive_max", "resize"])
@pytest.mark.parametrize("size", [(1, 3, 12, 12), (2, 64, 40, 52)], ids=["small", "large"])
def test_boxes_that_require_grad_get_none_and_the_input_gets_its_gradient(op, size):
    fn = {
        "roi_align": lambda t, b: roiviz.roi_align(t, b, 5, 0.5, 2, True),
        "roi_align_adaptive": lambda t, b: roiviz.roi_align(t, b, 5, 0.5, -1, False),
        "roi_pool": lambda t, b: roiviz.roi_pool(t, b, 5, 0.5),
        "adaptive_max": lambda t, b: roiviz.adaptive_max(t, b, 5, 0.5),
        "resize": lambda t, b: roiviz.resize(t, b, 5, 0.5),
    }[op]
    x = torch.randn(size, requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 2.0, 20.0, 17.0], [0, 4.0, 4.0, 9.0, 30.0]], requires_grad=True)
    out = fn(x, boxes)
    assert out.requires_grad
    out.backward(torch.ones_like(out))
    assert boxes.grad is None  # like torchvision: no gradient for box coordinates
    expected_x = x.detach().clone().requires_grad_()
    fn(expected_x, boxes.detach()).backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, expected_x.grad, rtol=0, atol=0)


@pytest.mark.parametrize("kernels", ["numba", "torch"])
@pytest.mark.parametrize("op", [roiviz.roi_pool, roiviz.roi_align], ids=["roi_pool", "roi_align"])
@pytest.mark.parametrize("k", [2, 0], ids=["boxes", "no boxes"])
def test_when_only_the_boxes_require_grad_the_output_is_differentiable_like_torchvisions(op, k, kernels, monkeypatch):
    """torchvision's output requires grad when the boxes do, and backward() leaves boxes.grad None."""
    monkeypatch.setenv("ROIVIZ_KERNELS", kernels)
    x = torch.randn(1, 3, 12, 12)
    boxes = torch.tensor([[0, 1.0, 2.0, 20.0, 17.0], [0, 4.0, 4.0, 9.0, 30.0]])[:k].requires_grad_()
    out = op(x, boxes, 5, 0.5)
    assert out.requires_grad
    out.sum().backward()
    assert boxes.grad is None
    assert torch.equal(out.detach(), op(x, boxes.detach(), 5, 0.5))
    listed = op(x, [boxes[:, 1:]], 5, 0.5)  # the list form too
    assert listed.requires_grad
    with torch.no_grad():
        assert not op(x, boxes, 5, 0.5).requires_grad


@pytest.mark.parametrize("op", [roiviz.roi_pool, roiviz.roi_align])
def test_torch_compile_under_no_grad(op):
    x = torch.randn(2, 8, 20, 24)
    boxes = torch.tensor([[0, 1.0, 2.0, 15.0, 19.0], [1, 0.5, 0.5, 6.0, 23.0]])
    with torch.no_grad():
        compiled = torch.compile(op, backend="aot_eager")(x, boxes, (3, 4), 0.5)
        torch.testing.assert_close(compiled, op(x, boxes, (3, 4), 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_call_the_ops(context):
    """Forked and spawned DataLoader workers give the main process's results, checks included."""
    import multiprocessing

    from _workers import RoiDataset, features

    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} start method here")
    roiviz.roi_align(torch.randn(1, 2, 8, 8), torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]]), 2)  # warm state in the parent
    loader = torch.utils.data.DataLoader(RoiDataset(), batch_size=None, num_workers=2,
                                         multiprocessing_context=context, timeout=120)
    for i, item in enumerate(loader):
        expected = features(i)
        assert bool(item["refused"])
        for name in ("align", "pool", "adaptive_max"):
            torch.testing.assert_close(item[name], expected[name], rtol=0, atol=0, msg=name)
