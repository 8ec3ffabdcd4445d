"""The strategies registry, each strategy against its reference and torch, gradients, dtypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _cases import roi_cases
from conftest import TOLERANCES
from hypothesis import given, settings

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
        torch.testing.assert_close(out, REFERENCES[name](*args), **TOLERANCES[torch.float64], msg=name)


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
