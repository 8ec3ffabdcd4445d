"""The strategies registry, each strategy against its reference and torch, gradients, dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _cases import roi_cases
from conftest import TOLERANCES
from hypothesis import given, settings
from hypothesis import strategies as st

import roiviz
from roiviz import reference

NAMES = ["crop", "pad", "adaptive_max", "adaptive_avg", "resize", "roi_pool", "roi_align", "prroi_pool"]
REFERENCES = {
    "crop": reference.crop,
    "pad": reference.pad,
    "adaptive_max": lambda *a: reference.adaptive_pool(*a, mode="max"),
    "adaptive_avg": lambda *a: reference.adaptive_pool(*a, mode="avg"),
    "resize": reference.resize,
    "roi_pool": reference.roi_pool,
    "roi_align": lambda *a: reference.roi_align(*a, sampling_ratio=2, aligned=True),
    "prroi_pool": lambda *a: reference.prroi_pool(*a, aligned=True),
}


def test_registry_names_and_order():
    assert list(roiviz.STRATEGIES) == NAMES


def test_get_strategy_unknown_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown strategy 'warp'.*crop, pad, adaptive_max"):
        roiviz.get_strategy("warp")
    with pytest.raises(TypeError, match="strategy name must be a str"):
        roiviz.get_strategy(3)


def test_registered_roi_align_is_aligned_with_two_samples():
    x = torch.randn(1, 2, 9, 9)
    boxes = torch.tensor([[0, 1.3, 2.0, 7.9, 6.1]])
    torch.testing.assert_close(
        roiviz.STRATEGIES["roi_align"](x, boxes, (3, 3), 1.0),
        roiviz.roi_align(x, boxes, (3, 3), 1.0, sampling_ratio=2, aligned=True),
        rtol=0, atol=0,
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("n", "c", "h", "w"), [(1, 1, 1, 1), (2, 3, 5, 17), (3, 8, 40, 9)])
def test_every_strategy_gives_fixed_shape(name, n, c, h, w):
    x = torch.randn(n, c, h, w)
    boxes = torch.tensor([[0, 0.0, 0.0, w * 2.0, h * 2.0], [n - 1, 1.0, 0.5, 1.5, 2.0], [0, -5.0, -5.0, -1.0, -1.0]])
    assert roiviz.STRATEGIES[name](x, boxes, (7, 5), 0.5).shape == (3, c, 7, 5)


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_accepts_empty_boxes_and_lists(name, device):
    x = torch.randn(2, 3, 6, 6, device=device)
    fn = roiviz.STRATEGIES[name]
    assert fn(x, torch.zeros(0, 5, device=device), 4).shape == (0, 3, 4, 4)
    per_image = [torch.tensor([[0.0, 0.0, 3.0, 2.0]], device=device), torch.tensor([[1.0, 1.0, 5.0, 5.0]], device=device)]
    as_tensor = torch.tensor([[0, 0.0, 0.0, 3.0, 2.0], [1, 1.0, 1.0, 5.0, 5.0]], device=device)
    torch.testing.assert_close(fn(x, per_image, 4), fn(x, as_tensor, 4), rtol=0, atol=0)


@settings(max_examples=40, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_strategies_match_reference(case):
    args = (case.input, case.boxes, case.output_size, case.spatial_scale)
    for name in NAMES:
        out = roiviz.STRATEGIES[name](*args)
        tol = dict(TOLERANCES[torch.float64])
        if name == "prroi_pool":
            # A bin's mean is an integral over its area: the closed form (kernels) and the
            # reference's cell sums round differently, by about eps / (bin side in cells), which
            # hypothesis's 1e-7-thin boxes raise far above 1e-12.
            sides = (case.boxes[:, 3:] - case.boxes[:, 1:3]) * case.spatial_scale / torch.tensor(case.output_size[::-1])
            thinnest = sides[sides > 0].min().item() if (sides > 0).any() else 1.0
            tol["atol"] = max(tol["atol"], 1e-13 / thinnest)
        torch.testing.assert_close(out, REFERENCES[name](*args), **tol, msg=name)


@settings(max_examples=30, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_crop_strategies_match_torch_on_each_crop(case):
    """Bin for bin the same as torch's own pooling / interpolation of each exact crop."""
    args = (case.input, case.boxes, case.output_size, case.spatial_scale)
    crops = roiviz.crop_rois(case.input, case.boxes, case.spatial_scale)
    outputs = {name: roiviz.STRATEGIES[name](*args) for name in ("adaptive_max", "adaptive_avg", "resize")}
    for k, c in enumerate(crops):
        if c.numel() == 0:
            for out in outputs.values():
                assert out[k].abs().sum() == 0  # an empty crop gives zeros
            continue
        torch.testing.assert_close(outputs["adaptive_max"][k], F.adaptive_max_pool2d(c[None], case.output_size)[0], rtol=0, atol=0)
        torch.testing.assert_close(outputs["adaptive_avg"][k], F.adaptive_avg_pool2d(c[None], case.output_size)[0])
        torch.testing.assert_close(
            outputs["resize"][k], F.interpolate(c[None], case.output_size, mode="bilinear", align_corners=False)[0]
        )


@settings(max_examples=40, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_crop_rois_matches_reference(case):
    fast = roiviz.crop_rois(case.input, case.boxes, case.spatial_scale)
    slow = reference.crop_rois(case.input, case.boxes, case.spatial_scale)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


@settings(max_examples=30, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_pad_to_max_matches_reference(case):
    padded, valid = roiviz.pad_to_max(case.input, case.boxes, case.spatial_scale)
    ref_padded, ref_valid = reference.pad_to_max(case.input, case.boxes, case.spatial_scale)
    assert torch.equal(padded, ref_padded) and torch.equal(valid, ref_valid)


def test_convention_crop_keeps_top_left_and_centre_keeps_middle():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    box = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]])  # the whole 6x6 map
    assert roiviz.crop(x, box, 2)[0, 0].tolist() == [[0.0, 1.0], [6.0, 7.0]]
    assert roiviz.crop(x, box, 2, anchor="centre")[0, 0].tolist() == [[14.0, 15.0], [20.0, 21.0]]
    assert roiviz.pad(x, box, 2)[0, 0].tolist() == [[14.0, 15.0], [20.0, 21.0]]
    with pytest.raises(ValueError, match="anchor must be one of"):
        roiviz.crop(x, box, 2, anchor="middle")


def test_convention_crop_uses_roi_pool_quantisation():
    x = torch.randn(1, 2, 10, 10)
    box = torch.tensor([[0, 1.0, 3.0, 5.0, 9.0]])
    (c,) = roiviz.crop_rois(x, box, 0.5)
    # round(0.5) = 1 .. round(2.5) = 3 in x, round(1.5) = 2 .. round(4.5) = 5 in y: inclusive.
    assert torch.equal(c, x[0, :, 2:6, 1:4])
    # Adaptive max over that crop is exactly ROI Pool for a box inside the map.
    torch.testing.assert_close(roiviz.adaptive_max(x, box, 2, 0.5), roiviz.roi_pool(x, box, 2, 0.5), rtol=0, atol=0)


def test_crop_rois_of_box_outside_map_is_empty():
    x = torch.randn(1, 3, 4, 4)
    (c,) = roiviz.crop_rois(x, torch.tensor([[0, 10.0, 10.0, 20.0, 20.0]]))
    assert c.shape == (3, 0, 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_strategy_gradcheck(name, contiguous):
    gen = torch.Generator().manual_seed(4)
    # Distinct values so that max-based strategies are differentiable (no ties).
    base = torch.randperm(2 * 2 * 7 * 8, generator=gen).to(torch.float64).reshape(2, 2, 7, 8) / 10
    x = base if contiguous else base.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.0, 0.0, 6.0, 5.0], [1, 1.0, 2.0, 3.0, 4.0], [1, -2.0, 3.0, 9.0, 12.0]], dtype=torch.float64)
    fn = roiviz.STRATEGIES[name]
    assert torch.autograd.gradcheck(lambda t: fn(t, boxes, (3, 4), 1.0), (x,))


@pytest.mark.parametrize("name", NAMES)
def test_strategy_dtypes_and_devices(name, dtype, device):
    gen = torch.Generator().manual_seed(5)
    x64 = torch.randn(2, 3, 11, 13, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0, 1.0, 2.0, 9.0, 10.0], [1, -2.0, 4.0, 5.0, 25.0], [1, 4.0, 4.0, 4.0, 4.0]])
    x = x64.to(dtype).to(device)
    out = roiviz.STRATEGIES[name](x, boxes.to(device), (4, 3), 0.5)
    assert out.dtype == dtype and out.device.type == device and out.shape == (3, 3, 4, 3)
    expected = roiviz.STRATEGIES[name](x.double().cpu(), boxes.double(), (4, 3), 0.5)
    torch.testing.assert_close(out.double().cpu(), expected, **TOLERANCES[dtype])


# ------------------------------------------------------------------ NaN and inf: like the definitions, box by box


def _poisoned(case, seed: int) -> torch.Tensor:
    """``case.input`` with about one cell in six replaced by NaN, +inf or -inf."""
    gen = torch.Generator().manual_seed(seed)
    x = case.input.clone()
    kind = torch.randint(0, 18, x.shape, generator=gen)
    x[kind == 0] = torch.nan
    x[kind == 1] = torch.inf
    x[kind == 2] = -torch.inf
    return x


def _definition(name: str, c: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The torch function each crop strategy's docstring names, applied to one crop ``[C, h, w]``."""
    if name == "adaptive_max":
        return F.adaptive_max_pool2d(c[None], size)[0]
    if name == "adaptive_avg":
        return F.adaptive_avg_pool2d(c[None], size)[0]
    if name == "resize":
        return F.interpolate(c[None], size, mode="bilinear", align_corners=False)[0]
    # crop / pad: the crop's cells placed on a zero canvas (top-left, or centre to centre).
    centre = name == "pad"
    out = c.new_zeros(c.shape[0], *size)
    dy = (c.shape[1] - size[0]) // 2 if centre else 0
    dx = (c.shape[2] - size[1]) // 2 if centre else 0
    for i in range(size[0]):
        for j in range(size[1]):
            if 0 <= i + dy < c.shape[1] and 0 <= j + dx < c.shape[2]:
                out[:, i, j] = c[:, i + dy, j + dx]
    return out


CROP_STRATEGIES = ["crop", "pad", "adaptive_max", "adaptive_avg", "resize"]


@settings(max_examples=40, deadline=None)
@given(case=roi_cases(dtype=torch.float32), seed=st.integers(0, 2**16))
def test_nan_and_inf_behave_like_the_definition_box_by_box(case, seed):
    """Each crop strategy equals its torch definition on each crop, NaN and inf included, and
    a box's output does not depend on the other boxes of the batch."""
    x = _poisoned(case, seed)
    crops = roiviz.crop_rois(x, case.boxes, case.spatial_scale)
    for name in CROP_STRATEGIES:
        fn = roiviz.STRATEGIES[name]
        out = fn(x, case.boxes, case.output_size, case.spatial_scale)
        for k, c in enumerate(crops):
            alone = fn(x, case.boxes[k : k + 1], case.output_size, case.spatial_scale)[0]
            torch.testing.assert_close(out[k], alone, rtol=0, atol=0, equal_nan=True, msg=f"{name}, box {k}")
            if c.numel() == 0:
                assert torch.count_nonzero(out[k]) == 0, name  # an empty crop gives zeros
                continue
            if name == "resize":
                # torch's bilinear kernel drops some zero-weight taps (an identity size, or a
                # weight that a fused multiply-add leaves at 1e-8) and multiplies others
                # (0 * inf = NaN), depending on the CPU; roiviz multiplies every tap, so where a
                # non-finite cell sits next to a sample the two may differ. Finite crops match
                # (test_crop_strategies_match_torch_on_each_crop); here, box independence above.
                continue
            # adaptive_avg adds the same cells in another order: equal up to rounding; the rest exactly.
            exact = {} if name == "adaptive_avg" else {"rtol": 0, "atol": 0}
            torch.testing.assert_close(out[k], _definition(name, c, case.output_size), equal_nan=True,
                                       msg=f"{name}, box {k}", **exact)


def test_adaptive_max_propagates_nan_and_sends_its_gradient_where_torch_does():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    x[0, 0, 1, 1] = torch.nan
    x[0, 0, 1, 4] = torch.nan  # two NaN in one bin row: torch keeps the last one it meets
    x[0, 0, 4, 1] = -torch.inf
    x.requires_grad_()
    box = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]])
    out = roiviz.adaptive_max(x, box, (2, 2))
    expected_x = x.detach().clone().requires_grad_()
    expected = F.adaptive_max_pool2d(expected_x, (2, 2))
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(out[0, 0, 0]).all() and not torch.isnan(out[0, 0, 1]).any()
    out.backward(torch.ones_like(out))
    expected.backward(torch.ones_like(expected))
    torch.testing.assert_close(x.grad, expected_x.grad, rtol=0, atol=0)


def test_adaptive_max_of_a_bin_of_minus_inf_is_minus_inf_with_torchs_gradient():
    x = torch.full((1, 1, 4, 4), -torch.inf, requires_grad=True)
    out = roiviz.adaptive_max(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), 2)
    assert (out == -torch.inf).all()
    out.sum().backward()
    y = x.detach().clone().requires_grad_()
    F.adaptive_max_pool2d(y, 2).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=0)  # each bin's first cell, as torch


def test_crop_keeps_plus_inf_and_zero_fills_with_zeros():
    x = torch.full((1, 1, 4, 4), torch.inf)
    out = roiviz.crop(x, torch.tensor([[0, 0.0, 0.0, 1.0, 1.0]]), 3)[0, 0]
    assert out[:2, :2].eq(torch.inf).all()
    assert out[2].eq(0).all() and out[:, 2].eq(0).all()  # the fill is 0, not 0 * inf = NaN


def test_one_box_inf_does_not_reach_another_boxs_adaptive_avg():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 7, 7] = torch.inf
    boxes = torch.tensor([[0, 0.0, 0.0, 2.0, 2.0], [0, 4.0, 4.0, 7.0, 7.0]])
    out = roiviz.adaptive_avg(x, boxes, 2)
    assert out[0].eq(0).all()  # the small box never touches the inf cell
    assert out[1, 0, 1, 1] == torch.inf and not torch.isnan(out[1]).any()  # only the bin that holds it


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("shape", "boxes"), [
    ((2, 0, 5, 5), [[0, 0.0, 0.0, 3.0, 3.0], [1, 1.0, 1.0, 4.0, 2.0]]),  # no channels
    ((0, 3, 5, 5), []),  # an empty batch
    ((1, 3, 5, 5), [[0, 20.0, 20.0, 30.0, 30.0]]),  # every crop empty
], ids=["zero channels", "empty batch", "empty crops"])
def test_every_strategy_takes_empty_problems_and_stays_differentiable(name, shape, boxes):
    x = torch.randn(shape, requires_grad=True)
    out = roiviz.STRATEGIES[name](x, torch.tensor(boxes).reshape(-1, 5), (2, 3))
    assert out.shape == (len(boxes), shape[1], 2, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_every_strategy_computes_the_same_under_autocast(name):
    x = torch.randn(2, 3, 19, 17)
    boxes = torch.tensor([[0, 1.0, 2.0, 15.0, 11.0], [1, 3.5, 0.0, 16.0, 18.0]])
    expected = roiviz.STRATEGIES[name](x, boxes, (4, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roiviz.STRATEGIES[name](x, boxes, (4, 3))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
