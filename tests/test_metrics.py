"""Tests of roiviz.metrics against hand-computed values.

Geometry (see the module docstring): cell ``j`` spans ``[j, j + 1)``, a box ``[x1*s, x2*s]``
holds the cells whose centre ``j + 0.5`` it contains, and the integer crop of ROI Pool & co.
is ``round(x1*s) .. round(x2*s)`` inclusive.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import roiviz
from roiviz.boxes import parse_box
from roiviz.metrics import (
    METRICS,
    QUANTIZING,
    MetricsTable,
    StrategyMetrics,
    _coverage_from,
    _Probe,
    aspect_distortion,
    box_cells,
    box_mask,
    coverage,
    influence_map,
    local,
    misalignment,
    quantization,
    reconstruction_psnr,
    strategy_metrics,
)

# ---- box cells --------------------------------------------------------------------------------


def test_box_cells_hand_values() -> None:
    assert box_cells((2, 2, 6, 6), 1.0, 10, 10) == (2, 6, 2, 6)  # on cell edges: 4x4
    assert box_cells((2.5, 2.0, 5.5, 5.0), 1.0, 10, 10) == (2, 5, 2, 6)  # centres on the edges count
    assert box_cells((2.6, 2.0, 5.4, 5.0), 1.0, 10, 10) == (2, 5, 3, 5)
    assert box_cells((32, 16, 64, 48), 1 / 16, 10, 10) == (1, 3, 2, 4)
    assert box_cells((2.1, 2.1, 2.4, 2.4), 1.0, 10, 10) == (2, 2, 2, 2)  # no centre inside: empty
    assert box_cells((-5, -5, 3, 3), 1.0, 10, 10) == (0, 3, 0, 3)  # clipped to the map
    assert box_cells((20, 20, 30, 30), 1.0, 10, 10) == (10, 10, 10, 10)  # off the map: empty


@settings(max_examples=60, deadline=None)
@given(
    x1=st.floats(-4, 12), y1=st.floats(-4, 12), w=st.floats(0, 10), h=st.floats(0, 10),
    s=st.sampled_from([1.0, 0.5, 0.25, 1 / 3]),
)
def test_box_mask_is_the_cell_centre_rule(x1: float, y1: float, w: float, h: float, s: float) -> None:
    box = (x1, y1, x1 + w, y1 + h)
    mask = box_mask(box, s, 9, 11)
    for i in range(9):
        for j in range(11):
            inside = box[0] * s <= j + 0.5 <= box[2] * s and box[1] * s <= i + 0.5 <= box[3] * s
            assert bool(mask[i, j]) == inside


# ---- quantization -----------------------------------------------------------------------------


def test_quantization_box_on_cell_edges() -> None:
    # Box [2, 6] covers cells 2..5; the inclusive crop round(2)..round(6) adds cell 6:
    # one row and one column, 4 + 4 + 1 = 9 cells, nothing lost.
    q = quantization((2, 2, 6, 6), 1.0, 10, 10)
    assert (q.lost, q.gained, q.box_cells, q.crop_cells, q.crop) == (0, 9, 16, 25, (2, 2, 5, 5))
    assert q.lost_area == 0.0 and q.gained_area == 9.0
    assert q.gained_mask[6, 2:7].all() and q.gained_mask[2:7, 6].all() and int(q.gained_mask.sum()) == 9


def test_quantization_zero_when_the_map_ends_the_crop() -> None:
    q = quantization((0, 0, 8, 8), 1.0, 8, 8)  # the extra row/column would be off the map
    assert (q.lost, q.gained, q.box_cells, q.crop_cells) == (0, 0, 64, 64)


def test_quantization_half_cells() -> None:
    # x: box [2.5, 5.5] holds centres 2.5 .. 5.5 -> cols 2..5; crop round(2.5)=3 .. round(5.5)=6.
    # y: box [2, 5] -> rows 2..4; crop 2..5.  Lost: col 2 x rows 2..4 = 3.
    # Gained: row 5 x cols 3..6 (4) + col 6 x rows 2..4 (3) = 7.
    q = quantization((2.5, 2.0, 5.5, 5.0), 1.0, 10, 10)
    assert (q.lost, q.gained, q.crop) == (3, 7, (2, 3, 4, 4))
    assert q.lost_mask[2:5, 2].all() and int(q.lost_mask.sum()) == 3
    # Exact areas: box 3 x 3 = 9, crop [3, 7) x [2, 6) = 16, overlap [3, 5.5] x [2, 5] = 7.5.
    assert q.lost_area == pytest.approx(1.5) and q.gained_area == pytest.approx(8.5)


def test_quantization_stride_16() -> None:
    # x1*s = 0.625 -> 1, x2*s = 18.75 -> 19; y1*s = 1.25 -> 1, y2*s = 12.5 -> 13.
    # Box cells: cols ceil(0.125)=1 .. floor(18.25)=18, rows ceil(0.75)=1 .. floor(12)=12.
    q = quantization((10, 20, 300, 200), 1 / 16, 50, 68)
    assert q.crop == (1, 1, 13, 19)
    assert (q.box_cells, q.crop_cells, q.lost, q.gained) == (12 * 18, 13 * 19, 0, 13 * 19 - 12 * 18)
    overlap = (18.75 - 1) * (12.5 - 1.25)
    assert q.lost_area == pytest.approx(18.125 * 11.25 - overlap)
    assert q.gained_area == pytest.approx(247 - overlap)


@settings(max_examples=60, deadline=None)
@given(x1=st.floats(-3, 12), y1=st.floats(-3, 12), w=st.floats(0, 9), h=st.floats(0, 9))
def test_quantization_masks_are_consistent(x1: float, y1: float, w: float, h: float) -> None:
    q = quantization((x1, y1, x1 + w, y1 + h), 1.0, 10, 12)
    assert torch.equal(q.lost_mask, q.box_mask & ~q.crop_mask)
    assert torch.equal(q.gained_mask, q.crop_mask & ~q.box_mask)
    assert q.lost == int(q.lost_mask.sum()) and q.gained == int(q.gained_mask.sum())
    assert q.box_cells - q.lost + q.gained == q.crop_cells
    _, _, hh, ww = q.crop
    assert q.crop_cells == hh * ww == int(q.crop_mask.sum())
    assert q.lost_area >= -1e-9 and q.gained_area >= -1e-9


# ---- coverage and leak ------------------------------------------------------------------------


def test_coverage_roi_align_samples_on_cell_centres() -> None:
    # Box [2, 6] into 2x2 with 2 samples per bin side: samples at 2.5, 3.5, 4.5, 5.5, exactly the
    # centres of cells 2..5, so each reads one cell with weight 1: no leak.
    c = coverage("roi_align", (2, 2, 6, 6), 2, 1.0, 10, 10)
    assert (c.coverage, c.leak, c.box_cells, c.influenced) == (1.0, 0, 16, 16)


def test_coverage_roi_align_sparse_samples() -> None:
    # Box [0, 8] into 1x1: samples at 2 and 6 per axis, between cells 1|2 and 5|6: 4 of 8 per axis.
    c = coverage("roi_align", (0, 0, 8, 8), 1, 1.0, 10, 10)
    assert (c.coverage, c.leak) == (16 / 64, 0)
    hit = c.influence > 0
    assert hit[1:3, 1:3].all() and hit[5:7, 5:7].all() and hit[1:3, 5:7].all() and int(hit.sum()) == 16


def test_coverage_roi_align_leaks_half_a_cell() -> None:
    # Box [0.2, 4.2] into 1x1: samples at 1.2 and 3.2 -> index 0.7, 2.7: cells 0,1,2,3 per axis.
    # Box cells: centres 0.5 .. 3.5 -> 0..3 as well, so coverage 1, no leak; shift to [0.8, 4.8]:
    # samples 1.8, 3.8 -> cells 1,2,3,4; box cells 1..4 (centre 0.5 < 0.8): still no leak.
    assert coverage("roi_align", (0.2, 0.2, 4.2, 4.2), 1, 1.0, 8, 8).leak == 0
    # Box [1, 2] into 1x1: samples at 1.25, 1.75 -> index 0.75, 1.25: cells 0, 1, 2 per axis,
    # box cell 1 only: 9 - 1 = 8 leaking cells over a box of area 1.
    c = coverage("roi_align", (1, 1, 2, 2), 1, 1.0, 8, 8)
    assert (c.coverage, c.leak, c.leak_fraction) == (1.0, 8, 8.0)


def test_coverage_crop_of_a_large_box() -> None:
    # 5x5 output of a 10x10 box: coverage = PH * PW / box cells.
    c = coverage("crop", (0, 0, 10, 10), 5, 1.0, 12, 12)
    assert (c.coverage, c.leak, c.box_cells) == (25 / 100, 0, 100)
    assert (c.influence > 0)[:5, :5].all()


def test_coverage_pad_of_a_small_box() -> None:
    # Box [2, 5]: cells 2..4 (9); integer crop 2..5 (16) fits in the 6x6 canvas: 7 leak.
    c = coverage("pad", (2, 2, 5, 5), 6, 1.0, 10, 10)
    assert (c.coverage, c.leak, c.box_cells) == (1.0, 7, 9)
    assert c.leak_fraction == pytest.approx(7 / 9)


@pytest.mark.parametrize("name", ["roi_pool", "adaptive_max", "adaptive_avg", "resize"])
def test_coverage_one_cell_bins(name: str) -> None:
    # Box [0, 6]: integer crop 0..6 (7 cells) into 7 bins: every crop cell is its own bin, so
    # every one influences (max and mean alike); box cells 0..5 (36), the other 13 leak.
    c = coverage(name, (0, 0, 6, 6), 7, 1.0, 10, 10)
    assert (c.coverage, c.leak, c.box_cells, c.influenced) == (1.0, 13, 36, 49)


def test_coverage_max_pooling_reads_one_cell_per_bin() -> None:
    # At a generic input, max pooling passes gradient to one winner per bin.
    c = coverage("roi_pool", (0, 0, 15, 15), 4, 1.0, 20, 20)
    assert c.influenced <= 16
    q = quantization((0, 0, 15, 15), 1.0, 20, 20)
    assert bool(((c.influence > 0) & ~q.crop_mask).sum() == 0)  # only the crop is read
    assert coverage("adaptive_avg", (0, 0, 15, 15), 4, 1.0, 20, 20).coverage == 1.0


def test_coverage_of_any_strategy() -> None:
    # A strategy roiviz does not know: it pools the whole map, so everything outside leaks.
    def global_avg(input, boxes, output_size, spatial_scale=1.0):
        k = boxes.shape[0]
        return F.adaptive_avg_pool2d(input[boxes[:, 0].long()], output_size)[:k]

    c = coverage(global_avg, (2, 2, 6, 6), 2, 1.0, 10, 10)
    assert (c.coverage, c.leak) == (1.0, 100 - 16)
    t = strategy_metrics(torch.rand(1, 2, 10, 10), (2, 2, 6, 6), 2, strategies={"global": global_avg})
    assert t["global"].leak == 84 and t["global"].quant_lost == -1 and math.isnan(t["global"].aspect_distortion)


def test_coverage_needs_a_differentiable_strategy() -> None:
    def frozen(input, boxes, output_size, spatial_scale=1.0):
        return roiviz.roi_align(input.detach(), boxes, output_size, spatial_scale)

    with pytest.raises(ValueError, match="no gradient"):
        coverage(frozen, (0, 0, 4, 4), 2, 1.0, 8, 8)


def test_coverage_tiny_box_has_no_cells() -> None:
    c = coverage("roi_align", (2.1, 2.1, 2.3, 2.3), 1, 1.0, 6, 6)
    assert math.isnan(c.coverage) and c.box_cells == 0 and c.leak >= 1
    assert c.leak_fraction == pytest.approx(c.leak / 0.04)


def test_influence_map_on_a_real_probe() -> None:
    x = torch.rand(1, 3, 12, 12)
    g = influence_map("adaptive_avg", (2, 2, 6, 6), 2, 1.0, probe=x)
    assert g.shape == (12, 12)
    assert bool((g > 0)[2:7, 2:7].all()) and int((g > 0).sum()) == 25


LOCAL_VARIANTS = {
    "align_legacy": local(lambda x, b, size, scale=1.0: roiviz.roi_align(x, b, size, scale, 2, aligned=False)),
    "align_adaptive": local(lambda x, b, size, scale=1.0: roiviz.roi_align(x, b, size, scale, -1, aligned=True)),
}


# The window the probes run on must not change anything: compare against the full map.
@settings(max_examples=40, deadline=None)
@given(
    x1=st.floats(-6, 40), y1=st.floats(-6, 40), w=st.floats(0, 30), h=st.floats(0, 30),
    s=st.sampled_from([1.0, 0.5, 0.25]),
    ph=st.integers(1, 5), pw=st.integers(1, 5),
    name=st.sampled_from([*roiviz.STRATEGIES, "align_legacy", "align_adaptive"]),
)
def test_window_is_exact(x1, y1, w, h, s, ph, pw, name) -> None:
    # roiviz.roi_align with sampling_ratio=-1 raises on an empty box (torchvision gives 0).
    assume(name != "align_adaptive" or (w >= 0.01 and h >= 0.01))
    box = (0, x1, y1, x1 + w, y1 + h)
    fn = LOCAL_VARIANTS.get(name) or roiviz.STRATEGIES[name]
    probe = _Probe(box, (ph, pw), s, 24, 20, 0, windowed=True)
    g_win, r_win = probe.run(fn, windowed=True)
    g_full, r_full = probe.run(fn, windowed=False)
    # Shifting the box by whole cells is exact; ROI Align's sample arithmetic then rounds at
    # other magnitudes, so its values may differ in the last bits, never in their support.
    torch.testing.assert_close(g_win, g_full, rtol=1e-5, atol=1e-6)
    cw, cf = _coverage_from(g_win, box, s), _coverage_from(g_full, box, s)
    assert (cw.coverage, cw.leak, cw.influenced) == (cf.coverage, cf.leak, cf.influenced) or math.isnan(cw.coverage)
    assert (cw.leak, cw.influenced) == (cf.leak, cf.influenced)
    torch.testing.assert_close(r_win, r_full, rtol=1e-5, atol=1e-6)


def test_local_marks_a_strategy() -> None:
    from roiviz.metrics import _is_local

    assert _is_local(roiviz.resize) and not _is_local(lambda *a: None)
    assert _is_local(LOCAL_VARIANTS["align_legacy"])
    with pytest.raises(TypeError, match="callable"):
        local(3)  # type: ignore[arg-type]


def test_window_not_used_for_other_scales() -> None:
    box = parse_box((3.0, 3.0, 9.0, 9.0))
    assert _Probe(box, (2, 2), 1 / 3, 30, 30, 0, windowed=True).window == (0, 30, 0, 30)
    # Cells 1.5 .. 4.5 -> rows/cols floor(1.5) - 2 = -1 (clipped to 0) .. ceil(4.5) + 3 = 8.
    assert _Probe(box, (2, 2), 0.5, 30, 30, 0, windowed=True).window == (0, 8, 0, 8)


# ---- aspect distortion ------------------------------------------------------------------------


def test_aspect_distortion_hand_values() -> None:
    log2 = math.log(2)
    # A 2:1 integer crop (cols 0..13, rows 0..6) stretched to 7x7.
    for name in ("resize", "adaptive_max", "adaptive_avg", "roi_pool"):
        assert aspect_distortion(name, (0, 0, 13, 6), 7, 1.0, 20, 20) == pytest.approx(log2)
    # ROI Align stretches the continuous 14 x 7 box.
    assert aspect_distortion("roi_align", (0, 0, 14, 7), 7) == pytest.approx(log2)
    assert aspect_distortion("roi_align", (0, 0, 7, 14), 7) == pytest.approx(-log2)
    assert aspect_distortion("roi_align", (0, 0, 14, 7), (7, 14)) == pytest.approx(0.0)
    assert aspect_distortion("prroi_pool", (0, 0, 14, 7), 7) == pytest.approx(log2)  # the continuous box too
    for name in ("crop", "pad"):
        assert aspect_distortion(name, (0, 0, 14, 7), 7) == 0.0


def test_aspect_distortion_clipping() -> None:
    # Cols 0..13 of a 10-wide map: adaptive/resize stretch the clipped 10 x 7 crop, ROI Pool
    # lays its bins over the unclipped 14 x 7.
    assert aspect_distortion("resize", (0, 0, 13, 6), 7, 1.0, 20, 10) == pytest.approx(math.log(10 / 7))
    assert aspect_distortion("roi_pool", (0, 0, 13, 6), 7, 1.0, 20, 10) == pytest.approx(math.log(2))
    assert math.isnan(aspect_distortion("roi_align", (3, 3, 3, 8), 7))
    assert math.isnan(aspect_distortion("resize", (50, 50, 60, 60), 7, 1.0, 20, 20))  # off the map
    with pytest.raises(ValueError, match="height and width"):
        aspect_distortion("resize", (0, 0, 13, 6), 7)


# ---- reconstruction ---------------------------------------------------------------------------


def test_psnr_exact_crop_is_inf() -> None:
    x = torch.rand(1, 3, 16, 16)
    box = (2, 3, 9, 10)  # 7 x 7 cells at scale 1
    out = roiviz.crop(x, torch.tensor([[0, *map(float, box)]]), 7)
    assert reconstruction_psnr(out, x, box) == math.inf
    assert strategy_metrics(x, box, 7, strategies=["crop"])["crop"].psnr == math.inf


def test_psnr_hand_value() -> None:
    # resize of box [0, 2] (integer crop 0..2, 3x3) to 1x1 reads the crop at (1, 1).
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, :2, :2] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out = roiviz.resize(x, torch.tensor([[0, 0.0, 0.0, 2.0, 2.0]]), 1)
    assert float(out) == 3.0
    # Reconstruction: 3 everywhere over the true crop (cells 0..1): errors 3, 2, 1, 0.
    expected = 10 * math.log10(3.0**2 / ((9 + 4 + 1 + 0) / 4))
    assert reconstruction_psnr(out, x, (0, 0, 2, 2)) == pytest.approx(expected)


def test_psnr_any_box() -> None:
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    out = torch.full((1, 2, 2), 15.0)
    # Zero-width box: the column under the box (col 3), rows 1..3 (centres 1.5 .. 3.5 in [1, 4]).
    crop = x[0, :, 1:4, 3:4]
    mse = float(((crop - 15.0) ** 2).mean())
    expected = 10 * math.log10(float(crop.max() - crop.min()) ** 2 / mse)
    assert reconstruction_psnr(out, x, (3.2, 1, 3.2, 4)) == pytest.approx(expected)
    assert math.isnan(reconstruction_psnr(out, x, (10, 10, 12, 12)))  # off the map
    const = torch.full((1, 1, 6, 6), 2.0)
    assert reconstruction_psnr(torch.full((1, 2, 2), 1.0), const, (0, 0, 4, 4)) == pytest.approx(10 * math.log10(4 / 1))
    with pytest.raises(ValueError, match="output must be"):
        reconstruction_psnr(torch.zeros(3, 2, 2), x, (0, 0, 4, 4))


# ---- misalignment -----------------------------------------------------------------------------


def test_misalignment_roi_align_is_zero_at_bin_centres() -> None:
    m = misalignment("roi_align", (2, 2, 6, 6), 2, 1.0, 8, 8)
    assert (m.mean, m.dx, m.dy, m.responded, m.impulses) == (0.0, 0.0, 0.0, 4, 4)
    torch.testing.assert_close(m.found, m.points)


def test_misalignment_roi_pool_hand_value() -> None:
    # Crop 2..6 (5 cells) in 2 bins: rows 2..4 and 4..6 (they overlap at 4). An impulse at 3
    # (cells 2, 3) hits bin 0 only: found at 3, exact. One at 5 (cells 4, 5) hits both bins
    # equally: centroid 0.5, found at 4, one cell off. Four impulses: 0, 1, 1, sqrt(2).
    m = misalignment("roi_pool", (2, 2, 6, 6), 2, 1.0, 8, 8)
    assert m.mean == pytest.approx((2 + math.sqrt(2)) / 4)
    assert (m.dx, m.dy) == (-0.5, -0.5)


def test_misalignment_crop_of_a_large_box() -> None:
    # Box [0, 14] into 7x7 (bins of 2 cells): features on interior bins 1, 3, 5, at 3, 7, 11 per
    # axis, each the splat of cells (2, 3), (6, 7), (10, 11) spread by the tent [1, 2, 1] / 4.
    # crop keeps cells 0..6 unscaled. Feature at 3 (cells 1..4: 1/8, 3/8, 3/8, 1/8) -> output
    # centroid 2.5 -> read back at (2.5 + 0.5) * 2 = 6: 3 off. Feature at 7 (cells 5..8) -> only
    # cells 5, 6 kept (1/8, 3/8) -> centroid 5.75 -> 12.5: 5.5 off. Feature at 11 is cut.
    m = misalignment("crop", (0, 0, 14, 14), 7, 1.0, 16, 16)
    assert (m.responded, m.impulses) == (4, 9)
    assert m.mean == pytest.approx((3 * math.sqrt(2) + 2 * math.hypot(3, 5.5) + 5.5 * math.sqrt(2)) / 4)
    assert torch.isnan(m.found).any()


def test_misalignment_features_are_at_bin_centres() -> None:
    from roiviz.metrics import _feature_kernel, _feature_profile

    # Kernels: a tent about two bins wide with >= 3 bins, a box within the bin otherwise.
    assert _feature_kernel(2.0, 7).tolist() == [0.25, 0.5, 0.25]
    assert _feature_kernel(1.2, 7).tolist() == [1.0]
    assert _feature_kernel(8.0, 2).tolist() == [1 / 7] * 7
    assert _feature_kernel(3.9, 1).tolist() == [1.0]
    prof, centre = _feature_profile(4.3, 12, _feature_kernel(3.0, 5))
    assert prof.sum() == pytest.approx(1.0) and centre == pytest.approx(4.3)
    prof, centre = _feature_profile(0.5, 12, _feature_kernel(3.0, 5))  # cut by the map's edge
    assert prof.sum() < 1 and centre > 0.5


def test_misalignment_tells_the_strategies_apart() -> None:
    # 7x7 output of a 35 x 28 box: ROI Align puts features where they were; the integer-crop
    # strategies move them by about half a cell or more; crop, which does not rescale, by far more.
    box = (3, 2, 38, 30)
    got = {n: misalignment(n, box, 7, 1.0, 64, 64).mean for n in roiviz.STRATEGIES}
    assert got["roi_align"] < 0.05
    for name in ("adaptive_max", "adaptive_avg", "resize", "roi_pool"):
        assert 0.3 < got[name] < 1.5
    assert got["crop"] > 10


def test_misalignment_exact_crop_is_zero() -> None:
    assert misalignment("crop", (0, 0, 7, 7), 7, 1.0, 10, 10).mean == 0.0
    assert math.isnan(misalignment("roi_align", (30, 30, 40, 40), 2, 1.0, 10, 10).mean)  # off the map


def test_misalignment_roi_align_small_on_average() -> None:
    # Bins of 3.5 cells: ROI Align reads a sub-cell impulse back where it was, to a fraction of a cell.
    m = misalignment("roi_align", (3, 5, 24, 26), 6, 1.0, 32, 32)
    r = misalignment("roi_pool", (3, 5, 24, 26), 6, 1.0, 32, 32)
    assert m.mean < 0.25 < r.mean


# ---- the table --------------------------------------------------------------------------------


def test_strategy_metrics_matches_the_single_metrics() -> None:
    x = torch.rand(1, 3, 24, 24)
    box = (3.3, 4.7, 17.2, 12.9)
    t = strategy_metrics(x, box, (3, 5))
    assert [r.strategy for r in t] == list(roiviz.STRATEGIES) == t.strategies
    q = quantization(box, 1.0, 24, 24)
    rois = torch.tensor([[0, *box]])
    for name, fn in roiviz.STRATEGIES.items():
        r = t[name]
        c = coverage(name, box, (3, 5), 1.0, 24, 24)
        assert (r.coverage, r.leak, r.leak_fraction) == (c.coverage, c.leak, c.leak_fraction)
        assert r.misalignment == pytest.approx(misalignment(name, box, (3, 5), 1.0, 24, 24).mean)
        assert r.aspect_distortion == aspect_distortion(name, box, (3, 5), 1.0, 24, 24)
        assert r.psnr == pytest.approx(reconstruction_psnr(fn(x, rois, (3, 5)), x, box))
        expected_q = (q.lost, q.gained) if name in QUANTIZING else (0, 0)
        assert (r.quant_lost, r.quant_gained) == expected_q


def test_strategy_metrics_batch_and_outputs() -> None:
    x = torch.rand(2, 2, 16, 16)
    box = (1, 2.0, 2.0, 11.0, 9.0)
    t = strategy_metrics(x, box, 4, strategies=["resize", "roi_align"])
    t0 = strategy_metrics(x[1:], box[1:], 4, strategies=["resize", "roi_align"])
    assert t == t0
    outs = {n: roiviz.get_strategy(n)(x, torch.tensor([box]), 4) for n in ("resize", "roi_align")}
    assert strategy_metrics(x, box, 4, strategies=["resize", "roi_align"], outputs=outs) == t
    with pytest.raises(ValueError, match="must have shape"):
        strategy_metrics(x, box, 4, strategies=["resize"], outputs={"resize": torch.zeros(1, 2, 3, 3)})


def test_strategy_metrics_feature_map_scale() -> None:
    from roiviz.images import FeatureExtractor, sample_image

    img = sample_image("shapes", 64)
    fx = FeatureExtractor(stride=8, channels=4)
    t = strategy_metrics(fx(img), (8.0, 8.0, 40.0, 40.0), 2, fx.spatial_scale)
    # Box [1, 5] in cells, 4 x 4 = 16 cells; integer crop 1..5.
    assert t["adaptive_avg"].coverage == 1.0 and t["adaptive_avg"].leak == 9
    assert t["roi_align"].leak == 0 and t["roi_align"].misalignment == 0.0


def test_strategy_metrics_include() -> None:
    x = torch.rand(1, 1, 12, 12)
    t = strategy_metrics(x, (1, 1, 7, 9), 3, include=["quantization", "aspect"])
    for r in t:
        assert math.isnan(r.coverage) and r.leak == -1 and math.isnan(r.psnr) and math.isnan(r.misalignment)
    assert t["roi_pool"].quant_gained > 0 and not math.isnan(t["resize"].aspect_distortion)
    assert set(METRICS) == {"coverage", "quantization", "aspect", "psnr", "misalignment"}
    with pytest.raises(ValueError, match="unknown metrics"):
        strategy_metrics(x, (1, 1, 7, 9), 3, include=["speed"])
    with pytest.raises(TypeError, match="include"):
        strategy_metrics(x, (1, 1, 7, 9), 3, include="psnr")


@pytest.mark.parametrize(
    ("box", "error", "match"),
    [
        ((1, 2, 3), ValueError, "4 values"),
        ((4, 0, 2, 5), ValueError, "x1 <= x2"),
        ((0, math.nan, 2, 5), ValueError, "NaN"),
        ((1, 0, 0, 2, 2), ValueError, "batch index 1"),
        ((0.5, 0, 0, 2, 2), ValueError, "whole number"),
        ("0 0 2 2", TypeError, "box must be"),
        ((0, 0, "2", 2), TypeError, "real numbers"),
    ],
)
def test_strategy_metrics_bad_boxes(box, error, match) -> None:
    with pytest.raises(error, match=match):
        strategy_metrics(torch.rand(1, 1, 8, 8), box, 2)


def test_strategy_metrics_bad_arguments() -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="known strategies: crop, pad"):
        strategy_metrics(x, (0, 0, 4, 4), 2, strategies=["warp"])
    with pytest.raises(TypeError, match="strategies"):
        strategy_metrics(x, (0, 0, 4, 4), 2, strategies="crop")
    with pytest.raises(ValueError, match="distinct"):
        strategy_metrics(x, (0, 0, 4, 4), 2, strategies=["crop", "crop"])
    with pytest.raises(ValueError, match="output_size"):
        strategy_metrics(x, (0, 0, 4, 4), 0)
    with pytest.raises(ValueError, match="spatial_scale"):
        strategy_metrics(x, (0, 0, 4, 4), 2, -1.0)
    with pytest.raises(TypeError, match="input"):
        strategy_metrics(x.numpy(), (0, 0, 4, 4), 2)
    with pytest.raises(ValueError, match="height"):
        coverage("crop", (0, 0, 4, 4), 2, 1.0, 0, 8)


def test_strategy_metrics_accepts_tensor_and_callable_boxes_and_strategies() -> None:
    x = torch.rand(1, 1, 10, 10)
    a = strategy_metrics(x, torch.tensor([1.0, 1.0, 6.0, 5.0]), 2, strategies=[roiviz.resize, "pad"])
    b = strategy_metrics(x, [1, 1, 6, 5], 2, strategies=["resize", "pad"])
    assert a == b and a.strategies == ["resize", "pad"]


def test_metrics_table_printing() -> None:
    rows = [
        StrategyMetrics("crop", 0.25, 0, 0.0, 0, 9, 0.0, math.inf, 1.5),
        StrategyMetrics("roi_align", 1.0, 12, 0.75, 0, 0, math.log(2), 23.456, 0.0),
        StrategyMetrics("mine", math.nan, -1, math.nan, -1, -1, math.nan, math.nan, math.nan),
    ]
    t = MetricsTable(rows)
    text = t.to_text()
    assert text == str(t) == repr(t)
    lines = text.splitlines()
    assert lines[0].split() == ["strategy", "coverage", "leak", "leak/area", "q_lost", "q_gained", "aspect", "PSNR_dB", "misalign"]
    assert lines[1].split() == ["crop", "25.0%", "0", "0.0%", "0", "9", "+0.000", "inf", "1.50"]
    assert lines[2].split() == ["roi_align", "100.0%", "12", "75.0%", "0", "0", "+0.693", "23.5", "0.00"]
    assert lines[3].split() == ["mine"] + ["n/a"] * 8
    # Right-aligned numbers: every column ends at the same place on every line.
    ends = [[m.end() for m in re.finditer(r"\S+", line)] for line in lines]
    assert all(e[1:] == ends[0][1:] for e in ends)
    html = t._repr_html_()
    assert html.startswith('<table class="roiviz-metrics">') and html.count("<tr>") == 4
    assert "<td>roi_align</td>" in html and "0x" not in html and html == t._repr_html_()
    assert t.as_dicts()[1] == {
        "strategy": "roi_align", "coverage": 1.0, "leak": 12, "leak_fraction": 0.75, "quant_lost": 0,
        "quant_gained": 0, "aspect_distortion": math.log(2), "psnr": 23.456, "misalignment": 0.0,
    }


def test_metrics_table_is_list_like() -> None:
    rows = [StrategyMetrics(n, 1.0, 0, 0.0, 0, 0, 0.0, 1.0, 0.0) for n in ("a", "b", "c")]
    t = MetricsTable(rows)
    assert len(t) == 3 and t[1] is rows[1] and t["c"] is rows[2] and list(t) == rows
    assert isinstance(t[:2], MetricsTable) and t[:2].strategies == ["a", "b"]
    assert "b" in t and rows[0] in t and "z" not in t
    with pytest.raises(KeyError, match="it has: a, b, c"):
        t["z"]
    with pytest.raises(ValueError, match="distinct"):
        MetricsTable([rows[0], rows[0]])
    with pytest.raises(TypeError, match="StrategyMetrics"):
        MetricsTable([{"strategy": "a"}])  # type: ignore[list-item]
    with pytest.raises(dataclasses_frozen_error()):
        rows[0].coverage = 0.0  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_strategy_metrics_dtypes(dtype: torch.dtype) -> None:
    # Geometry does not depend on the dtype; the PSNR does a little. (In float64 the random
    # probe differs, so the winners of max pooling may too.)
    x = torch.rand(1, 2, 20, 20)
    box = (2.3, 3.1, 14.2, 17.9)
    ref = strategy_metrics(x, box, 3)
    got = strategy_metrics(x.to(dtype), box, 3)
    for r, g in zip(ref, got, strict=True):
        assert (g.quant_lost, g.quant_gained, g.aspect_distortion) == (r.quant_lost, r.quant_gained, r.aspect_distortion)
        assert g.misalignment == pytest.approx(r.misalignment, abs=1e-6, nan_ok=True)
        assert g.psnr == pytest.approx(r.psnr, abs=0.05)
        if r.strategy not in ("adaptive_max", "roi_pool"):
            assert (g.coverage, g.leak) == (r.coverage, r.leak)


@settings(max_examples=80, deadline=None)
@given(x1=st.floats(2, 20), y1=st.floats(2, 20), w=st.floats(0, 15), h=st.floats(0, 15))
def test_quantization_is_one_more_row_and_column(x1: float, y1: float, w: float, h: float) -> None:
    # Away from the map's edges and from half-cell edges, ROI Pool's crop is the box's cells
    # plus the row and the column after them (see quantization's docstring). Near a half,
    # float32 rounding of the coordinate (as the strategies compute it) can tip either way.
    box = (x1, y1, x1 + w, y1 + h)
    assume(all(abs(v % 1 - 0.5) > 1e-5 for v in box))
    r0, r1, c0, c1 = box_cells(box, 1.0, 64, 64)
    q = quantization(box, 1.0, 64, 64)
    assert q.lost == 0
    assert q.crop == (r0, c0, r1 - r0 + 1, c1 - c0 + 1)
    assert q.gained == (r1 - r0 + 1) * (c1 - c0 + 1) - (r1 - r0) * (c1 - c0)


def test_no_strategies_gives_an_empty_table():
    x = torch.rand(1, 1, 8, 8)
    table = strategy_metrics(x, (1, 1, 5, 5), 3, strategies=[])
    assert len(table) == 0 and table.as_dicts() == []
    assert "strategy" in str(table)  # still prints its header
