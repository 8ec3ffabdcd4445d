"""roiviz.conventions against each framework's own published test vectors and the loop oracles.

- ONNX's backend test cases for RoiAlign (stored by ``scripts/make_conventions_fixtures.py``
  from ``onnx/backend/test/case/node/roialign.py``; published with 4 decimals).
- ONNX Runtime's ``roialign_test.cc`` (``AvgModePositive``, ``MaxModePositive``; 6 digits).
- TensorFlow's ``crop_and_resize_op_test.cc`` (exact).
- The vectorised functions equal their ``*_loops`` oracles bit for bit on random inputs.
The same functions against the real packages on random inputs: ``test_conventions_peers.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import roiviz
from roiviz import conventions as cv

FIXTURE = Path(__file__).parent / "fixtures" / "onnx_roialign_cases.json"
exact = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}

# --------------------------------------------------------------------------------------------
# Published vectors
# --------------------------------------------------------------------------------------------

ONNX_CASES = json.loads(FIXTURE.read_text())["cases"]


@pytest.mark.parametrize("case", ONNX_CASES, ids=[c["name"] for c in ONNX_CASES])
def test_onnx_backend_vectors(case: dict) -> None:
    x = torch.tensor(case["X"]["data"], dtype=torch.float32).reshape(case["X"]["shape"])
    rois = torch.tensor(case["rois"], dtype=torch.float32)
    idx = torch.tensor(case["batch_indices"])
    expected = torch.tensor(case["Y"]["data"], dtype=torch.float32).reshape(case["Y"]["shape"])
    got = cv.roi_align_onnx(x, rois, idx, **case["attributes"])
    # The published outputs are rounded to 4 decimals (and off by up to 8e-5); ONNX's backend
    # test runner compares them with rtol=1e-3, atol=1e-7, and so do we.
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-7)


def test_onnx_backend_vectors_cover_both_modes_and_both_transforms() -> None:
    attrs = [c["attributes"] for c in ONNX_CASES]
    assert {a.get("mode", "avg") for a in attrs} == {"avg", "max"}
    assert {a.get("coordinate_transformation_mode", "half_pixel") for a in attrs} == {
        "half_pixel", "output_half_pixel"}


# onnxruntime/test/providers/cpu/object_detection/roialign_test.cc (opset 10 = output_half_pixel)
ORT_X = torch.arange(75, dtype=torch.float32).reshape(1, 3, 5, 5)
ORT_ROIS = torch.tensor([[7., 5., 7., 5.], [-15., -15., -15., -15.], [-10., 21., -10., 21.],
                         [13., 8., 13., 8.], [-14., 19., -14., 19.]])
ORT_AVG = [2.95833, 3.20833, 3.45833, 3.70833, 4.625, 4.875, 5.125, 5.375, 6.29167, 6.54167, 6.79167, 7.04167, 27.9583, 28.2083, 28.4583, 28.7083, 29.625, 29.875, 30.125, 30.375, 31.2917, 31.5417, 31.7917, 32.0417, 52.9583, 53.2083, 53.4583, 53.7083, 54.625, 54.875, 55.125, 55.375, 56.2917, 56.5417, 56.7917, 57.0417] + [0.0] * 12 + [25.0] * 12 + [50.0] * 12 + [7.39583, 7.39583, 7.42708, 7.64583, 9.0625, 9.0625, 9.09375, 9.3125, 10.7292, 10.7292, 10.7604, 10.9792, 32.3958, 32.3958, 32.4271, 32.6458, 34.0625, 34.0625, 34.0938, 34.3125, 35.7292, 35.7292, 35.7604, 35.9792, 57.3958, 57.3958, 57.4271, 57.6458, 59.0625, 59.0625, 59.0938, 59.3125, 60.7292, 60.7292, 60.7604, 60.9792, 4.27083, 4.52083, 4.77083, 5.02083, 5.9375, 6.1875, 6.4375, 6.6875, 7.60417, 7.85417, 8.10417, 8.35417, 29.2708, 29.5208, 29.7708, 30.0208, 30.9375, 31.1875, 31.4375, 31.6875, 32.6042, 32.8542, 33.1042, 33.3542, 54.2708, 54.5208, 54.7708, 55.0208, 55.9375, 56.1875, 56.4375, 56.6875, 57.6042, 57.8542, 58.1042, 58.3542, 6.77083, 6.77083, 6.77083, 6.80208, 8.4375, 8.4375, 8.4375, 8.46875, 10.1042, 10.1042, 10.1042, 10.1354, 31.7708, 31.7708, 31.7708, 31.8021, 33.4375, 33.4375, 33.4375, 33.4688, 35.1042, 35.1042, 35.1042, 35.1354, 56.7708, 56.7708, 56.7708, 56.8021, 58.4375, 58.4375, 58.4375, 58.4688, 60.1042, 60.1042, 60.1042, 60.1354]
ORT_MAX = [2.10938, 2.95313, 3.375, 2.53125, 3.35938, 4.70313, 5.375, 4.03125, 3.51563, 4.92188, 5.625, 4.21875, 10.8984, 15.2578, 17.4375, 13.0781, 17.3568, 24.2995, 27.7708, 20.8281, 18.1641, 25.4297, 29.0625, 21.7969, 19.6875, 27.5625, 31.5, 23.625, 31.3542, 43.8958, 50.1667, 37.625, 32.8125, 45.9375, 52.5, 39.375] + [0.0] * 12 + [25.0] * 12 + [50.0] * 12 + [5.625, 5.625, 5.625, 4.57031, 8.95833, 8.95833, 8.95833, 7.27865, 9.375, 9.375, 9.375, 7.61719, 19.6875, 19.6875, 19.6875, 15.9961, 31.3542, 31.3542, 31.3542, 25.4753, 32.8125, 32.8125, 32.8125, 26.6602, 33.75, 33.75, 33.75, 27.4219, 53.75, 53.75, 53.75, 43.6719, 56.25, 56.25, 56.25, 45.7031, 4.5, 3.9375, 2.8125, 3.9375, 5.5, 4.8125, 3.4375, 4.8125, 4.58333, 4.01042, 2.86458, 3.9375, 23.25, 20.3438, 14.5313, 18.0, 28.4167, 24.86458, 17.76042, 22.0, 23.25, 20.3437, 14.5312, 18.0, 42.0, 36.75, 26.25, 32.0625, 51.3333, 44.9167, 32.08333, 39.1875, 42.0, 36.75, 26.25, 32.0625, 4.375, 4.375, 4.375, 4.375, 7.70833, 7.70833, 7.70833, 7.70833, 9.375, 9.375, 9.375, 9.375, 21.875, 21.875, 21.875, 21.875, 26.9792, 26.9792, 26.9792, 26.9792, 32.8125, 32.8125, 32.8125, 32.8125, 40.1042, 40.1042, 40.1042, 40.1042, 46.25, 46.25, 46.25, 46.25, 56.25, 56.25, 56.25, 56.25]


@pytest.mark.parametrize(("mode", "expected"), [("avg", ORT_AVG), ("max", ORT_MAX)])
def test_onnxruntime_roialign_test_cc(mode: str, expected: list[float]) -> None:
    got = cv.roi_align_onnx(ORT_X, ORT_ROIS, torch.zeros(5, dtype=torch.int64), output_height=3, output_width=4,
                            sampling_ratio=2, spatial_scale=1 / 16, mode=mode,
                            coordinate_transformation_mode="output_half_pixel")
    torch.testing.assert_close(got.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-4)


# tensorflow/core/kernels/image/crop_and_resize_op_test.cc (compared exactly, as TF does)
IMG_2x2 = [1, 2, 3, 4]
IMG_3x3 = [1, 2, 3, 4, 5, 6, 7, 8, 9]
TF_CASES = {
    "2x2To1x1": (IMG_2x2, 2, [[0, 0, 1, 1]], (1, 1), "bilinear", 0.0, [2.5]),
    "2x2To1x1Nearest": (IMG_2x2, 2, [[0, 0, 1, 1]], (1, 1), "nearest", 0.0, [4.0]),
    "2x2To1x1Flipped": (IMG_2x2, 2, [[1, 1, 0, 0]], (1, 1), "bilinear", 0.0, [2.5]),
    "2x2To1x1FlippedNearest": (IMG_2x2, 2, [[1, 1, 0, 0]], (1, 1), "nearest", 0.0, [4.0]),
    "2x2To3x3": (IMG_2x2, 2, [[0, 0, 1, 1]], (3, 3), "bilinear", 0.0, [1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4]),
    "2x2To3x3Nearest": (IMG_2x2, 2, [[0, 0, 1, 1]], (3, 3), "nearest", 0.0, [1, 2, 2, 3, 4, 4, 3, 4, 4]),
    "2x2To3x3Flipped": (IMG_2x2, 2, [[1, 1, 0, 0]], (3, 3), "bilinear", 0.0, [4, 3.5, 3, 3, 2.5, 2, 2, 1.5, 1]),
    "2x2To3x3FlippedNearest": (IMG_2x2, 2, [[1, 1, 0, 0]], (3, 3), "nearest", 0.0, [4, 4, 3, 4, 4, 3, 2, 2, 1]),
    "3x3To2x2": (IMG_3x3, 3, [[0, 0, 1, 1], [0, 0, 0.5, 0.5]], (2, 2), "bilinear", 0.0, [1, 3, 7, 9, 1, 2, 4, 5]),
    "3x3To2x2Nearest": (IMG_3x3, 3, [[0, 0, 1, 1], [0, 0, 0.5, 0.5]], (2, 2), "nearest", 0.0,
                        [1, 3, 7, 9, 1, 2, 4, 5]),
    "3x3To2x2Flipped": (IMG_3x3, 3, [[1, 1, 0, 0], [0.5, 0.5, 0, 0]], (2, 2), "bilinear", 0.0,
                        [9, 7, 3, 1, 5, 4, 2, 1]),
    "3x3To2x2FlippedNearest": (IMG_3x3, 3, [[1, 1, 0, 0], [0.5, 0.5, 0, 0]], (2, 2), "nearest", 0.0,
                               [9, 7, 3, 1, 5, 4, 2, 1]),
    "2x2To3x3Extrapolated": (IMG_2x2, 2, [[-1, -1, 1, 1]], (3, 3), "bilinear", -1.0,
                             [-1, -1, -1, -1, 1, 2, -1, 3, 4]),
}


@pytest.mark.parametrize("name", list(TF_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_tensorflow_crop_and_resize_op_test_cc(name: str, dtype: torch.dtype) -> None:
    pixels, side, boxes, crop, method, extrapolation, expected = TF_CASES[name]
    image = torch.tensor(pixels, dtype=dtype).reshape(1, side, side, 1)
    b = torch.tensor(boxes, dtype=torch.float32)
    got = cv.crop_and_resize(image, b, torch.zeros(len(boxes), dtype=torch.int32), crop, method, extrapolation)
    assert got.dtype == torch.float32
    assert got.shape == (len(boxes), *crop, 1)
    torch.testing.assert_close(got.flatten(), torch.tensor(expected, dtype=torch.float32), **exact)


def test_tensorflow_no_boxes_gives_an_empty_crop() -> None:
    got = cv.crop_and_resize(torch.ones(1, 2, 2, 1), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int32), (3, 3))
    assert got.shape == (0, 3, 3, 1)


# --------------------------------------------------------------------------------------------
# Behaviour: what each convention means
# --------------------------------------------------------------------------------------------


def _inputs(seed: int, n: int = 2, c: int = 3, h: int = 9, w: int = 11, k: int = 6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    xy = torch.rand(k, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 1.2 - 1
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * 6
    rois = torch.cat([xy, xy + wh], dim=1)
    idx = torch.randint(0, n, (k,), generator=g)
    return x, rois, idx


@pytest.mark.parametrize("sampling_ratio", [0, 2])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_onnx_avg_is_roi_align_with_aligned_half_pixel(sampling_ratio: int, ctm: str) -> None:
    x, rois, idx = _inputs(1, dtype=torch.float64)
    got = cv.roi_align_onnx(x, rois, idx, output_height=3, output_width=4, sampling_ratio=sampling_ratio,
                            spatial_scale=0.5, coordinate_transformation_mode=ctm)
    ref = roiviz.roi_align(x, torch.cat([idx[:, None].double(), rois], 1), (3, 4), 0.5,
                           sampling_ratio or -1, aligned=ctm == "half_pixel")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aligned", [True, False])
def test_mmcv_avg_is_roi_align(aligned: bool) -> None:
    x, rois, idx = _inputs(2, dtype=torch.float64)
    r5 = torch.cat([idx[:, None].double(), rois], 1)
    got = cv.roi_align_mmcv(x, r5, (2, 3), 0.25, 0, "avg", aligned)
    torch.testing.assert_close(got, roiviz.roi_align(x, r5, (2, 3), 0.25, -1, aligned), rtol=1e-12, atol=1e-12)


def test_the_two_max_modes_differ_as_documented() -> None:
    # Samples at 0.75 and 2.25 on a ramp: the interpolated values are 3.75 .. 11.25, but ORT takes
    # the largest *weighted tap*, 0.75 * 0.75 * 10 = 5.625 — below the mean, 7.5.
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    box = torch.tensor([[0.5, 0.5, 3.5, 3.5]])
    onnx_max = cv.roi_align_onnx(x, box, torch.tensor([0]), sampling_ratio=2, mode="max")
    mmcv_max = cv.roi_align_mmcv(x, torch.tensor([[0.0, 0.5, 0.5, 3.5, 3.5]]), 1, sampling_ratio=2, pool_mode="max")
    avg = cv.roi_align_onnx(x, box, torch.tensor([0]), sampling_ratio=2)
    assert (onnx_max.item(), avg.item(), mmcv_max.item()) == (5.625, 7.5, 11.25)


def test_mmcv_max_of_a_bin_without_samples_is_minus_flt_max() -> None:
    x = torch.ones(1, 1, 4, 4)
    out = cv.roi_align_mmcv(x, torch.tensor([[0, 1.0, 1.0, 1.0, 1.0]]), 2, pool_mode="max")  # 0x0 box, adaptive
    assert torch.all(out == cv.MMCV_MAX_INIT)
    assert torch.all(cv.roi_align_mmcv(x, torch.tensor([[0, 1.0, 1.0, 1.0, 1.0]]), 2) == 0)


def test_mmcv_max_counts_samples_outside_the_map_as_zero() -> None:
    x = -torch.ones(1, 1, 4, 4)  # everything negative: a 0 from outside wins the max
    out = cv.roi_align_mmcv(x, torch.tensor([[0, -3.0, 0.0, 2.0, 4.0]]), (1, 2), sampling_ratio=2, pool_mode="max")
    assert out[0, 0, 0].tolist() == [0.0, -1.0]


def test_onnx_sample_outside_the_map_multiplies_cell_0_0() -> None:
    # ORT gives a sample outside the map position 0 and weight 0: 0 * X[.., 0, 0] (NaN if NaN).
    x = torch.ones(1, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    box = torch.tensor([[-10.0, -10.0, -8.0, -8.0]])
    assert torch.isnan(cv.roi_align_onnx(x, box, torch.tensor([0]), sampling_ratio=1)).all()
    assert cv.roi_align_mmcv(x, torch.tensor([[0, -10.0, -10.0, -8.0, -8.0]]), 1, sampling_ratio=1).item() == 0.0


def test_crop_and_resize_samples_the_end_points() -> None:
    image = torch.arange(5.0).reshape(1, 5, 1, 1).expand(1, 5, 5, 1)  # value = row index
    out = cv.crop_and_resize(image, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([0]), (3, 1))
    assert out[0, :, 0, 0].tolist() == [0.0, 2.0, 4.0]  # first and last rows themselves


@pytest.mark.parametrize("crop", [(1, 1), (3, 4), (7, 2)])
def test_boxes_for_crop_and_resize_make_it_roi_align(crop: tuple[int, int]) -> None:
    x, _, _ = _inputs(3, n=1, h=16, w=20, dtype=torch.float64)
    boxes = torch.tensor([[2.0, 1.0, 17.5, 14.0], [5.0, 5.0, 9.0, 6.5]], dtype=torch.float64)
    ref = roiviz.roi_align(x, [boxes], crop, sampling_ratio=1, aligned=True)
    tf_boxes = cv.boxes_for_crop_and_resize(boxes, 16, 20, crop)
    got = cv.crop_and_resize(x.permute(0, 2, 3, 1), tf_boxes, torch.zeros(2, dtype=torch.int32), crop)
    torch.testing.assert_close(got.permute(0, 3, 1, 2).double(), ref, rtol=1e-5, atol=1e-5)


def test_sample_points_of_aligned_are_legacy_shifted_by_half() -> None:
    for axis in (0, 1):
        a = cv.sample_points("aligned", (1, 2, 7, 6), (2, 3), (10, 10))[axis]
        legacy = cv.sample_points("legacy", (1, 2, 7, 6), (2, 3), (10, 10))[axis]
        torch.testing.assert_close(legacy - a, torch.full_like(a, 0.5))


def test_sample_points_match_what_roi_align_computes() -> None:
    # A map whose value is its x coordinate: each bin's mean is the mean of its sample xs.
    x = torch.arange(12.0, dtype=torch.float64).expand(1, 1, 12, 12).clone()
    out = roiviz.roi_align(x, torch.tensor([[0, 2.0, 3.0, 9.0, 8.0]], dtype=torch.float64), 3,
                           sampling_ratio=2, aligned=True)
    xs = cv.sample_points("aligned", (2.0, 3.0, 9.0, 8.0), 3, (12, 12))[1]
    torch.testing.assert_close(out[0, 0, 0], xs.reshape(3, 2).mean(1))


# --------------------------------------------------------------------------------------------
# Vectorised == loops, bit for bit
# --------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       ph=st.integers(1, 4), pw=st.integers(1, 4), sr=st.integers(0, 3),
       scale=st.sampled_from([1.0, 0.5, 0.3]), mode=st.sampled_from(["avg", "max"]),
       ctm=st.sampled_from(["half_pixel", "output_half_pixel"]))
def test_onnx_equals_its_loops(seed, dtype, ph, pw, sr, scale, mode, ctm) -> None:
    x, rois, idx = _inputs(seed, h=7, w=6, k=4, dtype=dtype)
    kw = dict(output_height=ph, output_width=pw, sampling_ratio=sr, spatial_scale=scale, mode=mode,
              coordinate_transformation_mode=ctm)
    torch.testing.assert_close(cv.roi_align_onnx(x, rois, idx, **kw), cv.roi_align_onnx_loops(x, rois, idx, **kw), **exact)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       ph=st.integers(1, 4), pw=st.integers(1, 4), sr=st.integers(0, 3),
       scale=st.sampled_from([1.0, 0.5, 0.3]), mode=st.sampled_from(["avg", "max"]), aligned=st.booleans())
def test_mmcv_equals_its_loops(seed, dtype, ph, pw, sr, scale, mode, aligned) -> None:
    x, rois, idx = _inputs(seed, h=7, w=6, k=4, dtype=dtype)
    r5 = torch.cat([idx[:, None].to(dtype), rois], 1)
    args = ((ph, pw), scale, sr, mode, aligned)
    torch.testing.assert_close(cv.roi_align_mmcv(x, r5, *args), cv.roi_align_mmcv_loops(x, r5, *args), **exact)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), ch=st.integers(1, 5), cw=st.integers(1, 5),
       method=st.sampled_from(["bilinear", "nearest"]), fill=st.sampled_from([0.0, -2.5]))
def test_crop_and_resize_equals_its_loops(seed, ch, cw, method, fill) -> None:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 6, 7, 3, generator=g)
    boxes = torch.rand(5, 4, generator=g) * 1.6 - 0.3  # some flipped, some outside
    idx = torch.randint(0, 2, (5,), generator=g, dtype=torch.int32)
    args = (image, boxes, idx, (ch, cw), method, fill)
    torch.testing.assert_close(cv.crop_and_resize(*args), cv.crop_and_resize_loops(*args), **exact)


def test_nearest_rounds_halves_away_from_zero() -> None:
    image = torch.arange(3.0).reshape(1, 1, 3, 1)  # value = column
    # x = 0.25 * 2 = 0.5 -> column 1 (roundf), where round-half-even would give 0.
    out = cv.crop_and_resize(image, torch.tensor([[0.0, 0.25, 0.0, 0.25]]), torch.tensor([0]), (1, 1), "nearest")
    assert out.item() == 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    x, rois, idx = _inputs(4)
    got = cv.roi_align_onnx(x.to(dtype), rois, idx, output_height=2, output_width=2)
    assert got.dtype == dtype
    ref = cv.roi_align_onnx(x.to(dtype).float(), rois, idx, output_height=2, output_width=2)
    torch.testing.assert_close(got, ref.to(dtype), **exact)


# --------------------------------------------------------------------------------------------
# Bad input: TypeError / ValueError naming the argument
# --------------------------------------------------------------------------------------------

X4 = torch.zeros(1, 1, 4, 4)
R4 = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
I1 = torch.tensor([0])


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: cv.roi_align_onnx(X4.numpy(), R4, I1), TypeError, "X must be a torch.Tensor"),
    (lambda: cv.roi_align_onnx(X4[0], R4, I1), ValueError, "X must be a 4-D"),
    (lambda: cv.roi_align_onnx(X4.long(), R4, I1), TypeError, "X must be a floating"),
    (lambda: cv.roi_align_onnx(X4, R4[:, :3], I1), ValueError, r"rois must have shape \[K, 4\]"),
    (lambda: cv.roi_align_onnx(X4, R4, torch.tensor([1])), ValueError, "batch_indices must lie in"),
    (lambda: cv.roi_align_onnx(X4, R4, torch.tensor([0.0])), TypeError, "batch_indices must be an integer"),
    (lambda: cv.roi_align_onnx(X4, R4, torch.tensor([0, 0])), ValueError, "batch_indices must have shape"),
    (lambda: cv.roi_align_onnx(X4, R4 * float("nan"), I1), ValueError, "rois must be finite"),
    (lambda: cv.roi_align_onnx(X4, R4, I1, output_height=0), ValueError, "output_height must be >= 1"),
    (lambda: cv.roi_align_onnx(X4, R4, I1, sampling_ratio=-1), ValueError, "sampling_ratio must be >= 0"),
    (lambda: cv.roi_align_onnx(X4, R4, I1, mode="sum"), ValueError, "mode must be one of"),
    (lambda: cv.roi_align_onnx(X4, R4, I1, coordinate_transformation_mode="align_corners"), ValueError,
     "coordinate_transformation_mode"),
    (lambda: cv.roi_align_onnx(X4, R4, I1, spatial_scale=0), ValueError, "spatial_scale must be positive"),
    (lambda: cv.roi_align_mmcv(X4, R4, 2), ValueError, r"rois must have shape \[K, 5\]"),
    (lambda: cv.roi_align_mmcv(X4, torch.tensor([[0.5, 0, 0, 2, 2]]), 2), ValueError, "whole numbers"),
    (lambda: cv.roi_align_mmcv(X4, torch.tensor([[0, 2.0, 0, 1, 2]]), 2), ValueError, "x1 <= x2"),
    (lambda: cv.roi_align_mmcv(X4, torch.tensor([[0, 0.0, 0, 1, 2]]), 2, pool_mode="min"), ValueError, "pool_mode"),
    (lambda: cv.roi_align_mmcv(X4, torch.tensor([[0, 0.0, 0, 1, 2]]), 2, aligned=1), TypeError, "aligned"),
    (lambda: cv.roi_align_mmcv(X4, torch.tensor([[0, 0.0, 0, 1, 2]]), "2"), TypeError, "output_size"),
    (lambda: cv.crop_and_resize(X4, R4, I1, (2, 0)), ValueError, r"crop_size\[1\] must be >= 1"),
    (lambda: cv.crop_and_resize(X4, R4, I1, 2), TypeError, "crop_size must be a pair"),
    (lambda: cv.crop_and_resize(X4, R4, torch.tensor([3]), (2, 2)), ValueError, "box_indices must lie in"),
    (lambda: cv.crop_and_resize(X4, R4, I1, (2, 2), method="bicubic"), ValueError, "method must be one of"),
    (lambda: cv.crop_and_resize(X4, R4 * float("inf"), I1, (2, 2)), ValueError, "boxes must be finite"),
    (lambda: cv.crop_and_resize(X4.bool(), R4, I1, (2, 2)), TypeError, "image must hold real numbers"),
    (lambda: cv.crop_and_resize(X4, R4, I1, (2, 2), extrapolation_value="0"), TypeError, "extrapolation_value"),
])
def test_bad_input(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_mmcv_flipped_boxes_are_fine_when_not_aligned() -> None:
    out = cv.roi_align_mmcv(X4 + 1, torch.tensor([[0, 2.0, 2.0, 1.0, 1.0]]), 2, aligned=False)
    assert torch.all(out == 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_same_numbers_on_cuda() -> None:
    x, rois, idx = _inputs(5)
    cpu = cv.roi_align_onnx(x, rois, idx, output_height=3, output_width=3, mode="max")
    gpu = cv.roi_align_onnx(x.cuda(), rois.cuda(), idx.cuda(), output_height=3, output_width=3, mode="max")
    torch.testing.assert_close(gpu.cpu(), cpu)
    img = x.permute(0, 2, 3, 1).contiguous()
    b = torch.rand(4, 4)
    np.testing.assert_array_equal(
        cv.crop_and_resize(img.cuda(), b.cuda(), idx[:4].cuda(), (3, 3)).cpu().numpy(),
        cv.crop_and_resize(img, b, idx[:4], (3, 3)).numpy())


# --------------------------------------------------------------------------------------------
# Gradients (mmcv and TF define them; ONNX has none, but the same graph differentiates)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pool_mode", ["avg", "max"])
def test_mmcv_gradcheck(pool_mode: str) -> None:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 5.1, 4.4], [0, 2.2, 1.1, 6.9, 5.3]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: cv.roi_align_mmcv(t, rois, (2, 3), 1.0, 2, pool_mode), (x,))


def test_crop_and_resize_gradcheck() -> None:
    g = torch.Generator().manual_seed(12)
    image = torch.randn(1, 5, 6, 2, generator=g, dtype=torch.float64)
    boxes = torch.tensor([[0.1, 0.2, 0.9, 0.7], [0.8, 0.9, 0.1, 0.3]])

    def f(t: torch.Tensor) -> torch.Tensor:  # crop_and_resize computes in float32, as TF does
        return cv.crop_and_resize(t.float(), boxes, torch.tensor([0, 0]), (3, 4)).double()

    x = image.requires_grad_()
    assert torch.autograd.gradcheck(f, (x,), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_no_boxes() -> None:
    x = torch.rand(1, 2, 4, 4)
    empty = torch.zeros(0, dtype=torch.int64)
    assert cv.roi_align_onnx(x, torch.zeros(0, 4), empty, output_height=2, output_width=3).shape == (0, 2, 2, 3)
    assert cv.roi_align_mmcv(x, torch.zeros(0, 5), 2, pool_mode="max").shape == (0, 2, 2, 2)
