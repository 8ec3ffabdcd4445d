"""The fast paths of roi_align / roi_pool: against each other, the reference, and the meta device.

roi_align has two implementations (see :mod:`roiviz.ops.roi_align`): the CPU path (window GEMMs,
reads the boxes on the host to plan) and the portable gather path (torchvision's float order,
no host synchronisation with a fixed sampling ratio). Both must agree with
:mod:`roiviz.reference` and with each other, forward and backward, whatever the chunking.
The ``meta`` device has no data, so any host read (``.item()``, ``.tolist()``, ``int(t)``)
raises there: running an op on ``meta`` proves it never synchronises.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import TOLERANCES
from hypothesis import given, settings
from hypothesis import strategies as st

import roiviz
from roiviz import reference
from roiviz.ops import _align_cpu, _align_grad, _align_small, _common
from roiviz.ops._common import prepare
from roiviz.ops.roi_align import _roi_align_gather

roi_pool_module = importlib.import_module("roiviz.ops.roi_pool")  # the package re-exports the function


def gather_path(x, boxes, output_size, scale, sampling_ratio, aligned):
    """The portable path, called directly (on the CPU it is otherwise not used)."""
    x, rois, ph, pw, scale_t = prepare(x, boxes, output_size, scale)
    return _roi_align_gather(x, rois, ph, pw, scale_t, sampling_ratio, aligned)


@st.composite
def cases(draw, dtype=torch.float32):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 1 / 3]))
    k = draw(st.integers(0, 6))
    rows = []
    for _ in range(k):
        x1 = draw(st.floats(-3.0, w + 2.0)) / scale
        y1 = draw(st.floats(-3.0, h + 2.0)) / scale
        bw = draw(st.one_of(st.just(0.0), st.floats(0.0, 2.0 * w))) / scale  # zero-area boxes too
        bh = draw(st.one_of(st.just(0.0), st.floats(0.0, 2.0 * h))) / scale
        rows.append([draw(st.integers(0, n - 1)), x1, y1, x1 + bw, y1 + bh])
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    boxes = torch.tensor(rows, dtype=dtype).reshape(k, 5)
    output_size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return x, boxes, output_size, scale


def _forward_backward(fn, x, *args):
    x = x.detach().requires_grad_(True)
    out = fn(x, *args)
    weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    if not out.requires_grad:  # nothing sampled anywhere (adaptive grid 0): no graph at all
        return out.detach(), torch.zeros_like(x)
    (grad,) = torch.autograd.grad((out * weight).sum(), x, allow_unused=True)
    return out.detach(), torch.zeros_like(x) if grad is None else grad


@pytest.fixture(params=["window, one ROI per chunk, kron", "window, one ROI per chunk, separable", "window",
                        "small"])
def cpu_plan(request, monkeypatch):
    """Run a CPU path: the window GEMMs (with one ROI per chunk and each GEMM form, or with its
    defaults) or the small-input whole-map matrices."""
    monkeypatch.setattr(_align_small, "SMALL_WORK", 1 << 62 if request.param == "small" else -1)
    if "chunk" in request.param:
        monkeypatch.setattr(_align_cpu, "CHUNK_BYTES", 1)
        monkeypatch.setattr(_align_grad, "CHUNK_BYTES", 1)
        monkeypatch.setattr(_align_cpu, "KRON_FACTOR", 1e9 if "kron" in request.param else 0.0)
    return request.param


# ------------------------------------------------------------------ roi_align: CPU path vs gather path


@settings(max_examples=40, deadline=None)
@given(case=cases(), sampling_ratio=st.sampled_from([-1, 1, 2, 3]), aligned=st.booleans())
def test_roi_align_cpu_paths_match_gather_path_and_reference(case, sampling_ratio, aligned):
    x, boxes, output_size, scale = case
    args = (boxes, output_size, scale, sampling_ratio, aligned)
    out_g, grad_g = _forward_backward(gather_path, x, *args)
    ref = reference.roi_align(x, *args)
    torch.testing.assert_close(out_g, ref, rtol=0, atol=0)  # the gather path is torchvision's order
    saved = _align_small.SMALL_WORK
    try:
        for small_work in (-1, 1 << 62):  # the window path, then the small-input path
            _align_small.SMALL_WORK = small_work
            out, grad = _forward_backward(roiviz.roi_align, x, *args)
            torch.testing.assert_close(out, ref, **TOLERANCES[torch.float32])
            torch.testing.assert_close(grad, grad_g, **TOLERANCES[torch.float32])
    finally:
        _align_small.SMALL_WORK = saved


@settings(max_examples=80, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), sampling_ratio=st.sampled_from([-1, 1, 2, 3]),
       aligned=st.booleans(), path=st.sampled_from(["window", "small"]), chunk_bytes=st.sampled_from([1, 1 << 22]),
       compact=st.sampled_from([0.0, 2.0]))
def test_roi_align_cpu_gradient_is_the_reference_bit_for_bit(case, sampling_ratio, aligned, path, chunk_bytes,
                                                              compact):
    """The CPU input gradient adds torchvision's terms in torchvision's order: equal to the loops."""
    x, boxes, output_size, scale = case
    args = (boxes, output_size, scale, sampling_ratio, aligned)
    saved = _align_small.SMALL_WORK, _align_grad.CHUNK_BYTES, _align_grad.COMPACT_BELOW
    try:
        _align_small.SMALL_WORK = 1 << 62 if path == "small" else -1
        _align_grad.CHUNK_BYTES = chunk_bytes  # 1: one ROI per chunk
        _align_grad.COMPACT_BELOW = compact  # 0: every entry, 2: only the counted ones
        xg = x.detach().requires_grad_(True)
        out = roiviz.roi_align(xg, *args)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
        (grad,) = torch.autograd.grad(out, xg, weight)
    finally:
        _align_small.SMALL_WORK, _align_grad.CHUNK_BYTES, _align_grad.COMPACT_BELOW = saved
    expected = reference.roi_align_backward(x, boxes, weight, scale, sampling_ratio, aligned)
    assert torch.equal(grad, expected), (grad - expected).abs().max()


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(2, True), (-1, True), (1, False), (-1, False)])
def test_roi_align_cpu_path_chunking_and_gemm_forms(cpu_plan, sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 13, 17, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0, 1.0, 2.0, 30.0, 20.0], [1, -8.0, -4.0, 6.0, 40.0], [0, 3.0, 3.0, 3.0, 3.0],
                          [1, 20.0, 10.0, 33.0, 25.0], [0, 40.0, 40.0, 50.0, 50.0], [1, 0.0, 0.0, 34.0, 26.0]],
                         dtype=torch.float64)
    args = (boxes, (3, 4), 0.5, sampling_ratio, aligned)
    out, grad = _forward_backward(roiviz.roi_align, x, *args)
    out_g, grad_g = _forward_backward(gather_path, x, *args)
    torch.testing.assert_close(out, reference.roi_align(x, *args), **TOLERANCES[torch.float64])
    torch.testing.assert_close(out, out_g, **TOLERANCES[torch.float64])
    torch.testing.assert_close(grad, grad_g, **TOLERANCES[torch.float64])


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_roi_align_cpu_path_gradcheck(cpu_plan, contiguous):
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(2, 3, 7, 6, generator=gen, dtype=torch.float64)
    x = base if contiguous else base.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.3, 0.6, 4.7, 5.2], [1, -2.0, 1.0, 3.0, 9.0], [1, 2.2, 2.2, 2.2, 4.0]],
                         dtype=torch.float64)
    for sampling_ratio in (2, -1):
        assert torch.autograd.gradcheck(lambda t, sr=sampling_ratio: roiviz.roi_align(t, boxes, (2, 3), 1.0, sr, True), (x,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_roi_align_cpu_path_half_types_compute_in_float32(cpu_plan, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 9, 9, generator=gen).to(dtype)
    boxes = torch.tensor([[0, 1.0, 1.0, 7.0, 6.0]])
    out, grad = _forward_backward(roiviz.roi_align, x, boxes.to(dtype), 2, 1.0, 2, True)
    assert out.dtype == dtype and grad.dtype == dtype
    expected = roiviz.roi_align(x.float(), boxes, 2, 1.0, 2, True)
    torch.testing.assert_close(out, expected.to(dtype), **TOLERANCES[dtype])


def test_roi_align_empty_boxes_on_every_path(cpu_plan):
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    boxes = torch.zeros(0, 5)
    for fn in (roiviz.roi_align, gather_path):
        out = fn(x, boxes, (2, 3), 1.0, 2, True)
        assert out.shape == (0, 2, 2, 3)
        out.sum().backward()
        assert torch.equal(x.grad, torch.zeros_like(x))
        x.grad = None


# ------------------------------------------------------------------ no host synchronisation


@pytest.mark.parametrize(("sampling_ratio", "aligned"), [(1, True), (2, True), (3, False)])
def test_roi_align_fixed_sampling_ratio_never_reads_the_host(sampling_ratio, aligned):
    # On meta any .item()/.tolist()/int(tensor) raises: forward and backward run without one.
    x = torch.randn(2, 8, 10, 12, device="meta", requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0], [1, 0.0, 2.0, 9.0, 7.0]], device="meta")
    out = roiviz.roi_align(x, boxes, (3, 4), 0.5, sampling_ratio, aligned)
    assert out.shape == (2, 8, 3, 4) and out.device.type == "meta"
    out.sum().backward()
    assert x.grad.shape == x.shape and x.grad.device.type == "meta"
    listed = roiviz.roi_align(x, [boxes[:1, 1:], boxes[1:, 1:]], 3, 0.5, sampling_ratio, aligned)
    assert listed.shape == (2, 8, 3, 3)


def test_adaptive_sampling_and_roi_pool_do_read_the_host():
    # Documented: the adaptive grid and roi_pool's largest bin are loop bounds read from the boxes.
    x = torch.randn(1, 2, 6, 6, device="meta")
    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]], device="meta")
    with pytest.raises(RuntimeError, match="meta"):
        roiviz.roi_align(x, boxes, 2, 1.0, -1, True)
    with pytest.raises(RuntimeError, match="meta"):
        roiviz.roi_pool(x, boxes, 2, 1.0)


# ------------------------------------------------------------------ roi_pool


#: roi_pool's two algorithms: max-pooled maps + look-up, or a visit of every cell of every bin.
POOL_PATHS = {"maps": 0.0, "cells": float("inf")}


@settings(max_examples=40, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), row_cost=st.sampled_from([0.0, float("inf")]),
       chunk_bytes=st.sampled_from([1, 1 << 22]))
def test_roi_pool_forward_without_gradient_with_and_without_row_tables(case, row_cost, chunk_bytes):
    """Without a gradient, narrow bins may be read from row-maxima tables: exact either way."""
    x, boxes, output_size, scale = case
    saved = roi_pool_module.MAP_COST, roi_pool_module.ROW_TABLE_COST, roi_pool_module.CHUNK_BYTES
    try:
        roi_pool_module.MAP_COST = float("inf")  # never the max-pooled maps: the cell visits
        roi_pool_module.ROW_TABLE_COST, roi_pool_module.CHUNK_BYTES = row_cost, chunk_bytes
        with torch.no_grad():
            out = roiviz.roi_pool(x, boxes, output_size, scale)
    finally:
        roi_pool_module.MAP_COST, roi_pool_module.ROW_TABLE_COST, roi_pool_module.CHUNK_BYTES = saved
    assert torch.equal(out, reference.roi_pool(x, boxes, output_size, scale))


def test_roi_pool_under_no_grad_with_an_input_that_requires_grad():
    """no_grad skips the argmax (a third of the cost) even when the map requires grad."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(1, 4, 12, 12, generator=gen, requires_grad=True)
    boxes = torch.tensor([[0, 0.0, 0.0, 9.0, 7.0], [0, 3.0, 2.0, 11.0, 11.0]])
    with torch.no_grad():
        out = roiviz.roi_pool(x, boxes, 3)
    assert not out.requires_grad
    assert torch.equal(out, roiviz.roi_pool(x, boxes, 3).detach())


def test_roi_pool_float64_values_below_the_start_value_read_as_minus_flt_max():
    """The kernel starts every bin at -FLT_MAX and keeps strictly greater values: in float64 a
    bin of -1e300 gives -FLT_MAX, as torchvision does."""
    x = torch.full((1, 1, 4, 4), -1e300, dtype=torch.float64)
    x[0, 0, 0, 0] = 1.0
    out = roiviz.roi_pool(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64), 2)
    flt_max = float(torch.finfo(torch.float32).max)
    assert out.flatten().tolist() == [1.0, -flt_max, -flt_max, -flt_max]
    assert torch.equal(out, reference.roi_pool(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]], dtype=torch.float64), 2))


@pytest.fixture(params=["maps, one ROI per chunk", "cells, one ROI per chunk", "default"])
def pool_chunks(request, monkeypatch):
    if request.param != "default":
        monkeypatch.setattr(roi_pool_module, "CHUNK_BYTES", 1)
        monkeypatch.setattr(roi_pool_module, "MAP_COST", POOL_PATHS[request.param.split(",")[0]])
    return request.param


@settings(max_examples=40, deadline=None)
@given(case=cases(dtype=torch.float64))
def test_roi_pool_both_paths_match_reference_and_each_other_exactly(case):
    x, boxes, output_size, scale = case
    ref = reference.roi_pool(x, boxes, output_size, scale)
    results = {}
    saved = roi_pool_module.MAP_COST
    try:
        for path, cost in POOL_PATHS.items():
            roi_pool_module.MAP_COST = cost
            results[path] = _forward_backward(roiviz.roi_pool, x, boxes, output_size, scale)
            # Without a gradient the maps are built differently (running maxima, no indices).
            torch.testing.assert_close(roiviz.roi_pool(x, boxes, output_size, scale), ref, rtol=0, atol=0)
    finally:
        roi_pool_module.MAP_COST = saved
    for out, _ in results.values():
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(results["maps"][1], results["cells"][1], rtol=0, atol=0)


def test_roi_pool_nan_and_infinities_follow_the_strict_greater_rule(pool_chunks):
    # The kernel starts at -FLT_MAX and takes a cell only if it is strictly greater: NaN and -inf
    # never win, an all -inf bin gives -FLT_MAX (not 0, not -inf) and no gradient.
    x = torch.tensor([[[[float("nan"), 1.0, float("-inf"), float("-inf")],
                        [2.0, float("nan"), float("-inf"), float("-inf")],
                        [float("inf"), 0.0, -5.0, -5.0],
                        [0.0, 0.0, -5.0, -5.0]]]], requires_grad=True)
    boxes = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    out = roiviz.roi_pool(x, boxes, 2, 1.0)
    # Output and gradient as torchvision 0.29 gives them (checked live): the all -inf bin keeps
    # the kernel's start value -FLT_MAX (not 0, not -inf).
    flt_max = torch.finfo(torch.float32).max
    assert out[0, 0].tolist() == [[2.0, -flt_max], [float("inf"), -5.0]]
    out.sum().backward()
    expected = torch.zeros(4, 4)
    expected[1, 0] = expected[2, 0] = expected[2, 2] = 1.0  # first maximum; the -inf bin sends nothing
    assert torch.equal(x.grad[0, 0], expected)


@pytest.mark.parametrize("row_cost", [0.0, float("inf")], ids=["row tables", "no row tables"])
def test_roi_pool_without_gradient_reads_nan_and_minus_inf_as_the_start_value(pool_chunks, row_cost, monkeypatch):
    # Under no_grad a float32 input is rewritten while it is copied (no separate check): the
    # outputs must still be the kernel's, -FLT_MAX for a bin of only NaN / -inf.
    monkeypatch.setattr(roi_pool_module, "ROW_TABLE_COST", row_cost)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 9, 11, generator=gen)
    special = torch.tensor([float("nan"), float("-inf"), float("inf")])
    x.view(-1)[torch.randint(0, x.numel(), (60,), generator=gen)] = special[torch.randint(0, 3, (60,), generator=gen)]
    x[1, :, :4, :4] = float("-inf")
    x[0, 2, 5:, :] = float("nan")
    boxes = torch.tensor([[0, 0.0, 0.0, 10.0, 8.0], [1, 0.0, 0.0, 3.0, 3.0], [0, 2.0, 5.0, 10.0, 8.0],
                          [1, 1.0, 2.0, 7.0, 6.0], [0, 4.0, 4.0, 4.0, 4.0]])
    with torch.no_grad():
        out = roiviz.roi_pool(x, boxes, (3, 2), 1.0)
    assert torch.equal(out, reference.roi_pool(x, boxes, (3, 2), 1.0))
    assert (out == -torch.finfo(torch.float32).max).any()  # some bins hold nothing else


def test_roi_pool_ties_send_the_gradient_to_the_first_maximum(pool_chunks):
    x = torch.zeros(1, 2, 5, 5, requires_grad=True)
    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [0, 1.0, 1.0, 3.0, 3.0], [0, 9.0, 9.0, 9.0, 9.0]])
    out = roiviz.roi_pool(x, boxes, (2, 2), 1.0)
    assert torch.equal(out, torch.zeros(3, 2, 2, 2))  # the third box is outside: empty bins are 0
    out.sum().backward()
    expected = torch.zeros(5, 5)
    for y, x_ in [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1), (1, 2), (2, 1), (2, 2)]:  # first cell of each bin
        expected[y, x_] += 1.0
    assert torch.equal(x.grad[0, 0], expected) and torch.equal(x.grad[0, 1], expected)


@settings(max_examples=40, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), path=st.sampled_from(sorted(POOL_PATHS)),
       chunk_bytes=st.sampled_from([1, 1 << 22]), seed=st.integers(0, 2**16))
def test_roi_pool_gradient_is_the_reference_bit_for_bit(case, path, chunk_bytes, seed):
    """The gradient adds each output into its cell in the kernel's order (k, ph, pw): the
    reference's loops, bit for bit, with gradients of mixed magnitudes (where order shows)."""
    x, boxes, output_size, scale = case
    xg = x.detach().requires_grad_(True)
    saved = roi_pool_module.MAP_COST, roi_pool_module.CHUNK_BYTES
    try:
        roi_pool_module.MAP_COST, roi_pool_module.CHUNK_BYTES = POOL_PATHS[path], chunk_bytes
        out = roiviz.roi_pool(xg, boxes, output_size, scale)
        gen = torch.Generator().manual_seed(seed)
        grad_out = torch.randn(out.shape, generator=gen, dtype=out.dtype) * 10.0 ** torch.randint(-4, 5, out.shape, generator=gen)
        (grad,) = torch.autograd.grad(out, xg, grad_out)
    finally:
        roi_pool_module.MAP_COST, roi_pool_module.CHUNK_BYTES = saved
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, grad_out, scale))


def test_roi_pool_gradient_adds_many_outputs_into_one_cell_in_the_kernel_order(pool_chunks):
    # 64 boxes around one maximum: its cell receives a gradient from every bin of every box it
    # lies in (ROI Pool's bins overlap), whose float32 sum depends on the order. The reverse order gives another sum here, so the
    # test fails if the additions are reordered.
    gen = torch.Generator().manual_seed(5)
    x = torch.zeros(1, 2, 8, 8)
    x[0, :, 4, 4] = 1.0
    low = torch.randint(0, 5, (64, 2), generator=gen).float()
    high = torch.randint(4, 8, (64, 2), generator=gen).float()
    boxes = torch.cat([torch.zeros(64, 1), low, high], 1)
    xg = x.clone().requires_grad_(True)
    out = roiviz.roi_pool(xg, boxes, 3)
    grad_out = torch.randn(out.shape, generator=gen) * 10.0 ** torch.randint(-4, 5, out.shape, generator=gen)
    (grad,) = torch.autograd.grad(out, xg, grad_out)
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, grad_out))
    sent = grad_out[:, 0][out[:, 0].detach() == 1.0]  # in (k, ph, pw) order
    forward = backward = torch.zeros((), dtype=torch.float32)
    for g in sent:
        forward = forward + g
    for g in sent.flip(0):
        backward = backward + g
    assert len(sent) >= 64 and forward != backward and grad[0, 0, 4, 4] == forward


def test_roi_pool_large_bins_with_ties_match_between_paths(monkeypatch):
    # A 20x20 bin is 400 steps of the cell visit (its step counter is then int32, not uint8);
    # few distinct values make many ties, so the first maximum must be the kernel's.
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 4, (2, 3, 24, 22), generator=gen).to(torch.float64)
    x[0, 1, :5] = float("-inf")
    boxes = torch.tensor([[0, 1.0, 2.0, 20.0, 21.0], [1, 0.0, 0.0, 21.0, 23.0], [0, 3.0, 0.0, 7.0, 4.0]],
                         dtype=torch.float64)
    results = {}
    for path, cost in POOL_PATHS.items():
        monkeypatch.setattr(roi_pool_module, "MAP_COST", cost)
        results[path] = _forward_backward(roiviz.roi_pool, x, boxes, (1, 2), 1.0)
    torch.testing.assert_close(results["cells"][0], reference.roi_pool(x, boxes, (1, 2), 1.0), rtol=0, atol=0)
    torch.testing.assert_close(results["cells"][0], results["maps"][0], rtol=0, atol=0)
    torch.testing.assert_close(results["cells"][1], results["maps"][1], rtol=0, atol=0)


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_roi_pool_gradcheck_in_chunks(pool_chunks, contiguous):
    gen = torch.Generator().manual_seed(8)
    values = torch.randperm(2 * 3 * 7 * 6, generator=gen).to(torch.float64).reshape(2, 3, 7, 6)
    x = values if contiguous else values.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 5.0], [1, 1.0, 2.0, 5.0, 6.0], [0, 8.0, 8.0, 9.0, 9.0]],
                         dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roiviz.roi_pool(t, boxes, (2, 3), 1.0), (x,))


# ------------------------------------------------------------------ helpers


@pytest.mark.parametrize("huge_pages", ["0", "1"])
def test_empty_gives_a_writable_tensor_of_the_asked_shape(monkeypatch, huge_pages):
    monkeypatch.setenv("ROIVIZ_HUGE_PAGES", huge_pages)  # opt-in; read when the module loads
    monkeypatch.setattr(_common, "_madvise", _common._load_madvise())
    monkeypatch.setattr(_common, "HUGE_PAGE_BYTES", 1)  # take the madvise branch even when small
    for shape in [(3, 5), (1 << 20,), (0, 4)]:
        t = _common.empty(shape, torch.float32, torch.device("cpu"))
        assert t.shape == shape and t.dtype == torch.float32
        t.fill_(1.5)
        assert bool((t == 1.5).all())
    assert _common.empty((2, 3), torch.float64, torch.device("meta")).device.type == "meta"


def test_axis_samples_match_the_reference_sample_points():
    roi = torch.tensor([0, 0.3, 1.2, 9.7, 6.1], dtype=torch.float64)
    points, _ = reference.roi_align_sample_points(roi, 2, 3, 0.5, 2, True, dtype=torch.float64)
    scale = torch.tensor(0.5, dtype=torch.float64)
    start_h = roi[2] * scale - 0.5
    bin_h = (roi[4] * scale - 0.5 - start_h) / 2
    low, _, w_low, w_high, _, _ = _align_cpu.axis_samples(
        start_h[None], bin_h[None], torch.tensor([2.0], dtype=torch.float64), 2, 2, 20)
    ys = sorted({y for row in points for cell in row for y, _ in cell})
    assert [int(v) for v in low.flatten()] == [int(y) for y in ys]  # floor of each sample row
    assert torch.allclose(w_low + w_high, torch.full_like(w_low, 0.5))  # each sample weighs 1 / grid


def test_gather_path_backward_works_when_nothing_is_sampled():
    # Zero-area aligned boxes with adaptive sampling have grid 0: no sample, output 0, and the
    # backward must still run (giving 0) on the portable path used by GPUs.
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    rois = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0], [0, 1.0, 3.0, 1.0, 3.0]])
    out = _roi_align_gather(x, rois, 2, 2, torch.tensor(1.0), -1, True)
    assert out.abs().sum() == 0
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() == 0
