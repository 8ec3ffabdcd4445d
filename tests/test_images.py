"""Tests of roiviz.images: sample images, to_tensor and the fixed FeatureExtractor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roiviz.images import SAMPLES, FeatureExtractor, sample_image, to_tensor

EXPECTED_SHAPE = {"grace_hopper": 3, "checkerboard": 2, "shapes": 3, "thin_lines": 2}


# ---- sample_image ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("size", [8, 33, 128])
def test_sample_image_shape_dtype_range(name: str, size: int) -> None:
    img = sample_image(name, size)
    assert img.dtype == np.float32
    assert img.shape == ((size, size, 3) if EXPECTED_SHAPE[name] == 3 else (size, size))
    assert img.min() >= 0.0 and img.max() <= 1.0
    assert img.std() > 0.05  # not blank


def test_sample_image_is_a_fresh_copy() -> None:
    a = sample_image("grace_hopper", 32)
    a[:] = 0
    assert sample_image("grace_hopper", 32).max() > 0.5


def test_grace_hopper_is_the_bundled_photo() -> None:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    raw = mpimg.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    assert raw.shape == (600, 512, 3)
    full = sample_image("grace_hopper", 512)  # no resizing at the native side
    np.testing.assert_allclose(full, raw[44:556].astype(np.float32) / 255, atol=1e-6)
    # The mean colour survives antialiased shrinking.
    np.testing.assert_allclose(sample_image("grace_hopper", 64).mean(axis=(0, 1)), full.mean(axis=(0, 1)), atol=0.01)


def test_checkerboard_values() -> None:
    board = sample_image("checkerboard", 64)
    assert set(np.unique(board)) == {0.0, 1.0}
    assert board[0, 0] == 0 and board[0, 8] == 1 and board[8, 8] == 0 and board[7, 7] == 0
    assert board.mean() == 0.5


def test_thin_lines_are_one_pixel_wide() -> None:
    img = sample_image("thin_lines", 64)
    top = img[:32]
    cols = np.flatnonzero(top.max(axis=0))
    assert np.all(np.diff(cols) >= 2)  # separate one-pixel columns
    assert list(np.diff(cols)[:4]) == [2, 3, 4, 5]  # widening gaps
    assert np.all(np.diag(img[32:, 32:]) == 1)


def test_shapes_colours() -> None:
    img = sample_image("shapes", 100)
    np.testing.assert_allclose(img[0, 0], [0.1, 0.1, 0.1])
    np.testing.assert_allclose(img[28, 28], [0.9, 0.15, 0.1], atol=1e-6)  # disc centre
    np.testing.assert_allclose(img[30, 72], [0.15, 0.8, 0.2], atol=1e-6)  # square centre


def test_sample_image_errors() -> None:
    with pytest.raises(ValueError, match="known samples: grace_hopper, checkerboard, shapes, thin_lines"):
        sample_image("astronaut")
    with pytest.raises(TypeError, match="name"):
        sample_image(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        sample_image("shapes", 4)
    with pytest.raises(TypeError, match="size"):
        sample_image("shapes", 32.0)  # type: ignore[arg-type]


# ---- to_tensor ------------------------------------------------------------------------------


def test_to_tensor_layouts() -> None:
    hw = np.arange(12, dtype=np.float64).reshape(3, 4)
    t = to_tensor(hw)
    assert t.shape == (1, 1, 3, 4) and t.dtype == torch.float32
    assert torch.equal(t[0, 0], torch.from_numpy(hw).float())
    hwc = np.random.default_rng(0).random((3, 4, 3))
    t = to_tensor(hwc)
    assert t.shape == (1, 3, 3, 4)
    assert torch.equal(t[0, 2], torch.from_numpy(hwc[:, :, 2]).float())
    chw = torch.rand(5, 3, 4)
    assert torch.equal(to_tensor(chw)[0], chw)
    assert torch.equal(to_tensor(chw[None]), chw[None])
    assert to_tensor(torch.rand(3, 4)).shape == (1, 1, 3, 4)
    assert to_tensor(np.zeros((3, 4, 4))).shape == (1, 4, 3, 4)  # RGBA kept


def test_to_tensor_copies_and_scales() -> None:
    src = torch.rand(1, 2, 2, requires_grad=True)
    out = to_tensor(src)
    assert not out.requires_grad and out.data_ptr() != src.data_ptr()
    ro = np.ones((2, 2))
    ro.flags.writeable = False
    to_tensor(ro)[0, 0, 0, 0] = 5.0  # no warning, no write-through
    assert ro[0, 0] == 1.0
    assert to_tensor(np.array([[0, 51, 255]], dtype=np.uint8)).flatten().tolist() == pytest.approx([0, 0.2, 1])
    assert to_tensor(np.array([[True, False]])).flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.zeros(4), ValueError, "numpy array must be"),
        (np.zeros((4, 4, 5)), ValueError, "C in 1, 3 or 4"),
        (np.zeros((1, 4, 4, 3)), ValueError, "numpy array must be"),
        (torch.zeros(2, 1, 4, 4), ValueError, r"\(1, C, H, W\)"),
        (torch.zeros(4), ValueError, "tensor must be"),
        (np.zeros((0, 4)), ValueError, "empty"),
        (np.array([[np.nan]]), ValueError, "NaN"),
        ([[0.0, 1.0]], TypeError, "numpy array or a torch.Tensor"),
        (torch.zeros(2, 2, dtype=torch.complex64), TypeError, "real"),
    ],
)
def test_to_tensor_errors(bad, error, match) -> None:
    with pytest.raises(error, match=match):
        to_tensor(bad)


# ---- FeatureExtractor -----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    stride=st.sampled_from([1, 2, 4, 8, 16, 32]),
    height=st.integers(1, 70),
    width=st.integers(1, 70),
    channels=st.integers(1, 20),
)
def test_feature_extractor_output_size_rule(stride: int, height: int, width: int, channels: int) -> None:
    fx = FeatureExtractor(stride=stride, channels=channels)
    out = fx(torch.rand(3, height, width))
    assert out.shape == (1, channels, math.ceil(height / stride), math.ceil(width / stride))
    assert fx.output_shape(height, width) == tuple(out.shape[2:])
    assert fx.spatial_scale == 1 / stride
    assert bool((out >= 0).all())  # ReLU output


def test_feature_extractor_is_fixed_and_seeded() -> None:
    img = sample_image("shapes", 64)
    a = FeatureExtractor(stride=8, channels=20, seed=0)(img)
    b = FeatureExtractor(stride=8, channels=20, seed=0)(img)
    c = FeatureExtractor(stride=8, channels=20, seed=1)(img)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    fx = FeatureExtractor()
    assert not any(p.requires_grad for p in fx.parameters())
    assert repr(fx) == "FeatureExtractor(stride=8, channels=16, seed=0)"


def test_feature_extractor_sees_edges_where_they_are() -> None:
    # A vertical step edge at column 32: the vertical-edge (odd Gabor, 0 degrees) channel
    # responds near column 32 and is ~zero far from it (filters are zero-mean); the first
    # columns see the zero padding of the image border, itself an edge.
    img = np.zeros((64, 64), dtype=np.float32)
    img[:, 32:] = 1.0
    feat = FeatureExtractor(stride=1, channels=16)(img)[0]
    edge = feat[4:8].sum(0)  # odd Gabors: edge detectors
    profile = edge[32].numpy()
    assert profile[28:36].max() > 0.05
    assert profile[8:24].max() < 1e-5
    # A box on the image maps onto the feature map by spatial_scale: the edge at image
    # column 32 appears at feature column 32 / 8 = 4 with stride 8.
    coarse = FeatureExtractor(stride=8, channels=16)(img)[0, 4:8].sum(0)
    assert int(coarse[4].argmax()) in (3, 4)


def test_feature_extractor_input_forms_agree() -> None:
    fx = FeatureExtractor(stride=4, channels=8)
    grey = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    torch.testing.assert_close(fx(grey), fx(rgb))
    rgba = np.concatenate([rgb, np.ones((20, 24, 1), np.float32)], axis=2)
    torch.testing.assert_close(fx(rgba), fx(rgb))
    torch.testing.assert_close(fx(torch.from_numpy(rgb).permute(2, 0, 1)), fx(rgb))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"stride": 3}, ValueError, "power of two"),
        ({"stride": 64}, ValueError, "stride"),
        ({"stride": 8.0}, TypeError, "stride"),
        ({"channels": 0}, ValueError, "channels"),
        ({"seed": "a"}, TypeError, "seed"),
    ],
)
def test_feature_extractor_errors(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        FeatureExtractor(**kwargs)


def test_feature_extractor_channel_error() -> None:
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        FeatureExtractor()(torch.zeros(2, 8, 8))
