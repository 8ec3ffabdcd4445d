"""roiviz.MultiScaleRoIAlign and the FPN level rule against torchvision, and what they mean.

- Golden fixtures (``scripts/make_poolers_fixtures.py``, torchvision 0.29): results and levels.
- Live against torchvision on random multi-level inputs when torchvision imports (e.g. run this
  file with ``/work/tv-venv/bin/python``); skipped otherwise.
- The rule itself: boundaries, eps, clamping, mmdetection's variant, no state between calls.

Outputs are compared with the tolerance the project uses for ``roi_align`` against torchvision
(float32: 1e-5, float64: 1e-12; roiviz's CPU roi_align sums in another order), levels exactly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import roiviz
from roiviz.poolers import (
    MultiScaleRoIAlign,
    image_pyramid,
    infer_scales,
    level_boundaries,
    map_levels,
    map_levels_mmdet,
    pool_each_level,
)

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_multiscale.pt"
CASES = torch.load(FIXTURE, weights_only=True)["cases"]
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _module(case: dict) -> MultiScaleRoIAlign:
    kw = {} if case["canonical"] is None else {"canonical_scale": case["canonical"][0],
                                               "canonical_level": case["canonical"][1]}
    return MultiScaleRoIAlign(case["featmap_names"], case["output_size"], case["sampling_ratio"], **kw)


def _x(case: dict) -> OrderedDict:
    return OrderedDict((k, case["x"][k]) for k in case["order"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_torchvision_golden(case: dict) -> None:
    out = _module(case)(_x(case), case["boxes"], case["image_shapes"])
    assert out.dtype == case["out"].dtype and out.shape == case["out"].shape
    torch.testing.assert_close(out, case["out"], rtol=0, atol=ATOL[out.dtype])


@pytest.mark.parametrize("case", [c for c in CASES if c["levels"] is not None], ids=lambda c: c["name"])
def test_levels_match_torchvision_level_mapper_exactly(case: dict) -> None:
    m = _module(case)
    levels = m.levels(_x(case), case["boxes"], case["image_shapes"])
    assert torch.equal(levels - case["k_min"], case["levels"])
    assert len(set(case["levels"].tolist())) >= 3, "the fixture should exercise several levels"


# --------------------------------------------------------------------------------------------
# Live against torchvision (skipped where it does not import)
# --------------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 100_000), n_levels=st.integers(1, 4), sr=st.integers(0, 3),
       out=st.integers(1, 7), dtype=st.sampled_from([torch.float32, torch.float64]),
       canonical=st.sampled_from([(224, 4), (112, 3), (160, 4)]))
def test_matches_torchvision_live(seed, n_levels, sr, out, dtype, canonical) -> None:
    tv = pytest.importorskip("torchvision.ops")
    g = torch.Generator().manual_seed(seed)
    shapes = [(int(h), int(w)) for h, w in torch.randint(64, 257, (2, 2), generator=g)]
    h, w = max(s[0] for s in shapes), max(s[1] for s in shapes)
    names = [f"p{k}" for k in range(2, 2 + n_levels)]
    x = OrderedDict((n, torch.randn(2, 3, -(-h // 2 ** k), -(-w // 2 ** k), generator=g, dtype=dtype))
                    for k, n in zip(range(2, 6), names, strict=False))
    boxes = []
    for n_boxes in torch.randint(0, 9, (2,), generator=g).tolist():
        side = torch.exp(torch.rand(n_boxes, 2, generator=g, dtype=dtype) * math.log(400)) + 1
        xy = torch.rand(n_boxes, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype)
        boxes.append(torch.cat([xy, xy + side], 1))
    kw = {"canonical_scale": canonical[0], "canonical_level": canonical[1]}
    expected = tv.MultiScaleRoIAlign(names, out, sr, **kw)(x, boxes, shapes)
    got = MultiScaleRoIAlign(names, out, sr, **kw)(x, boxes, shapes)
    torch.testing.assert_close(got, expected, rtol=0, atol=ATOL[dtype])


def test_level_rule_matches_torchvision_live_at_the_boundaries() -> None:
    poolers = pytest.importorskip("torchvision.ops.poolers")
    sides = torch.tensor([s * f for s in (56.0, 112.0, 224.0, 448.0) for f in (1 - 1e-6, 1 - 1e-7, 1.0, 1 + 1e-7)])
    for dtype in (torch.float32, torch.float64):
        b = torch.stack([torch.zeros_like(sides), torch.zeros_like(sides), sides, sides], 1).to(dtype)
        mapper = poolers.LevelMapper(2, 5)
        assert torch.equal(map_levels([b], 2, 5) - 2, mapper([b]))


# --------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------


def _square(side: float, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([[0.0, 0.0, side, side]], dtype=dtype)


def test_canonical_box_goes_to_the_canonical_level_and_halving_moves_one_level() -> None:
    assert map_levels(_square(224), 0, 10).item() == 4
    assert map_levels(_square(112), 0, 10).item() == 3
    assert map_levels(_square(448), 0, 10).item() == 5
    assert map_levels(_square(223.9), 0, 10).item() == 3
    assert map_levels(_square(160), 0, 10, canonical_scale=160, canonical_level=5).item() == 5


def test_area_not_shape_decides() -> None:
    # 56 x 896 has the area of 224 x 224.
    assert map_levels(torch.tensor([[0.0, 0.0, 56.0, 896.0]]), 2, 5).item() == 4


def test_levels_are_clamped() -> None:
    assert map_levels(_square(1.0), 2, 5).item() == 2
    assert map_levels(_square(1e5), 2, 5).item() == 5


def test_eps_keeps_float32_boundary_boxes_on_the_upper_level() -> None:
    # log2(112 / 224) is exactly -1 in float32; sqrt(112 * 112) is exact: the eps is what
    # guarantees level 3 whatever log2's last bit does.
    assert map_levels(_square(112, torch.float32), 2, 5).item() == 3
    assert map_levels(_square(112, torch.float32), 2, 5, eps=-1e-6).item() == 2


@pytest.mark.parametrize(("k_min", "k_max"), [(2, 5), (3, 6), (0, 2)])
def test_level_boundaries_agree_with_map_levels(k_min: int, k_max: int) -> None:
    bounds = level_boundaries(k_min, k_max)
    assert [k for k, _, _ in bounds] == list(range(k_min, k_max + 1))
    assert bounds[0][1] == 0.0 and bounds[-1][2] == math.inf
    for k, lo, hi in bounds:
        inside = [lo * 1.001 + 0.001, (hi * 0.999) if math.isfinite(hi) else lo * 3]
        for side in inside:
            assert map_levels(_square(side), k_min, k_max).item() == k, (k, side)


def test_mmdetection_rule() -> None:
    sides = [20.0, 55.9, 56.0, 111.0, 112.0, 224.0, 447.0, 448.0, 5000.0]
    b = torch.cat([_square(s) for s in sides])
    assert map_levels_mmdet(b, 2, 5).tolist() == [2, 2, 2, 2, 3, 4, 4, 5, 5]
    # Same boundaries as torchvision's rule with the defaults, away from them:
    away = torch.cat([_square(s) for s in (20.0, 80.0, 150.0, 300.0, 600.0)])
    assert torch.equal(map_levels_mmdet(away, 2, 5), map_levels(away, 2, 5))
    assert map_levels_mmdet(_square(40.0), 2, 5, finest_scale=32).item() == 2
    assert map_levels_mmdet(_square(64.0), 2, 5, finest_scale=32).item() == 3


def test_module_level_rule_option() -> None:
    x = {"p2": torch.rand(1, 2, 64, 64), "p3": torch.rand(1, 2, 32, 32), "p4": torch.rand(1, 2, 16, 16)}
    boxes = [torch.cat([_square(s, torch.float32) for s in (30.0, 120.0, 250.0)])]
    tv_rule = MultiScaleRoIAlign(["p2", "p3", "p4"], 2, 2)
    mm_rule = MultiScaleRoIAlign(["p2", "p3", "p4"], 2, 2, level_rule="mmdetection", finest_scale=112)
    assert tv_rule.levels(x, boxes, [(256, 256)]).tolist() == [2, 3, 4]
    assert mm_rule.levels(x, boxes, [(256, 256)]).tolist() == [2, 2, 3]


def test_infer_scales_like_torchvision() -> None:
    feats = [torch.zeros(1, 1, 200, 336), torch.zeros(1, 1, 100, 168), torch.zeros(1, 1, 50, 84)]
    assert infer_scales(feats, [(800, 1333), (790, 1300)]) == ([0.25, 0.125, 0.0625], 2, 4)
    with pytest.raises(ValueError, match="image_shapes"):
        infer_scales(feats, [])


def test_forward_takes_each_box_from_its_level_of_pool_each_level() -> None:
    g = torch.Generator().manual_seed(0)
    x = OrderedDict((f"p{k}", torch.randn(2, 3, 256 // 2 ** k, 256 // 2 ** k, generator=g)) for k in (2, 3, 4, 5))
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 30.0], [10.0, 10.0, 250.0, 240.0]]), torch.tensor([[5.0, 5.0, 120.0, 130.0]])]
    m = MultiScaleRoIAlign(list(x), 3, 2)
    out = m(x, boxes, [(256, 256)] * 2)
    scales, k_min, _ = infer_scales(list(x.values()), [(256, 256)] * 2)
    each = pool_each_level(list(x.values()), boxes, 3, 2, scales)
    levels = m.levels(x, boxes, [(256, 256)] * 2)
    assert levels.tolist() == [2, 4, 3]
    for k, level in enumerate(levels.tolist()):
        assert torch.equal(out[k], each[level - k_min, k])


def test_no_state_between_calls() -> None:
    # torchvision infers the scales on its first call and keeps them; roiviz infers them per call.
    m = MultiScaleRoIAlign(["a", "b"], 2, 2)
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0]])]
    small = {"a": torch.rand(1, 2, 32, 32), "b": torch.rand(1, 2, 16, 16)}
    large = {"a": torch.rand(1, 2, 64, 64), "b": torch.rand(1, 2, 32, 32)}
    m(small, boxes, [(128, 128)])
    fresh = MultiScaleRoIAlign(["a", "b"], 2, 2)
    assert torch.equal(m(large, boxes, [(256, 256)]), fresh(large, boxes, [(256, 256)]))
    assert not any(isinstance(v, torch.Tensor) for v in vars(m).values())


def test_aligned_option_passes_through() -> None:
    x = {"a": torch.rand(1, 2, 32, 32)}
    boxes = [torch.tensor([[3.0, 4.0, 40.0, 50.0]])]
    out = MultiScaleRoIAlign(["a"], 3, 2, aligned=True)(x, boxes, [(128, 128)])
    torch.testing.assert_close(out, roiviz.roi_align(x["a"], boxes, 3, 0.25, 2, aligned=True))


def test_exported_at_the_top() -> None:
    assert roiviz.MultiScaleRoIAlign is MultiScaleRoIAlign and roiviz.map_levels is map_levels


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: MultiScaleRoIAlign("p2", 2, 2), TypeError, "featmap_names"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2.0), TypeError, "sampling_ratio"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2, level_rule="detectron"), ValueError, "level_rule"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2)([torch.rand(1, 1, 4, 4)], [torch.zeros(0, 4)], [(8, 8)]),
     TypeError, "x must be a dict"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2)({"p3": torch.rand(1, 1, 4, 4)}, [torch.zeros(0, 4)], [(8, 8)]),
     ValueError, "none of the feature maps"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2)({"p2": torch.rand(1, 1, 4, 4)}, torch.zeros(1, 4), [(8, 8)]),
     TypeError, "boxes must be a list"),
    (lambda: MultiScaleRoIAlign(["p2"], 2, 2)({"p2": torch.rand(1, 1, 4, 4)}, [torch.zeros(1, 5)], [(8, 8)]),
     ValueError, r"boxes\[0\] must have shape \[L, 4\]"),
    (lambda: MultiScaleRoIAlign(["a", "b"], 2, 2)({"a": torch.rand(1, 1, 4, 4), "b": torch.rand(1, 2, 2, 2)},
                                                  [torch.zeros(1, 4)], [(8, 8)]), ValueError, "same number of channels"),
    (lambda: map_levels(torch.zeros(1, 4), 5, 2), ValueError, "k_max must be >= k_min"),
    (lambda: map_levels(torch.zeros(1, 4), 2.0, 5), TypeError, "k_min must be an int"),
    (lambda: map_levels(torch.zeros(1, 4, dtype=torch.long), 2, 5), TypeError, "floating-point"),
    (lambda: pool_each_level([torch.rand(1, 1, 4, 4)], [torch.zeros(1, 4)], 2, 2, [1.0, 0.5]), ValueError,
     "one scale per feature map"),
])
def test_bad_input(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_image_pyramid_geometry_is_what_infer_scales_expects() -> None:
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    pyr = image_pyramid(image, (1, 2, 3))
    assert list(pyr) == ["p1", "p2", "p3"]
    assert pyr["p1"][0, 0, 0, 0].item() == (0 + 1 + 8 + 9) / 4  # cell (0, 0) averages pixels [0, 2)^2
    assert pyr["p3"].item() == image.mean().item()
    assert infer_scales(list(pyr.values()), [(8, 8)]) == ([0.5, 0.25, 0.125], 1, 3)
    assert tuple(image_pyramid(torch.zeros(1, 1, 9, 5), (2,))["p2"].shape) == (1, 1, 3, 2)


def test_no_boxes_at_all() -> None:
    m = MultiScaleRoIAlign(["a", "b"], 3, 2)
    x = {"a": torch.rand(2, 4, 32, 32), "b": torch.rand(2, 4, 16, 16)}
    assert m(x, [torch.zeros(0, 4), torch.zeros(0, 4)], [(128, 128)] * 2).shape == (0, 4, 3, 3)
