"""Bad input gets a clear ValueError/TypeError naming the argument, for every op and strategy."""

from __future__ import annotations

import math

import pytest
import torch

import roiviz

X = torch.zeros(2, 3, 8, 8)
GOOD = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
OPS = {
    "roi_align": roiviz.roi_align,
    "roi_pool": roiviz.roi_pool,
    **{f"strategy {name}": fn for name, fn in roiviz.STRATEGIES.items()},
}


def _box(*row):
    return torch.tensor([row], dtype=torch.float32)


BAD_CALLS = [
    # (input, boxes, output_size, spatial_scale, error, message)
    ("not a tensor", X.numpy(), GOOD, 2, 1.0, TypeError, r"input must be a torch.Tensor"),
    ("3-D input", torch.zeros(3, 8, 8), GOOD, 2, 1.0, ValueError, r"input must be a 4-D tensor.*\(3, 8, 8\)"),
    ("int input", torch.zeros(1, 3, 8, 8, dtype=torch.int64), GOOD, 2, 1.0, TypeError, r"input must be a floating-point tensor.*int64"),
    ("boxes [K, 4]", X, torch.zeros(1, 4), 2, 1.0, ValueError, r"boxes must have shape \[K, 5\].*\(1, 4\)"),
    ("boxes 1-D", X, torch.zeros(5), 2, 1.0, ValueError, r"boxes must have shape \[K, 5\]"),
    ("int boxes", X, torch.zeros(1, 5, dtype=torch.int64), 2, 1.0, TypeError, r"boxes must be a floating-point tensor"),
    ("boxes of wrong type", X, [[0, 1, 1, 2, 2]], 2, 1.0, ValueError, r"boxes as a list must hold one Tensor\[L, 4\] per image"),
    ("boxes a dict", X, {"a": GOOD}, 2, 1.0, TypeError, r"boxes must be a Tensor\[K, 5\] or a list"),
    ("NaN box", X, _box(0, 1.0, math.nan, 2.0, 3.0), 2, 1.0, ValueError, r"box 0 .* NaN or infinite"),
    ("inf box", X, _box(0, 1.0, 1.0, math.inf, 3.0), 2, 1.0, ValueError, r"NaN or infinite"),
    ("x2 < x1", X, torch.tensor([[0, 1.0, 1.0, 2.0, 2.0], [1, 3.0, 1.0, 2.0, 4.0]]), 2, 1.0, ValueError, r"box 1 .*x2 < x1 or y2 < y1"),
    ("y2 < y1", X, _box(0, 1.0, 4.0, 2.0, 3.0), 2, 1.0, ValueError, r"x2 < x1 or y2 < y1"),
    ("batch index 2 of N=2", X, _box(2, 1.0, 1.0, 2.0, 2.0), 2, 1.0, ValueError, r"batch index 2 outside \[0, 2\)"),
    ("negative batch index", X, _box(-1, 1.0, 1.0, 2.0, 2.0), 2, 1.0, ValueError, r"batch index -1 outside"),
    ("fractional batch index", X, _box(0.5, 1.0, 1.0, 2.0, 2.0), 2, 1.0, ValueError, r"batch index that is not a whole number"),
    ("list of wrong length", X, [torch.zeros(0, 4)], 2, 1.0, ValueError, r"N=2 images, got 1 tensors"),
    ("list item [L, 5]", X, [torch.zeros(1, 5), torch.zeros(0, 4)], 2, 1.0, ValueError, r"boxes\[0\] must have shape \[L, 4\]"),
    ("output negative", X, GOOD, (2, -1), 1.0, ValueError, r"output_size must be (positive|non-negative)"),
    ("output float", X, GOOD, 2.5, 1.0, TypeError, r"output_size must be an int or a pair"),
    ("output triple", X, GOOD, (1, 2, 3), 1.0, ValueError, r"output_size must be an int or a pair.*length 3"),
    ("output of floats", X, GOOD, (2.0, 2.0), 1.0, TypeError, r"output_size must contain ints"),
    ("sparse input", X.to_sparse(), GOOD, 2, 1.0, TypeError, r"input must be a dense \(strided\) tensor"),
    ("sparse boxes", X, GOOD.to_sparse(), 2, 1.0, TypeError, r"boxes must be a dense \(strided\) tensor"),
    ("no rows", torch.zeros(2, 3, 0, 8), GOOD, 2, 1.0, ValueError, r"input must have at least one row and one column"),
    ("no columns", torch.zeros(2, 3, 8, 0), GOOD, 2, 1.0, ValueError, r"input must have at least one row and one column"),
    ("scale 0", X, GOOD, 2, 0.0, ValueError, r"spatial_scale must be positive and finite"),
    ("scale negative", X, GOOD, 2, -0.5, ValueError, r"spatial_scale must be positive and finite"),
    ("scale inf", X, GOOD, 2, math.inf, ValueError, r"spatial_scale must be positive and finite"),
    ("scale str", X, GOOD, 2, "1/16", TypeError, r"spatial_scale must be a positive real number"),
]


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
@pytest.mark.parametrize(("input", "boxes", "output_size", "scale", "error", "message"),
                         [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_refused_clearly(op, input, boxes, output_size, scale, error, message):
    with pytest.raises(error, match=message):
        OPS[op](input, boxes, output_size, scale)


@pytest.mark.parametrize("op", [n for n in OPS if n not in ("roi_align", "roi_pool", "strategy roi_align", "strategy roi_pool")])
def test_crop_strategies_need_at_least_one_bin(op):
    with pytest.raises(ValueError, match=r"output_size must be positive"):
        OPS[op](X, GOOD, (0, 2), 1.0)


@pytest.mark.parametrize(("sampling_ratio", "error", "message"), [
    (1.5, TypeError, r"sampling_ratio must be an int"),
    (True, TypeError, r"sampling_ratio must be an int"),
])
def test_bad_sampling_ratio(sampling_ratio, error, message):
    with pytest.raises(error, match=message):
        roiviz.roi_align(X, GOOD, 2, 1.0, sampling_ratio)


def test_bad_aligned():
    with pytest.raises(TypeError, match="aligned must be True or False"):
        roiviz.roi_align(X, GOOD, 2, 1.0, 2, "yes")


def test_adaptive_sampling_with_reversed_box_is_refused():
    # torchvision raises a C++ vector error here; roiviz names the box.
    with pytest.raises(ValueError, match=r"box 0 .*x2 < x1"):
        roiviz.roi_align(X, _box(0, 5.0, 1.0, 1.0, 4.0), 2, 1.0, -1)


def test_out_of_range_batch_index_is_refused_not_a_crash():
    # torchvision reads out of bounds (a segfault) here; roiviz refuses.
    with pytest.raises(ValueError, match=r"batch index 7 outside \[0, 2\)"):
        roiviz.roi_pool(X, _box(7, 1.0, 1.0, 2.0, 2.0), 2)


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
def test_boxes_on_another_device_are_refused(op):
    meta_boxes = GOOD.to("meta")
    with pytest.raises(ValueError, match=r"boxes is on meta but input is on cpu"):
        OPS[op](X, meta_boxes, 2, 1.0)


def test_module_arguments_are_checked():
    with pytest.raises(ValueError, match="output_size must be non-negative"):
        roiviz.RoIAlign(-1)
    with pytest.raises(ValueError, match="spatial_scale must be positive"):
        roiviz.RoIPool(2, -1.0)


def test_trusted_boxes_skips_value_checks_only():
    with roiviz.trusted_boxes():
        roiviz.roi_pool(X, _box(0, 1.0, 1.0, 2.0, 2.0), 2)  # fine
        with pytest.raises(ValueError, match="boxes must have shape"):
            roiviz.roi_pool(X, torch.zeros(1, 4), 2)  # shape is still checked
    with pytest.raises(ValueError, match="NaN"):  # restored afterwards
        roiviz.roi_pool(X, _box(0, math.nan, 1.0, 2.0, 2.0), 2)


def test_pad_to_max_and_crop_rois_check_their_input():
    with pytest.raises(ValueError, match="x2 < x1"):
        roiviz.pad_to_max(X, _box(0, 3.0, 1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="spatial_scale must be positive"):
        roiviz.crop_rois(X, GOOD, 0.0)


# ------------------------------------------------------------------ settings are per thread / context


def test_trusted_boxes_in_one_thread_leaves_the_checks_on_in_another():
    """The reproducer: ``with trusted_boxes()`` in one thread turned the checks off everywhere."""
    import threading

    inside, checked = threading.Barrier(2), threading.Barrier(2)
    errors: dict[str, BaseException | None] = {}

    def trusting():
        with roiviz.trusted_boxes():
            inside.wait(timeout=30)  # the other thread runs its checks while this one trusts
            checked.wait(timeout=30)
            roiviz.roi_pool(X, _box(0, 1.0, 1.0, 2.0, 2.0), 2)  # still fine here

    def checking():
        inside.wait(timeout=30)
        try:
            for op in (roiviz.roi_align, roiviz.roi_pool, roiviz.crop):
                for bad, message in ((_box(0, 3.0, 1.0, 1.0, 2.0), r"x2 < x1"),
                                     (_box(5, 1.0, 1.0, 2.0, 2.0), r"batch index 5 outside \[0, 2\)")):
                    with pytest.raises(ValueError, match=message):
                        op(X, bad, 2)
            errors["checking"] = None
        except BaseException as e:  # reported below, in the main thread
            errors["checking"] = e
        finally:
            checked.wait(timeout=30)

    threads = [threading.Thread(target=trusting), threading.Thread(target=checking)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert "checking" in errors
    if errors["checking"] is not None:
        raise errors["checking"]


def test_trusted_boxes_does_not_reach_a_thread_started_inside_it():
    import threading

    seen = []
    with roiviz.trusted_boxes():
        t = threading.Thread(target=lambda: seen.append(roiviz._checks.value_checks_enabled(X)))
        t.start()
        t.join()
        assert not roiviz._checks.value_checks_enabled(X)
    assert seen == [True]
    assert roiviz._checks.value_checks_enabled(X)


def test_trusted_boxes_is_restored_after_an_error():
    with pytest.raises(RuntimeError), roiviz.trusted_boxes():
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="x2 < x1"):
        roiviz.roi_align(X, _box(0, 3.0, 1.0, 1.0, 2.0), 2)


# ------------------------------------------------------------------ what roiviz refuses on purpose, clearly


def test_adaptive_grid_beyond_a_c_int_is_refused():
    huge = _box(0, 0.0, 0.0, 1e30, 1e30)  # a valid box: finite, ordered
    for sr in (-1, 0):
        with pytest.raises(ValueError, match=r"sampling_ratio <= 0 \(adaptive\) gives box 0 a grid of .* samples per bin"):
            roiviz.roi_align(X, huge, 2, 1.0, sr)
    assert roiviz.roi_align(X, huge, 2, 1.0, 2).shape == (1, 3, 2, 2)  # a fixed grid is fine
    assert roiviz.roi_pool(X, huge, 2).shape == (1, 3, 2, 2)


@pytest.mark.parametrize("op", [roiviz.roi_align, roiviz.roi_pool, roiviz.adaptive_max])
@pytest.mark.parametrize("transform", ["grad", "vmap", "jacrev"])
def test_torch_func_transforms_are_refused_clearly(op, transform):
    def f(x):
        return op(x, GOOD, 2).sum() if transform != "vmap" else op(x, GOOD, 2)

    x = torch.randn(2, 3, 8, 8)
    call = {"grad": lambda: torch.func.grad(f)(x), "jacrev": lambda: torch.func.jacrev(f)(x),
            "vmap": lambda: torch.vmap(f)(x[None].expand(2, -1, -1, -1, -1))}[transform]
    with pytest.raises(TypeError, match=r"does not support torch.func transforms .*: input is a tensor without storage"):
        call()


@pytest.mark.parametrize("op", [roiviz.roi_align, roiviz.roi_pool])
@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.*:DeprecationWarning")
def test_jit_trace_is_refused_clearly(op):
    with pytest.raises(TypeError, match=r"cannot be recorded by torch.jit.trace"):
        torch.jit.trace(lambda x, b: op(x, b, 2), (torch.randn(2, 3, 8, 8), GOOD))
