"""roiviz on a CUDA device: every op and strategy against the CPU, gradients, determinism, no sync.

Skipped without CUDA (run by ``scripts/gpu_check.sh`` on a GPU machine). With Triton
installed, ``roi_align`` / ``roi_pool`` take the kernels of :mod:`roiviz.ops._triton`; the
portable path (``ROIVIZ_TRITON=0``) is checked too.

- The Triton kernels are compared **bit for bit** with :mod:`roiviz.reference` (torchvision's
  CPU order), forward and backward; strategies with ``assert_close`` against the CPU result.
- ``gradcheck`` in float64; two backward runs must be bit-identical (on a detector-sized input,
  where many samples share input cells: the case where atomics reorder).
- A fixed ``sampling_ratio`` must not synchronise with the host (``set_sync_debug_mode``).
"""

from __future__ import annotations

import pytest
import torch

import roiviz
from roiviz import bench, reference
from roiviz.ops import _triton

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = "cuda"
BOXES = torch.tensor([
    [0, 1.3, 2.2, 7.9, 8.1],
    [1, -3.0, -2.0, 4.0, 5.0],
    [0, 5.0, 5.0, 5.2, 5.1],
    [1, 0.0, 0.0, 30.0, 20.0],
    [0, 40.0, 30.0, 50.0, 45.0],
    [1, 8.0, 6.0, 15.7, 12.3],
], dtype=torch.float64)
SCALE = 0.7


def _x(dtype=torch.float32, shape=(2, 5, 9, 11), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.fixture(params=["triton", "portable"])
def path(request, monkeypatch):
    if request.param == "triton":
        if not _triton.available():
            pytest.skip("triton is not importable")
    else:
        monkeypatch.setenv("ROIVIZ_TRITON", "0")
    return request.param


def _grad(fn, x, g):
    xg = x.detach().clone().requires_grad_(True)
    out = fn(xg)
    return out, torch.autograd.grad(out, xg, g)[0]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_roi_align_matches_the_reference_bit_for_bit(path, dtype, sampling_ratio, aligned):
    x = _x(dtype)
    boxes = BOXES.to(dtype)

    def op(t):
        return roiviz.roi_align(t, boxes.to(t.device), (3, 4), SCALE, sampling_ratio, aligned)

    out, grad = _grad(op, x.to(CUDA), torch.ones(len(boxes), 5, 3, 4, dtype=dtype, device=CUDA))
    assert out.device.type == CUDA and out.dtype == dtype
    assert torch.equal(out.cpu(), reference.roi_align(x, boxes, (3, 4), SCALE, sampling_ratio, aligned))
    ref_grad = reference.roi_align_backward(x, boxes, torch.ones(len(boxes), 5, 3, 4, dtype=dtype), SCALE,
                                            sampling_ratio, aligned)
    if path == "triton":
        assert torch.equal(grad.cpu(), ref_grad)
    else:  # autograd's scatter-add on CUDA adds in no fixed order
        torch.testing.assert_close(grad.cpu(), ref_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=str)
def test_roi_pool_matches_the_reference_bit_for_bit(path, dtype):
    x = torch.randint(-3, 4, (2, 5, 9, 11), generator=torch.Generator().manual_seed(4)).to(dtype)
    x[0, 0, 2:4, 1:3] = float("nan")
    x[1, 2, 0:2, 0:2] = float("-inf")
    boxes = BOXES.to(dtype)
    g = torch.randn(len(boxes), 5, 3, 4, generator=torch.Generator().manual_seed(5)).to(dtype)
    out, grad = _grad(lambda t: roiviz.roi_pool(t, boxes.to(t.device), (3, 4), SCALE), x.to(CUDA), g.to(CUDA))
    assert torch.equal(out.cpu(), reference.roi_pool(x, boxes, (3, 4), SCALE))
    ref_grad = reference.roi_pool_backward(x, boxes, g, SCALE)
    if path == "triton":
        assert torch.equal(grad.cpu(), ref_grad)
    else:
        torch.testing.assert_close(grad.cpu(), ref_grad)


@pytest.mark.parametrize("name", list(roiviz.STRATEGIES))
def test_every_strategy_on_cuda_matches_the_cpu(path, name):
    wl = bench.WORKLOADS["W1"].quick()
    x, boxes = bench.make_input(wl), bench.make_boxes(wl)
    fn = roiviz.STRATEGIES[name]
    g = torch.randn(fn(x, boxes, wl.output_size, wl.spatial_scale).shape, generator=torch.Generator().manual_seed(1))
    out_cpu, grad_cpu = _grad(lambda t: fn(t, boxes, wl.output_size, wl.spatial_scale), x, g)
    out, grad = _grad(lambda t: fn(t, boxes.to(CUDA), wl.output_size, wl.spatial_scale), x.to(CUDA), g.to(CUDA))
    torch.testing.assert_close(out.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.cpu(), grad_cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("op", ["roi_align sr=2", "roi_align sr=-1", "roi_pool"])
def test_gradcheck_float64(path, op):
    x = _x(torch.float64, (1, 2, 6, 7), seed=3).to(CUDA).requires_grad_(True)
    boxes = torch.tensor([[0, 0.5, 0.7, 4.3, 5.1], [0, 2.0, 1.0, 6.5, 3.9]], dtype=torch.float64, device=CUDA)
    if op == "roi_pool":  # distinct values: the max has a derivative almost everywhere
        x = (torch.randperm(x.numel(), generator=torch.Generator().manual_seed(3)).double().view(x.shape)
             .to(CUDA).requires_grad_(True))
        fn = lambda t: roiviz.roi_pool(t, boxes, 2, 1.0)  # noqa: E731
    else:
        sr = 2 if op.endswith("2") else -1
        fn = lambda t: roiviz.roi_align(t, boxes, 2, 1.0, sr, True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize("op", ["roi_align sr=2", "roi_align sr=-1", "roi_pool"])
def test_backward_is_bit_identical_twice(op):
    if not _triton.available():
        pytest.skip("the deterministic backward is the Triton path's")
    wl = bench.WORKLOADS["W1"]
    x, boxes = bench.make_input(wl, device=CUDA), bench.make_boxes(wl, device=CUDA)
    fn = bench._roiviz_plain(op)
    g = torch.randn(fn(x, boxes, wl.output_size, wl.spatial_scale).shape, device=CUDA,
                    generator=torch.Generator(CUDA).manual_seed(2))
    grads = [_grad(lambda t: fn(t, boxes, wl.output_size, wl.spatial_scale), x, g)[1] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_fixed_sampling_ratio_does_not_synchronise(sampling_ratio):
    if not _triton.available():
        pytest.skip("checks the Triton path")
    wl = bench.WORKLOADS["W1"].quick()
    x = bench.make_input(wl, device=CUDA).requires_grad_(True)
    boxes = bench.make_boxes(wl, device=CUDA)
    roiviz.roi_align(x, boxes, 7, 1 / 16, sampling_ratio, True).sum().backward()  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with roiviz.trusted_boxes():  # the box value checks read the boxes once, by design
            out = roiviz.roi_align(x, boxes, 7, 1 / 16, sampling_ratio, True)
            (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert grad.shape == x.shape


def test_close_to_torchvision_cuda():
    tv = pytest.importorskip("torchvision.ops")
    wl = bench.WORKLOADS["W1"]
    x, boxes = bench.make_input(wl, device=CUDA), bench.make_boxes(wl, device=CUDA)
    # torchvision's CUDA kernels are compiled with FMA contraction: equal up to an ulp or so.
    torch.testing.assert_close(roiviz.roi_align(x, boxes, 7, 1 / 16, 2, True),
                               tv.roi_align(x, boxes, 7, 1 / 16, 2, True), atol=1e-5, rtol=1e-5)
    assert torch.equal(roiviz.roi_pool(x, boxes, 7, 1 / 16), tv.roi_pool(x, boxes, 7, 1 / 16))
