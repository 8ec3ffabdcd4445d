"""roiviz.conventions against the real frameworks on random inputs: bit for bit.

Each test runs only where its framework imports (optional test dependencies, the ``peers`` extra:
``onnx`` + ``onnxruntime``, ``tensorflow-cpu``) and is skipped elsewhere. The random cases
cover both modes, both coordinate transforms, adaptive and fixed sampling, boxes partly or wholly
outside the map, flipped boxes (TF), several spatial scales and dtypes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from roiviz import conventions as cv

N_CASES = 120


def _onnx_session(dtype: np.dtype, attrs: dict):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    ort.set_default_logger_severity(3)  # ORT warns about its own max mode on every session
    t = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    node = helper.make_node("RoiAlign", ["X", "rois", "batch_indices"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "roialign",
        [helper.make_tensor_value_info("X", t, None), helper.make_tensor_value_info("rois", t, None),
         helper.make_tensor_value_info("batch_indices", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("Y", t, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("seed", range(4))
def test_roi_align_onnx_equals_onnxruntime(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for trial in range(N_CASES // 4):
        dtype = np.float32 if trial % 3 else np.float64
        n, c, h, w = rng.integers(1, 3), rng.integers(1, 4), rng.integers(1, 12), rng.integers(1, 12)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        attrs = dict(output_height=int(rng.integers(1, 5)), output_width=int(rng.integers(1, 5)),
                     sampling_ratio=int(rng.integers(0, 4)), spatial_scale=float(rng.choice([1.0, 0.5, 0.3, 1.7])),
                     mode=str(rng.choice(["avg", "max"])),
                     coordinate_transformation_mode=str(rng.choice(["half_pixel", "output_half_pixel"])))
        k = int(rng.integers(0, 5))
        rois = rng.uniform(-4, 16, (k, 4)).astype(dtype)
        if trial % 2 or attrs["sampling_ratio"] == 0:
            # ORT overflows on an adaptive grid of negative size: keep x1 <= x2 there.
            rois = np.concatenate([np.minimum(rois[:, :2], rois[:, 2:]), np.maximum(rois[:, :2], rois[:, 2:])], 1)
        idx = rng.integers(0, n, k).astype(np.int64)
        expected = _onnx_session(dtype, attrs).run(None, {"X": x, "rois": rois, "batch_indices": idx})[0]
        got = cv.roi_align_onnx(torch.from_numpy(x), torch.from_numpy(rois), torch.from_numpy(idx), **attrs)
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{attrs}, rois={rois.tolist()}")


def test_roi_align_onnx_equals_onnxruntime_on_nan_and_empty_boxes() -> None:
    x = np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan  # ORT multiplies cell (0, 0) by 0 for samples outside the map
    for rois in ([[2, 2, 2, 4]], [[2, 2, 2, 2]], [[-10, -10, -8, -8]], [[1, 1, 1.2, 1.3]]):
        for sr in (0, 2):
            for mode in ("avg", "max"):
                for ctm in ("half_pixel", "output_half_pixel"):
                    attrs = dict(output_height=2, output_width=3, sampling_ratio=sr, mode=mode,
                                 coordinate_transformation_mode=ctm)
                    r, i = np.array(rois, np.float32), np.array([0])
                    expected = _onnx_session(np.float32, attrs).run(None, {"X": x, "rois": r, "batch_indices": i})[0]
                    got = cv.roi_align_onnx(torch.from_numpy(x), torch.from_numpy(r), torch.from_numpy(i), **attrs)
                    np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{rois} {attrs}")


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_crop_and_resize_equals_tensorflow(tf, method: str) -> None:
    rng = np.random.default_rng(7)
    for trial in range(N_CASES):
        n, h, w, d = rng.integers(1, 3), rng.integers(1, 12), rng.integers(1, 12), rng.integers(1, 4)
        dtype = [np.float32, np.float64, np.uint8, np.int32, np.float16][trial % 5]
        image = (rng.standard_normal((n, h, w, d)) * 50).astype(dtype) if dtype != np.uint8 else \
            rng.integers(0, 255, (n, h, w, d)).astype(dtype)
        k = int(rng.integers(0, 5))
        boxes = rng.uniform(-0.3, 1.3, (k, 4)).astype(np.float32)  # flipped and outside included
        idx = rng.integers(0, n, k).astype(np.int32)
        crop = (int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        fill = float(rng.choice([0.0, -1.5]))
        expected = tf.image.crop_and_resize(image, boxes, idx, crop, method=method, extrapolation_value=fill).numpy()
        got = cv.crop_and_resize(torch.from_numpy(image), torch.from_numpy(boxes), torch.from_numpy(idx), crop,
                                 method, fill)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=f"{dtype} {crop} {boxes.tolist()}")


def test_crop_and_resize_refuses_what_tensorflow_refuses(tf) -> None:
    image, boxes = np.ones((1, 3, 3, 1), np.float32), np.array([[0, 0, 1, 1]], np.float32)
    with pytest.raises(tf.errors.OpError):
        tf.image.crop_and_resize(image, boxes, np.array([1], np.int32), (2, 2))
    with pytest.raises(ValueError, match="box_indices"):
        cv.crop_and_resize(torch.from_numpy(image), torch.from_numpy(boxes), torch.tensor([1]), (2, 2))
    with pytest.raises(tf.errors.OpError):
        tf.image.crop_and_resize(image, boxes + np.inf, np.array([0], np.int32), (2, 2))
    with pytest.raises(ValueError, match="finite"):
        cv.crop_and_resize(torch.from_numpy(image), torch.from_numpy(boxes + np.inf), torch.tensor([0]), (2, 2))


def test_stored_onnx_vectors_are_what_the_onnx_package_publishes() -> None:
    pytest.importorskip("onnx")
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_conventions_fixtures",
                                                  root / "scripts" / "make_conventions_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stored = json.loads((root / "tests" / "fixtures" / "onnx_roialign_cases.json").read_text())
    assert module.collect()["cases"] == stored["cases"]
