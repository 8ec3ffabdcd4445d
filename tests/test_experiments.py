"""Tests for roiviz.experiments: the dataset, the metrics, the one-code-path loop, the report and the CLI.

Every run here uses a tiny configuration (32x32 images, stride 8, a few dozen steps) so the
whole file takes seconds; the real numbers come from ``roiviz experiment``.
"""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.container import BarContainer

import roiviz
from roiviz import experiments
from roiviz.experiments import gaps as gaps_mod
from roiviz.experiments import train as train_mod
from roiviz.experiments.data import (
    CLASSES,
    DataConfig,
    inside,
    make_dataset,
    mask_in_boxes,
)
from roiviz.experiments.metrics import average_precision, mask_iou
from roiviz.experiments.model import Backbone, MaskHead

TINY_DATA = DataConfig(image_size=32, objects=(1, 2), size_range=(7.0, 14.0), bar_width=(2.0, 3.0),
                       proposals=2)
TINY = experiments.ExperimentConfig(
    strides=(8,), seeds=(0,), n_pretrain=8, n_train=12, n_test=6, data=TINY_DATA, pooled_size=4,
    channels=8, head_width=8, pretrain_steps=3, pretrain_batch=4, steps=40, batch_size=16,
    lr=3e-3, eval_size=16,
)


def _tensors(ds):
    return [ds.images, ds.shapes, ds.gt_boxes, ds.rois, ds.roi_object, ds.segmentation]


# --------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_for_a_seed():
    a, b = make_dataset(5, seed=3, config=TINY_DATA), make_dataset(5, seed=3, config=TINY_DATA)
    for x, y in zip(_tensors(a), _tensors(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(a.targets(8), b.targets(8), rtol=0, atol=0)


def test_dataset_seeds_and_splits_differ():
    base = make_dataset(5, seed=3, config=TINY_DATA)
    assert not torch.equal(base.images, make_dataset(5, seed=4, config=TINY_DATA).images)
    assert not torch.equal(base.images, make_dataset(5, seed=3, config=TINY_DATA, split="test").images)
    assert not torch.equal(base.images, make_dataset(5, seed=3, config=TINY_DATA, split="pretrain").images)


def test_dataset_shapes_and_ranges():
    cfg = DataConfig()
    ds = make_dataset(6, seed=0, config=cfg)
    n_obj = len(ds.shapes)
    assert ds.images.shape == (6, 1, cfg.image_size, cfg.image_size)
    assert len(ds.rois) == n_obj * cfg.proposals and ds.rois.shape[1] == 5
    assert set(ds.labels.tolist()) <= set(range(len(CLASSES)))
    # Sub-pixel: centres are not on the pixel grid.
    assert (ds.shapes[:, 2] % 1).std() > 0.1
    # Every proposal edge moved by at most `jitter` times the side of its object's box.
    gt = ds.gt_boxes[ds.roi_object]
    side = torch.cat([gt[:, 2:] - gt[:, :2]] * 2, dim=1)
    assert ((ds.rois[:, 1:] - gt).abs() <= cfg.jitter * side + 1e-4).all()
    assert (ds.rois[:, 0] == ds.shapes[ds.roi_object, 0]).all()
    test = make_dataset(6, seed=0, config=cfg, split="test")
    assert len(test.rois) == len(test.shapes)


@settings(max_examples=25, deadline=None)
@given(cx=st.floats(10, 22), cy=st.floats(10, 22), half=st.floats(2, 8), cls=st.sampled_from([0, 1]))
def test_mask_in_gt_box_matches_analytic_area(cx, cy, half, cls):
    shape = torch.tensor([[0, cls, cx, cy, half, half]])
    box = torch.tensor([[cx - half, cy - half, cx + half, cy + half]])
    fill = float(mask_in_boxes(shape, box, 16, supersample=8).mean())
    expected = math.pi / 4 if cls == 0 else 1.0  # disc in its square box, square in itself
    assert fill == pytest.approx(expected, abs=0.01)


def test_rendered_image_has_the_shape_area():
    cfg = DataConfig(image_size=32, objects=(1, 1), size_range=(10.0, 14.0), noise=0.0, supersample=8)
    ds = make_dataset(3, seed=1, config=cfg)
    for i in range(3):
        _, cls, _, _, a, b = ds.shapes[i].tolist()
        area = {0: math.pi * a * a, 1: 4 * a * b, 2: 4 * a * b, 3: 2 * a * b}[int(cls)]
        bright = float(ds.images[i].max())  # some pixel is fully covered
        assert float(ds.images[i].sum()) / bright == pytest.approx(area, rel=0.03)


def test_inside_triangle_apex_and_base():
    tri = torch.tensor([[0, 3, 10.0, 10.0, 4.0, 3.0]])  # apex (10, 7), base y = 13 from x 6 to 14
    x = torch.tensor([[10.0, 10.0, 6.5, 13.5, 6.5]])
    y = torch.tensor([[7.2, 12.9, 12.9, 12.9, 8.0]])
    assert inside(tri, x, y).tolist() == [[True, True, True, True, False]]


def test_dataset_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        make_dataset(2, seed=0, split="val")
    with pytest.raises(ValueError, match="n_images"):
        make_dataset(0, seed=0)
    with pytest.raises(ValueError, match="jitter"):
        DataConfig(jitter=0.7)


# --------------------------------------------------------------------------- model and metrics


@pytest.mark.parametrize("stride", [8, 16, 32])
def test_backbone_stride(stride):
    assert Backbone(stride, 4)(torch.zeros(1, 1, 64, 64)).shape == (1, 4, 64 // stride, 64 // stride)


def test_backbone_bad_stride():
    with pytest.raises(ValueError, match="stride"):
        Backbone(12)


def test_head_shapes():
    m, c = MaskHead(3, 5, 4, width=6)(torch.zeros(2, 3, 5, 5))
    assert m.shape == (2, 10, 10) and c.shape == (2, 4)


def test_metrics_perfect_and_wrong():
    masks = torch.rand(6, 8, 8) > 0.5
    assert torch.equal(mask_iou(masks, masks), torch.ones(6))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    scores = torch.linspace(0.9, 0.4, 6)
    assert average_precision(scores, labels, labels, torch.ones(6), 0.5, 4) == pytest.approx(1.0)
    assert average_precision(scores, (labels + 1) % 4, labels, torch.ones(6), 0.5, 4) == 0.0
    assert average_precision(scores, labels, labels, torch.full((6,), 0.6), 0.75, 4) == 0.0
    with pytest.raises(ValueError, match="pred and target"):
        mask_iou(masks, masks[:, :4])


# --------------------------------------------------------------------------- the experiment loop


def test_tiny_run_trains_and_writes_json(tmp_path):
    path = tmp_path / "sub" / "r.json"
    results = experiments.run(config=TINY, json_path=path, progress=False)
    loaded = json.loads(path.read_text())
    assert loaded["strategies"] == list(roiviz.STRATEGIES)
    by_name = loaded["results"]["stride_8"]
    assert set(by_name) == set(roiviz.STRATEGIES) and len(by_name) == 8
    for name, s in by_name.items():
        for key in ("mask_iou", "ap", "ap50", "ap75", "class_acc"):
            assert 0.0 <= s[f"{key}_mean"] <= 1.0, (name, key)
            assert s[f"{key}_std"] == 0.0  # one seed
        (seed,) = s["per_seed"]
        assert seed["loss_last"] < seed["loss_first"], name  # the head learns
    assert loaded["config"]["strides"] == [8]
    assert 0.0 <= loaded["full_box_mask_iou"] <= 1.0
    quality = loaded["backbone"]["stride_8"]
    assert 0.0 <= quality["seg_fg_iou_mean"] <= 1.0 and 0.0 <= quality["seg_class_acc_mean"] <= 1.0
    assert results["results"].keys() == loaded["results"].keys()


def test_every_strategy_goes_through_the_same_code_path(monkeypatch):
    seen_calls: list[tuple] = []
    seen_scores: list[str] = []
    real = train_mod.train_and_score

    def spy(name, strategy, *args, **kwargs):
        seen_scores.append(name)
        return real(name, strategy, *args, **kwargs)

    def recording(name, fn):
        def wrapped(features, rois, output_size, spatial_scale=1.0):
            seen_calls.append((name, features.data_ptr(), rois.data_ptr(), output_size, spatial_scale))
            return fn(features, rois, output_size, spatial_scale=spatial_scale)
        return wrapped

    monkeypatch.setattr(train_mod, "train_and_score", spy)
    strategies = {n: recording(n, f) for n, f in roiviz.STRATEGIES.items()}
    cfg = TINY.replace(steps=2, seeds=(0, 1))
    train_mod.run_experiment(cfg, strategies=strategies, progress=False)
    assert seen_scores == list(roiviz.STRATEGIES) * 2
    # Each strategy pools the same train and test tensors, with P and 1/stride, in the same order.
    per_name = {n: [c[1:] for c in seen_calls if c[0] == n] for n in roiviz.STRATEGIES}
    first = per_name["crop"]
    assert len(first) == 4  # (train, test) x 2 seeds
    assert all(calls == first for calls in per_name.values())
    assert {c[3:] for c in seen_calls} == {(TINY.pooled_size, 1 / 8)}


def test_same_strategy_under_two_names_gives_identical_scores():
    # Same seeds, data, initial head, batches and steps: only the strategy may make a difference.
    f = roiviz.STRATEGIES["roi_align"]
    r = train_mod.run_experiment(TINY.replace(steps=5), strategies={"a": f, "b": f}, progress=False)
    a, b = (r["results"]["stride_8"][k]["per_seed"][0] for k in ("a", "b"))
    for key in ("mask_iou", "ap", "class_acc", "loss_first", "loss_last"):
        assert a[key] == b[key], key


def test_config_validation():
    with pytest.raises(ValueError, match="strides"):
        TINY.replace(strides=(12,))
    with pytest.raises(ValueError, match="multiple"):
        TINY.replace(strides=(64,))
    with pytest.raises(ValueError, match="seeds"):
        TINY.replace(seeds=(1, 1))
    with pytest.raises(ValueError, match="seeds"):
        experiments.run(config=TINY, seeds=0)
    with pytest.raises(ValueError, match="threads"):
        experiments.run(config=TINY, threads=0)


# --------------------------------------------------------------------------- report


def _fake_results():
    def entry(v):
        return {**{f"{m}_mean": v for m in experiments.METRIC_LABELS},
                **{f"{m}_std": 0.01 for m in experiments.METRIC_LABELS}, "per_seed": [{}, {}]}
    names = list(roiviz.STRATEGIES)
    return {"results": {f"stride_{s}": {n: entry(0.5 + 0.05 * i) for i, n in enumerate(names)}
                        for s in (16, 32)}}


def test_table_lists_every_strategy_and_stride():
    text = experiments.format_table(_fake_results())
    rows = [line.split()[0] for line in text.splitlines() if line and not line.startswith("stride")]
    assert rows == list(roiviz.STRATEGIES) * 2
    assert "stride 16 (2 seeds)" in text and "stride 32 (2 seeds)" in text
    assert "0.800 ± 0.010" in text  # roi_align, the 7th strategy
    with pytest.raises(ValueError, match="metric"):
        experiments.format_table(_fake_results(), metrics=("iou",))
    with pytest.raises(ValueError, match="results"):
        experiments.format_table({})


def test_one_seed_prints_no_spread():
    # A std over one seed is 0 by construction: printing "± 0.000" would look like a measured spread.
    r = _fake_results()
    for by_strategy in r["results"].values():
        for s in by_strategy.values():
            s["per_seed"] = [{}]
    r["config"] = {"seeds": [0]}
    r["backbone"] = {"stride_16": {"seg_fg_iou_mean": 0.8, "seg_fg_iou_std": 0.0, "seg_class_acc_mean": 0.7}}
    text = experiments.format_table(r)
    assert "±" not in text and "stride 16 (1 seed, no spread)" in text
    fig, ax = plt.subplots()
    experiments.plot_results(r, ax=ax)
    assert all(c.errorbar is None for c in ax.containers if isinstance(c, BarContainer))
    assert "one seed" in ax.get_title() and "±" not in ax.get_title()
    plt.close(fig)


def test_chart_draws_bars_with_error_bars_on_given_ax():
    fig, ax = plt.subplots()
    assert experiments.plot_results(_fake_results(), ax=ax, metric="ap") is ax
    assert len(ax.patches) == len(roiviz.STRATEGIES) * 2
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 2 and all(c.errorbar is not None for c in bars)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(roiviz.STRATEGIES)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strides", "12"], "power of two"),
        (["--strides", "sixteen"], "positive integer"),
        (["--seeds", "0"], "positive integer"),
        (["--threads", "-1"], "positive integer"),
        (["--bogus"], "unrecognized arguments"),
        (["--strides", "256"], "power of two"),
    ],
)
def test_cli_argument_errors_are_clear(argv, message, capsys):
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert "roiviz experiment: error:" in err and message in err


def test_cli_stride_incompatible_with_image_size(capsys, monkeypatch):
    monkeypatch.setattr(experiments, "QUICK", TINY)
    assert experiments.main(["--quick", "--strides", "64"]) == 2
    assert "multiple of every stride" in capsys.readouterr().err


def test_cli_json_path_is_a_directory(tmp_path, capsys):
    assert experiments.main(["--quick", "--json", str(tmp_path)]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_cli_help_returns_zero(capsys):
    assert experiments.main(["--help"]) == 0
    assert "--quick" in capsys.readouterr().out


def test_cli_tiny_run_writes_everything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(experiments, "QUICK", TINY.replace(steps=3))
    code = experiments.main(["--quick", "--no-progress", "--json", str(tmp_path / "r.json"),
                             "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "roi_align" in out and "stride 8" in out
    assert "AP75" in out.splitlines()[0] and "stride 8  align - pool  mask AP" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["mode"] == "quick" and set(data["results"]["stride_8"]) == set(roiviz.STRATEGIES)
    for name in ("results.json", "table.txt", "mask_iou.png", "mask_ap.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


# --------------------------------------------------------------------------- does the gap widen? (gaps.py)


def _gap_results(pool, warp, align):
    """Results with one entry per seed: ``pool``, ``warp``, ``align`` map stride -> per-seed AP."""
    def entry(values):
        return {"per_seed": [{m: v for m in gaps_mod.GAP_METRICS} for v in values]}
    return {"results": {f"stride_{s}": {"roi_pool": entry(pool[s]), "resize": entry(warp[s]),
                                        "roi_align": entry(align[s])} for s in pool}}


def test_full_run_objects_are_large_relative_to_the_coarsest_cell():
    cfg = experiments.FULL
    assert cfg.strides == (16, 32) and len(cfg.seeds) >= 3
    # Every object spans at least two cells of the coarsest map: the question is fair there.
    assert cfg.data.size_range[0] >= 2 * max(cfg.strides)
    assert experiments.QUICK.data == experiments.SMALL_OBJECTS


def test_seed_gaps_are_paired_differences():
    r = _gap_results(pool={16: [0.5, 0.6], 32: [0.4, 0.5]}, warp={16: [0.5, 0.7], 32: [0.3, 0.5]},
                     align={16: [0.7, 0.7], 32: [0.8, 0.6]})
    g = gaps_mod.seed_gaps(r)
    assert g["stride_16"]["align_minus_pool"]["ap"] == pytest.approx([0.2, 0.1])
    assert g["stride_32"]["warp_minus_pool"]["ap75"] == pytest.approx([-0.1, 0.0])
    w = gaps_mod.widening(r)
    assert (w["fine"], w["coarse"]) == ("stride_16", "stride_32")
    assert w["fine_gap"] == pytest.approx(0.15) and w["coarse_gap"] == pytest.approx(0.25)
    assert w["widens"] and (w["seeds_widening"], w["seeds"]) == (1, 2)  # seed 1: 0.1 -> 0.1 is not wider
    assert not gaps_mod.widening(r, gap="warp_minus_pool")["widens"]
    text = gaps_mod.format_gaps(r)
    assert "stride 32  align - pool  mask AP +0.400 +0.100" in text
    assert "mask AP align - pool, stride 16 -> stride 32: +0.150 -> +0.250 (widens in the mean; wider on 1/2 seeds)" in text


def test_seed_gaps_skip_missing_strategies_and_widening_needs_two_strides():
    r = _gap_results(pool={16: [0.5]}, warp={16: [0.5]}, align={16: [0.7]})
    del r["results"]["stride_16"]["resize"]
    assert list(gaps_mod.seed_gaps(r)["stride_16"]) == ["align_minus_pool"]
    with pytest.raises(ValueError, match="two strides"):
        gaps_mod.widening(r)
    with pytest.raises(ValueError, match="metric"):
        gaps_mod.widening(r, metric="iou")
    with pytest.raises(ValueError, match="results"):
        gaps_mod.seed_gaps({})


def test_run_stores_object_sizes_and_per_seed_gaps():
    r = experiments.run(config=TINY.replace(steps=3, seeds=(0, 1)), progress=False)
    lo, hi = TINY_DATA.size_range
    assert lo <= r["objects"]["extent_px_median"] <= hi
    by_name = r["results"]["stride_8"]
    expected = [a["ap75"] - p["ap75"] for a, p in zip(by_name["roi_align"]["per_seed"],
                                                       by_name["roi_pool"]["per_seed"], strict=True)]
    assert r["gaps"]["stride_8"]["align_minus_pool"]["ap75"] == expected
    assert set(r["gaps"]["stride_8"]) == {"align_minus_pool", "warp_minus_pool"}


SMALL_TINY = DataConfig(image_size=32, objects=(1, 2), size_range=(5.0, 8.0), bar_width=(2.0, 3.0),
                        proposals=2)
LARGE_TINY = DataConfig(image_size=32, objects=(1, 1), size_range=(18.0, 24.0), bar_width=(2.0, 3.0),
                        proposals=2)


def test_compare_object_sizes_rows_and_plot():
    cfg = TINY.replace(strides=(8, 16), steps=5)
    table = experiments.compare_object_sizes({"small": SMALL_TINY, "large": LARGE_TINY}, config=cfg)
    rows = table["rows"]
    assert [(r["data"], r["stride"]) for r in rows] == [("small", 8), ("small", 16), ("large", 8), ("large", 16)]
    for r in rows:
        assert r["extent_over_stride"] == pytest.approx(r["extent_px"] / r["stride"])
        assert r["align_minus_pool_ap"] == pytest.approx(r["ap_roi_align"] - r["ap_roi_pool"])
        assert r["warp_minus_pool_ap75"] == pytest.approx(r["ap75_resize"] - r["ap75_roi_pool"])
    assert rows[0]["extent_px"] < 8 < 18 <= rows[2]["extent_px"]
    assert set(table["results"]["large"]["strategies"]) == {"roi_pool", "resize", "roi_align"}
    text = experiments.format_size_table(table, "ap75")
    assert text.splitlines()[0].split()[:5] == ["data", "stride", "object", "px", "object/stride"]
    assert len(text.splitlines()) == 5 and "align - pool" in text and "warp - pool" in text

    ax = experiments.plot_gap_vs_size(table)
    fig = ax.figure
    assert fig.get_figwidth() <= 10
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["roi_align − roi_pool", "resize − roi_pool (RoIWarp)"]
    xs, ys = ax.get_lines()[0].get_data()
    assert sorted(ys) == sorted(r["align_minus_pool_ap"] for r in rows)
    assert sorted(xs) == pytest.approx(sorted(r["extent_over_stride"] for r in rows))
    fonts = [t.get_fontsize() for t in (*ax.get_legend().get_texts(), ax.xaxis.label, ax.yaxis.label,
                                        *ax.texts, *ax.get_xticklabels(), *ax.get_yticklabels())]
    assert min(fonts) >= 10
    plt.close(fig)


def test_compare_object_sizes_bad_arguments():
    with pytest.raises(ValueError, match="roi_pool"):
        experiments.compare_object_sizes({"a": SMALL_TINY}, config=TINY, strategies=("roi_align", "resize"))
    with pytest.raises(ValueError, match="unknown"):
        experiments.compare_object_sizes({"a": SMALL_TINY}, config=TINY, strategies=("roi_pool", "nope"))
    with pytest.raises(TypeError, match="DataConfig"):
        experiments.compare_object_sizes({"a": (32, 5.0)}, config=TINY)
    with pytest.raises(ValueError, match="at least one"):
        experiments.compare_object_sizes({}, config=TINY)
