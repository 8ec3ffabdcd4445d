"""roiviz.widgets: the Explorer's model reacts to trait changes; the view follows; drags are validated."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch
import traitlets
from hypothesis import example, given, settings
from hypothesis import strategies as st
from matplotlib.colors import Normalize

from roiviz import STRATEGIES, roi_align
from roiviz.reference import roi_align_sample_points, roi_pool_bins
from roiviz.widgets import (
    Explorer,
    ExplorerModel,
    color_index,
    read_windows,
    rgb_bytes,
    sample_axes,
    sample_points,
    static_figure,
)


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


# ------------------------------------------------------------------------------------ colours


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=50), st.floats(-2, 0), st.floats(0.01, 3))
@example([0.0, 0.5, 1.0, 0.999999], 0.0, 1.0)
def test_color_index_is_matplotlibs_colormap(values, lo, span):
    """The browser paints lut[index]: it must be the colour matplotlib's viridis gives the value."""
    v = np.array(values, dtype=np.float32)
    clim = (lo, lo + span)
    lut = np.asarray(matplotlib.colormaps["viridis"](np.arange(256), bytes=True))[:, :3]
    want = np.asarray(matplotlib.colormaps["viridis"](Normalize(*clim)(v), bytes=True))[..., :3]
    np.testing.assert_array_equal(lut[color_index(v, clim)], want)


def test_rgb_bytes():
    assert rgb_bytes(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), (0.0, 1.0)).tolist() == [0, 0, 128, 255, 255]


def test_color_scale_spans_every_strategy_output(photo):
    """One honest scale: max-based panels never saturate on the channel mean of a feature map."""
    m = ExplorerModel(photo, boxes=[(8.0, 8.0, 56.0, 50.0)], stride=8, output_size=5)
    for channel in (-1, 3):
        m.channel = channel
        kind, lo, hi = m.color_scale()
        assert kind == "map"
        for name, out in m.results.outputs.items():
            shown = m.shown(out)
            assert lo - 1e-6 <= shown.min() and shown.max() <= hi + 1e-6, (channel, name)
    m.stride, m.channel = 1, -1
    assert m.color_scale() == ("rgb", 0.0, 1.0)


# ------------------------------------------------------------------------------------ read windows


@settings(max_examples=30, deadline=None)
@example(x1=12.0, y1=32.0, w=16.0, h=35.0, scale=0.125, n=3, sr=-1, aligned=True)
@given(x1=st.floats(0, 50), y1=st.floats(0, 50), w=st.floats(1, 40), h=st.floats(1, 40),
       scale=st.sampled_from([1.0, 0.5, 0.125]), n=st.sampled_from([1, 3, 5]), sr=st.sampled_from([-1, 1, 2]),
       aligned=st.booleans())
def test_read_windows_hold_every_cell_an_output_depends_on(x1, y1, w, h, scale, n, sr, aligned):
    """Gradient support of each output row/column lies in its window (the cells hover highlights);
    for averaging strategies it is the whole window. On a float32 map, as the Explorer's: the
    windows follow roi_align's float32 sample coordinates (in float64 a sample computed as
    1.9999999999999998 instead of 2.0 touches one more cell, with weight 2e-16)."""
    box = (x1, y1, x1 + w, y1 + h)
    hh = ww = 12
    x = (torch.rand(1, 1, hh, ww, generator=torch.Generator().manual_seed(1)) + 0.5)
    x.requires_grad_(True)
    rois = torch.tensor([[0.0, *box]])
    for name in ("crop", "pad", "adaptive_avg", "adaptive_max", "resize", "roi_pool", "roi_align"):
        win = read_windows(name, box, n, scale, hh, ww, sr, aligned)
        if name == "roi_align":
            out = roi_align(x, rois, n, scale, sampling_ratio=sr, aligned=aligned)[0, 0]
        else:
            out = STRATEGIES[name](x, rois, n, scale)[0, 0]
        for k in range(n):
            for axis, sel in ((0, out[k, :]), (1, out[:, k])):
                if sel.requires_grad:
                    (g,) = torch.autograd.grad(sel.sum(), x, retain_graph=True)
                    used = (g[0, 0] != 0).any(dim=1 - axis).nonzero().flatten().tolist()
                else:  # e.g. an empty crop: a constant output reads nothing
                    used = []
                lo, hi = int(win[2 * axis, k]), int(win[2 * axis + 1, k])
                assert all(lo <= u < hi for u in used), (name, axis, k, used, (lo, hi))
                other = 2 * (1 - axis)
                reads = (win[other + 1] > win[other]).any()  # a cell reads rows x columns: both
                if name == "adaptive_avg" and hi > lo and reads:
                    assert used == list(range(lo, hi)), (name, axis, k, used, (lo, hi))


def test_read_windows_of_roi_pool_are_its_bins():
    box = (3.2, 5.0, 40.7, 33.3)
    win = read_windows("roi_pool", box, 4, 0.25, 16, 16)
    bins = roi_pool_bins(torch.tensor([0.0, *box]), 4, 4, 0.25, 16, 16)
    assert [tuple(win[:2, i]) for i in range(4)] == [bins[i][0][:2] for i in range(4)]
    assert [tuple(win[2:, j]) for j in range(4)] == [bins[0][j][2:] for j in range(4)]


def test_sample_axes_are_the_sample_points():
    box, size = (3.0, 4.5, 30.0, 21.0), (3, 4)
    xs, ys = sample_axes(box, size, 0.5, 2, True)
    xy, _, _ = sample_points(box, size, 0.5, 2, True, 16, 16)
    assert sorted(map(tuple, xy.tolist())) == sorted((x, y) for x in xs.tolist() for y in ys.tolist())


# ------------------------------------------------------------------------------------ the widget


@pytest.fixture
def explorer(photo) -> Explorer:
    return Explorer(photo, boxes=[(8.0, 8.0, 40.0, 30.0)], output_size=4)


class Sent:
    """Captures what the view sends to the browser (the comm's messages, with their buffers)."""

    def __init__(self, widget):
        self.messages = []
        original = widget.comm.send

        def send(data=None, metadata=None, buffers=None, **kwargs):
            self.messages.append((data, buffers or []))
            return original(data=data, metadata=metadata, buffers=buffers, **kwargs)

        widget.comm.send = send

    def sizes(self) -> list[int]:
        return [len(json.dumps(d, default=str)) + sum(len(memoryview(b).cast("B")) for b in bufs)
                for d, bufs in self.messages]


def test_explorer_is_one_widget_with_stable_hooks(explorer):
    assert "roiviz-explorer" in explorer._dom_classes
    assert explorer.view in explorer.children and "roiviz-errors" in explorer.errors._dom_classes
    esm = explorer.view._esm
    esm = esm.read_text() if hasattr(esm, "read_text") else str(esm)
    for hook in ("roiviz-image", "roiviz-panels", "roiviz-status"):
        assert f'"{hook}"' in esm


def test_frame_carries_the_model_numbers(explorer):
    frame, data = explorer.view.frame_payload()
    m = explorer.model
    assert frame["status"] == m.status() and frame["boxes"] == [[8.0, 8.0, 40.0, 30.0]]
    assert [p["name"] for p in frame["panels"]] == list(STRATEGIES)
    kind, lo, hi = m.color_scale()
    assert kind == "rgb"
    u8 = np.frombuffer(data, np.uint8)
    for p in frame["panels"]:
        want = rgb_bytes(np.moveaxis(m.results.outputs[p["name"]], 0, -1), (lo, hi))
        np.testing.assert_array_equal(u8[p["colors_off"]: p["colors_off"] + want.size].reshape(want.shape), want)
    explorer.model.stride = 8
    frame, data = explorer.view.frame_payload()
    kind, lo, hi = explorer.model.color_scale()
    for p in frame["panels"]:
        shown = explorer.model.results.outputs[p["name"]].mean(0)
        values = np.frombuffer(data, np.float32, count=shown.size, offset=p["values_off"])
        np.testing.assert_array_equal(values, shown.ravel())
        np.testing.assert_array_equal(u8_of(data, p["colors_off"], shown.size), color_index(shown, (lo, hi)).ravel())


def u8_of(data: bytes, off: int, n: int) -> np.ndarray:
    return np.frombuffer(data, np.uint8, count=n, offset=off)


@pytest.mark.parametrize("stride", [1, 8])
def test_update_messages_are_small(photo, stride):
    """Numbers, not pictures: at most 16 KB per update, even at output 16 with adaptive sampling."""
    ex = Explorer(photo, boxes=[(2.0, 2.0, 62.0, 62.0)], output_size=16, sampling_ratio=-1, stride=stride)
    sent = Sent(ex.view)
    for box in [(2.0, 2.0, 62.0, 62.0), (5.5, 3.25, 60.0, 40.0), (1.0, 1.0, 64.0, 64.0)]:
        ex.view._on_msg_hook = None
        ex._on_msg(None, {"type": "box", "box": list(box), "dragging": False, "seq": 1}, [])
    assert sent.messages, "nothing was sent"
    assert max(sent.sizes()) <= 16 * 1024, sent.sizes()


def test_drag_message_gives_one_frame_with_its_seq(explorer):
    sent = Sent(explorer.view)
    explorer._on_msg(None, {"type": "box", "box": [10, 12, 50, 40], "dragging": True, "seq": 7}, [])
    assert explorer.box == (10.0, 12.0, 50.0, 40.0) and explorer.model.dragging
    assert explorer.model.results.metrics is None  # while dragging: outputs only
    assert len(sent.messages) == 1 and explorer.view.frame["seq"] == 7
    explorer._on_msg(None, {"type": "box", "box": [10, 12, 50, 40], "dragging": False, "seq": 8}, [])
    assert explorer.model.results.metrics is not None and "<table" in explorer.view.frame["metrics"]
    assert explorer.view.frame["seq"] == 8
    # A refused box still gets an answer (the browser waits for it), with the reason shown.
    n = len(sent.messages)
    explorer._on_msg(None, {"type": "box", "box": [0, 0, float("nan"), 4], "dragging": False, "seq": 9}, [])
    assert len(sent.messages) == n + 1 and explorer.view.frame["seq"] == 9
    assert "refused" in explorer.view.frame["status"]
    explorer._on_msg(None, {"type": "box", "box": [-10, 5, 30, 80], "dragging": False, "seq": 10}, [])
    assert explorer.box == (0.0, 5.0, 30.0, 64.0) and "clamped" in explorer.view.frame["status"]


def test_a_nudge_is_ignored(explorer):
    """The browser's "nudge" only carries its TCP acknowledgement (explorer.js, NUDGE_MS): the
    kernel must neither compute nor answer it (an answer would be one more message to wait for)."""
    sent = Sent(explorer.view)
    before = explorer.model.results
    explorer._on_msg(None, {"type": "nudge"}, [])
    assert sent.messages == [] and explorer.model.results is before


def test_drag_frames_leave_out_the_read_windows_and_the_settled_frame_has_them(explorer):
    """The hover's read windows are skipped while dragging (half of a drag frame's cost) and come
    back, equal to read_windows, in the frame sent when the box is released."""
    explorer._on_msg(None, {"type": "box", "box": [10, 12, 50, 40], "dragging": True, "seq": 1}, [])
    frame, _ = explorer.view.frame_payload()
    assert [p["win_off"] for p in frame["panels"]] == [-1] * len(STRATEGIES)
    explorer._on_msg(None, {"type": "box", "box": [10, 12, 50, 40], "dragging": False, "seq": 2}, [])
    frame, data = explorer.view.frame_payload()
    m, n = explorer.model, explorer.model.output_size
    for p in frame["panels"]:
        want = read_windows(p["name"], m.box, n, 1.0, 64, 64, m.sampling_ratio, m.aligned)
        got = np.frombuffer(data, np.int16, count=4 * n, offset=p["win_off"]).reshape(4, n)
        np.testing.assert_array_equal(got, want, err_msg=p["name"])


def test_explorer_box_from_code_and_status(explorer):
    explorer.box = (10, 20, 60, 50)
    assert explorer.status.startswith("box (x1, y1, x2, y2) = (10.0, 20.0, 60.0, 50.0) · ROI 1/1 · ")
    assert explorer.view.frame["status"] == explorer.status
    assert explorer.view.frame["boxes"] == [[10.0, 20.0, 60.0, 50.0]]


def test_explorer_repr_is_short_and_stable(explorer):
    assert repr(explorer) == "Explorer(box=(8, 8, 40, 30), rois=1, stride=1, output_size=4)"


def test_explorer_controls(explorer):
    explorer.strategy_buttons["crop"].value = False
    assert "crop" not in explorer.model.strategies
    assert "crop" not in [p["name"] for p in explorer.view.frame["panels"]]
    explorer.output_size_slider.value = 2
    assert explorer.model.results.outputs["pad"].shape == (3, 2, 2) and explorer.view.frame["output_size"] == 2
    explorer.sampling_ratio_dropdown.value = -1
    explorer.aligned_checkbox.value = False
    assert (explorer.model.sampling_ratio, explorer.model.aligned) == (-1, False)
    explorer.stride_dropdown.value = 8
    assert explorer.model.spatial_scale == 1 / 8
    assert [v for _, v in explorer.channel_dropdown.options][-1] == 15
    assert "stride 8, 8x8 map: (" in explorer.view.frame["status"]
    assert explorer.view.frame["map"]["key"] == "8,-1"
    explorer.channel_dropdown.value = 5
    assert explorer.model.channel == 5 and explorer.view.frame["map"]["key"] == "8,5"
    explorer.add_button.click()
    assert len(explorer.model.boxes) == 2 and explorer.roi_dropdown.value == 1
    assert "ROI 2/2" in explorer.view.frame["status"] and explorer.view.frame["active"] == 1
    explorer._on_msg(None, {"type": "active", "index": 0}, [])
    assert explorer.model.active == 0 and explorer.roi_dropdown.value == 0
    explorer.remove_button.click()
    assert len(explorer.model.boxes) == 1 and len(explorer.roi_dropdown.options) == 1


def test_explorer_without_strategies(explorer):
    explorer.model.strategies = []
    assert explorer.model.error == "" and explorer.model.results.outputs == {}
    assert explorer.view.frame["panels"] == [] and "no strategy selected" in explorer.view.frame["metrics"]
    explorer.strategy_buttons["pad"].value = True
    assert [p["name"] for p in explorer.view.frame["panels"]] == ["pad"]


def test_explorer_errors_are_shown(explorer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(explorer.model, "compute", broken)
    explorer.box = (1, 1, 9, 9)
    assert "error: RuntimeError: boom" in explorer.view.frame["status"] and explorer.view.frame["error"]
    assert any("RuntimeError: boom" in o["text"] for o in explorer.errors.outputs)


def test_explorer_feature_map_input():
    ex = Explorer(torch.rand(1, 8, 6, 6), spatial_scale=0.5, output_size=2)
    assert ex.stride_dropdown.disabled and ex.model.image_size == (12, 12)
    assert ex.view.picture_shape == [6, 6, 3]


def test_static_picture_is_stored_with_the_widget(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    import base64

    png = base64.b64decode(bundle["image/png"])
    assert png.startswith(b"\x89PNG")
    fig = static_figure(explorer.model)
    assert fig.get_figwidth() <= 10 and len(fig.axes) >= 2 + len(STRATEGIES)


# ------------------------------------------------------------------------------------ FPN mode


@pytest.fixture(scope="module")
def fpn_explorer() -> Explorer:
    """The multi-scale mode on a 512-pixel photo, where boxes reach every level P2-P5."""
    return Explorer("grace_hopper", size=512, levels=(2, 3, 4, 5), output_size=3, strategies=["roi_align"])


# Squares around each boundary (112, 224, 448) and far from them; and a thin tall box.
FPN_BOXES = [(10, 10, 40, 40), (0, 0, 111, 111), (0, 0, 112, 112), (100, 50, 323.9, 273.9),
             (0, 0, 224, 224), (20, 30, 300, 330), (0, 0, 447, 447), (0, 0, 448, 448), (0, 0, 512, 512),
             (200, 0, 256, 512)]


@pytest.mark.parametrize("rule", ["torchvision", "mmdetection"])
def test_fpn_level_is_the_poolers_rule(fpn_explorer, rule):
    from roiviz import map_levels
    from roiviz.poolers import level_boundaries, map_levels_mmdet

    m = fpn_explorer.model
    before = m.results
    m.level_rule = rule  # a trait: the label follows at once
    assert (m.results is not before) == (rule != "torchvision") and m.fpn_label().endswith(f"{rule} rule")
    try:
        levels = []
        for box in FPN_BOXES:
            m.box = box
            rois = torch.tensor([box], dtype=torch.float32)
            want = (map_levels(rois, 2, 5) if rule == "torchvision" else map_levels_mmdet(rois, 2, 5)).item()
            f = m.results.fpn
            assert f.level == want, (box, f.level, want)
            assert f.boundaries == level_boundaries(2, 5)
            lo, hi = {k: (lo, hi) for k, lo, hi in f.boundaries}[f.level]
            assert f"-> P{want} (stride {2**want}): level {want} for sqrt(w*h) in " in m.fpn_label()
            assert f"in [{round(lo)}, {'inf' if hi == float('inf') else round(hi)}), {rule} rule" in m.fpn_label()
            levels.append(f.level)
        assert set(levels) == {2, 3, 4, 5}  # every level is reached
    finally:
        m.level_rule = "torchvision"


def test_fpn_panels_are_roi_align_on_each_levels_map(fpn_explorer):
    from roiviz.images import FeatureExtractor, sample_image

    m = fpn_explorer.model
    picture = torch.from_numpy(sample_image("grace_hopper", 512)).permute(2, 0, 1)[None]
    m.box = (37.5, 60.25, 250.0, 201.0)
    for sr, aligned in [(2, True), (-1, False)]:
        m.sampling_ratio, m.aligned = sr, aligned
        f = m.results.fpn
        assert list(f.outputs) == [2, 3, 4, 5]
        for k in f.levels:
            feats = FeatureExtractor(stride=2**k, channels=16, seed=0)(picture)  # an independent copy
            want = roi_align(feats, torch.tensor([[0.0, *m.box]]), 3, 1 / 2**k, sampling_ratio=sr,
                             aligned=aligned)[0]
            np.testing.assert_array_equal(f.outputs[k], want.detach().numpy(), err_msg=f"level {k}")
            assert f.map_boxes[k] == tuple(v / 2**k for v in m.box)
    m.sampling_ratio, m.aligned = 2, True


def test_fpn_frame_carries_the_model_numbers(fpn_explorer):
    ex, m = fpn_explorer, fpn_explorer.model
    sent = Sent(ex.view)
    ex._on_msg(None, {"type": "box", "box": [20, 30, 300, 330], "dragging": False, "seq": 3}, [])
    frame, data = ex.view.frame_payload()
    g = frame["fpn"]
    assert g["label"] == m.fpn_label() and g["level"] == m.results.fpn.level == 4
    assert [b["text"] for b in g["boundaries"]] == ["P2: [0, 112)", "P3: [112, 224)", "P4: [224, 448)",
                                                   "P5: [448, inf)"]
    maps = ex.view.fpn_maps
    for entry in g["levels"]:
        k, n = entry["level"], m.output_size
        shown = m.results.fpn.outputs[k].mean(axis=0, dtype=np.float32)
        lo, hi = m.fpn_color_scale(k)
        assert (entry["lo"], entry["hi"]) == (lo, hi)
        assert lo <= shown.min() and shown.max() <= hi  # the level's panel never saturates
        np.testing.assert_array_equal(np.frombuffer(data, np.float32, n * n, entry["values_off"]), shown.ravel())
        np.testing.assert_array_equal(u8_of(data, entry["colors_off"], n * n), color_index(shown, (lo, hi)).ravel())
        feats = m.features(2**k)[0].numpy().mean(axis=0, dtype=np.float32)
        h, w = feats.shape
        assert (entry["h"], entry["w"]) == (h, w) == (512 // 2**k, 512 // 2**k)
        got = np.frombuffer(maps, np.uint8, h * w * 3, entry["map_off"]).reshape(h, w, 3)
        want = np.asarray(matplotlib.colormaps["viridis"](Normalize(lo, hi)(feats), bytes=True))[..., :3]
        np.testing.assert_array_equal(got, want)
    assert max(sent.sizes()) <= 16 * 1024, sent.sizes()  # the maps are not in the update messages
    assert "levels=(2, 3, 4, 5)" in repr(ex)
    assert "P4 (stride 16)\nchosen" in [a.get_title() for a in static_figure(m).axes]


def test_fpn_levels_are_checked(photo):
    for bad, err in [((2, 4), ValueError), ((0, 1), ValueError), ((4, 5, 6), ValueError), ((3, 2), ValueError),
                     ("23", ValueError), ((2.5, 3.5), ValueError), ([], ValueError)]:
        with pytest.raises(err, match="levels"):
            ExplorerModel(photo, levels=bad)
    with pytest.raises(ValueError, match="need a picture"):
        ExplorerModel(torch.rand(1, 8, 6, 6), spatial_scale=0.5, levels=(2, 3))
    with pytest.raises(ValueError, match="level_rule"):
        ExplorerModel(photo, levels=(2, 3), level_rule="detectron")
    plain = ExplorerModel(photo, output_size=2, strategies=["crop"])
    assert plain.levels == () and plain.results.fpn is None and plain.fpn_label() == ""
