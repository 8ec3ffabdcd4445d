"""The Triton kernels of :mod:`roiviz.ops._triton`, run on the CPU by Triton's interpreter.

Triton decides at ``@triton.jit`` time (when :mod:`roiviz.ops._triton` is imported) whether a
kernel is compiled or interpreted, from ``TRITON_INTERPRET``. roiviz is already imported in this
process (by ``conftest`` and the other tests), so the kernel tests run in a child ``pytest`` of
this file with ``TRITON_INTERPRET=1`` set from the start: :func:`test_kernels_in_the_interpreter`
here, the cases below it there. The child checks every case **bit for bit** against
:mod:`roiviz.reference` (forward and backward, every ``sampling_ratio`` kind and ``aligned``,
float32 / float64 / float16 / bfloat16, NaN and -inf for ROI Pool), that two backward runs are
identical, and that the host-side plan never reads the device (``meta``). The interpreter is
slow, so the cases are small.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from roiviz import reference
from roiviz.ops import _triton
from roiviz.ops._door import roi_arguments

CHILD = os.environ.get("TRITON_INTERPRET") == "1"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(CHILD, reason="this is the child run")
def test_kernels_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", __file__],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert " passed" in report and " failed" not in report, report


child = pytest.mark.skipif(not CHILD, reason="runs in the child with TRITON_INTERPRET=1 (see the module docstring)")

X = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
# Boxes that reach every branch: inside, partly and wholly outside, tiny (legacy 1x1), past the
# last row/column, a whole-map box, and one on image 1.
BOXES = torch.tensor([
    [0, 1.3, 2.2, 7.9, 8.1],
    [1, -3.0, -2.0, 4.0, 5.0],
    [0, 5.0, 5.0, 5.2, 5.1],
    [1, 0.0, 0.0, 30.0, 20.0],
    [0, 40.0, 30.0, 50.0, 45.0],
    [1, 8.0, 6.0, 15.7, 12.3],
])
SCALE = 0.7


def _align(x, boxes, size, scale, sr, aligned):
    _, rois, ph, pw, scale_t = roi_arguments(x, boxes, size, scale)
    return _triton.roi_align(x, rois, ph, pw, scale_t, sr, aligned)


def _pool(x, boxes, size, scale):
    _, rois, ph, pw, scale_t = roi_arguments(x, boxes, size, scale)
    return _triton.roi_pool(x, rois, ph, pw, scale_t)


def _align_both(x, boxes, size, scale, sr, aligned, seed=1):
    """Forward and input gradient of the kernels, and the reference's, for one random grad_output."""
    xg = x.detach().clone().requires_grad_(True)
    out = _align(xg, boxes, size, scale, sr, aligned)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    (grad,) = torch.autograd.grad(out, xg, g)
    ref = reference.roi_align(x, boxes, size, scale, sr, aligned)
    ref_grad = reference.roi_align_backward(x, boxes, g, scale, sr, aligned)
    return out, grad, ref, ref_grad


@child
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
def test_roi_align_bit_exact(sampling_ratio, aligned):
    out, grad, ref, ref_grad = _align_both(X, BOXES, (3, 4), SCALE, sampling_ratio, aligned)
    assert out.dtype == ref.dtype and torch.equal(out, ref)
    assert torch.equal(grad, ref_grad)


@child
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_roi_align_other_dtypes_bit_exact(dtype):
    # Half types are computed in float32 and rounded once at the end, like the reference.
    out, grad, ref, ref_grad = _align_both(X.to(dtype), BOXES, 2, SCALE, 2, True)
    assert out.dtype == dtype and grad.dtype == dtype
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


@child
def test_roi_align_several_blocks_and_strided_input():
    # More channels than BLOCK_C and more bins than BLOCK_P; a non-contiguous (permuted) input.
    x = torch.randn(1, 11, 70, 6, generator=torch.Generator().manual_seed(3)).permute(0, 2, 3, 1)  # [1, 70, 11, 6]
    boxes = torch.tensor([[0, 0.5, 1.0, 5.0, 10.0], [0, 2.0, 0.0, 6.0, 4.0]])
    assert _triton.BLOCK_C < 70 and _triton.BLOCK_P < 6 * 7
    out, grad, ref, ref_grad = _align_both(x, boxes, (6, 7), 1.0, 2, False)
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


@child
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("box", [[1, 0.7924, -7.4332, 15.5152, 9.8913], [0, 0.5, 1.0, 30.0, 4.0]],
                         ids=["taller", "wider"])
def test_roi_align_adaptive_grids_of_unequal_sides(box, aligned):
    # Adaptive grids taller than wide, and wider than tall: the backward sizes its tap list by
    # the larger side (found by hypothesis when the height was misread).
    out, grad, ref, ref_grad = _align_both(X, torch.tensor([box]), (2, 3), 1.0, -1, aligned)
    assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


@child
def test_roi_align_backward_is_deterministic():
    a = _align_both(X, BOXES, 3, SCALE, 2, True)[1]
    b = _align_both(X, BOXES, 3, SCALE, 2, True)[1]
    assert torch.equal(a, b)


@child
def test_no_boxes():
    xg = X.clone().requires_grad_(True)
    out = _align(xg, torch.zeros(0, 5), 3, 1.0, 2, True)
    assert out.shape == (0, 3, 3, 3)
    assert torch.equal(torch.autograd.grad(out.sum(), xg)[0], torch.zeros_like(X))
    out = _pool(xg, torch.zeros(0, 5), 3, 1.0)
    assert out.shape == (0, 3, 3, 3)
    assert torch.equal(torch.autograd.grad(out.sum(), xg)[0], torch.zeros_like(X))


def _pool_input(dtype=torch.float32):
    # Small integers make ties (the first maximum must win); NaN and -inf must never win, and
    # a bin holding only them keeps -FLT_MAX with no gradient.
    x = torch.randint(-3, 4, (2, 3, 9, 11), generator=torch.Generator().manual_seed(4)).to(dtype)
    x[0, 0, 2:4, 1:3] = float("nan")
    x[0, 1, 3, 2] = float("-inf")
    x[1, 2, 0:2, 0:2] = float("-inf")
    return x


@child
@pytest.mark.parametrize(("dtype", "size"), [(torch.float32, (3, 4)), (torch.float32, (7, 5)),
                                           (torch.float64, (3, 4)), (torch.float16, (7, 5))], ids=str)
def test_roi_pool_bit_exact(dtype, size):
    x = _pool_input(dtype)
    boxes = torch.cat([BOXES, torch.tensor([[1, 0.0, 0.0, 1.0, 1.0], [0, 2.0, 3.0, 4.0, 5.0]])])
    xg = x.clone().requires_grad_(True)
    out = _pool(xg, boxes, size, SCALE)
    ref = reference.roi_pool(x, boxes, size, SCALE)
    assert out.dtype == dtype and torch.equal(out, ref)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    grad = torch.autograd.grad(out, xg, g)[0]
    assert torch.equal(grad, reference.roi_pool_backward(x, boxes, g, SCALE))
    assert torch.equal(grad, torch.autograd.grad(_pool(xg, boxes, size, SCALE), xg, g)[0])  # deterministic


@child
def test_roi_pool_without_graph_saves_no_argmax():
    x = _pool_input()
    with torch.no_grad():
        out = _pool(x.clone().requires_grad_(True), BOXES, 3, SCALE)
    assert torch.equal(out, reference.roi_pool(x, BOXES, 3, SCALE))


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:

    @child
    @settings(max_examples=8, deadline=None)
    @given(seed=st.integers(0, 2**16), sr=st.sampled_from([-1, 1, 2]), aligned=st.booleans(),
           scale=st.sampled_from([1.0, 0.5, 0.25, 1 / 3]))
    def test_roi_align_random_boxes_bit_exact(seed, sr, aligned, scale):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 2, 7, 8, generator=g)
        xy = torch.rand(4, 2, generator=g) * 40 - 8
        wh = torch.rand(4, 2, generator=g) * 20
        boxes = torch.cat([torch.randint(0, 2, (4, 1), generator=g).float(), xy, xy + wh], 1)
        out, grad, ref, ref_grad = _align_both(x, boxes, (2, 3), scale, sr, aligned, seed)
        assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


@pytest.mark.parametrize("sampling_ratio", [1, 2])
def test_plan_never_reads_the_device(monkeypatch, sampling_ratio):
    # On meta any host read (.item(), int(t), .tolist()) raises. With the launches replaced, the
    # host-side plan (allocations, sort, searchsorted) of a fixed sampling_ratio runs there:
    # nothing in it waits for the device.
    monkeypatch.setattr(_triton, "_launch", lambda *args, **kwargs: None)
    x = torch.randn(2, 4, 6, 7, device="meta", requires_grad=True)
    rois = torch.empty(3, 5, device="meta")
    scale = torch.tensor(0.5, device="meta")
    out = _triton.roi_align(x, rois, 2, 3, scale, sampling_ratio, True)
    assert out.shape == (3, 4, 2, 3)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.shape == x.shape and grad.device.type == "meta"
    assert _triton.roi_pool(x, rois, 2, 3, scale).shape == (3, 4, 2, 3)  # the pool forward reads nothing
    # Documented host reads: the adaptive grid, and the largest pool bin, size their backward's lists.
    for out in (_triton.roi_align(x, rois, 2, 3, scale, -1, True), _triton.roi_pool(x, rois, 2, 3, scale)):
        with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
            torch.autograd.grad(out.sum(), x)


#: Integer pointers of the kernels (every other ``*_ptr`` holds floats of the compute dtype).
INT_POINTERS = {"cell_ptr": "*i32", "arg_ptr": "*i32", "seg_ptr": "*i64", "order_ptr": "*i64"}
KERNELS = [  # (kernel, constexprs, pointer types): every kernel, in the variants that change its code
    *[("_align_fwd_kernel", {"SR": sr, "ALIGNED": al, "BP": 32, "BC": 64}, {}) for sr in (0, 2) for al in (False, True)],
    ("_align_taps_kernel", {"SR": 0, "ALIGNED": False, "BP": 32}, {}),
    ("_gather_bwd_kernel", {"POOL": False, "BS": 32, "BC": 64}, {}),
    ("_gather_bwd_kernel", {"POOL": True, "BS": 32, "BC": 64}, {"w_ptr": "*i32", "count_ptr": "*i32"}),
    ("_pool_fwd_kernel", {"TRACK": True, "BP": 32, "BC": 64}, {}),
    ("_pool_cells_kernel", {"BP": 32}, {}),
]


@pytest.mark.skipif(CHILD, reason="compiles the real kernels, not the interpreted ones")
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_kernels_compile_for_hopper_without_fma_or_approximate_division(dtype):
    # No GPU needed: Triton compiles for a named target with the ptxas it ships. The PTX must
    # hold no fused multiply-add (one rounding where the reference has two) and only correctly
    # rounded float division (div.rn), else results may differ from the reference's.
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    for name, constexprs, pointers in KERNELS:
        kernel = getattr(_triton, name)
        types = {**INT_POINTERS, **pointers}
        signature = {p.name: "constexpr" if p.is_constexpr else types.get(p.name, f"*{dtype}")
                     if p.name.endswith("_ptr") else "i32" for p in kernel.params}
        compiled = triton.compile(ASTSource(kernel, signature, constexprs=constexprs),
                                  target=GPUTarget("cuda", 90, 32),
                                  options={"enable_fp_fusion": False, "num_warps": 4})
        ptx = compiled.asm["ptx"]
        assert not re.search(r"\b(fma|mad)\.[a-z]*\.?f(32|64)", ptx), name
        float_divisions = set(re.findall(r"\bdiv\.[a-z.]*f(?:32|64)", ptx))
        assert float_divisions <= {f"div.rn.f{dtype[2:]}"}, (name, float_divisions)
        assert not re.search(r"\b(rcp|div)\.(approx|full)", ptx), name


def test_switch(monkeypatch):
    monkeypatch.setenv("ROIVIZ_TRITON", "0")
    assert not _triton.available()
    monkeypatch.setenv("ROIVIZ_TRITON", "1")
    assert _triton.available()
