"""The two implementations of roi_align / roi_pool, against the loops of :mod:`roiviz.reference`.

CPU tensors take the compiled kernels of :mod:`roiviz.ops._numba`; every other device, or the
CPU with ``ROIVIZ_KERNELS=torch``, takes the portable PyTorch gathers. The kernels must equal
the reference bit for bit, forward and backward, in float32 and float64 (the reference does
torchvision's float operations in torchvision's order; ``tests/test_torchvision.py`` checks
both against torchvision itself). The gathers must equal the reference forward and agree with
the kernels' gradient to rounding. Then: no state between calls (the reproducers of issue 12),
threads, a forked child, the switch, and the on-disk compile cache.

The ``meta`` device has no data, so any host read (``.item()``, ``.tolist()``, ``int(t)``)
raises there: running an op on ``meta`` proves it never synchronises.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOLERANCES
from hypothesis import given, settings
from hypothesis import strategies as st

import roiviz
from roiviz import reference
from roiviz._checks import check_sampling_ratio
from roiviz.ops import _common

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def kernels(choice: str):
    """Run the block with ``ROIVIZ_KERNELS=choice`` (read at every call)."""
    saved = os.environ.get(_common.KERNELS_ENV)
    os.environ[_common.KERNELS_ENV] = choice
    try:
        yield
    finally:
        if saved is None:
            del os.environ[_common.KERNELS_ENV]
        else:
            os.environ[_common.KERNELS_ENV] = saved


@contextlib.contextmanager
def layout(choice: str):
    """Make the forwards read the map as it is, a channel plane at a time (``planes``), each
    ROI's cells from the map itself (``regional``) or a channels-last copy of the whole map
    (``copy``), whatever the channel count and their rule would choose."""
    from roiviz.ops import _numba

    names = ("ALIGN_PLANES_BELOW", "POOL_PLANES_BELOW", "REGION_RATIO", "REGION_MIN_BYTES")
    saved = [getattr(_numba, name) for name in names]
    planes = math.inf if choice == "planes" else 0
    region = (math.inf, 0) if choice == "regional" else (0.0, math.inf)
    for name, value in zip(names, (planes, planes, *region), strict=True):
        setattr(_numba, name, value)
    try:
        yield
    finally:
        for name, value in zip(names, saved, strict=True):
            setattr(_numba, name, value)


LAYOUTS = st.sampled_from(["planes", "regional", "copy"])


@st.composite
def cases(draw, dtype=torch.float32):
    n = draw(st.integers(1, 2))
    c = draw(st.one_of(st.integers(1, 5), st.integers(15, 18)))  # each side of the plane thresholds (4, 15)
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


def _weights(shape, dtype, seed=1):
    """Output gradients of mixed magnitudes, so that a different order of additions shows."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=dtype) * 10.0 ** torch.randint(-4, 5, shape, generator=gen)


def _forward_backward(fn, x, *args, seed=1):
    xg = x.detach().requires_grad_(True)
    out = fn(xg, *args)
    weight = _weights(out.shape, out.dtype, seed)
    (grad,) = torch.autograd.grad(out, xg, weight)
    return out.detach(), grad, weight


def _accepts_zero() -> bool:
    try:
        return check_sampling_ratio(0) == 0
    except ValueError:
        return False


#: Fixed and adaptive grids; 0 means adaptive (as in torchvision) where the argument check accepts it.
SAMPLING_RATIOS = [-1, 1, 2, 3] + [0] * _accepts_zero()
ADAPTIVE = [-1] + [0] * _accepts_zero()
SAMPLING = st.sampled_from(SAMPLING_RATIOS)

# ------------------------------------------------------------------ the kernels against the loops


@settings(max_examples=80, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), sampling_ratio=SAMPLING, aligned=st.booleans(),
       where=LAYOUTS)
def test_roi_align_kernels_are_the_reference_bit_for_bit(case, sampling_ratio, aligned, where):
    x, boxes, output_size, scale = case
    args = (boxes, output_size, scale, sampling_ratio, aligned)
    with kernels("numba"), layout(where):
        out, grad, weight = _forward_backward(roiviz.roi_align, x, *args)
    assert torch.equal(out, reference.roi_align(x, *args))
    assert torch.equal(grad, reference.roi_align_backward(x, boxes, weight, scale, sampling_ratio, aligned))


@settings(max_examples=80, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), seed=st.integers(0, 2**16), where=LAYOUTS)
def test_roi_pool_kernels_are_the_reference_bit_for_bit(case, seed, where):
    x, boxes, output_size, scale = case
    with kernels("numba"), layout(where):
        out, grad, weight = _forward_backward(roiviz.roi_pool, x, boxes, output_size, scale, seed=seed)
        with torch.no_grad():
            assert torch.equal(roiviz.roi_pool(x, boxes, output_size, scale), out)
    assert torch.equal(out, reference.roi_pool(x, boxes, output_size, scale))
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, weight, scale))


@settings(max_examples=40, deadline=None)
@given(case=st.one_of(cases(torch.float32), cases(torch.float64)), sampling_ratio=SAMPLING, aligned=st.booleans())
def test_the_torch_path_is_the_reference_forward_and_the_kernels_backward(case, sampling_ratio, aligned):
    x, boxes, output_size, scale = case
    args = (boxes, output_size, scale, sampling_ratio, aligned)
    tol = TOLERANCES[x.dtype]
    with kernels("torch"):
        out, grad, weight = _forward_backward(roiviz.roi_align, x, *args)
        pool, pool_grad, pool_weight = _forward_backward(roiviz.roi_pool, x, boxes, output_size, scale)
    assert torch.equal(out, reference.roi_align(x, *args))  # the gathers add in torchvision's order
    torch.testing.assert_close(grad, reference.roi_align_backward(x, boxes, weight, scale, sampling_ratio, aligned),
                               atol=tol["atol"] * 1e4, rtol=tol["rtol"])  # autograd's order of additions
    assert torch.equal(pool, reference.roi_pool(x, boxes, output_size, scale))
    torch.testing.assert_close(pool_grad, reference.roi_pool_backward(x, boxes, pool_weight, scale),
                               atol=tol["atol"] * 1e4, rtol=tol["rtol"])


def test_the_kernels_add_many_terms_into_one_cell_in_torchvision_order():
    # 64 boxes over one small map: every cell receives hundreds of float32 terms of mixed
    # magnitudes, whose sum depends on their order. A kernel that reordered would differ.
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 70, 8, 8, generator=gen)  # 70 channels: two blocks, the second partial
    low = torch.randint(0, 4, (64, 2), generator=gen).float()
    boxes = torch.cat([torch.randint(0, 2, (64, 1), generator=gen).float(), low, low + 4.0], 1)
    _, grad, weight = _forward_backward(roiviz.roi_align, x, boxes, 3, 1.0, 2, True)
    assert torch.equal(grad, reference.roi_align_backward(x, boxes, weight, 1.0, 2, True))
    _, grad, weight = _forward_backward(roiviz.roi_pool, x, boxes, 3, 1.0)
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, weight, 1.0))


@pytest.mark.parametrize("channels", [5, 17])  # the one-channel-at-a-time scan and the vector scan
@pytest.mark.parametrize("height", [181, 182])  # 181 x 181 = 32,761 cells fit in int16; 182 x 181 do not
def test_roi_pool_argmax_holds_every_cell_of_a_large_map(height, channels):
    # The kernels keep roi_pool's argmax (the cell h * W + w) as int16 when every cell fits,
    # else int32: boxes in the far corner have maxima at the largest cell numbers.
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, channels, height, 181, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[0, 150.0, height - 30.0, 180.0, height - 1.0], [0, 0.0, 0.0, 180.0, height - 1.0]],
                         dtype=torch.float64)
    out, grad, weight = _forward_backward(roiviz.roi_pool, x, boxes, 4, 1.0)
    assert torch.equal(out, reference.roi_pool(x, boxes, 4, 1.0))
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, weight, 1.0))
    assert grad[0, :, height - 30:, 150:].count_nonzero() > 0  # gradients did land past cell 32,767


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.int32])  # outputs and argmax
@pytest.mark.parametrize(("channels", "bins"), [(1, (1, 1)), (7, (3, 3)), (8, (2, 4)), (17, (7, 7)),
                                                (256, (14, 14)), (24, (5, 3))])
def test_a_tile_is_written_channels_first_exactly(dtype, channels, bins):
    # The forwards keep one ROI's results channels last and write them out in 8x8 blocks, the
    # last of 8 or more channels in a block overlapping the one before, single elements at
    # the other edges (fewer than 8 channels, bins not a multiple of 8).
    from roiviz.ops import _numba

    cells = bins[0] * bins[1]
    tile = np.arange(cells * (channels + _numba.TILE_PAD)).astype(dtype).reshape(cells, -1)
    out = np.full((channels, *bins), -1, dtype)
    _numba._write_channels_first(tile, out)
    assert np.array_equal(out.reshape(channels, cells), tile[:, :channels].T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 7, 3, 9), (2, 8, 5, 8), (3, 17, 4, 21), (1, 256, 6, 68)])
def test_the_channels_last_copy_is_exact(dtype, shape, monkeypatch):
    # The kernels read a channels-last copy of the map, made in 8x8 blocks (the last of a
    # width of 8 or more overlapping the one before) with single elements at the other edges
    # (channels not a multiple of 8, widths under 8), rows on two threads.
    from roiviz.ops import _numba

    monkeypatch.setattr(_numba, "SERIAL_BELOW", 1)
    x = torch.randn(shape, dtype=dtype)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        copy = _numba.channels_last(x)
    finally:
        torch.set_num_threads(saved)
    assert torch.equal(copy, x.permute(0, 2, 3, 1)) and copy.is_contiguous()


def _boxes_on(n: int, k: int, size: float, extent: tuple[float, float], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    wh = size * torch.rand(k, 2, generator=gen)
    xy = (torch.tensor(extent) - wh) * torch.rand(k, 2, generator=gen)
    return torch.cat([torch.randint(0, n, (k, 1), generator=gen).float(), xy, xy + wh], 1)


def test_a_forward_reads_each_rois_cells_where_the_rois_cover_the_map_about_once(monkeypatch):
    """The forwards read a large map itself, a ROI's cells at a time, when the ROIs' cells add up
    to a few times the map's at most (a mask head's boxes); otherwise, and for a small, strided
    or half-precision map, a channels-last copy of the whole map. Either way the same numbers
    (the random cases above run both)."""
    from roiviz.ops import _numba

    x = torch.randn(2, 16, 40, 52)  # 266 KB
    sparse = _boxes_on(2, 12, 60.0, (416.0, 320.0), seed=1)
    # 16 channels: not read a plane at a time by either op (the next test).
    assert _numba.forward_input(x, sparse.numpy(), 1 / 8, 16)[1] == 0  # small enough to copy
    assert _numba.forward_input(x.repeat(1, 16, 1, 1), sparse.numpy(), 1 / 8, 16)[1] > 0  # 4.3 MB: not
    monkeypatch.setattr(_numba, "REGION_MIN_BYTES", 0)
    dense = _boxes_on(2, 400, 200.0, (416.0, 320.0), seed=2)
    read, rows = _numba.forward_input(x, sparse.numpy(), 1 / 8, 16)
    assert rows > 0 and np.shares_memory(read, x.numpy())  # the map itself, no copy
    total, largest = _numba.region_cells(sparse.numpy(), 1 / 8, 40, 52)
    assert rows == largest + 1 and total <= _numba.REGION_RATIO * 40 * 52 * 2
    for variant, boxes in ((x, dense), (x.transpose(2, 3).contiguous().transpose(2, 3), sparse),
                           (x.half(), sparse)):
        read, rows = _numba.forward_input(variant, boxes.numpy(), 1 / 8, 16)
        assert rows == 0 and read.shape == (2, 40, 52, 16) and read.flags.c_contiguous  # [N, H, W, C]
    big = torch.tensor([[0, 0.0, 0.0, 415.0, 319.0]])  # the whole map: 16 x 2,080 cells of scratch
    assert _numba.forward_input(x, big.numpy(), 1 / 8, 16)[1] > 0
    assert _numba.forward_input(torch.randn(1, 1024, 40, 52), big.numpy(), 1 / 8, 16)[1] == 0  # 8.5 MB of scratch
    for boxes in (sparse, dense):
        with layout("regional"):
            a, p = roiviz.roi_align(x, boxes, 7, 1 / 8, 2), roiviz.roi_pool(x, boxes, 7, 1 / 8)
        assert torch.equal(a, reference.roi_align(x, boxes, 7, 1 / 8, 2))
        assert torch.equal(p, reference.roi_pool(x, boxes, 7, 1 / 8))


def test_a_forward_reads_a_map_of_few_channels_as_it_is():
    """Below a few channels (an RGB picture has 3) the forwards read the map itself, a channel
    plane at a time: no copy of a contiguous float map, a contiguous one in the compute dtype
    of a strided or half map; roi_pool up to 15 channels, roi_align up to 4. The same numbers."""
    from roiviz.ops import _numba

    x = torch.randn(2, 3, 40, 52)
    boxes = _boxes_on(2, 12, 60.0, (416.0, 320.0), seed=1)
    read, rows = _numba.forward_input(x, boxes.numpy(), 1 / 8, _numba.ALIGN_PLANES_BELOW)
    assert rows == _numba.PLANES and np.shares_memory(read, x.numpy())
    for variant in (x.transpose(2, 3).contiguous().transpose(2, 3), x.half()):
        read, rows = _numba.forward_input(variant, boxes.numpy(), 1 / 8, _numba.ALIGN_PLANES_BELOW)
        assert rows == _numba.PLANES and read.shape == (2, 3, 40, 52) and read.flags.c_contiguous
        assert read.dtype == np.float32
    six = x.repeat(1, 2, 1, 1)
    assert _numba.forward_input(six, boxes.numpy(), 1 / 8, _numba.ALIGN_PLANES_BELOW)[1] == 0
    assert _numba.forward_input(six, boxes.numpy(), 1 / 8, _numba.POOL_PLANES_BELOW)[1] == _numba.PLANES
    for variant in (x, x.transpose(2, 3).contiguous().transpose(2, 3), six):
        for sampling_ratio in (2, -1):
            assert torch.equal(roiviz.roi_align(variant, boxes, 7, 1 / 8, sampling_ratio),
                               reference.roi_align(variant, boxes, 7, 1 / 8, sampling_ratio))
        assert torch.equal(roiviz.roi_pool(variant, boxes, 7, 1 / 8), reference.roi_pool(variant, boxes, 7, 1 / 8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_regional_scratch_grows_when_a_roi_needs_more(dtype):
    # A scratch of one row (the estimate is an upper bound in practice, but the kernels do not
    # rely on it): every ROI grows it, and the results are still the reference's. Boxes at the
    # right edge move their 8-wide column runs left; a map 5 wide keeps its width.
    from roiviz.ops import _numba

    for width in (5, 29):
        x = torch.randn(2, 9, 23, width, dtype=torch.float64 if dtype == np.float64 else torch.float32)
        boxes = torch.cat([_boxes_on(2, 6, 14.0, (width, 23.0), seed=width),
                           torch.tensor([[1, width - 3.5, 2.0, width - 0.5, 9.0], [0, -2.0, -2.0, -1.0, -1.0]])])
        boxes = boxes.to(x.dtype)
        out = np.full((8, 9, 3, 4), np.nan, dtype)
        _numba.roi_align_forward(x.numpy(), boxes.numpy(), dtype(1.0), 3, 4, 2, False, 1, out, 0, 8)
        assert torch.equal(torch.from_numpy(out), reference.roi_align(x, boxes, (3, 4), 1.0, 2, False))
        empty_argmax = np.empty((0, 0, 0, 0), np.int16)
        _numba.roi_pool_forward(x.numpy(), boxes.numpy(), dtype(1.0), 3, 4, 1, out, empty_argmax, 0, 8)
        assert torch.equal(torch.from_numpy(out), reference.roi_pool(x, boxes, (3, 4), 1.0))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_backward_is_deterministic_whatever_the_thread_count(threads):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 130, 20, 24, generator=gen)
    boxes = torch.cat([torch.randint(0, 2, (40, 1), generator=gen).float(), torch.rand(40, 2, generator=gen) * 200,
                       200 + torch.rand(40, 2, generator=gen) * 200], 1)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        runs = [_forward_backward(roiviz.roi_align, x, boxes, 7, 1 / 16, -1, True) for _ in range(2)]
        pools = [_forward_backward(roiviz.roi_pool, x, boxes, 7, 1 / 16) for _ in range(2)]
    finally:
        torch.set_num_threads(saved)
    for a, b in (runs, pools):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(runs[0][1], reference.roi_align_backward(x, boxes, runs[0][2], 1 / 16, -1, True))


@pytest.mark.parametrize("path", ["numba", "torch"])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "permuted"])
def test_gradcheck(path, contiguous):
    gen = torch.Generator().manual_seed(6)
    base = torch.randperm(2 * 3 * 7 * 6, generator=gen).to(torch.float64).reshape(2, 3, 7, 6)  # no ties
    x = base if contiguous else base.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    boxes = torch.tensor([[0, 0.3, 0.6, 4.7, 5.2], [1, -2.0, 1.0, 3.0, 9.0], [1, 2.2, 2.2, 2.2, 4.0]],
                         dtype=torch.float64)
    with kernels(path):
        for sampling_ratio in (2, *ADAPTIVE):
            assert torch.autograd.gradcheck(lambda t, sr=sampling_ratio: roiviz.roi_align(t, boxes, (2, 3), 1.0, sr, True),
                                            (x,))
        assert torch.autograd.gradcheck(lambda t: roiviz.roi_pool(t, boxes, (2, 3), 1.0), (x,))


@pytest.mark.parametrize("path", ["numba", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_compute_in_float32(path, dtype):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 9, 9, generator=gen).to(dtype)
    boxes = torch.tensor([[0, 1.0, 1.0, 7.0, 6.0]])
    with kernels(path):
        for op, args in ((roiviz.roi_align, (2, 1.0, 2, True)), (roiviz.roi_pool, (2, 1.0))):
            out, grad, _ = _forward_backward(op, x, boxes.to(dtype), *args)
            assert out.dtype == dtype and grad.dtype == dtype
            assert torch.equal(out, op(x.float(), boxes, *args).to(dtype))


@pytest.mark.parametrize("path", ["numba", "torch"])
def test_no_boxes_zero_channels_and_empty_grids(path):
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with kernels(path):
        for op, args in ((roiviz.roi_align, ((2, 3), 1.0, 2, True)), (roiviz.roi_pool, ((2, 3), 1.0))):
            out = op(x, torch.zeros(0, 5), *args)  # no boxes
            assert out.shape == (0, 2, 2, 3)
            (grad,) = torch.autograd.grad(out.sum(), x)
            assert torch.equal(grad, torch.zeros_like(x))
            empty_batch = op(torch.zeros(0, 2, 5, 5), torch.zeros(0, 5), *args)
            assert empty_batch.shape == (0, 2, 2, 3)
            no_channels = torch.zeros(1, 0, 5, 5, requires_grad=True)
            out = op(no_channels, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), *args)
            assert out.shape == (1, 0, 2, 3)
            (grad,) = torch.autograd.grad(out.sum(), no_channels)
            assert grad.shape == no_channels.shape
        # An adaptive grid of 0 samples (aligned, a zero-size box): outputs 0, gradient 0.
        box = torch.tensor([[0, 2.0, 2.0, 2.0, 2.0]])
        for sr in ADAPTIVE:
            out, grad, _ = _forward_backward(roiviz.roi_align, x, box, 2, 1.0, sr, True)
            assert torch.equal(out, torch.zeros(1, 2, 2, 2)) and torch.equal(grad, torch.zeros_like(x))


def test_roi_pool_nan_and_infinities_follow_the_strict_greater_rule():
    # Start at -FLT_MAX, take a cell only if strictly greater: NaN and -inf never win, an all
    # -inf bin gives -FLT_MAX (not 0, not -inf) and no gradient. As torchvision 0.29 gives it.
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[[[nan, 1.0, -inf, -inf], [2.0, nan, -inf, -inf], [inf, 0.0, -5.0, -5.0],
                        [0.0, 0.0, -5.0, -5.0]]]], requires_grad=True)
    boxes = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]])
    flt_max = torch.finfo(torch.float32).max
    for path in ("numba", "torch"):
        with kernels(path):
            out = roiviz.roi_pool(x, boxes, 2, 1.0)
            assert out[0, 0].tolist() == [[2.0, -flt_max], [inf, -5.0]]
            (grad,) = torch.autograd.grad(out.sum(), x)
        expected = torch.zeros(4, 4)
        expected[1, 0] = expected[2, 0] = expected[2, 2] = 1.0  # first maxima; the -inf bin sends nothing
        assert torch.equal(grad[0, 0], expected)


def test_roi_align_nan_in_the_map_reaches_what_torchvision_reaches():
    # torchvision adds 0 * input[0, 0] for samples outside the map: a NaN there reaches the
    # bins with such samples, and a NaN elsewhere only the bins that sample it.
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 0, 0] = float("nan")
    x[0, 0, 4, 4] = float("nan")
    boxes = torch.tensor([[0, -4.0, -4.0, 1.0, 1.0], [0, 1.5, 1.5, 3.0, 3.0], [0, 3.5, 3.5, 5.0, 5.0]])
    # As torchvision 0.29 gives it (checked live): every bin of boxes 0 and 2, none of box 1.
    expected = torch.tensor([True, False, True])[:, None, None, None].expand(3, 1, 2, 2)
    for aligned in (True, False):
        assert torch.equal(roiviz.roi_align(x, boxes, 2, 1.0, 2, aligned).isnan(), expected)


# ------------------------------------------------------------------ no state between calls


OPS = {
    "roi_align": lambda x, b: roiviz.roi_align(x, b, 7, 0.5, 2, True),
    "roi_align sr=-1": lambda x, b: roiviz.roi_align(x, b, 7, 0.5, -1, True),
    "roi_pool": lambda x, b: roiviz.roi_pool(x, b, 7, 0.5),
}


def _case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 64, 64, 64, generator=g)  # outputs of 100 ROIs: 1.2 MiB
    xy = torch.rand(100, 2, generator=g) * 90
    boxes = torch.cat([torch.randint(0, 2, (100, 1), generator=g).float(), xy, xy + 10 + torch.rand(100, 2, generator=g) * 30], 1)
    return x, boxes


@pytest.mark.parametrize("name", sorted(OPS))
def test_a_held_storage_is_not_overwritten_by_the_next_call(name):
    """Issue 12: a caller that keeps only ``out.untyped_storage()`` found it overwritten."""
    fn = OPS[name]
    x, boxes = _case(0)
    x2, boxes2 = _case(1)
    out = fn(x, boxes)
    expected = out.clone()
    storage, shape = out.untyped_storage(), out.shape
    del out
    for _ in range(3):
        fn(x2, boxes2)
    rebuilt = torch.empty(0).set_(storage, 0, shape)
    assert torch.equal(rebuilt, expected)


@pytest.mark.parametrize("name", sorted(OPS))
def test_saved_tensor_hooks_give_the_same_gradient(name):
    """Issue 12: under saved_tensors_hooks (activation offloading) a backward was wrong."""
    fn = OPS[name]
    x, boxes = _case(2)
    weight = torch.randn(100, 64, 7, 7, generator=torch.Generator().manual_seed(3))
    xg = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(fn(xg, boxes), xg, weight)

    def pack(t):  # a copy, as offloading to another device does, then the original is dropped
        return t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(xg, boxes)
    for _ in range(2):  # calls in between must not touch what was saved
        fn(x, boxes).sum()
    (hooked,) = torch.autograd.grad(out, xg, weight)
    assert torch.equal(hooked, plain)


@pytest.mark.parametrize("name", sorted(OPS))
def test_inference_mode_then_normal_calls(name):
    """Issue 12: after one call inside inference_mode, later calls outside it raised."""
    fn = OPS[name]
    x, boxes = _case(4)
    with torch.inference_mode():
        inside = fn(x, boxes)
    xg = x.clone().requires_grad_(True)
    out = fn(xg, boxes)
    out.sum().backward()
    assert torch.equal(out.detach(), inside) and xg.grad is not None


@pytest.mark.parametrize("name", sorted(OPS))
def test_nothing_is_kept_after_return(name):
    """Neither the input, the output nor the graph is referenced once the caller drops them."""
    fn = OPS[name]
    x, boxes = _case(5)
    xg = x.clone().requires_grad_(True)
    out = fn(xg, boxes)
    out.sum().backward()
    refs = [weakref.ref(t) for t in (xg, out, xg.grad)]
    del xg, out
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_large_sampling_ratio_backward_takes_memory_in_proportion_to_the_work():
    """Issue 12: one box with sampling_ratio=64 took 842 MiB in the backward (torchvision 7)."""
    script = textwrap.dedent("""
        import resource, torch, roiviz
        x = torch.randn(1, 256, 100, 136, requires_grad=True)
        box = torch.tensor([[0, 10.0, 10.0, 1000.0, 700.0]])
        roiviz.roi_align(x, box, 7, 1 / 8, 2, True).sum().backward()  # compiled (or loaded) first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        roiviz.roi_align(x, box, 7, 1 / 8, 64, True).sum().backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) < 64  # MiB more than the sampling_ratio=2 run


# ------------------------------------------------------------------ threads, fork, the switch


def test_concurrent_threads_get_their_own_results():
    cases_ = [_case(10 + i) for i in range(4)]
    expected = [OPS["roi_align"](x, b) for x, b in cases_]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = OPS["roi_align"](*cases_[i])
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(torch.equal(results[i], expected[i]) for i in range(4))


def test_launch_runs_every_unit_once_on_threads_that_end_with_the_call():
    from roiviz.ops import _numba

    seen: list[tuple[int, int, str]] = []

    def kernel(tag, lo, hi):  # any callable taking (..., lo, hi) can be launched
        seen.append((lo, hi, threading.current_thread().name))

    saved, before = torch.get_num_threads(), threading.active_count()
    try:
        torch.set_num_threads(3)
        _numba.launch(kernel, "big", units=50, work=_numba.SERIAL_BELOW)
        assert sorted(u for lo, hi, _ in seen for u in range(lo, hi)) == list(range(50))
        assert len(seen) == 12  # 4 ranges per thread
        assert threading.active_count() == before  # the helper threads were joined
        seen.clear()
        _numba.launch(kernel, "small", units=50, work=_numba.SERIAL_BELOW - 1)
        assert seen == [(0, 50, threading.current_thread().name)]  # small work: the caller alone
        seen.clear()
        torch.set_num_threads(1)
        _numba.launch(kernel, "one thread", units=50, work=10**9)
        assert seen == [(0, 50, threading.current_thread().name)]
        torch.set_num_threads(2)

        def failing(lo, hi):
            if lo > 0:
                raise ZeroDivisionError(f"unit {lo}")

        with pytest.raises(ZeroDivisionError, match="unit"):  # an error in a helper thread reaches the caller
            _numba.launch(failing, units=8, work=10**9)
    finally:
        torch.set_num_threads(saved)


def test_outputs_are_ordinary_cpu_tensors_but_cannot_grow():
    """The kernels' outputs live in memory numpy allocates (huge pages where Linux gives them):
    they pickle, move to shared memory and take in-place ops; ``resize_`` to more elements raises
    (documented in the README's list of differences)."""
    x, boxes = _case(3)
    out = roiviz.roi_align(x, boxes, 7, 0.5, 2, True)
    assert torch.equal(pickle.loads(pickle.dumps(out)), out)
    shared = out.clone().share_memory_()
    assert shared.is_shared() and torch.equal(shared, out)
    out.mul_(2).resize_(out.numel() // 2)  # shrinking is fine
    with pytest.raises(RuntimeError, match="not resizable"):
        roiviz.roi_pool(x, boxes, 7, 0.5).resize_(10**6)


class _RoIDataset(torch.utils.data.Dataset):
    """Each item is the roi_align and roi_pool outputs of one case, computed in the worker."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        x, boxes = _case(20 + i)
        return torch.stack([OPS["roi_align"](x, boxes), OPS["roi_pool"](x, boxes)])


@pytest.mark.skipif(sys.platform != "linux", reason="fork is the Linux DataLoader default")
def test_forked_dataloader_workers_can_call_the_kernels_after_the_parent():
    """A DataLoader worker is a fork of a process that has already run the (parallel) kernels."""
    dataset = _RoIDataset()
    expected = torch.stack([dataset[0], dataset[1]])
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2, multiprocessing_context="fork",
                                         timeout=120)
    assert torch.equal(torch.cat(list(loader)), expected)


def test_the_switch_selects_the_implementation(monkeypatch):
    from roiviz.ops import _numba

    calls = []
    real = _numba.launch
    monkeypatch.setattr(_numba, "launch", lambda kernel, *args, **kw: calls.append(kernel) or real(kernel, *args, **kw))
    x, boxes = _case(6)
    with kernels("torch"):
        a = roiviz.roi_align(x, boxes, 7, 0.5, 2, True)
        p = roiviz.roi_pool(x, boxes, 7, 0.5)
    assert calls == []
    with kernels("numba"):
        assert torch.equal(roiviz.roi_align(x, boxes, 7, 0.5, 2, True), a)
        assert torch.equal(roiviz.roi_pool(x, boxes, 7, 0.5), p)
    kernels_run = [k for k in calls if k is not _numba._to_channels_last]  # and the input's copy
    assert kernels_run == [_numba.roi_align_forward, _numba.roi_pool_forward]
    with kernels("fortran"), pytest.raises(ValueError, match="ROIVIZ_KERNELS"):
        roiviz.roi_align(x, boxes, 7)


def test_without_numba_the_torch_path_is_used(monkeypatch):
    from roiviz.ops import _numba

    x, boxes = _case(7)
    expected = roiviz.roi_align(x, boxes, 7, 0.5, 2, True)
    monkeypatch.setattr(_common, "_HAVE_NUMBA", False)
    monkeypatch.setattr(_numba, "launch", lambda *args: pytest.fail("the kernels were called"))
    with kernels("numba"):
        assert not _common.cpu_kernels_enabled()
        assert torch.equal(roiviz.roi_align(x, boxes, 7, 0.5, 2, True), expected)


def test_compiled_kernels_are_cached_on_disk(tmp_path):
    """A second process loads the kernels from the cache instead of compiling them again.

    ``NUMBA_CACHE_DIR`` sends the cache elsewhere than ``roiviz/ops/__pycache__`` (where it goes
    when the package directory is writable; otherwise numba uses the user's cache directory).
    """
    script = ("import time, torch, roiviz; t = time.perf_counter(); "
              "out = roiviz.roi_align(torch.ones(1, 2, 4, 4), torch.tensor([[0, 0., 0., 3., 3.]]), 2); "
              "print(out.sum().item(), time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):  # compile and store, then load
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        total, seconds = map(float, out.stdout.split()[-2:])
        assert total == 8.0
        runs.append(seconds)
    assert list((tmp_path / "cache").rglob("*.nbi")), "no numba index file in NUMBA_CACHE_DIR"
    assert runs[1] < runs[0]


def test_roiviz_compile_fills_the_cache_with_every_kernel(tmp_path):
    """``roiviz compile`` (run by ``make lab``/``make test`` after installing) leaves every kernel
    in the disk cache, so that a notebook's first call only loads them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "roiviz", "compile", "--dtypes", "float32"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "CPU kernels ready for float32" in out.stdout
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache").rglob("*.nbi")}
    for kernel in ("roi_align_forward", "roi_align_backward", "roi_pool_forward", "roi_pool_backward",
                   "_to_channels_last", "_blocks_to_nchw", "region_cells"):
        assert f"_numba.{kernel}" in cached, kernel
    assert {"prroi_pool._forward_kernel", "prroi_pool._input_grad_kernel", "prroi_pool._box_grad_kernel"} <= cached


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


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_kernels_read_any_memory_format_and_roi_pool_needs_no_argmax_without_gradient(memory_format, dtype):
    """The kernels' channels-last copy (numba's threads), the view of a channels-last input and
    torch's copy of a strided one give the same results; a roi_pool forward that no gradient
    will follow (no_grad, or an input that does not require grad) skips the argmax and gives
    the same output as one that keeps it."""
    x, boxes = _case(11)
    x = x.to(dtype)
    ref_a = reference.roi_align(x, boxes, 5, 0.5, 2, True)
    ref_p = reference.roi_pool(x, boxes, 5, 0.5)
    for variant in (x.to(memory_format=memory_format), x.transpose(2, 3).contiguous().transpose(2, 3)):
        assert torch.equal(roiviz.roi_align(variant, boxes, 5, 0.5, 2, True), ref_a)
        with torch.no_grad():
            assert torch.equal(roiviz.roi_pool(variant, boxes, 5, 0.5), ref_p)
        assert torch.equal(roiviz.roi_pool(variant, boxes, 5, 0.5), ref_p)
        leaf = variant.detach().requires_grad_(True)
        out = roiviz.roi_pool(leaf, boxes, 5, 0.5)
        assert torch.equal(out, ref_p) and out.requires_grad
        (g,) = torch.autograd.grad(out.sum(), leaf)
        assert torch.equal(g, reference.roi_pool_backward(x, boxes, torch.ones_like(ref_p), 0.5))
