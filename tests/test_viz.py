"""roiviz.viz: every picture draws the artists it should, with the right data, and updates in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from roiviz import STRATEGIES, viz
from roiviz.metrics import influence_map, quantization, strategy_metrics
from roiviz.reference import roi_align_sample_points, roi_pool_bins


@pytest.fixture
def ax():
    return Figure().add_subplot()


def _images(ax):
    return [a for a in ax.get_children() if isinstance(a, AxesImage)]


def _rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ------------------------------------------------------------------------------------ arrays


def test_as_chw_forms():
    assert viz.as_chw(np.zeros((4, 5))).shape == (1, 4, 5)
    assert viz.as_chw(np.zeros((4, 5, 3))).shape == (3, 4, 5)
    assert viz.as_chw(np.zeros((16, 4, 5))).shape == (16, 4, 5)  # not channels-last: C x H x W
    assert viz.as_chw(torch.zeros(2, 4, 5)).shape == (2, 4, 5)
    assert viz.as_chw(torch.zeros(1, 2, 4, 5)).shape == (2, 4, 5)
    assert float(viz.as_chw(np.full((2, 2, 3), 255, dtype=np.uint8)).max()) == 1.0


def test_as_chw_bad_input():
    with pytest.raises(TypeError, match="image"):
        viz.as_chw([[0.0]])
    with pytest.raises(ValueError, match="image"):
        viz.as_chw(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match="empty"):
        viz.as_chw(torch.zeros(3, 0, 4))


def test_display_array():
    rgb = torch.rand(3, 4, 5)
    np.testing.assert_array_equal(viz.display_array(rgb), rgb.permute(1, 2, 0).numpy())
    feats = torch.rand(8, 4, 5)
    np.testing.assert_allclose(viz.display_array(feats), feats.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(viz.display_array(feats, channel=3), feats[3].numpy())
    with pytest.raises(ValueError, match="channel"):
        viz.display_array(feats, channel=8)


# ------------------------------------------------------------------------------------ image, boxes


def test_draw_image_with_boxes(ax):
    img = np.random.default_rng(0).random((16, 24, 3)).astype(np.float32)
    art = viz.draw_image(ax, img, [(2, 2, 10, 8), (0, 0, 24, 16)], labels=["a", "b"], title="t")
    assert _images(ax) == [art.image]
    np.testing.assert_allclose(art.image.get_array(), img)
    assert art.image.get_extent() == [0, 24, 16, 0]
    assert _rects(ax) == art.boxes.rects
    assert [r.get_bbox().bounds for r in art.boxes.rects] == [(2, 2, 8, 6), (0, 0, 24, 16)]
    assert [t.get_text().strip() for t in art.boxes.labels] == ["a", "b"]
    assert ax.get_title() == "t"


def test_draw_image_feature_map_scales_boxes(ax):
    art = viz.draw_image(ax, torch.rand(16, 8, 8), [(8, 16, 40, 64)], spatial_scale=1 / 8, channel=2)
    assert art.image.get_array().shape == (8, 8)
    assert art.boxes.rects[0].get_bbox().bounds == (1, 2, 4, 6)


def test_boxes_update_in_place(ax):
    art = viz.draw_boxes(ax, [(0, 0, 4, 4)], spatial_scale=0.5)
    rect = art.rects[0]
    art.update(0, (2, 4, 10, 12))
    assert art.rects[0] is rect and len(ax.patches) == 1
    assert rect.get_bbox().bounds == (1, 2, 4, 4)


@pytest.mark.parametrize("box, error", [((0, 0, float("nan"), 1), ValueError), ((0, 1, 2), ValueError),
                                        (3, TypeError)])
def test_bad_box(ax, box, error):
    with pytest.raises(error, match="boxes"):
        viz.draw_boxes(ax, [box])


# ------------------------------------------------------------------------------------ ROI Pool


def test_roi_pool_bins_match_reference_and_quantization(ax):
    fmap = torch.rand(1, 4, 16, 16)
    box, scale, size = (12.0, 20.0, 100.0, 84.0), 1 / 8, (3, 2)
    art = viz.draw_roi_pool_bins(ax, fmap, box, size, scale)
    bins = roi_pool_bins(torch.tensor([0.0, *box]), 3, 2, scale, 16, 16)
    assert len(art.bins) == 6
    d = viz.BIN_INSET
    for k, (rect, (hs, he, ws, we)) in enumerate(zip(art.bins, (b for row in bins for b in row), strict=True)):
        assert rect.get_bbox().bounds == pytest.approx((ws + d, hs + d, we - ws - 2 * d, he - hs - 2 * d))
        # Neighbouring bins (which overlap by up to a cell) never share an outline colour.
        ph, pw = divmod(k, 2)
        assert to_rgba(rect.get_edgecolor()[:3]) == to_rgba(viz.BIN_COLORS[2 * (ph % 2) + pw % 2])
    q = quantization(box, scale, 16, 16)
    assert q.lost > 0 and q.gained > 0  # the box's corners sit on cell centres
    assert art.counts == {"lost": q.lost, "gained": q.gained}
    np.testing.assert_array_equal(art.lost.get_array()[..., 3] > 0, q.lost_mask.numpy())
    np.testing.assert_array_equal(art.gained.get_array()[..., 3] > 0, q.gained_mask.numpy())
    assert np.allclose(art.lost.get_array()[q.lost_mask.numpy()][0], to_rgba(viz.LOST_COLOR, 0.55))
    assert f"{q.lost} cells lost, {q.gained} gained" in art.title.get_text()
    # The true box is drawn where the box lands on the map.
    assert art.box.get_bbox().bounds == pytest.approx((1.5, 2.5, 11.0, 8.0))


def test_roi_pool_update_in_place(ax):
    art = viz.draw_roi_pool_bins(ax, torch.rand(1, 1, 8, 8), (0, 0, 4, 4), 2)
    n_patches, n_images, first_bin = len(ax.patches), len(_images(ax)), art.bins[0]
    before = art.bins[0].get_bbox().bounds
    art.update((2.4, 1.6, 7.0, 7.0))
    assert len(ax.patches) == n_patches and len(_images(ax)) == n_images and art.bins[0] is first_bin
    assert art.bins[0].get_bbox().bounds != before


def test_roi_pool_empty_bins_hidden(ax):
    # A box hanging off the map: bins wholly outside it are empty (ROI Pool gives 0 there).
    art = viz.draw_roi_pool_bins(ax, torch.rand(1, 1, 8, 8), (4, 4, 20, 20), 4)
    assert any(not r.get_visible() for r in art.bins)


# ------------------------------------------------------------------------------------ ROI Align


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
def test_roi_align_samples_match_reference(ax, aligned, sampling_ratio):
    box, scale = (12.0, 20.0, 100.0, 84.0), 1 / 8
    art = viz.draw_roi_align_samples(ax, torch.rand(1, 1, 16, 16), box, 2, scale, sampling_ratio, aligned)
    points, count = roi_align_sample_points(torch.tensor([0.0, *box]), 2, 2, scale, sampling_ratio, aligned)
    expected = np.array([(x + 0.5, y + 0.5) for row in points for cell in row for y, x in cell])
    np.testing.assert_allclose(art.inside.get_offsets(), expected, rtol=1e-6)
    assert art.count == count and len(expected) == 4 * count
    assert len(art.outside.get_offsets()) == 0
    # The sampled region: the box itself when aligned, shifted half a cell down-right if not.
    shift = 0.0 if aligned else 0.5
    x0, y0, w, h = art.region.get_bbox().bounds
    assert (x0, y0) == pytest.approx((1.5 + shift, 2.5 + shift))
    assert (w, h) == pytest.approx((11.0, 8.0))
    assert isinstance(art.grid, LineCollection) and len(art.grid.get_segments()) == 2
    assert f"{count} samples per bin" in art.title.get_text()


def test_roi_align_samples_outside_the_map(ax):
    art = viz.draw_roi_align_samples(ax, torch.rand(1, 1, 8, 8), (-8, -8, 4, 4), 1, 1.0, 2, True)
    assert len(art.outside.get_offsets()) > 0
    assert isinstance(art.outside, PathCollection)


def test_roi_align_update_in_place(ax):
    art = viz.draw_roi_align_samples(ax, torch.rand(1, 1, 8, 8), (0, 0, 4, 4), 2, 1.0, 1, True)
    inside = art.inside
    assert len(art.inside.get_offsets()) == 4
    art.update((0, 0, 8, 8), sampling_ratio=3, aligned=False)
    assert art.inside is inside and art.count == 9 and art.aligned is False
    assert len(art.inside.get_offsets()) + len(art.outside.get_offsets()) == 4 * 9


# ------------------------------------------------------------------------------------ panels


def _outputs(x, box, size=4):
    rois = torch.tensor([[0.0, *box]])
    return {name: f(x, rois, size) for name, f in STRATEGIES.items()}


def test_strategy_panels_show_outputs_on_one_scale():
    fig = Figure()
    panels = viz.StrategyPanels.create(fig, list(STRATEGIES), ncols=4)
    assert len(fig.axes) == len(STRATEGIES)
    x = torch.rand(1, 2, 16, 16) * 5
    box = (1.0, 2.0, 11.0, 13.0)
    outputs = _outputs(x, box)
    metrics = strategy_metrics(x, box, 4, outputs=outputs)
    images = dict(panels.images)
    panels.update(outputs, metrics, channel=1)
    assert panels.images == images  # same artists, new data
    for name in STRATEGIES:
        np.testing.assert_array_equal(panels.images[name].get_array(), outputs[name][0, 1].numpy())
        assert panels.images[name].get_clim() == panels.clim
        assert "cov" in panels.texts[name].get_text() and "PSNR" in panels.texts[name].get_text()
        assert panels.titles[name].get_text() == name
    lo, hi = panels.clim
    assert lo <= 0.0 and hi == pytest.approx(max(float(o[0, 1].max()) for o in outputs.values()))


def test_strategy_panels_resize_hide_and_fixed_clim():
    fig = Figure()
    panels = viz.StrategyPanels.create(fig, ["crop", "resize"], show_metrics=False)
    x = torch.rand(1, 1, 12, 12)
    panels.update({"crop": STRATEGIES["crop"](x, torch.tensor([[0, 0, 0, 5.0, 5.0]]), (2, 3))},
                  clim=(-1.0, 2.0))
    assert list(panels.images["crop"].get_extent()) == [0, 3, 2, 0]
    assert panels.images["crop"].get_clim() == (-1.0, 2.0)
    assert not panels.axes["resize"].get_visible()  # no output given: hidden
    assert panels.texts == {}


def test_strategy_panels_rgb():
    fig = Figure()
    panels = viz.StrategyPanels.create(fig, ["resize"])
    out = torch.rand(1, 3, 4, 4)
    panels.update({"resize": out})
    assert panels.clim == (0.0, 1.0)
    np.testing.assert_allclose(panels.images["resize"].get_array(), out[0].permute(1, 2, 0).numpy(), rtol=1e-6)


def test_strategy_panels_bad_axes():
    with pytest.raises(ValueError, match="axes"):
        viz.StrategyPanels([Figure().add_subplot()], ["crop", "pad"])


def test_metrics_text_handles_nan_and_inf():
    row = {"coverage": 1.0, "leak_fraction": 0.0, "psnr": float("inf")}
    assert viz.metrics_text(row) == "cov 100% leak 0%\nPSNR inf dB"
    assert "n/a" in viz.metrics_text({**row, "psnr": float("nan")})


# ------------------------------------------------------------------------------------ coverage


def test_draw_coverage(ax):
    x = torch.rand(1, 1, 12, 12)
    m = influence_map("crop", (2, 2, 5, 5), 2, probe=x)
    art = viz.draw_coverage(ax, m, (2, 2, 5, 5), title="crop")
    shown = art.image.get_array()
    assert shown.max() == pytest.approx(1.0) and shown.min() == 0.0
    np.testing.assert_array_equal(shown > 0, (m > 0).numpy())
    assert art.boxes.rects[0].get_linestyle() == "--"
    with pytest.raises(ValueError, match="influence"):
        viz.draw_coverage(ax, np.zeros((2, 2, 2)))


# ------------------------------------------------------------------------------------ timings

ROWS = [
    {"op": "roi_align", "workload": "K=64", "impl": "roiviz", "pass": "fwd", "median_ms": 2.0, "num_rois": 64},
    {"op": "roi_align", "workload": "K=64", "impl": "torchvision", "pass": "fwd", "median_ms": 1.0, "num_rois": 64},
    {"op": "roi_align", "workload": "K=8", "impl": "roiviz", "pass": "fwd", "median_ms": 0.5, "num_rois": 8},
    {"op": "roi_pool", "workload": "K=64", "impl": "roiviz", "pass": "fwd+bwd", "median_ms": 3.0},
]


def test_plot_timings(ax):
    bars = viz.plot_timings(ax, ROWS, group=("op", "workload"))
    assert [float(b.get_height()) for b in bars] == [2.0, 1.0, 0.5, 3.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["roi_align K=64", "roi_align K=8", "roi_pool K=64"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["roiviz fwd", "torchvision fwd", "roiviz fwd+bwd"]
    assert ax.get_yscale() == "log"
    # Bars of one group sit side by side, not on top of each other.
    assert bars[0].get_x() != bars[1].get_x()


def test_plot_timings_bad_input(ax):
    with pytest.raises(ValueError, match="median_ms"):
        viz.plot_timings(ax, [{"op": "x"}])
    with pytest.raises(ValueError, match="results"):
        viz.plot_timings(ax, [])


def test_plot_scaling(ax):
    lines = viz.plot_scaling(ax, list(reversed(ROWS)), x="num_rois", by=("op", "impl"))
    data = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in lines}
    assert data == {"roi_align roiviz": ([8.0, 64.0], [0.5, 2.0]), "roi_align torchvision": ([64.0], [1.0])}
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "num rois"
    with pytest.raises(ValueError, match="channels"):
        viz.plot_scaling(ax, ROWS, x="channels")


def test_plot_scaling_bench_rows(ax):
    rows = [{"op": "roi_pool", "impl": "roiviz", "pass": "fwd", "median_ms": 1.0, "x": None, "sweep": None},
            *({"op": "roi_pool", "impl": "roiviz", "pass": "fwd", "median_ms": k / 8, "x": k, "sweep": "rois"}
              for k in (8, 64))]
    (line,) = viz.plot_scaling(ax, rows, x="x", xlabel="number of ROIs")
    assert list(line.get_xdata()) == [8.0, 64.0] and ax.get_xlabel() == "number of ROIs"


def test_log_axes_have_plain_tick_labels():
    # "0.6" and "2", not matplotlib's default "6×10⁻¹" / "2×10⁰" on an axis spanning one decade.
    fig = Figure()
    ax = fig.add_subplot()
    viz.plot_scaling(ax, [{"op": "roi_pool", "x": k, "median_ms": k / 10} for k in (4, 8, 16)], x="x", by=("op",))
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels(which="both") if t.get_text()]
    assert labels and not any("10^" in t or "times" in t or "×" in t for t in labels), labels
    assert all(float(t) > 0 for t in labels)
    with pytest.raises(ValueError, match="axis"):
        viz.plain_log_ticks(ax, "z")


def test_strategy_panels_colorbar_follows_the_shared_scale():
    fig = Figure()
    panels = viz.StrategyPanels.create(fig, ["crop", "resize"], show_metrics=False)
    cbar = panels.colorbar(fig, "feature value")
    panels.update({"crop": torch.zeros(1, 1, 2, 2), "resize": torch.full((1, 1, 2, 2), 3.0)})
    assert cbar.mappable.get_clim() == (0.0, 3.0) and cbar.ax.get_ylabel() == "feature value"


# ------------------------------------------------------------------- readable figures (review)


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


def test_roi_pool_bins_values_and_legend_below():
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    viz.draw_roi_pool_bins(ax, x, (0, 0, 20, 20), 2, spatial_scale=0.1, legend="below", values=True)
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in range(16))
    renderer = _drawn(fig)
    # The legend is entirely under the map: it covers none of its cells.
    assert ax.get_legend().get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
    with pytest.raises(ValueError, match="legend"):
        viz.draw_roi_pool_bins(Figure().add_subplot(), x, (0, 0, 20, 20), 2, legend="left")


def test_roi_align_bins_drawn_over_the_samples(ax):
    art = viz.draw_roi_align_samples(ax, np.zeros((8, 8)), (0, 0, 8, 8), 2, sampling_ratio=4, legend=False)
    assert art.grid.get_zorder() > art.inside.get_zorder() and art.region.get_zorder() > art.inside.get_zorder()
    assert ax.get_legend() is None


def test_plot_timings_values_and_legend_above():
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    bars = viz.plot_timings(ax, ROWS, group=("op", "workload"), values=True, legend="above", title="W")
    assert [t.get_text() for t in ax.texts] == ["2", "1", "0.5", "3"]
    lo, hi = ax.get_ylim()
    assert lo < min(b.get_height() for b in bars) and hi > 2 * max(b.get_height() for b in bars)
    renderer = _drawn(fig)
    assert ax.get_legend().get_window_extent(renderer).y0 >= ax.get_window_extent(renderer).y1 - 1
    assert ax.get_title(loc="left") == "W"
    labels = [t.get_text() for t in ax.yaxis.get_ticklabels() if t.get_text()]
    assert labels and all(float(t) > 0 for t in labels), labels  # plain numbers: "0.5", "1", "2"
    with pytest.raises(ValueError, match="legend"):
        viz.plot_timings(Figure().add_subplot(), ROWS, legend="below")


def test_plot_scaling_wraps_the_title(ax):
    viz.plot_scaling(ax, ROWS, x="num_rois", title="time vs number of ROIs\n(8 channels, 7x7 output, map 50x68)",
                     title_width=24)
    lines = ax.get_title().splitlines()
    assert len(lines) > 2 and all(len(line) <= 24 for line in lines)


def test_plain_log_ticks_on_a_base_2_axis(ax):
    ax.plot([1, 8], [0, 1])
    ax.set_xscale("log", base=2)
    viz.plain_log_ticks(ax, "x")
    fmt = ax.xaxis.get_major_formatter()
    fmt.set_locs([1.0, 2.0, 4.0, 8.0])
    assert [fmt(v) for v in (1.0, 2.0, 4.0, 8.0)] == ["1", "2", "4", "8"]


def test_maps_have_whole_number_ticks():
    fig = Figure(figsize=(3, 3))
    ax = fig.add_subplot()
    viz.draw_roi_align_samples(ax, np.zeros((16, 16)), (30, 20, 100, 84), 3, spatial_scale=1 / 8, sampling_ratio=2)
    _drawn(fig)
    for axis in (ax.xaxis, ax.yaxis):
        ticks = [t for t in axis.get_majorticklocs() if 0 <= t <= 16]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
