"""The benchmark harness runs, writes valid JSON in the documented shape, and rejects bad args.

Smoke runs only (tiny workloads, seconds); no assertion is ever made on a timing.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import torch

from roiviz import bench

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
ROW_KEYS = {"op", "workload", "impl", "pass", "median_ms", "x"}


def _check_rows(rows: list[dict]) -> None:
    assert rows
    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["impl"] in ("roiviz", "torchvision") and r["pass"] in ("fwd", "fwd+bwd")
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0  # a duration, not a timing claim
        assert r["n_runs"] >= 1


def test_make_boxes_follow_the_workload() -> None:
    for wl in bench.WORKLOADS.values():
        b = bench.make_boxes(wl, seed=3)
        assert b.shape == (wl.n_rois, 5) and b.dtype == torch.float32
        w, h = b[:, 3] - b[:, 1], b[:, 4] - b[:, 2]
        lo, hi = wl.box_px
        assert bool((w >= lo - 1e-3).all() and (w <= hi + 1e-3).all() and (h >= lo - 1e-3).all() and (h <= hi + 1e-3).all())
        assert bool((b[:, 1:3] >= 0).all() and (b[:, 3] <= wl.image[1]).all() and (b[:, 4] <= wl.image[0]).all())
        assert torch.equal(torch.bincount(b[:, 0].long()), torch.full((wl.batch,), wl.boxes_per_image))
        assert torch.equal(b, bench.make_boxes(wl, seed=3))
        assert not torch.equal(b, bench.make_boxes(wl, seed=4))


def test_workloads_are_the_issue_s() -> None:
    w1, w2, w3 = (bench.WORKLOADS[k] for k in ("W1", "W2", "W3"))
    assert (w1.batch, w1.channels, w1.height, w1.width, w1.n_rois, w1.output_size, w1.spatial_scale) == (
        2, 256, 50, 68, 1024, 7, 1 / 16)
    assert (w2.batch, w2.channels, w2.height, w2.width, w2.n_rois, w2.output_size, w2.spatial_scale) == (
        1, 3, 64, 64, 8, 7, 1.0)
    assert (w3.batch, w3.channels, w3.height, w3.width, w3.n_rois, w3.output_size, w3.spatial_scale) == (
        2, 256, 100, 136, 200, 14, 1 / 8)
    # Every strategy is timed; the registry's roi_pool/roi_align are the op rows.
    from roiviz import STRATEGIES

    assert set(STRATEGIES) - {"roi_pool", "roi_align"} <= set(bench.OPS)
    assert {"roi_align sr=2", "roi_align sr=-1", "roi_pool"} <= set(bench.OPS)


def test_run_benchmark_smoke() -> None:
    res = bench.run_benchmark(workloads=["W2"], ops=["roi_align:2", "roi_pool", "crop"], quick=True,
                              progress=False, rounds=1)
    _check_rows(res.rows)
    seen = {(r["op"], r["impl"], r["pass"]) for r in res.rows}
    for op in ("roi_align sr=2", "roi_pool", "crop"):
        assert {(op, "roiviz", "fwd"), (op, "roiviz", "fwd+bwd")} <= seen
    assert ("crop", "torchvision", "fwd") not in seen  # torchvision has no such op
    if HAS_TORCHVISION:
        assert ("roi_pool", "torchvision", "fwd") in seen
        assert set(res.summary) == {f"W2 {op} {p}" for op in ("roi_align sr=2", "roi_pool") for p in ("fwd", "fwd+bwd")}
    else:
        assert res.summary == {}
    env = res.environment
    assert env["threads"] == 1 and env["device"] == "cpu" and env["torch"] == str(torch.__version__)
    assert env["cpu_count"] >= 1
    data = json.loads(res.to_json())
    assert set(data) >= {"environment", "rows", "summary", "settings", "targets", "memory"}
    assert data["settings"]["quick"] is True
    assert "roiviz ms" in res.table()


def test_cli_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--workloads", "W2", "--ops", "roi_pool", "--passes", "fwd",
                       "--rounds", "1", "--json", str(out), "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    _check_rows(data["rows"])
    assert data["environment"]["threads"] >= 1
    assert "roi_pool" in capsys.readouterr().out


def test_cli_json_to_stdout(capsys) -> None:
    code = bench.main(["--quick", "--workloads", "W2", "--ops", "strategies", "--passes", "fwd", "--rounds", "1",
                       "--json", "-", "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)  # stdout is only the JSON; the table goes to stderr
    assert {r["op"] for r in data["rows"]} == {"crop", "pad", "adaptive_max", "adaptive_avg", "resize", "prroi_pool"}
    assert "workload" in captured.err


def test_scaling_rows_for_plotting() -> None:
    res = bench.run_scaling(ops=["roi_pool"], passes=["fwd"], sweeps=["rois", "channels"], quick=True,
                            progress=False, rounds=1, torchvision=False)
    _check_rows(res.rows)
    rois = [r for r in res.rows if r["sweep"] == "rois"]
    assert [r["x"] for r in rois] == bench.QUICK_SWEEPS["rois"]
    assert all(r["K"] == r["x"] for r in rois)
    chans = [r for r in res.rows if r["sweep"] == "channels"]
    assert [r["C"] for r in chans] == [r["x"] for r in chans] == bench.QUICK_SWEEPS["channels"]
    assert all(r["workload"] == "W1" for r in res.rows)
    # Each quick sweep has enough points for a slope, and says what it holds fixed.
    assert all(len(v) >= 4 and v[-1] / v[0] >= 28 for v in bench.QUICK_SWEEPS.values())
    k = chans[0]["K"]
    assert bench.sweep_caption(res.rows, "channels") == f"time vs channels\n(7x7 output, {k} ROIs, map 50x68, batch 2)"
    growth = bench.sweep_growth(res.rows, "rois")
    assert list(growth) == ["roi_pool roiviz fwd"] and growth["roi_pool roiviz fwd"][:2] == (1, 4096)
    with pytest.raises(ValueError, match="sweep"):
        bench.sweep_growth(res.rows, "output_size")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--workloads", "W9"], ["workloads", "W9", "W1"]),
        (["--ops", "roi_warp"], ["ops", "roi_warp", "roi_align"]),
        (["--device", "tpu"], ["--device", "tpu"]),
        (["--passes", "bwd"], ["--passes", "bwd"]),
        (["--rounds", "0", "--quick"], ["rounds", "0"]),
        (["--threads", "-1", "--quick"], ["threads", "-1"]),
        (["--rounds", "two"], ["--rounds", "two"]),
        (["--frobnicate"], ["--frobnicate"]),
    ],
)
def test_cli_rejects_bad_arguments(argv, words, capsys) -> None:
    assert bench.main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_absent_is_a_clear_error(capsys) -> None:
    assert bench.main(["--device", "cuda", "--quick", "--no-progress"]) == 2
    assert "CUDA" in capsys.readouterr().err
    with pytest.raises(ValueError, match="device"):
        bench.run_benchmark(device="cuda", quick=True, progress=False)


def test_run_benchmark_validates_arguments() -> None:
    with pytest.raises(ValueError, match="workloads"):
        bench.run_benchmark(workloads=[], quick=True, progress=False)
    with pytest.raises(ValueError, match="passes"):
        bench.run_benchmark(workloads=["W2"], passes=["backward"], quick=True, progress=False)
    with pytest.raises(ValueError, match="min_run_time"):
        bench.run_benchmark(workloads=["W2"], min_run_time=0, quick=True, progress=False)
    with pytest.raises(ValueError, match="sweeps"):
        bench.run_scaling(sweeps=["height"], quick=True, progress=False)
    with pytest.raises(ValueError, match="impl"):
        bench.measure_peak_memory("W2", "roi_pool", impl="numpy")


def test_cli_help_exits_zero(capsys) -> None:
    assert bench.main(["--help"]) == 0
    assert "--json" in capsys.readouterr().out


@pytest.mark.slow
def test_memory_probe_runs_in_a_subprocess() -> None:
    m = bench.measure_peak_memory("W2", "roi_pool", "roiviz", threads=1)
    assert m["impl"] == "roiviz" and m["peak_extra_mib"] >= 0 and m["output_mib"] > 0
    assert "subprocess" in m["method"]
