"""roiviz.widgets: the Explorer's model reacts to trait changes; the view follows; drags are validated."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import traitlets
from hypothesis import example, given, settings
from hypothesis import strategies as st
from matplotlib.backend_bases import MouseEvent

from roiviz import STRATEGIES, roi_align, widgets
from roiviz.reference import roi_align_sample_points
from roiviz.widgets import Explorer, ExplorerModel, sample_points


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from roiviz.images import sample_image

    return sample_image("grace_hopper", 64)


@pytest.fixture(scope="module")
def photo_64(photo) -> ExplorerModel:
    """A model only used for its box validation (hypothesis needs a module-scoped fixture)."""
    return ExplorerModel(photo, strategies=["crop"], output_size=2)


@pytest.fixture
def model(photo) -> ExplorerModel:
    return ExplorerModel(photo, boxes=[(8.0, 8.0, 40.0, 30.0)], output_size=4)


# ------------------------------------------------------------------------------------ the model


def test_model_computes_every_strategy(model):
    r = model.results
    assert list(r.outputs) == list(STRATEGIES)
    assert all(out.shape == (3, 4, 4) for out in r.outputs.values())
    assert [m.strategy for m in r.metrics] == list(STRATEGIES)
    assert r.box == (8.0, 8.0, 40.0, 30.0) and r.spatial_scale == 1.0


def test_model_reacts_to_box(model):
    before = model.results
    model.box = (20, 10, 60, 50)
    after = model.results
    assert after is not before and after.box == (20.0, 10.0, 60.0, 50.0)
    assert model.boxes == [(20.0, 10.0, 60.0, 50.0)]
    for name in STRATEGIES:
        assert not np.array_equal(after.outputs[name], before.outputs[name]), name
    x = model.input
    rois = torch.tensor([[0, 20.0, 10.0, 60.0, 50.0]])
    np.testing.assert_array_equal(after.outputs["resize"], STRATEGIES["resize"](x, rois, 4)[0].numpy())


def test_model_reacts_to_parameters(model):
    model.output_size = 3
    assert model.results.outputs["crop"].shape == (3, 3, 3)
    model.strategies = ["roi_align", "crop"]
    assert list(model.results.outputs) == ["crop", "roi_align"]  # registry order
    assert [m.strategy for m in model.results.metrics] == ["crop", "roi_align"]
    model.sampling_ratio, model.aligned = 1, False
    rois = torch.tensor([[0, *model.box]])
    expected = roi_align(model.input, rois, 3, 1.0, sampling_ratio=1, aligned=False)[0].numpy()
    np.testing.assert_array_equal(model.results.outputs["roi_align"], expected)
    with pytest.raises(traitlets.TraitError, match="unknown strategies"):
        model.strategies = ["crop", "warp"]


def test_model_stride_maps_the_box_onto_features(model):
    model.stride = 8
    assert tuple(model.input.shape) == (1, 16, 8, 8)
    r = model.results
    assert r.spatial_scale == 1 / 8 and r.map_box == (1.0, 1.0, 5.0, 3.75)
    assert r.outputs["roi_pool"].shape == (16, 4, 4)
    model.channel = 15
    with pytest.raises(traitlets.TraitError, match="channel"):
        model.channel = 16
    model.stride = 1  # 3 channels again: channel 15 no longer exists
    assert model.channel == -1
    with pytest.raises(traitlets.TraitError, match="stride"):
        model.stride = 3


@pytest.mark.parametrize(
    "proposed, expected, message",
    [
        ((-10, 5, 30, 80), (0.0, 5.0, 30.0, 64.0), "clamped into the 64x64 image"),
        ((10, 5, 10, 20), (10.0, 5.0, 11.0, 20.0), "zero width: widened to 1 px"),
        ((10, 20, 30, 20), (10.0, 20.0, 30.0, 21.0), "zero height: widened to 1 px"),
        ((70, 70, 90, 90), (63.0, 63.0, 64.0, 64.0), "clamped"),  # wholly outside: a pixel in the corner
        ((30, 40, 10, 5), (10.0, 5.0, 30.0, 40.0), "corners swapped"),
        ((1, 2, 3, 4), (1.0, 2.0, 3.0, 4.0), ""),
    ],
)
def test_model_validates_boxes(model, proposed, expected, message):
    model.box = proposed
    assert model.box == expected and model.results.box == expected
    assert message in model.message
    if not message:
        assert model.message == ""


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=4, max_size=4))
def test_any_finite_box_becomes_a_valid_box(photo_64, values):
    """Whatever a drag proposes, the model keeps a box of positive size inside the image."""
    box = photo_64._validate_box(values)
    x1, y1, x2, y2 = box
    assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    assert photo_64._validate_box(box) == box  # a valid box is kept as it is


@pytest.mark.parametrize("bad", [(0, 0, float("nan"), 4), (0, 0, 4), ("a", 0, 1, 1)])
def test_model_refuses_bad_boxes(model, bad):
    before = model.box
    with pytest.raises(traitlets.TraitError, match="box"):
        model.box = bad
    assert model.box == before and model.message.startswith("refused")


def test_model_several_rois(model):
    first = model.box
    index = model.add_box((30, 30, 60, 60))
    assert index == 1 and model.active == 1 and model.box == (30.0, 30.0, 60.0, 60.0)
    assert model.results.box == (30.0, 30.0, 60.0, 60.0)
    model.active = 0
    assert model.box == first and model.results.box == first
    model.add_box()  # default: the active box moved
    assert len(model.boxes) == 3
    model.remove_box()
    assert len(model.boxes) == 2 and model.box == tuple(model.boxes[model.active])
    model.remove_box(0)
    assert model.boxes == [(30.0, 30.0, 60.0, 60.0)] and model.active == 0
    model.remove_box()
    assert model.message == "the last ROI cannot be removed" and len(model.boxes) == 1
    with pytest.raises(traitlets.TraitError, match="active"):
        model.active = 3


def test_model_dragging_skips_metrics_until_release(model):
    model.dragging = True
    model.box = (5, 5, 25, 25)
    assert model.results.metrics is None and model.results.outputs
    model.dragging = False
    assert model.results.metrics is not None and model.results.box == (5.0, 5.0, 25.0, 25.0)


def test_model_feature_map_input():
    feats = torch.rand(16, 10, 12)
    m = ExplorerModel(feats, spatial_scale=0.25, output_size=2)
    assert not m.is_image and m.image_size == (40, 48) and m.spatial_scale == 0.25
    m.box = (0, 0, 20, 20)
    assert m.results.map_box == (0.0, 0.0, 5.0, 5.0)
    with pytest.raises(traitlets.TraitError, match="stride"):
        m.stride = 2
    with pytest.raises(ValueError, match="spatial_scale"):
        ExplorerModel(feats, spatial_scale=2.0)


def test_model_error_is_kept_not_swallowed(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "compute", broken)
    model.box = (1, 1, 9, 9)
    assert "RuntimeError: boom" in model.error
    assert "error: RuntimeError: boom" in model.status()


@settings(max_examples=40, deadline=None)
@given(
    x1=st.floats(-20, 80), y1=st.floats(-20, 80), w=st.floats(0, 60), h=st.floats(0, 60),
    scale=st.sampled_from([1.0, 0.5, 0.125]), sr=st.sampled_from([-1, 1, 2, 3]), aligned=st.booleans(),
    size=st.sampled_from([(1, 1), (2, 3), (7, 7)]),
)
# Found by hypothesis: in float32 a 1e-12-tall box has height 0 (1e-12 - 0.5 rounds to -0.5).
@example(x1=0.0, y1=0.0, w=1.0, h=1e-12, scale=1.0, sr=-1, aligned=True, size=(1, 1))
def test_sample_points_match_reference(x1, y1, w, h, scale, sr, aligned, size):
    box = (x1, y1, x1 + w, y1 + h)
    xy, outside, count = sample_points(box, size, scale, sr, aligned, 16, 16)
    points, ref_count = roi_align_sample_points(torch.tensor([0.0, *box]), *size, scale, sr, aligned)
    ref = np.array([(x + 0.5, y + 0.5) for row in points for cell in row for y, x in cell]).reshape(-1, 2)
    assert count == ref_count and xy.shape == ref.shape
    np.testing.assert_allclose(xy, ref, atol=1e-4)
    ref_out = (ref[:, 1] - 0.5 < -1) | (ref[:, 1] - 0.5 > 16) | (ref[:, 0] - 0.5 < -1) | (ref[:, 0] - 0.5 > 16)
    # Points within float32 rounding of the edge may fall either way.
    edge = np.isclose(ref - 0.5, -1, atol=1e-4).any(1) | np.isclose(ref - 0.5, 16, atol=1e-4).any(1)
    np.testing.assert_array_equal(outside[~edge], ref_out[~edge])


# ------------------------------------------------------------------------------------ the view


@pytest.fixture
def explorer(photo) -> Explorer:
    return Explorer(photo, backend="agg", boxes=[(8.0, 8.0, 40.0, 30.0)], output_size=4)


def _panel_data(ex):
    return {name: np.array(im.get_array()) for name, im in ex.panels.images.items()}


def test_explorer_updates_panels_and_status(explorer):
    assert "roiviz-status" in explorer.status._dom_classes
    before = _panel_data(explorer)
    explorer.box = (10, 20, 60, 50)
    assert explorer.status.value.startswith("box (x1, y1, x2, y2) = (10.0, 20.0, 60.0, 50.0) · ROI 1/1 · ")
    after = _panel_data(explorer)
    assert all(not np.array_equal(before[n], after[n]) for n in STRATEGIES)
    assert explorer.x_slider.value == (10.0, 60.0) and explorer.y_slider.value == (20.0, 50.0)
    assert "<table" in explorer.metrics_html.value
    assert explorer.model.error == "" and explorer.errors.outputs == ()
    # A box change only redraws what changed; the full draw happened once, at the start.
    assert explorer.draw_count == 1 and explorer.blit_count >= 1


def test_explorer_repr_is_short_and_stable(explorer):
    assert repr(explorer) == "Explorer(box=(8, 8, 40, 30), rois=1, stride=1, output_size=4, backend='agg')"


def test_explorer_sliders_drive_the_box(explorer):
    explorer.x_slider.value = (4.0, 50.0)
    assert explorer.box == (4.0, 8.0, 50.0, 30.0)
    assert "(4.0, 8.0, 50.0, 30.0)" in explorer.status.value
    explorer.output_size_slider.value = 2  # linked to the model
    assert explorer.model.output_size == 2 and explorer.model.results.outputs["crop"].shape == (3, 2, 2)
    assert explorer.draw_count == 2  # a new output size changes the layout: one full draw


def test_explorer_invalid_box_message_visible(explorer):
    explorer.box = (30, 10, 30, 40)
    # The message comes right after the box, so a cut line still shows it.
    assert explorer.status.value.split(" · ")[1] == "zero width: widened to 1 px"
    assert explorer.x_slider.value == (30.0, 31.0)


def test_explorer_controls(explorer):
    explorer.strategy_buttons["crop"].value = False
    assert "crop" not in explorer.model.strategies
    assert not explorer.panels.axes["crop"].get_visible()
    explorer.stride_dropdown.value = 8
    assert explorer.model.spatial_scale == 1 / 8
    assert [v for _, v in explorer.channel_dropdown.options][-1] == 15
    assert "stride 8, 8x8 map: (" in explorer.status.value
    explorer.channel_dropdown.value = 5
    assert explorer.model.channel == 5
    explorer.add_button.click()
    assert len(explorer.model.boxes) == 2 and explorer.roi_dropdown.value == 1
    assert "ROI 2/2" in explorer.status.value
    explorer.roi_dropdown.value = 0
    assert explorer.model.active == 0
    explorer.remove_button.click()
    assert len(explorer.model.boxes) == 1 and len(explorer.roi_dropdown.options) == 1


def test_explorer_without_strategies(explorer):
    explorer.model.strategies = []
    assert explorer.model.error == "" and explorer.model.results.outputs == {}
    assert not any(ax.get_visible() for ax in explorer.panels.axes.values())
    assert "no strategy selected" in explorer.metrics_html.value
    explorer.strategy_buttons["pad"].value = True
    assert list(explorer.model.results.outputs) == ["pad"] and explorer.panels.axes["pad"].get_visible()


def test_explorer_errors_are_shown(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(explorer.model, "compute", broken)
    explorer.box = (1, 1, 9, 9)
    assert "error: RuntimeError: boom" in explorer.status.value
    assert any("RuntimeError: boom" in o["text"] for o in explorer.errors.outputs)
    assert "roiviz-errors" in explorer.errors._dom_classes


def test_explorer_inline_fallback_without_ipympl(photo, monkeypatch):
    monkeypatch.setattr(widgets, "_ipympl_available", lambda: False)
    monkeypatch.setattr(widgets, "_in_kernel", lambda: True)
    ex = Explorer(photo, output_size=3)
    assert ex.backend == "inline" and ex.selector is None and ex.canvas is None
    assert ex.picture in ex.children and bytes(ex.picture.value).startswith(b"\x89PNG")
    first = ex.picture.value
    ex.y_slider.value = (0.0, 20.0)  # the sliders move the box and the figure is re-rendered
    assert ex.box[1::2] == (0.0, 20.0) and ex.picture.value != first
    with pytest.raises(ValueError, match="ipympl"):
        Explorer(photo, backend="ipympl")


def test_explorer_from_sample_name_and_features():
    ex = Explorer("checkerboard", backend="agg", size=32, output_size=2)
    assert ex.model.image_size == (32, 32) and ex.model.n_channels == 1
    ex = Explorer(torch.rand(1, 8, 6, 6), backend="agg", spatial_scale=0.5, output_size=2)
    assert ex.stride_dropdown.disabled and ex.model.image_size == (12, 12)
    with pytest.raises(ValueError, match="backend"):
        Explorer("checkerboard", backend="tk")


# ------------------------------------------------------------------------------------ mouse (ipympl)


def _mouse(ex, name, x, y):
    """Send a mouse event at image point (x, y) through the canvas, as ipympl does."""
    px, py = ex.image_ax.transData.transform((x, y))
    MouseEvent(name, ex.figure.canvas, px, py, button=1)._process()


def _drag(ex, start, end, steps=5):
    _mouse(ex, "button_press_event", *start)
    for t in np.linspace(0, 1, steps + 1)[1:]:
        _mouse(ex, "motion_notify_event", start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
    _mouse(ex, "button_release_event", *end)


@pytest.fixture
def live(photo) -> Explorer:
    pytest.importorskip("ipympl")
    with warnings.catch_warnings():  # ipympl's toolbar passes traitlets an argument it deprecates
        warnings.filterwarnings("ignore", "Passing unrecognized arguments", DeprecationWarning)
        ex = Explorer(photo, backend="ipympl", boxes=[(10.0, 10.0, 40.0, 30.0)], output_size=4)
    ex.figure.canvas.draw()  # what the front-end asks for when it shows the canvas
    return ex


def test_drag_a_corner_resizes_the_box(live):
    assert live.selector is not None and live.canvas in live.children
    assert "roiviz-canvas" in live.canvas._dom_classes
    before = _panel_data(live)
    _drag(live, (40.0, 30.0), (52.0, 45.0))  # the bottom-right handle
    x1, y1, x2, y2 = live.box
    assert (x1, y1) == pytest.approx((10.0, 10.0)) and (x2, y2) == pytest.approx((52.0, 45.0), abs=0.5)
    assert live.status.value.startswith(f"box (x1, y1, x2, y2) = ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})")
    assert live.model.dragging is False and live.model.results.metrics is not None
    assert any(not np.array_equal(before[n], a) for n, a in _panel_data(live).items())


def test_drag_moves_the_box(live):
    _drag(live, (25.0, 20.0), (35.0, 30.0))  # from inside: move
    assert live.box == pytest.approx((20.0, 20.0, 50.0, 40.0), abs=0.5)


def test_drag_outside_is_clamped_and_a_click_keeps_the_box(live):
    _drag(live, (40.0, 30.0), (70.0, 75.0))  # the corner dragged past the edge of the 64x64 image
    assert live.box == pytest.approx((10.0, 10.0, 64.0, 64.0))
    _mouse(live, "button_press_event", 5.0, 60.0)  # a bare click outside the box
    _mouse(live, "button_release_event", 5.0, 60.0)
    assert live.box == pytest.approx((10.0, 10.0, 64.0, 64.0))
    assert "a click without a drag draws no box" in live.status.value
    assert live.selector.extents == pytest.approx((10.0, 64.0, 10.0, 64.0)) and live.selector.get_visible()
    _drag(live, (20.0, 20.0), (30.0, 30.0))  # the box can still be grabbed and moved
    assert live.box[:2] == pytest.approx((20.0, 20.0)) and live.box[2:] == (64.0, 64.0)


def test_drag_along_a_line_is_widened_with_a_message(live):
    _drag(live, (5.0, 50.0), (25.0, 50.0))  # a new box of zero height
    x1, y1, x2, y2 = live.box
    assert (x1, x2) == pytest.approx((5.0, 25.0)) and y2 - y1 == pytest.approx(1.0)
    assert "zero height: widened to 1 px" in live.status.value
