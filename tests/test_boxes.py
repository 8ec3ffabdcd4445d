"""roiviz.boxes, the one place the conventions are computed, against roiviz.reference (the oracle)."""

from __future__ import annotations

import pytest
import torch
from _cases import roi_cases
from hypothesis import given, settings
from hypothesis import strategies as st

from roiviz import reference
from roiviz.boxes import (
    crop_bounds,
    parse_box,
    pool_bin_edges,
    quantize,
    round_half_away,
    sample_grid,
)


def test_round_half_away_rounds_ties_away_from_zero_exactly():
    v = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999997, -0.49999997, 2.0, -2.0])
    assert round_half_away(v).tolist() == [1.0, 2.0, 3.0, -1.0, -2.0, 0.0, -0.0, 2.0, -2.0]


def test_quantize_multiplies_in_the_rois_dtype():
    # 45 * 0.7 is 31.5 in float32 (a tie, rounded up to 32) but 31.499999999999996 in float64.
    rois32 = torch.tensor([[0, 45.0, 45.0, 45.0, 45.0]])
    assert quantize(rois32, 0.7).tolist() == [[32, 32, 32, 32]]
    assert quantize(rois32.double(), 0.7).tolist() == [[31, 31, 31, 31]]


@settings(max_examples=60, deadline=None)
@given(case=roi_cases(dtype=torch.float32), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pool_bin_edges_are_the_references_bins(case, dtype):
    rois = case.boxes.to(dtype)
    ph_n, pw_n = case.output_size
    _, _, height, width = case.input.shape
    hs, he, ws, we = pool_bin_edges(rois, case.spatial_scale, ph_n, pw_n, height, width)
    for k in range(rois.shape[0]):
        bins = reference.roi_pool_bins(rois[k], ph_n, pw_n, case.spatial_scale, height, width, dtype)
        for i in range(ph_n):
            for j in range(pw_n):
                assert bins[i][j] == (int(hs[k, i]), int(he[k, i]), int(ws[k, j]), int(we[k, j]))


@settings(max_examples=60, deadline=None)
@given(case=roi_cases(dtype=torch.float32), dtype=st.sampled_from([torch.float32, torch.float64]),
       sampling_ratio=st.sampled_from([-1, 0, 1, 2, 3]), aligned=st.booleans())
def test_sample_grid_is_the_references_sample_points_bit_for_bit(case, dtype, sampling_ratio, aligned):
    rois = case.boxes.to(dtype)
    ph_n, pw_n = case.output_size
    ys, xs, grid_h, grid_w = sample_grid(rois, case.spatial_scale, ph_n, pw_n, sampling_ratio, aligned)
    for k in range(rois.shape[0]):
        points, count = reference.roi_align_sample_points(rois[k], ph_n, pw_n, case.spatial_scale, sampling_ratio,
                                                          aligned, dtype)
        gh, gw = int(grid_h[k]), int(grid_w[k])
        assert count == max(gh * gw, 1)
        for i in range(ph_n):
            for j in range(pw_n):
                ours = [(float(ys[k, i, iy]), float(xs[k, j, ix])) for iy in range(gh) for ix in range(gw)]
                assert ours == [(float(y), float(x)) for y, x in points[i][j]]


@settings(max_examples=60, deadline=None)
@given(case=roi_cases(dtype=torch.float64))
def test_crop_bounds_are_the_references_crops(case):
    _, _, height, width = case.input.shape
    y0, x0, h, w = crop_bounds(case.boxes, case.spatial_scale, height, width)
    crops = reference.crop_rois(case.input, case.boxes, case.spatial_scale)
    for k, c in enumerate(crops):
        assert (int(h[k]), int(w[k])) == tuple(c.shape[1:])
        if c.numel():
            b = int(case.boxes[k, 0])
            expected = case.input[b, :, int(y0[k]) : int(y0[k] + h[k]), int(x0[k]) : int(x0[k] + w[k])]
            assert torch.equal(c, expected)


@pytest.mark.parametrize(("box", "message"), [
    ((1, 2, 3), r"box must have 4 values"),
    ((0, 1.0, 2.0, float("nan"), 4.0), r"NaN or infinite"),
    ((0.5, 1.0, 2.0, 3.0, 4.0), r"batch index 0.5, which is not a whole number"),
    ((3.0, 1.0, 2.0, 4.0), r"must have x1 <= x2 and y1 <= y2"),
])
def test_parse_box_refuses_bad_boxes(box, message):
    with pytest.raises(ValueError, match=message):
        parse_box(box)


def test_parse_box_refuses_other_types():
    with pytest.raises(TypeError, match=r"box must be \(x1, y1, x2, y2\)"):
        parse_box("0 0 1 1")
    with pytest.raises(TypeError, match=r"box must hold real numbers"):
        parse_box((True, 0, 1, 1))
