"""Box refinement through an ROI op: prroi_pool climbs, roi_align (no box gradient) stays."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

import roiviz
from roiviz.images import FeatureExtractor, sample_image
from roiviz.refine import (
    REFINE_OPS,
    box_iou,
    compare_refinement,
    plot_refinement,
    refine_box,
    roi_align_sampled,
)

FACE, START = (36.0, 16.0, 92.0, 80.0), (26.0, 26.0, 78.0, 94.0)


@pytest.fixture(scope="module")
def photo_features() -> torch.Tensor:
    return FeatureExtractor(stride=8)(sample_image("grace_hopper", 128))


def _flat_object() -> torch.Tensor:
    x = torch.zeros(1, 1, 32, 32)
    x[..., 10:22, 8:24] = 1.0
    return x


def test_box_iou():
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_roi_align_sampled_is_roi_align_with_a_box_gradient():
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    coords = torch.tensor([[0.5, 1.0, 7.3, 8.0], [-1.5, 2.0, 12.0, 6.5]], dtype=torch.float64, requires_grad=True)
    batch = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    for aligned in (True, False):
        out = roi_align_sampled(x, torch.cat([batch, coords], 1), (3, 2), 0.9, 2, aligned)
        torch.testing.assert_close(out, roiviz.roi_align(x, torch.cat([batch, coords.detach()], 1), (3, 2), 0.9, 2, aligned))
    (grad,) = torch.autograd.grad(out.sum(), coords)
    assert grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_sampled(x, torch.cat([batch, coords], 1), 2, 1.0, -1)


def test_photo_prroi_pool_refines_and_roi_align_stalls(photo_features):
    runs = compare_refinement(photo_features, START, FACE, steps=25, step_size=4.0, spatial_scale=1 / 8)
    pr, align, sampled = runs["prroi_pool"], runs["roi_align"], runs["roi_align, samples differentiated"]
    assert pr.iou[0] == align.iou[0] == sampled.iou[0] == pytest.approx(box_iou(START, FACE))
    assert pr.iou[0] < 0.5 and pr.iou[-1] > 0.95 and pr.zero_steps == 0 and pr.has_gradient
    # roi_align gives the box no gradient: not one step, the box never moves.
    assert not align.has_gradient and not align.moved and align.zero_steps == 25
    assert align.iou == [align.iou[0]] * 26
    # Differentiating the samples works on this smooth map (its gradient is never zero here).
    assert sampled.iou[-1] > 0.95 and sampled.zero_steps == 0
    # The score rises while the box converges.
    assert pr.scores[-1] > pr.scores[0]


def test_flat_map_only_the_integral_sees_the_edges():
    runs = compare_refinement(_flat_object(), (5.1, 7.9, 26.5, 24.3), (8.0, 10.0, 24.0, 22.0), steps=25,
                              step_size=2.0, output_size=4)
    assert runs["prroi_pool"].iou[-1] > 0.95
    for name in ("roi_align", "roi_align, samples differentiated"):
        assert not runs[name].moved and runs[name].zero_steps == 25
    assert runs["roi_align, samples differentiated"].has_gradient  # a gradient, but exactly zero


def test_refine_box_arguments_and_box_order():
    x = _flat_object()
    run = refine_box(REFINE_OPS["prroi_pool"], x, (5.0, 8.0, 20.0, 20.0), (8.0, 10.0, 24.0, 22.0), steps=3)
    assert len(run.boxes) == len(run.scores) == len(run.iou) == 4
    assert all(b[0] <= b[2] and b[1] <= b[3] for b in run.boxes)
    assert refine_box(REFINE_OPS["prroi_pool"], x, (5.0, 8.0, 20.0, 20.0), (8.0, 10.0, 24.0, 22.0), steps=0).boxes == [(5.0, 8.0, 20.0, 20.0)]
    with pytest.raises(ValueError, match="steps"):
        refine_box(REFINE_OPS["prroi_pool"], x, (0, 0, 1, 1), (0, 0, 1, 1), steps=-1)
    with pytest.raises(ValueError, match="start and target"):
        refine_box(REFINE_OPS["prroi_pool"], x, (0, 0, 1), (0, 0, 1, 1))
    with pytest.raises(TypeError, match="features"):
        refine_box(REFINE_OPS["prroi_pool"], [[0.0]], (0, 0, 1, 1), (0, 0, 1, 1))


def test_plot_draws_every_run():
    runs = compare_refinement(_flat_object(), (5.1, 7.9, 26.5, 24.3), (8.0, 10.0, 24.0, 22.0), steps=6,
                              step_size=2.0, output_size=4)
    ax_img, ax_iou = plot_refinement(runs, _flat_object(), (8.0, 10.0, 24.0, 22.0), every=3)
    assert [line.get_label() for line in ax_iou.get_lines()] == list(runs)
    assert list(ax_iou.get_lines()[0].get_ydata()) == runs["prroi_pool"].iou
    # Per run: steps 0, 3, 6 and the last again (bold), plus the dashed target.
    assert len(ax_img.patches) == 3 * 4 + 1
    fig, axes = plt.subplots(1, 2)
    assert list(plot_refinement(runs, _flat_object(), (8.0, 10.0, 24.0, 22.0), axes=axes)) == list(axes)
    plt.close(fig)
