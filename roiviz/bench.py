"""Timing harness: roiviz's ops and strategies, against torchvision in the same process.

Used by ``roiviz bench`` (``python -m roiviz bench``), by ``benchmarks/`` and by notebook 4.
Three workloads, all float32, boxes random (seeded), 8–200 px inside an 800×1088 image:

===== ======================= =================== ======= ======
name   input                   boxes               output  scale
===== ======================= =================== ======= ======
W1     ``[2, 256, 50, 68]``    512 per image       7×7     1/16
W2     ``[1, 3, 64, 64]``      8 of 4–40 px        7×7     1
W3     ``[2, 256, 100, 136]``  100 per image       14×14   1/8
===== ======================= =================== ======= ======

Each is timed for ``roi_align`` (``aligned=True``, ``sampling_ratio`` 2 and -1), ``roi_pool``
and every other strategy in :data:`roiviz.STRATEGIES` (the registry's ``roi_pool`` and
``roi_align`` are the ``roi_pool`` and ``roi_align sr=2`` rows), forward and forward+backward.

Method: :class:`torch.utils.benchmark.Timer` (``blocked_autorange``) on the CPU, CUDA events
around a block of calls on the GPU; every callable is warmed up, then measured in several
*interleaved* rounds (roiviz and torchvision alternate, and the order flips every round, so
load from other processes hits both alike); the reported time is the median over all runs.
Ratios are ``roiviz / torchvision`` from the same run.

Result rows (:attr:`BenchResult.rows`, also the ``"rows"`` of ``--json``) are plain dicts that
:func:`roiviz.viz.plot_timings` and ``plot_scaling`` take::

    {"op": "roi_align sr=2", "workload": "W1", "impl": "roiviz" | "torchvision",
     "pass": "fwd" | "fwd+bwd", "median_ms": float, "x": None | int,
     "iqr_ms": float, "n_runs": int, "device": "cpu", "dtype": "float32",
     "sweep": None | "rois" | "output_size" | "channels",
     "K": int, "C": int, "output_size": int}

``x`` is the swept value in scaling rows (``--scaling``) and ``None`` otherwise. The summary
(:attr:`BenchResult.summary`) maps ``"W1 roi_align sr=2 fwd"``-style keys to the ratio
roiviz / torchvision.

Examples
--------
>>> res = run_benchmark(workloads=["W2"], ops=["roi_pool"], passes=["fwd"], quick=True,
...                     progress=False, torchvision=False)
>>> sorted(res.rows[0])[:6]
['C', 'K', 'device', 'dtype', 'impl', 'iqr_ms']
>>> res.rows[0]["op"], res.rows[0]["workload"], res.rows[0]["impl"], res.rows[0]["pass"]
('roi_pool', 'W2', 'roiviz', 'fwd')
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ._threads import torch_threads

__all__ = [
    "OPS",
    "TARGETS",
    "WORKLOADS",
    "BenchResult",
    "Workload",
    "cpu_id",
    "cpu_model",
    "environment",
    "fresh_memory_ms",
    "main",
    "make_boxes",
    "measure_peak_memory",
    "run_benchmark",
    "run_scaling",
    "sweep_caption",
    "sweep_growth",
]


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: a feature map, random boxes on the image, and the op's parameters.

    ``image`` is the image size ``(height, width)`` in pixels; boxes have sides drawn uniformly
    in ``box_px`` and lie inside the image. ``spatial_scale`` maps image to feature pixels.
    """

    name: str
    batch: int
    channels: int
    height: int
    width: int
    boxes_per_image: int
    output_size: int
    spatial_scale: float
    image: tuple[int, int] = (800, 1088)
    box_px: tuple[float, float] = (8.0, 200.0)
    description: str = ""

    @property
    def n_rois(self) -> int:
        return self.batch * self.boxes_per_image

    def quick(self) -> Workload:
        """A shrunk copy for ``--quick``: the same geometry, fewer channels and boxes."""
        return replace(self, channels=min(self.channels, 8), boxes_per_image=max(1, min(self.boxes_per_image, 16)))


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", 2, 256, 50, 68, 512, 7, 1 / 16, description="detector head"),
    "W2": Workload("W2", 1, 3, 64, 64, 8, 7, 1.0, image=(64, 64), box_px=(4.0, 40.0), description="teaching"),
    "W3": Workload("W3", 2, 256, 100, 136, 100, 14, 1 / 8, description="mask head"),
}

#: The CPU targets (issue 12), as ratios roiviz / torchvision in the same run; the peak-memory
#: key is the ratio of the extra memory one W1 forward takes.
TARGETS: dict[str, float] = {}
for _w in ("W1", "W3"):
    TARGETS.update({
        f"{_w} roi_align sr=2 fwd": 0.15, f"{_w} roi_align sr=2 fwd+bwd": 0.10,
        f"{_w} roi_align sr=-1 fwd": 0.15, f"{_w} roi_align sr=-1 fwd+bwd": 0.10,
        f"{_w} roi_pool fwd": 0.10, f"{_w} roi_pool fwd+bwd": 0.25,
    })
for _op in ("roi_align sr=2", "roi_align sr=-1", "roi_pool"):
    TARGETS.update({f"W2 {_op} fwd": 3.0, f"W2 {_op} fwd+bwd": 3.0})
TARGETS["W1 peak memory roi_align sr=2 fwd"] = 1.2
#: Targets of issue 14 on a GPU (``--device cuda``): roiviz's Triton kernels against torchvision's CUDA kernels.
CUDA_TARGETS: dict[str, float] = {
    f"{w} {op} {p}": 1.0 for w in ("W1", "W3") for op in ("roi_align sr=2", "roi_pool") for p in ("fwd", "fwd+bwd")
}


def _targets(environment: dict[str, Any]) -> dict[str, float]:
    """The targets for the device a result was measured on."""
    return CUDA_TARGETS if environment.get("device") == "cuda" else TARGETS


def make_boxes(workload: Workload, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random boxes ``Tensor[K, 5]`` (batch index, x1, y1, x2, y2) in image pixels, seeded.

    Examples
    --------
    >>> b = make_boxes(WORKLOADS["W1"])
    >>> b.shape, bool((b[:, 3] <= 1088).all() and (b[:, 4] <= 800).all())
    (torch.Size([1024, 5]), True)
    >>> torch.equal(b, make_boxes(WORKLOADS["W1"]))
    True
    """
    g = torch.Generator().manual_seed(seed)
    k = workload.n_rois
    lo, hi = workload.box_px
    img_h, img_w = workload.image
    w = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
    h = lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)
    x1 = (img_w - w) * torch.rand(k, generator=g, dtype=torch.float64)
    y1 = (img_h - h) * torch.rand(k, generator=g, dtype=torch.float64)
    b = torch.arange(workload.batch, dtype=torch.float64).repeat_interleave(workload.boxes_per_image)
    return torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1).to(device=device, dtype=dtype)


def make_input(workload: Workload, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    shape = (workload.batch, workload.channels, workload.height, workload.width)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


# --------------------------------------------------------------------------------------------
# What is timed
# --------------------------------------------------------------------------------------------

OpFn = Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]


def _roiviz_op(label: str, trusted: bool = False) -> OpFn:
    """roiviz's callable for an op label; ``trusted`` runs it inside ``roiviz.trusted_boxes()``."""
    import roiviz

    fn = _roiviz_plain(label)
    if not trusted:
        return fn

    def call(x: torch.Tensor, b: torch.Tensor, o: int, s: float) -> torch.Tensor:
        with roiviz.trusted_boxes():
            return fn(x, b, o, s)
    return call


def _roiviz_plain(label: str) -> OpFn:
    import roiviz

    if label == "roi_align sr=2":
        return lambda x, b, o, s: roiviz.roi_align(x, b, o, s, sampling_ratio=2, aligned=True)
    if label == "roi_align sr=-1":
        return lambda x, b, o, s: roiviz.roi_align(x, b, o, s, sampling_ratio=-1, aligned=True)
    if label == "roi_pool":
        return lambda x, b, o, s: roiviz.roi_pool(x, b, o, s)
    return roiviz.STRATEGIES[label]


def _torchvision_op(label: str) -> OpFn | None:
    """torchvision's version of an op, or ``None`` (not installed, or no such op there)."""
    try:
        from torchvision.ops import roi_align, roi_pool
    except ImportError:
        return None
    if label == "roi_align sr=2":
        return lambda x, b, o, s: roi_align(x, b, o, s, sampling_ratio=2, aligned=True)
    if label == "roi_align sr=-1":
        return lambda x, b, o, s: roi_align(x, b, o, s, sampling_ratio=-1, aligned=True)
    if label == "roi_pool":
        return lambda x, b, o, s: roi_pool(x, b, o, s)
    return None


def _ops() -> list[str]:
    from roiviz import STRATEGIES

    labels = ["roi_align sr=2", "roi_align sr=-1", "roi_pool"]
    # The registry's roi_pool / roi_align are the rows above (same function, same arguments).
    return labels + [name for name in STRATEGIES if name not in ("roi_pool", "roi_align")]


#: Every op label, in report order (the strategies come from :data:`roiviz.STRATEGIES`).
OPS: list[str] = _ops()

#: Short names accepted by ``--ops`` / ``ops=`` besides the labels themselves.
OP_GROUPS: dict[str, list[str]] = {
    "roi_align": ["roi_align sr=2", "roi_align sr=-1"],
    "roi_align:2": ["roi_align sr=2"],
    "roi_align:-1": ["roi_align sr=-1"],
    "strategies": [op for op in OPS if not op.startswith(("roi_align", "roi_pool"))],
    "all": OPS,
}

PASSES = ("fwd", "fwd+bwd")


def _resolve_ops(ops: Sequence[str] | None) -> list[str]:
    if ops is None:
        return list(OPS)
    if isinstance(ops, str):
        ops = [ops]
    out: list[str] = []
    for name in ops:
        if name in OP_GROUPS:
            chosen = OP_GROUPS[name]
        elif name in OPS:
            chosen = [name]
        else:
            known = ", ".join([*OP_GROUPS, *(repr(o) for o in OPS if o not in OP_GROUPS)])
            raise ValueError(f"ops: unknown op {name!r}; known: {known}")
        out += [op for op in chosen if op not in out]
    if not out:
        raise ValueError("ops must name at least one op")
    return out


def _resolve_workloads(workloads: Sequence[str] | None) -> list[Workload]:
    if workloads is None:
        return list(WORKLOADS.values())
    if isinstance(workloads, str):
        workloads = [workloads]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        raise ValueError(f"workloads: unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    if not workloads:
        raise ValueError("workloads must name at least one workload")
    return [WORKLOADS[w] for w in dict.fromkeys(workloads)]


def _resolve_passes(passes: Sequence[str] | None) -> list[str]:
    passes = list(PASSES if passes is None else ([passes] if isinstance(passes, str) else passes))
    bad = [p for p in passes if p not in PASSES]
    if bad or not passes:
        raise ValueError(f"passes must be a non-empty subset of {list(PASSES)}, got {passes}")
    return passes


def _resolve_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r}: this torch ({torch.__version__}) sees no CUDA device "
            "(torch.cuda.is_available() is False); run with --device cpu or on a machine with a GPU"
        )
    return dev


def _check_timing(rounds: int, min_run_time: float, threads: int | None) -> tuple[int, float, int]:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    if isinstance(min_run_time, bool) or not isinstance(min_run_time, (int, float)) or not min_run_time > 0:
        raise ValueError(f"min_run_time must be a positive number of seconds, got {min_run_time!r}")
    threads = torch.get_num_threads() if threads is None else threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    return rounds, float(min_run_time), threads


def _make_call(fn: OpFn, x: torch.Tensor, boxes: torch.Tensor, wl: Workload, pass_: str) -> Callable[[], Any] | None:
    """A no-argument callable running one forward (or forward+backward) of ``fn``.

    ``None`` for ``fwd+bwd`` when the output does not require grad (nothing to time).
    """
    if pass_ == "fwd":
        def call() -> Any:
            with torch.no_grad():
                return fn(x, boxes, wl.output_size, wl.spatial_scale)
        return call
    xg = x.detach().requires_grad_(True)
    probe = fn(xg, boxes, wl.output_size, wl.spatial_scale)
    if not probe.requires_grad:
        return None  # not differentiable: no backward to time
    grad_out = torch.randn(probe.shape, generator=torch.Generator().manual_seed(2), dtype=probe.dtype).to(x.device)
    del probe

    def call_bwd() -> Any:
        out = fn(xg, boxes, wl.output_size, wl.spatial_scale)
        # autograd.grad, not backward(): no accumulation into .grad between runs.
        return torch.autograd.grad(out, xg, grad_out)
    return call_bwd


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _time_cpu(call: Callable[[], Any], min_run_time: float, threads: int) -> list[float]:
    """Per-run seconds of one ``blocked_autorange`` measurement."""
    from torch.utils import benchmark

    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
    return list(timer.blocked_autorange(min_run_time=min_run_time).times)


def _time_cuda(call: Callable[[], Any], min_run_time: float) -> list[float]:
    """Per-run seconds from CUDA events around blocks of calls (synchronises once per block)."""
    torch.cuda.synchronize()
    # Block size: enough calls to fill ~min_run_time / 10, from one timed call.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    call()
    end.record()
    end.synchronize()
    one = max(start.elapsed_time(end) / 1e3, 1e-6)
    number = max(1, int(min_run_time / 10 / one))
    times: list[float] = []
    total = 0.0
    while total < min_run_time or not times:
        start.record()
        for _ in range(number):
            call()
        end.record()
        end.synchronize()
        block = start.elapsed_time(end) / 1e3
        times.append(block / number)
        total += block
    return times


@dataclass
class _Entry:
    workload: Workload
    op: str
    impl: str
    pass_: str
    call: Callable[[], Any]
    x: int | None = None
    sweep: str | None = None
    times: list[float] = field(default_factory=list)

    def row(self, device: torch.device) -> dict[str, Any]:
        ts = sorted(self.times)
        q1, q3 = (statistics.quantiles(ts, n=4)[0::2] if len(ts) >= 2 else (ts[0], ts[0]))
        return {
            "op": self.op, "workload": self.workload.name, "impl": self.impl, "pass": self.pass_,
            "median_ms": statistics.median(ts) * 1e3, "x": self.x, "iqr_ms": (q3 - q1) * 1e3,
            "n_runs": len(ts), "device": device.type, "dtype": "float32", "sweep": self.sweep,
            "K": self.workload.n_rois, "C": self.workload.channels, "output_size": self.workload.output_size,
        }


def _measure(entries: list[_Entry], rounds: int, min_run_time: float, device: torch.device,
             threads: int, progress: bool, desc: str) -> None:
    """Warm every entry up, then run ``rounds`` interleaved rounds (order flips each round)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(entries) * (rounds + 1), desc=desc, disable=not progress, leave=False)
    try:
        with torch_threads(threads):  # warm-up too, not only inside Timer
            _rounds(entries, rounds, min_run_time, device, threads, bar)
    finally:
        bar.close()


def _rounds(entries: list[_Entry], rounds: int, min_run_time: float, device: torch.device, threads: int,
            bar: Any) -> None:
    for e in entries:  # warm-up: first calls pay for allocation, dispatch caches, page faults
        e.call()
        e.call()
        bar.update()
    for r in range(rounds):
        order = entries if r % 2 == 0 else entries[::-1]
        for e in order:
            bar.set_postfix_str(f"{e.workload.name} {e.op} {e.pass_} {e.impl}", refresh=False)
            if device.type == "cuda":
                e.times += _time_cuda(e.call, min_run_time)
            else:
                e.times += _time_cpu(e.call, min_run_time, threads)
            bar.update()


# --------------------------------------------------------------------------------------------
# Peak memory (fresh subprocess per implementation)
# --------------------------------------------------------------------------------------------

_MEMORY_CHILD = """
import json, sys
import torch
from roiviz import bench
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
wl = bench.WORKLOADS[args["workload"]]
fn = (bench._roiviz_op if args["impl"] == "roiviz" else bench._torchvision_op)(args["op"])
# The workload's channel count: the kernels pick how to read the map by it (roiviz.ops._numba).
tiny = bench.Workload("tiny", 1, wl.channels, 8, 8, 2, 2, 1.0, image=(8, 8), box_px=(1.0, 4.0))
with torch.no_grad():  # load every code path on a tiny input first
    fn(bench.make_input(tiny), bench.make_boxes(tiny), 2, 1.0)
x, boxes = bench.make_input(wl), bench.make_boxes(wl)
method, before = bench._reset_peak_rss()
with torch.no_grad():
    out = fn(x, boxes, wl.output_size, wl.spatial_scale)
after = bench._peak_rss_kib()
print(json.dumps({"before_kib": before, "after_kib": after, "method": method,
                  "output_bytes": out.numel() * out.element_size(), "roiviz_git": bench._git_revision()}))
"""


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _peak_rss_kib() -> int:
    """The process's peak resident set size in KiB (VmHWM, else ru_maxrss)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes


def _reset_peak_rss() -> tuple[str, int]:
    """Reset the peak-RSS mark to the current RSS if the OS allows; return (method, baseline KiB).

    On Linux, writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM, so the next peak is the
    forward's own. Elsewhere the baseline is the peak so far (ru_maxrss), which under-counts
    when an earlier peak (imports) was higher than the current RSS.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _status_kib("VmRSS")
        if rss is not None:
            return "VmHWM - VmRSS after clear_refs, fresh subprocess", rss
    except OSError:
        pass
    return "ru_maxrss delta, fresh subprocess", _peak_rss_kib()


def measure_peak_memory(workload: str = "W1", op: str = "roi_align sr=2", impl: str = "roiviz",
                        threads: int | None = None) -> dict[str, Any]:
    """Peak extra resident memory (MiB) of one CPU forward, measured in a fresh subprocess.

    The child loads everything on a tiny input, builds the workload's input and boxes, resets
    the kernel's peak-RSS mark (Linux: ``/proc/self/clear_refs``; elsewhere it falls back to
    ``ru_maxrss``), runs one forward and reads the peak (``VmHWM``): peak minus the RSS before
    is what that forward needed on top of what the process already had, output included. A
    fresh process per implementation keeps one's freed pages from hiding the other's peak.
    (``tracemalloc`` does not see torch's allocator, and torch keeps no CPU allocator
    statistics.)
    """
    if impl not in ("roiviz", "torchvision"):
        raise ValueError(f"impl must be 'roiviz' or 'torchvision', got {impl!r}")
    if impl == "torchvision" and _torchvision_op(op) is None:
        raise ValueError(f"op {op!r} has no torchvision version here (or torchvision is not installed)")
    args = json.dumps({"workload": workload, "op": op, "impl": impl,
                       "threads": threads or torch.get_num_threads()})
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # so the child imports this roiviz
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, args], capture_output=True, text=True,
                          env=env, check=False, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for {impl} {op} failed:\n{proc.stderr.strip()}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "workload": workload, "op": op, "impl": impl, "pass": "fwd",
        "peak_extra_mib": (res["after_kib"] - res["before_kib"]) / 1024,
        "output_mib": res["output_bytes"] / 2**20, "method": res["method"],
        "roiviz_git": res["roiviz_git"],  # the child imports the checkout as it is *now*
    }


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    """Rows (one per op, workload, impl and pass), the ratio summary, memory and environment."""

    rows: list[dict[str, Any]]
    summary: dict[str, float]
    environment: dict[str, Any]
    memory: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        targets = {k: {"target": t, "ratio": self.summary[k], "met": self.summary[k] <= t}
                   for k, t in _targets(self.environment).items() if k in self.summary}
        return {"environment": self.environment, "settings": self.settings, "summary": self.summary,
                "targets": targets, "memory": self.memory, "rows": self.rows}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A plain-text table: median ms per impl, and the ratio with its target."""
        lines = [_env_line(self.environment)]
        index: dict[tuple, dict[str, dict]] = {}
        for r in self.rows:
            index.setdefault((r["workload"], r["op"], r["pass"], r["sweep"], r["x"]), {})[r["impl"]] = r
        xw = 16 if any(r["x"] is not None for r in self.rows) else 1
        head = (f"{'workload':<8} {'op':<16} {'pass':<8} {'' if xw == 1 else 'sweep=x':>{xw}} {'roiviz ms':>11} "
                f"{'tv ms':>11} {'ratio':>7} {'target':>7}")
        lines += [head, "-" * len(head)]
        for (wl, op, pass_, sweep, x), impls in index.items():
            key = f"{wl} {op} {pass_}"
            rv, tv = impls.get("roiviz"), impls.get("torchvision")
            ratio = rv["median_ms"] / tv["median_ms"] if rv and tv else None
            target = _targets(self.environment).get(key) if x is None else None
            lines.append(
                f"{wl:<8} {op:<16} {pass_:<8} {'' if x is None else f'{sweep}={x}':>{xw}} "
                f"{_fmt(rv and rv['median_ms']):>11} {_fmt(tv and tv['median_ms']):>11} "
                f"{_fmt(ratio, 3):>7} {'' if target is None else f'≤{target:g}':>7}"
            )
        for m in self.memory:
            lines.append(f"peak extra memory, one {m['workload']} {m['op']} forward, {m['impl']}: "
                         f"{m['peak_extra_mib']:.1f} MiB (output {m['output_mib']:.1f} MiB)")
        mem_key = "W1 peak memory roi_align sr=2 fwd"
        if mem_key in self.summary:
            lines.append(f"{mem_key}: ratio {self.summary[mem_key]:.2f} (target ≤ {TARGETS[mem_key]:g})")
        return "\n".join(lines)


def _fmt(v: float | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if v < 1000 else f"{v:.0f}"


def _env_line(env: dict[str, Any]) -> str:
    return (f"torch {env['torch']}, torchvision {env['torchvision'] or 'not installed'}, device {env['device']}"
            f"{' (' + env['device_name'] + ')' if env.get('device_name') else ''}, threads {env['threads']}, "
            f"{env['cpu_count']} CPUs ({env['cpu_model']}{', ' + env['cpu_id'] if env.get('cpu_id') else ''}), "
            f"load {env['load_avg_1m']:.2f}"
            f"{' -> ' + format(env['load_avg_1m_end'], '.2f') if 'load_avg_1m_end' in env else ''}, "
            f"fresh memory {_fmt(env.get('fresh_memory_ms_per_64mib'))} ms/64 MiB, "
            f"{env['date_utc']}{' -> ' + env['finished_utc'] if 'finished_utc' in env else ''}, "
            f"roiviz {env.get('roiviz_git') or env['roiviz']}")


def _cpuinfo(field_name: str) -> str | None:
    """The first value of ``field_name`` in ``/proc/cpuinfo`` (Linux), else ``None``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == field_name:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's name as the system reports it (``/proc/cpuinfo``'s model name on Linux).

    Examples
    --------
    >>> isinstance(cpu_model(), str) and len(cpu_model()) > 0
    True
    """
    return _cpuinfo("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_id() -> str | None:
    """``"<vendor> family F model M"`` from ``/proc/cpuinfo``: what tells CPUs of one name apart
    (a VM may report only "AMD EPYC", for Zen 4 and Zen 5 alike); ``None`` where it is not known.

    Examples
    --------
    >>> cpu_id() is None or " family " in cpu_id()
    True
    """
    vendor, family, model = _cpuinfo("vendor_id"), _cpuinfo("cpu family"), _cpuinfo("model")
    if family is None or model is None:
        return None
    return f"{vendor or 'unknown'} family {family} model {model}"


def environment(device: str | torch.device = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What a timing depends on: versions, threads, CPUs, device, load, date.

    Examples
    --------
    >>> env = environment()
    >>> env["device"], env["threads"] == torch.get_num_threads()
    ('cpu', True)
    """
    dev = torch.device(device)
    try:
        import torchvision

        tv_version: str | None = str(torchvision.__version__)
    except ImportError:
        tv_version = None
    import roiviz

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "torch": str(torch.__version__), "torchvision": tv_version, "roiviz": roiviz.__version__,
        "roiviz_git": _git_revision(),
        "python": platform.python_version(), "platform": platform.platform(),
        "device": dev.type, "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "threads": threads or torch.get_num_threads(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
        "cpu_model": cpu_model(), "cpu_id": cpu_id(), "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan,
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "fresh_memory_ms_per_64mib": round(fresh_memory_ms(), 2) if dev.type == "cpu" else None,
    }


def fresh_memory_ms(mib: int = 64, repeats: int = 5) -> float:
    """Milliseconds the first write to ``mib`` MiB of fresh memory costs more than a rewrite.

    That is the page-fault cost of new allocations (median of ``repeats``). Both roiviz and
    torchvision write every output into fresh memory (49 MiB for a W1 forward) and pay this on
    every call; on a shared VM it moves between runs, so it is recorded with every run
    (``fresh_memory_ms_per_64mib``) to explain a forward ratio that moved.

    Examples
    --------
    >>> fresh_memory_ms(mib=1, repeats=1) >= 0.0
    True
    """
    n = mib * (1 << 20) // 4
    costs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        buf = torch.empty(n).fill_(1.0)  # first touch: a page fault per 4 KiB
        t1 = time.perf_counter()
        buf.fill_(2.0)  # the same writes, pages in place
        t2 = time.perf_counter()
        costs.append(max(0.0, (t1 - t0) - (t2 - t1)) * 1e3)
        del buf
    return statistics.median(costs)


def _finish(env: dict[str, Any]) -> None:
    """Add when the run ended and the load then (others sharing the CPU show up here)."""
    env["finished_utc"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    env["load_avg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def _git_revision() -> str | None:
    """``git describe`` of the roiviz checkout being timed (``None`` outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        proc = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    by_key: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["x"] is None:
            by_key.setdefault(f"{r['workload']} {r['op']} {r['pass']}", {})[r["impl"]] = r["median_ms"]
    return {k: v["roiviz"] / v["torchvision"] for k, v in by_key.items() if "roiviz" in v and "torchvision" in v}


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def run_benchmark(
    workloads: Sequence[str] | None = None, ops: Sequence[str] | None = None,
    passes: Sequence[str] | None = None, *, quick: bool = False, device: str = "cpu",
    rounds: int | None = None, min_run_time: float | None = None, threads: int | None = None,
    torchvision: bool = True, memory: bool | None = None, progress: bool = True, seed: int = 0,
    trusted: bool = False,
) -> BenchResult:
    """Time roiviz's ops and strategies on the workloads, against torchvision when installed.

    Parameters
    ----------
    workloads : names from :data:`WORKLOADS` (default all: ``W1``, ``W2``, ``W3``).
    ops : op labels from :data:`OPS` or groups from :data:`OP_GROUPS` (default all).
    passes : ``"fwd"`` and/or ``"fwd+bwd"`` (default both).
    quick : a run of seconds (notebooks, CI): shrunk workloads (:meth:`Workload.quick`), two
        short rounds, no memory probe. Timings from it are not comparable with a full run.
    device : ``"cpu"`` or ``"cuda"`` (CUDA is timed with events; ValueError if absent).
    rounds, min_run_time : interleaved rounds and seconds per measurement (default 5 and
        0.2 s, quick: 2 and 0.01 s).
    threads : intra-op threads for the timing (default ``torch.get_num_threads()``; quick: 1,
        because on a loaded shared machine a multi-threaded op can wait 100x longer for its
        OpenMP workers than it computes).
    torchvision : compare with torchvision when it is importable.
    memory : probe the peak memory of one W1 forward (default: on for a full CPU run with W1).
    progress : show a tqdm progress bar.
    trusted : time roiviz inside ``roiviz.trusted_boxes()`` (no data-dependent box checks), to
        see what validation costs; off by default because a user's call pays for it.

    Returns
    -------
    BenchResult
        ``rows`` (dicts, see the module docstring), ``summary`` (ratios roiviz / torchvision
        keyed ``"W1 roi_align sr=2 fwd"``), ``environment``, ``memory``.
    """
    wls = _resolve_workloads(workloads)
    labels = _resolve_ops(ops)
    passes_ = _resolve_passes(passes)
    dev = _resolve_device(device)
    rounds, min_run_time, threads = _check_timing(
        (2 if quick else 5) if rounds is None else rounds,
        (0.01 if quick else 0.2) if min_run_time is None else min_run_time,
        (1 if quick else None) if threads is None else threads)
    if memory is None:
        memory = not quick and dev.type == "cpu" and any(w.name == "W1" for w in wls)
    env = environment(dev, threads)  # before timing: the revision imported is the one timed

    entries: list[_Entry] = []
    for wl in wls:
        wl_run = wl.quick() if quick else wl
        x, boxes = make_input(wl_run, seed, dev), make_boxes(wl_run, seed, dev)
        for label in labels:
            impls = [("roiviz", _roiviz_op(label, trusted))]
            tv = _torchvision_op(label) if torchvision else None
            if tv is not None:
                impls.append(("torchvision", tv))
            for pass_ in passes_:
                for impl, fn in impls:
                    call = _make_call(fn, x, boxes, wl_run, pass_)
                    if call is not None:
                        entries.append(_Entry(wl_run, label, impl, pass_, call))
    _measure(entries, rounds, min_run_time, dev, threads, progress, "roiviz bench")
    rows = [e.row(dev) for e in entries]
    summary = _summarise(rows)

    mem_rows: list[dict[str, Any]] = []
    if memory:
        mem_ops = [op for op in ("roi_align sr=2", "roi_align sr=-1", "roi_pool") if op in labels] or ["roi_align sr=2"]
        for op in mem_ops:
            for impl in ("roiviz", "torchvision"):
                if impl == "torchvision" and (not torchvision or _torchvision_op(op) is None):
                    continue
                mem_rows.append(measure_peak_memory("W1", op, impl, threads))
        by = {(m["op"], m["impl"]): m["peak_extra_mib"] for m in mem_rows}
        for op in mem_ops:
            if (op, "roiviz") in by and (op, "torchvision") in by and by[op, "torchvision"] > 0:
                summary[f"W1 peak memory {op} fwd"] = by[op, "roiviz"] / by[op, "torchvision"]

    settings = {"quick": quick, "rounds": rounds, "min_run_time_s": min_run_time, "seed": seed, "trusted": trusted,
                "workloads": {w.name: _wl_dict(w.quick() if quick else w) for w in wls}}
    _finish(env)
    return BenchResult(rows, summary, env, mem_rows, settings)


def _wl_dict(w: Workload) -> dict[str, Any]:
    return {"input": [w.batch, w.channels, w.height, w.width], "rois": w.n_rois, "output_size": w.output_size,
            "spatial_scale": w.spatial_scale, "image": list(w.image), "box_px": list(w.box_px)}


#: Default sweeps of ``--scaling`` around W1 (each varies one thing).
SWEEPS: dict[str, list[int]] = {
    "rois": [1, 4, 16, 64, 256, 1024, 4096],
    "output_size": [1, 2, 4, 7, 14, 28],
    "channels": [1, 4, 16, 64, 256],
}
# Four points per sweep, from 1 to 28 or more, so that a line on log-log axes shows a slope.
QUICK_SWEEPS: dict[str, list[int]] = {"rois": [1, 16, 256, 4096], "output_size": [1, 4, 14, 28],
                                      "channels": [1, 8, 64, 256]}


def run_scaling(
    ops: Sequence[str] | None = ("roi_align sr=2", "roi_pool"), passes: Sequence[str] | None = ("fwd",),
    sweeps: Sequence[str] | None = None, *, base: str = "W1", quick: bool = False, device: str = "cpu",
    rounds: int | None = None, min_run_time: float | None = None, threads: int | None = None,
    torchvision: bool = True, progress: bool = True, seed: int = 0,
) -> BenchResult:
    """Time vs number of ROIs, output size and channels, each swept alone around ``base``.

    Rows carry ``sweep`` (``"rois"``, ``"output_size"``, ``"channels"``) and ``x`` (the swept
    value), ready for ``roiviz.viz.plot_scaling(ax, rows, x=...)``. In a ``rois`` sweep the
    boxes are the first ``x`` of a fixed random set spread over the batch, so larger ``x``
    only adds boxes. Quick mode shrinks the sweeps and the channels (8).
    """
    labels = _resolve_ops(ops)
    passes_ = _resolve_passes(passes)
    dev = _resolve_device(device)
    base_wl = _resolve_workloads([base])[0]
    table = QUICK_SWEEPS if quick else SWEEPS
    names = list(table) if sweeps is None else list(sweeps)
    bad = [s for s in names if s not in SWEEPS]
    if bad or not names:
        raise ValueError(f"sweeps must be a non-empty subset of {list(SWEEPS)}, got {names}")
    rounds, min_run_time, threads = _check_timing(
        (2 if quick else 3) if rounds is None else rounds,
        (0.01 if quick else 0.1) if min_run_time is None else min_run_time,
        (1 if quick else None) if threads is None else threads)
    if quick:
        base_wl = replace(base_wl, channels=min(base_wl.channels, 8))
    env = environment(dev, threads)

    entries: list[_Entry] = []
    for sweep in names:
        for value in table[sweep]:
            if sweep == "rois":
                wl = replace(base_wl, boxes_per_image=max(1, math.ceil(value / base_wl.batch)))
            elif sweep == "output_size":
                wl = replace(base_wl, output_size=value)
            else:
                wl = replace(base_wl, channels=value)
            x, boxes = make_input(wl, seed, dev), make_boxes(wl, seed, dev)
            if sweep == "rois":  # exactly `value` boxes, alternating images
                boxes = boxes[torch.argsort(torch.arange(boxes.shape[0]) % wl.boxes_per_image, stable=True)][:value]
                wl = replace(wl, boxes_per_image=value, batch=base_wl.batch)
            for label in labels:
                impls = [("roiviz", _roiviz_op(label))]
                tv = _torchvision_op(label) if torchvision else None
                if tv is not None:
                    impls.append(("torchvision", tv))
                for pass_ in passes_:
                    for impl, fn in impls:
                        call = _make_call(fn, x, boxes, wl, pass_)
                        if call is not None:
                            entries.append(_Entry(wl, label, impl, pass_, call, x=value, sweep=sweep))
    _measure(entries, rounds, min_run_time, dev, threads, progress, "roiviz bench --scaling")
    rows = [e.row(dev) for e in entries]
    for r, e in zip(rows, entries, strict=True):
        r["workload"] = base
        r["K"] = int(e.x) if e.sweep == "rois" else base_wl.n_rois
    settings = {"quick": quick, "rounds": rounds, "min_run_time_s": min_run_time, "seed": seed, "base": base,
                "sweeps": {s: table[s] for s in names}}
    _finish(env)
    return BenchResult(rows, {}, env, [], settings)


#: What each sweep of :func:`run_scaling` varies, in words.
SWEEP_LABELS: dict[str, str] = {"rois": "number of ROIs", "output_size": "output size (PH = PW)",
                                "channels": "channels"}


def _sweep_rows(rows: Sequence[dict[str, Any]], sweep: str) -> list[dict[str, Any]]:
    if sweep not in SWEEPS:
        raise ValueError(f"sweep must be one of {list(SWEEPS)}, got {sweep!r}")
    picked = [r for r in rows if r.get("sweep") == sweep]
    if not picked:
        raise ValueError(f"rows hold no record of the {sweep!r} sweep")
    return picked


def sweep_caption(rows: Sequence[dict[str, Any]], sweep: str) -> str:
    """What one sweep of :func:`run_scaling` varies and what it holds fixed, read from its rows.

    Examples
    --------
    >>> rows = [{"sweep": "rois", "x": k, "workload": "W1", "K": k, "C": 8, "output_size": 7} for k in (1, 16)]
    >>> sweep_caption(rows, "rois")
    'time vs number of ROIs\\n(8 channels, 7x7 output, map 50x68, batch 2)'
    """
    r = _sweep_rows(rows, sweep)[0]
    wl = WORKLOADS[r["workload"]]
    fixed = {"channels": f"{r['C']} channels", "output_size": f"{r['output_size']}x{r['output_size']} output",
             "rois": f"{r['K']} ROIs"}
    held = ", ".join(v for k, v in fixed.items() if k != sweep)
    return f"time vs {SWEEP_LABELS[sweep]}\n({held}, map {wl.height}x{wl.width}, batch {wl.batch})"


def sweep_growth(rows: Sequence[dict[str, Any]], sweep: str) -> dict[str, tuple[int, int, float]]:
    """Per op (``"op impl pass"``): the smallest and largest swept value and the time ratio between them.

    The ratio is median time at the largest value / median time at the smallest: how much the
    cost grew over the sweep (1 for a cost that does not depend on the swept size).

    Examples
    --------
    >>> rows = [{"sweep": "rois", "x": k, "op": "roi_pool", "impl": "roiviz", "pass": "fwd",
    ...          "median_ms": 0.5 + k / 100} for k in (1, 16, 256)]
    >>> sweep_growth(rows, "rois")
    {'roi_pool roiviz fwd': (1, 256, 6.0)}
    """
    series: dict[str, dict[int, float]] = {}
    for r in _sweep_rows(rows, sweep):
        series.setdefault(f"{r['op']} {r['impl']} {r['pass']}", {})[int(r["x"])] = float(r["median_ms"])
    return {k: (min(v), max(v), round(v[max(v)] / v[min(v)], 6)) for k, v in series.items()}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roiviz bench",
        description="Time roiviz's ROI ops and strategies (against torchvision when it is installed).",
        epilog="ops: " + ", ".join(OP_GROUPS) + ", or a label in quotes: " + ", ".join(repr(o) for o in OPS),
    )
    p.add_argument("--workloads", nargs="+", default=None, metavar="W", help=f"of {', '.join(WORKLOADS)} (default all)")
    p.add_argument("--ops", nargs="+", default=None, metavar="OP", help="ops or groups to time (default all)")
    p.add_argument("--passes", nargs="+", default=None, choices=PASSES, help="default: both")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--quick", "--smoke", action="store_true", dest="quick",
                   help="a run of seconds on shrunk workloads (CI smoke test; timings not comparable)")
    p.add_argument("--scaling", action="store_true", help="run the scaling sweeps (time vs ROIs, output size, channels)")
    p.add_argument("--sweeps", nargs="+", default=None, choices=list(SWEEPS), help="with --scaling (default all)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; quick 2; scaling 3)")
    p.add_argument("--min-run-time", type=float, default=None, help="seconds per measurement (default 0.2)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default torch.get_num_threads())")
    p.add_argument("--no-torchvision", action="store_true", help="time roiviz only")
    p.add_argument("--trusted", action="store_true",
                   help="time roiviz inside roiviz.trusted_boxes() (skip the data-dependent box checks)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="probe the peak memory of one W1 forward (default: on in a full CPU run with W1)")
    p.add_argument("--json", metavar="PATH", default=None, help="write the result as JSON to PATH ('-': stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``roiviz bench [options]``: run, print a table (and the JSON with ``--json``)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse already printed the message
        return int(exc.code or 0)
    if args.memory and args.device != "cpu":
        print("roiviz bench: error: --memory measures CPU memory; use --device cpu", file=sys.stderr)
        return 2
    progress = not args.no_progress
    try:
        if args.scaling:
            result = run_scaling(
                ops=args.ops or ("roi_align sr=2", "roi_pool"), passes=args.passes or ("fwd",), sweeps=args.sweeps,
                quick=args.quick, device=args.device, rounds=args.rounds, min_run_time=args.min_run_time,
                threads=args.threads, torchvision=not args.no_torchvision, progress=progress, seed=args.seed,
            )
        else:
            result = run_benchmark(
                args.workloads, args.ops, args.passes, quick=args.quick, device=args.device, rounds=args.rounds,
                min_run_time=args.min_run_time, threads=args.threads, torchvision=not args.no_torchvision,
                memory=args.memory, progress=progress, seed=args.seed, trusted=args.trusted,
            )
    except ValueError as exc:
        print(f"roiviz bench: error: {exc}", file=sys.stderr)
        return 2
    to_stdout = args.json == "-"
    print(result.table(), file=sys.stderr if to_stdout else sys.stdout)
    if result.summary and not args.scaling:
        print("summary (roiviz / torchvision, same run): "
              + json.dumps({k: round(v, 3) for k, v in result.summary.items()}),
              file=sys.stderr if to_stdout else sys.stdout)
    if args.json:
        text = result.to_json()
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}")
    return 0
