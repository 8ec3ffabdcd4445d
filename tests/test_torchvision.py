"""roiviz against torchvision 0.29: stored golden results, and live comparisons when possible.

(a) Fixture tests (always run): ``tests/fixtures/torchvision_ops.pt`` holds torchvision's
    ``roi_align`` / ``roi_pool`` forward outputs and input gradients for 184 small cases
    (written by ``scripts/make_fixtures.py`` in an environment with torchvision). roiviz's
    forward and input gradient must match them bit for bit (its CPU kernels do torchvision's
    float operations in torchvision's order), and so must the slow :mod:`roiviz.reference`
    (forward, and ``roi_align_backward``).
(b) Live tests (only when ``import torchvision`` works): hypothesis draws random maps, scales,
    output sizes and boxes inside, across and outside the map, tiny and zero-area, and compares
    roiviz with torchvision in the same process. Run them with::

        PYTHONPATH=$PWD /work/tv-venv/bin/python -m pytest tests/test_torchvision.py -p no:cacheprovider

The summary tests print the largest difference and the number of bit-exact cases (``-s``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import roiviz
from roiviz import reference

try:  # torchvision is a reference only; the live tests need it, the fixture tests do not
    import torchvision.ops as tv_ops
except ImportError:
    tv_ops = None
needs_torchvision = pytest.mark.skipif(tv_ops is None, reason="torchvision is not installed")

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_ops.pt"
DATA = torch.load(FIXTURE, weights_only=True)
CASES: list[dict] = DATA["cases"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def grad_weight(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """Copy of ``scripts/make_fixtures.py:grad_weight``: loss weights from integer arithmetic."""
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 2654435761 + 12345) % 4294967296
    return (((h >> 12) % 8192).to(torch.float64) / 4096 - 1).reshape(tuple(shape)).to(dtype)


def _call(op: str, impl, x: torch.Tensor, boxes, case: dict) -> torch.Tensor:
    if op == "roi_align":
        return impl.roi_align(x, boxes, tuple(case["output_size"]), spatial_scale=case["spatial_scale"],
                              sampling_ratio=case["sampling_ratio"], aligned=case["aligned"])
    return impl.roi_pool(x, boxes, tuple(case["output_size"]), spatial_scale=case["spatial_scale"])


def _input(case: dict) -> torch.Tensor:
    # detach() of the stored tensor keeps its strides: the non-contiguous cases stay so.
    return DATA["inputs"][case["input"]].detach().requires_grad_(True)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def run_roiviz(case: dict) -> tuple[float, float, bool, bool]:
    """(max |forward diff|, max |gradient diff|, forward bit-exact, gradient bit-exact)."""
    x = _input(case)
    out = _call(case["op"], roiviz, x, case["boxes"], case)
    assert out.dtype == x.dtype and out.shape == case["out"].shape, case["name"]
    (grad,) = torch.autograd.grad((out * grad_weight(out.shape, out.dtype)).sum(), x)
    return (_max_diff(out.detach(), case["out"]), _max_diff(grad, case["grad_input"]),
            torch.equal(out.detach(), case["out"]), torch.equal(grad, case["grad_input"]))


def _case_id(case: dict) -> str:
    return case["name"].replace(" ", ",")


# --------------------------------------------------------------------------------------------
# (a) fixtures
# --------------------------------------------------------------------------------------------


def test_fixture_file_is_what_the_script_writes() -> None:
    meta = DATA["meta"]
    assert meta["format"] == 1 and meta["n_cases"] == len(CASES) > 150
    assert meta["torchvision"].startswith("0.29"), meta
    assert FIXTURE.stat().st_size < 2 * 1024 * 1024  # small enough to commit
    ops = {(c["op"], c["dtype"]) for c in CASES}
    assert ops == {(op, d) for op in ("roi_align", "roi_pool") for d in DTYPES}
    layouts = {c["input"].rsplit("_", 1)[0] for c in CASES}
    assert {"transposed", "channels_last", "sliced", "ties", "d2l"} <= layouts
    assert all(not DATA["inputs"][f"{lay}_float32"].is_contiguous() for lay in ("transposed", "sliced"))
    assert any(isinstance(c["boxes"], list) for c in CASES)
    tags = {t for c in CASES for t in c["roi_tags"]}
    assert {"inside", "across_border", "outside", "tiny", "zero_area", "half_pixel", "many_random"} <= tags


def test_fixture_d2l_example() -> None:
    """The stored torchvision answer to the d2l example is the book's answer, and roiviz's."""
    expected = torch.tensor([[[5.0, 6.0], [9.0, 10.0]], [[9.0, 11.0], [13.0, 15.0]]])
    d2l = [c for c in CASES if c["op"] == "roi_pool" and "d2l" in c["tags"]]
    assert len(d2l) == 4
    for case in d2l:
        torch.testing.assert_close(case["out"][:, 0], expected.to(case["out"].dtype), rtol=0, atol=0)
        x = DATA["inputs"][case["input"]]
        torch.testing.assert_close(roiviz.roi_pool(x, case["boxes"], 2, 0.1)[:, 0], expected.to(x.dtype),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fixture_roiviz_matches_torchvision(case: dict) -> None:
    fwd, grad, fwd_exact, grad_exact = run_roiviz(case)
    assert fwd_exact, f"{case['name']}: forward differs by {fwd:.3g} (should be bit-exact)"
    assert grad_exact, f"{case['name']}: input gradient differs by {grad:.3g} (should be bit-exact)"


@pytest.mark.parametrize("case", [c for c in CASES if c["op"] == "roi_align"], ids=_case_id)
def test_fixture_reference_backward_is_bit_exact(case: dict) -> None:
    x = DATA["inputs"][case["input"]]
    weight = grad_weight(case["out"].shape, case["out"].dtype)
    grad = reference.roi_align_backward(x, case["boxes"], weight, case["spatial_scale"], case["sampling_ratio"],
                                        case["aligned"])
    assert torch.equal(grad, case["grad_input"]), _max_diff(grad, case["grad_input"])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fixture_reference_is_bit_exact(case: dict) -> None:
    x = DATA["inputs"][case["input"]]
    out = _call(case["op"], reference, x, case["boxes"], case)
    if not torch.equal(out, case["out"]):
        diff = _max_diff(out, case["out"])
        bad = sorted({case["roi_tags"][k] for k in
                      torch.nonzero((out != case["out"]).flatten(1).any(1)).flatten().tolist()})
        pytest.fail(f"{case['name']}: reference differs from torchvision by {diff:.3g} on ROIs of {bad}")


def test_fixture_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Largest difference over every stored case, and how many are bit-exact (printed)."""
    worst: dict[str, tuple[float, str]] = {}
    exact = {(d, what): 0 for d in DTYPES for what in ("forward", "gradient")}
    total = dict.fromkeys(DTYPES, 0)
    for case in CASES:
        fwd, grad, fwd_exact, grad_exact = run_roiviz(case)
        d = case["dtype"]
        total[d] += 1
        exact[d, "forward"] += fwd_exact
        exact[d, "gradient"] += grad_exact
        for key, val in ((f"{d} forward", fwd), (f"{d} gradient", grad)):
            if key not in worst or val > worst[key][0]:
                worst[key] = (val, case["name"])
    with capsys.disabled():
        print(f"\nroiviz vs torchvision fixtures ({len(CASES)} cases, torchvision {DATA['meta']['torchvision']}):")
        for d in DTYPES:
            print(f"  {d}: bit-exact forward in {exact[d, 'forward']}/{total[d]} cases, "
                  f"gradient in {exact[d, 'gradient']}/{total[d]}")
        for key, (val, name) in sorted(worst.items()):
            print(f"  max |diff| {key:<17} {val:.3g}  ({name})")
    for key, (val, name) in worst.items():
        assert val == 0.0, f"{key}: {val:.3g} on {name}"


# --------------------------------------------------------------------------------------------
# (b) live comparisons with torchvision (skipped when it is not installed)
# --------------------------------------------------------------------------------------------


@st.composite
def live_cases(draw) -> dict:
    """A random map, op and parameters, and boxes inside, across and outside the map."""
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 1 / 16, 0.1, 1 / 3]))
    k = draw(st.integers(1, 12))
    rois = []
    for _ in range(k):
        kind = draw(st.sampled_from(["inside", "across", "outside", "tiny", "zero", "half"]))
        if kind == "half":  # x * scale on k + 0.5: roi_pool's rounding ties
            xs = sorted(draw(st.integers(-2, w + 1)) + 0.5 for _ in range(2))
            ys = sorted(draw(st.integers(-2, h + 1)) + 0.5 for _ in range(2))
        else:
            lo_x, hi_x = {"inside": (0, w - 1), "across": (-3, w + 1), "outside": (w + 1, w + 4)}.get(kind, (-1, w))
            lo_y, hi_y = {"inside": (0, h - 1), "across": (-3, h + 1), "outside": (-4, -1.5)}.get(kind, (-1, h))
            x1 = draw(st.floats(lo_x, max(lo_x, hi_x), allow_nan=False))
            y1 = draw(st.floats(lo_y, max(lo_y, hi_y), allow_nan=False))
            size = {"tiny": (0.0, 0.5), "zero": (0.0, 0.0)}.get(kind, (0.0, max(w, h) + 3.0))
            xs = [x1, x1 + draw(st.floats(*size))]
            ys = [y1, y1 + draw(st.floats(*size))]
        rois.append([draw(st.integers(0, n - 1)), xs[0] / scale, ys[0] / scale, xs[1] / scale, ys[1] / scale])
    return {
        "shape": (n, c, h, w), "rois": rois, "scale": scale,
        "op": draw(st.sampled_from(["roi_align", "roi_pool"])),
        "output_size": [draw(st.integers(1, 5)), draw(st.integers(1, 5))],
        "sampling_ratio": draw(st.sampled_from([-1, 1, 2, 3])), "aligned": draw(st.booleans()),
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "list_format": draw(st.booleans()), "seed": draw(st.integers(0, 2**31 - 1)),
        "permute": draw(st.booleans()),
    }


LIVE_STATS: dict[str, list[float]] = {"float32": [], "float64": []}


@needs_torchvision
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=live_cases())
def test_live_random_cases_match_torchvision(spec: dict) -> None:
    dtype = DTYPES[spec["dtype"]]
    g = torch.Generator().manual_seed(spec["seed"])
    n, c, h, w = spec["shape"]
    if spec["permute"]:  # non-contiguous: a transposed view
        base = torch.randn(n, c, w, h, generator=g, dtype=dtype).transpose(2, 3)
    else:
        base = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    rois = torch.tensor(spec["rois"], dtype=dtype)
    rois[:, 3:] = torch.maximum(rois[:, 3:], rois[:, 1:3])  # x2 >= x1 even after the division
    boxes = [rois[rois[:, 0] == b, 1:] for b in range(n)] if spec["list_format"] else rois
    case = {"output_size": spec["output_size"], "spatial_scale": spec["scale"],
            "sampling_ratio": spec["sampling_ratio"], "aligned": spec["aligned"]}
    outs, grads = [], []
    for impl in (tv_ops, roiviz):
        x = base.detach().requires_grad_(True)
        out = _call(spec["op"], impl, x, boxes, case)
        (grad,) = torch.autograd.grad((out * grad_weight(out.shape, dtype)).sum(), x)
        outs.append(out.detach())
        grads.append(grad)
    fwd, grad = _max_diff(outs[1], outs[0]), _max_diff(grads[1], grads[0])
    LIVE_STATS[spec["dtype"]].append(max(fwd, grad))
    assert torch.equal(outs[1], outs[0]), f"forward differs by {fwd:.3g}: {spec}"
    assert torch.equal(grads[1], grads[0]), f"input gradient differs by {grad:.3g}: {spec}"


@needs_torchvision
@pytest.mark.parametrize("workload", ["W1", "W3"])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_live_benchmark_workloads_gradient_is_bit_exact(workload: str, sampling_ratio: int) -> None:
    """At detector scale (1024 or 200 boxes, 256 channels, hundreds of terms per input cell) the
    float32 forward and input gradient are still torchvision's, bit for bit."""
    from roiviz.bench import WORKLOADS, make_boxes, make_input

    wl = WORKLOADS[workload]
    base, boxes = make_input(wl), make_boxes(wl)
    outs, grads = [], []
    for impl in (tv_ops, roiviz):
        x = base.detach().requires_grad_(True)
        out = impl.roi_align(x, boxes, wl.output_size, wl.spatial_scale, sampling_ratio, True)
        (grad,) = torch.autograd.grad((out * grad_weight(out.shape, out.dtype)).sum(), x)
        outs.append(out.detach())
        grads.append(grad)
    assert torch.equal(outs[1], outs[0]), _max_diff(outs[1], outs[0])
    assert torch.equal(grads[1], grads[0]), _max_diff(grads[1], grads[0])


@needs_torchvision
@pytest.mark.parametrize("workload", ["W1", "W3"])
def test_live_benchmark_workloads_roi_pool_is_bit_exact(workload: str) -> None:
    from roiviz.bench import WORKLOADS, make_boxes, make_input

    wl = WORKLOADS[workload]
    base, boxes = make_input(wl), make_boxes(wl)
    outs, grads = [], []
    for impl in (tv_ops, roiviz):
        x = base.detach().requires_grad_(True)
        out = impl.roi_pool(x, boxes, wl.output_size, wl.spatial_scale)
        (grad,) = torch.autograd.grad((out * grad_weight(out.shape, out.dtype)).sum(), x)
        outs.append(out.detach())
        grads.append(grad)
    assert torch.equal(outs[1], outs[0]) and torch.equal(grads[1], grads[0])


@needs_torchvision
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_live_nan_and_inf_in_the_map_give_torchvision_outputs(dtype: torch.dtype) -> None:
    """roi_align adds 0 * input[0] for samples outside the map, as torchvision does: a NaN or
    inf in the first cell reaches exactly the outputs it reaches there."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 11, generator=g, dtype=dtype)
    x[0, :, 0, 0] = float("nan")
    x[1, 1, 0, 0] = float("inf")
    x[0, 2, 5, 5] = float("-inf")
    boxes = torch.tensor([[0, -6.0, -6.0, 2.0, 2.0], [1, -3.0, -2.0, 4.0, 12.0], [0, 3.0, 3.0, 8.0, 8.0],
                          [1, 2.0, 2.0, 30.0, 30.0]], dtype=dtype)
    for aligned in (True, False):
        for sr in (-1, 2):
            a = roiviz.roi_align(x, boxes, 3, 1.0, sr, aligned)
            b = tv_ops.roi_align(x, boxes, 3, 1.0, sr, aligned)
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    a, b = roiviz.roi_pool(x, boxes, 3, 1.0), tv_ops.roi_pool(x, boxes, 3, 1.0)
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


@needs_torchvision
def test_live_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the live comparison saw (runs after it in file order)."""
    with capsys.disabled():
        for d, diffs in LIVE_STATS.items():
            if diffs:
                print(f"\nlive {d}: {len(diffs)} random cases, max |diff| {max(diffs):.3g}, "
                      f"{sum(v == 0 for v in diffs)} bit-exact")


@needs_torchvision
def test_live_fixture_script_reproduces_the_file() -> None:
    """With the same torch/torchvision, scripts/make_fixtures.py rewrites the file byte for byte."""
    import torchvision

    meta = DATA["meta"]
    if (str(torch.__version__), str(torchvision.__version__)) != (meta["torch"], meta["torchvision"]):
        pytest.skip(f"fixtures were made with torch {meta['torch']} / torchvision {meta['torchvision']}")
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.serialise(module.build()) == FIXTURE.read_bytes()
