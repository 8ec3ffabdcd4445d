"""Write the golden torchvision fixtures used by ``tests/test_torchvision.py``.

torchvision is a *reference* for roiviz, never a dependency. This script runs where
torchvision 0.29 is installed (here: ``/work/tvenv``) and stores, for many small cases, the
inputs and what ``torchvision.ops.roi_align`` / ``roi_pool`` return forward and backward. The
tests then compare roiviz with those numbers on a machine without torchvision.

Run it from the repository root::

    /work/tvenv/bin/python scripts/make_fixtures.py            # writes tests/fixtures/torchvision_ops.pt
    /work/tvenv/bin/python scripts/make_fixtures.py --check    # re-generate in memory, compare

The output is deterministic: every random tensor comes from a ``torch.Generator`` seeded per
case, torchvision's CPU kernels are single-threaded loops, and ``torch.save`` writes no
timestamps, so re-running gives a byte-identical file (``--check`` verifies that).

File layout (``torch.load(path, weights_only=True)``)::

    {"meta": {"torch": str, "torchvision": str, "format": 1, "seed": int, "n_cases": int},
     "inputs": {key: Tensor[N, C, H, W]},          # shared; some deliberately non-contiguous
     "cases": [{"name": str, "op": "roi_align" | "roi_pool", "dtype": "float32" | "float64",
                "input": key, "boxes": Tensor[K, 5] | list[Tensor[L, 4]],
                "output_size": [PH, PW], "spatial_scale": float,
                "sampling_ratio": int, "aligned": bool,          # roi_align only
                "out": Tensor[K, C, PH, PW], "grad_input": Tensor[N, C, H, W],
                "tags": [str], "roi_tags": [str] * K}]}

``grad_input`` is the gradient of ``(out * grad_weight(out.shape, dtype)).sum()``, where
:func:`grad_weight` rebuilds pseudo-random weights from integer arithmetic (not stored).

Never generated, because torchvision crashes or errors on them (roiviz rejects them itself):
a batch index outside ``[0, N)`` and any box with ``x2 < x1`` or ``y2 < y1``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import torch
    import torchvision
    from torchvision.ops import roi_align as tv_roi_align
    from torchvision.ops import roi_pool as tv_roi_pool
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(
        f"make_fixtures.py needs torchvision (the reference), which is not importable here: {exc}.\n"
        "Run it in an environment with torch==2.14.1 torchvision==0.29.1, e.g.\n"
        "    /work/tvenv/bin/python scripts/make_fixtures.py"
    )

SEED = 20260401
FORMAT = 1
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_ops.pt"
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Feature-map size of the shared inputs: small, so the slow reference can check every case.
N, C, H, W = 2, 2, 7, 9

ALIGN_SCALES = [1.0, 0.5, 1 / 16, 0.1, 0.25]
ALIGN_RATIOS = [-1, 1, 2, 3]
POOL_SCALES = [1.0, 0.1, 1 / 16, 0.5]
OUTPUT_SIZES = [(2, 2), (3, 2), (1, 4), (4, 3)]


def _gen(*parts: object) -> torch.Generator:
    """A generator seeded from the case name, so adding a case does not shift the others."""
    digest = hashlib.sha256(repr((SEED, *parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


# --------------------------------------------------------------------------------------------
# Box sets, in feature-map coordinates (multiplied by 1/scale later); each row (b, x1, y1, x2, y2)
# --------------------------------------------------------------------------------------------


def _uniform(g: torch.Generator, k: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(k, generator=g, dtype=torch.float64)


def _random_boxes(g: torch.Generator, k: int, x_lo: float, x_hi: float, y_lo: float, y_hi: float,
                  size_lo: float, size_hi: float) -> torch.Tensor:
    """``k`` boxes with x1 in [x_lo, x_hi], widths in [size_lo, size_hi]; always x1 <= x2."""
    b = torch.randint(0, N, (k,), generator=g).double()
    x1, y1 = _uniform(g, k, x_lo, x_hi), _uniform(g, k, y_lo, y_hi)
    w, h = _uniform(g, k, size_lo, size_hi), _uniform(g, k, size_lo, size_hi)
    return torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1)


def feature_box_sets() -> dict[str, torch.Tensor]:
    """Named sets of boxes in feature coordinates (the map is ``H x W``)."""
    g = _gen("boxes")
    sets = {
        "inside": _random_boxes(g, 6, 0.0, W - 4.0, 0.0, H - 4.0, 1.0, 3.5),
        "across_border": torch.cat([
            _random_boxes(g, 4, -3.0, -0.2, -3.0, H - 2.0, 2.0, 5.0),  # over the left/top edge
            _random_boxes(g, 4, W - 3.0, W - 0.5, H - 3.0, H - 0.5, 2.0, 5.0),  # right/bottom
            torch.tensor([[0, -2.0, -2.0, W + 2.0, H + 2.0],  # larger than the map
                          [1, -1.5, -1.5, -0.5, -0.5],  # aligned=False sample lands on -1 exactly
                          [0, W - 0.5, H - 0.5, W + 0.5, H + 0.5],  # samples at W and H exactly
                          [1, -1.0, 0.0, 1.0, 2.0]], dtype=torch.float64),
        ]),
        "outside": torch.tensor([
            [0, W + 2.0, 1.0, W + 5.0, 3.0],
            [1, 1.0, H + 1.5, 4.0, H + 3.0],
            [0, -6.0, -6.0, -2.5, -1.5],
            [1, -4.0, 1.0, -1.25, 5.0],
            [0, W + 0.75, H + 0.75, W + 3.0, H + 3.0],  # just beyond: aligned samples > W
        ], dtype=torch.float64),
        "tiny": torch.cat([
            _random_boxes(g, 5, 0.0, W - 1.0, 0.0, H - 1.0, 0.01, 0.6),
            torch.tensor([[0, 3.0, 2.0, 3.001, 2.0005]], dtype=torch.float64),
        ]),
        "zero_area": torch.tensor([
            [0, 2.0, 1.0, 2.0, 5.0],  # x1 == x2
            [1, 1.0, 3.0, 6.0, 3.0],  # y1 == y2
            [0, 4.5, 4.5, 4.5, 4.5],  # a point
            [1, 0.0, 0.0, 0.0, 0.0],  # the origin
            [0, W - 1.0, H - 1.0, W - 1.0, H - 1.0],
            [1, W + 1.0, 2.0, W + 1.0, 4.0],  # outside and zero-width
        ], dtype=torch.float64),
        "half_pixel": torch.tensor([
            # x * scale lands on k + 0.5: round() ties go away from zero in roi_pool.
            [0, 0.5, 0.5, 2.5, 1.5],
            [1, 1.5, 2.5, 4.5, 5.5],
            [0, 2.5, 0.5, 6.5, 3.5],
            [1, 0.5, 1.5, 0.5, 3.5],
            [0, 3.5, 3.5, 5.5, 6.5],
            [1, 7.5, 0.5, 8.5, 2.5],
        ], dtype=torch.float64),
        "many_random": torch.cat([
            _random_boxes(g, 24, -2.0, W, -2.0, H, 0.0, 6.0),
            _random_boxes(g, 8, 0.0, W - 1, 0.0, H - 1, 0.0, 1.0),
            _random_boxes(g, 8, -1.0, W - 2, -1.0, H - 2, 2.0, W + 0.0),
        ]),
    }
    return sets


def mixed_set(sets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[str]]:
    """Every named set except ``many_random``, concatenated, with each ROI's set name."""
    names = [n for n in sets if n != "many_random"]
    rois = torch.cat([sets[n] for n in names])
    tags = [n for n in names for _ in range(sets[n].shape[0])]
    return rois, tags


def to_image_coords(feature_boxes: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Divide coordinates by ``scale`` (what a detector's image boxes look like), cast to dtype."""
    out = feature_boxes.clone()
    out[:, 1:] = out[:, 1:] / scale
    return out.to(dtype)


def to_list_format(rois: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``Tensor[K, 5]`` -> list of ``n`` tensors ``[L, 4]`` (images may get no box)."""
    return [rois[rois[:, 0] == b, 1:].clone() for b in range(n)]


# --------------------------------------------------------------------------------------------
# Inputs (shared between cases, including non-contiguous layouts)
# --------------------------------------------------------------------------------------------


def _randn(*shape: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Normal draws in float64, then cast: torch's float32 ``randn`` takes another code path per
    CPU instruction set (``ATEN_CPU_CAPABILITY``), so its numbers, and this file, would depend
    on the machine; float64's do not."""
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def make_inputs() -> dict[str, torch.Tensor]:
    inputs: dict[str, torch.Tensor] = {}
    for dname, dtype in DTYPES.items():
        g = _gen("input", dname)
        inputs[f"randn_{dname}"] = _randn(N, C, H, W, generator=g, dtype=dtype)
        # Integer values with many ties: shows roi_pool's "first maximum gets the gradient".
        inputs[f"ties_{dname}"] = torch.randint(0, 3, (N, C, H, W), generator=g).to(dtype)
        # Non-contiguous layouts (torch.save keeps the strides).
        inputs[f"transposed_{dname}"] = _randn(N, C, W, H, generator=g, dtype=dtype).transpose(2, 3)
        inputs[f"channels_last_{dname}"] = _randn(N, C, H, W, generator=g, dtype=dtype).contiguous(
            memory_format=torch.channels_last
        )
        inputs[f"sliced_{dname}"] = _randn(N, 2 * C, H, W + 3, generator=g, dtype=dtype)[:, ::2, :, 1 : W + 1]
    # The d2l example: one 4x4 map holding 0..15.
    for dname, dtype in DTYPES.items():
        inputs[f"d2l_{dname}"] = torch.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    return inputs


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def case_specs() -> Iterator[dict]:
    """Every case as a spec without results (deterministic order).

    The box sets ``inside`` .. ``half_pixel`` are run together as one ``mixed`` set (each ROI
    keeps its set name in ``roi_tags``), which keeps the file small while every
    (aligned, sampling_ratio, scale) combination still meets every kind of box.
    """
    for dname in DTYPES:
        # roi_align: every (aligned, sampling_ratio, scale) on the mixed set ...
        i = 0
        for aligned in (False, True):
            for sr in ALIGN_RATIOS:
                for scale in ALIGN_SCALES:
                    i += 1
                    yield {
                        "op": "roi_align", "dtype": dname, "set": "mixed", "scale": scale,
                        "sampling_ratio": sr, "aligned": aligned, "input": f"randn_{dname}",
                        "output_size": OUTPUT_SIZES[i % len(OUTPUT_SIZES)], "format": "tensor",
                    }
        # ... and the many-ROI random set for every (aligned, sampling_ratio) at two scales.
        for aligned in (False, True):
            for sr in ALIGN_RATIOS:
                for scale in (1.0, 1 / 16):
                    i += 1
                    yield {
                        "op": "roi_align", "dtype": dname, "set": "many_random", "scale": scale,
                        "sampling_ratio": sr, "aligned": aligned, "input": f"randn_{dname}",
                        "output_size": OUTPUT_SIZES[i % len(OUTPUT_SIZES)], "format": "tensor",
                    }
        # roi_pool: every scale on both sets, on Gaussian and on tied input.
        for scale in POOL_SCALES:
            for j, set_name in enumerate(("mixed", "many_random")):
                for inp in ("randn", "ties"):
                    yield {
                        "op": "roi_pool", "dtype": dname, "set": set_name, "scale": scale,
                        "input": f"{inp}_{dname}", "output_size": OUTPUT_SIZES[(2 * j + len(inp)) % 4],
                        "format": "tensor",
                    }
        # roi_align on tied input (the gradient splits between equal taps).
        for aligned in (False, True):
            yield {
                "op": "roi_align", "dtype": dname, "set": "many_random", "scale": 0.5, "sampling_ratio": 2,
                "aligned": aligned, "input": f"ties_{dname}", "output_size": (3, 3), "format": "tensor",
            }
        # Both box formats and non-contiguous input, for both ops.
        for layout in ("transposed", "channels_last", "sliced"):
            for fmt in ("tensor", "list"):
                yield {
                    "op": "roi_align", "dtype": dname, "set": "many_random", "scale": 0.25, "sampling_ratio": -1,
                    "aligned": True, "input": f"{layout}_{dname}", "output_size": (2, 3), "format": fmt,
                }
                yield {
                    "op": "roi_pool", "dtype": dname, "set": "many_random", "scale": 0.5,
                    "input": f"{layout}_{dname}", "output_size": (3, 2), "format": fmt,
                }
        for op in ("roi_align", "roi_pool"):
            yield {
                "op": op, "dtype": dname, "set": "mixed", "scale": 1 / 16, "sampling_ratio": 2,
                "aligned": False, "input": f"randn_{dname}", "output_size": (2, 2), "format": "list",
            }
        # The d2l example (roi_pool gives [[5, 6], [9, 10]] and [[9, 11], [13, 15]]).
        for op in ("roi_pool", "roi_align"):
            for fmt in ("tensor", "list"):
                yield {
                    "op": op, "dtype": dname, "set": "d2l", "scale": 0.1, "sampling_ratio": -1, "aligned": False,
                    "input": f"d2l_{dname}", "output_size": (2, 2), "format": fmt,
                }


def grad_weight(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """The weights of the loss ``(out * grad_weight).sum()``, recomputed rather than stored.

    Pseudo-random multiples of 2**-12 in [-1, 1) from integer arithmetic only, so any machine
    rebuilds them bit for bit; products with the output still round, so the gradient's
    summation order matters as it would with Gaussian weights. ``tests/test_torchvision.py``
    has a copy of this function.
    """
    n = 1
    for s in shape:
        n *= s
    i = torch.arange(n, dtype=torch.int64)
    h = (i * 2654435761 + 12345) % 4294967296  # Knuth's multiplicative hash, mod 2**32
    return (((h >> 12) % 8192).to(torch.float64) / 4096 - 1).reshape(tuple(shape)).to(dtype)


_BOXES_CACHE: dict[tuple, torch.Tensor | list[torch.Tensor]] = {}


def _boxes_for(spec: dict, sets: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]):
    """The boxes of a spec; equal boxes are the same object, which torch.save stores once."""
    key = (spec["set"], spec["scale"], spec["dtype"], spec["format"], inputs[spec["input"]].shape[0])
    if key not in _BOXES_CACHE:
        _BOXES_CACHE[key] = _make_boxes(spec, sets, inputs)
    return _BOXES_CACHE[key]


def _make_boxes(spec: dict, sets: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]):
    dtype = DTYPES[spec["dtype"]]
    if spec["set"] == "d2l":
        rois = torch.tensor([[0, 0.0, 0.0, 20.0, 20.0], [0, 0.0, 10.0, 30.0, 30.0]], dtype=dtype)
    elif spec["set"] == "mixed":
        rois = to_image_coords(mixed_set(sets)[0], spec["scale"], dtype)
    else:
        rois = to_image_coords(sets[spec["set"]], spec["scale"], dtype)
    if spec["format"] == "list":
        return to_list_format(rois, inputs[spec["input"]].shape[0])
    return rois


def _roi_tags(spec: dict, sets: dict[str, torch.Tensor]) -> list[str]:
    """The box set each ROI came from, in the order of ``Tensor[K, 5]`` (list format: per image)."""
    if spec["set"] == "mixed":
        rois, tags = mixed_set(sets)
    elif spec["set"] == "d2l":
        return ["d2l", "d2l"]
    else:
        rois = sets[spec["set"]]
        tags = [spec["set"]] * rois.shape[0]
    if spec["format"] == "list":  # the list format regroups the ROIs image by image
        order = torch.argsort(rois[:, 0], stable=True).tolist()
        tags = [tags[k] for k in order]
    return tags


def case_name(spec: dict) -> str:
    parts = [spec["op"], spec["dtype"], spec["set"], f"scale={spec['scale']:.6g}"]
    if spec["op"] == "roi_align":
        parts += [f"sr={spec['sampling_ratio']}", f"aligned={spec['aligned']}"]
    parts += [f"out={spec['output_size'][0]}x{spec['output_size'][1]}", f"in={spec['input'].rsplit('_', 1)[0]}",
              f"boxes={spec['format']}"]
    return " ".join(parts)


def run_case(spec: dict, sets: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> dict:
    """Run torchvision forward and backward on one spec."""
    name = case_name(spec)
    # A detached view keeps the stored strides (non-contiguous inputs stay non-contiguous).
    x = inputs[spec["input"]].detach().requires_grad_(True)
    boxes = _boxes_for(spec, sets, inputs)
    ph, pw = spec["output_size"]
    if spec["op"] == "roi_align":
        out = tv_roi_align(x, boxes, (ph, pw), spatial_scale=spec["scale"],
                           sampling_ratio=spec["sampling_ratio"], aligned=spec["aligned"])
    else:
        out = tv_roi_pool(x, boxes, (ph, pw), spatial_scale=spec["scale"])
    weight = grad_weight(out.shape, out.dtype)
    (grad_input,) = torch.autograd.grad((out * weight).sum(), x)
    case = {
        "name": name, "op": spec["op"], "dtype": spec["dtype"], "input": spec["input"], "boxes": boxes,
        "output_size": [ph, pw], "spatial_scale": float(spec["scale"]),
        "out": out.detach(), "grad_input": grad_input.contiguous(),
        "tags": [spec["set"], spec["format"], spec["input"].rsplit("_", 1)[0]],
        "roi_tags": _roi_tags(spec, sets),
    }
    if spec["op"] == "roi_align":
        case["sampling_ratio"] = int(spec["sampling_ratio"])
        case["aligned"] = bool(spec["aligned"])
    return case


def build() -> dict:
    """All cases with torchvision's results, and the metadata (versions, seed)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # torchvision's CPU kernels are serial anyway; rule out any variation
    try:
        sets = feature_box_sets()
        inputs = make_inputs()
        cases = [run_case(spec, sets, inputs) for spec in case_specs()]
    finally:
        torch.set_num_threads(saved)
    names = [c["name"] for c in cases]
    if len(set(names)) != len(names):
        raise RuntimeError("case names must be unique")
    meta = {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "format": FORMAT,
            "seed": SEED, "n_cases": len(cases), "generator": "scripts/make_fixtures.py"}
    return {"meta": meta, "inputs": inputs, "cases": cases}


def serialise(data: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(data, buf)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="regenerate in memory and compare with --out byte for byte; write nothing")
    args = parser.parse_args(argv)
    data = build()
    blob = serialise(data)
    if args.check:
        if not args.out.exists():
            print(f"{args.out} does not exist", file=sys.stderr)
            return 1
        same = args.out.read_bytes() == blob
        print(f"{args.out}: {'identical' if same else 'DIFFERENT'} ({len(data['cases'])} cases)")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob) / 1024:.0f} KiB, {len(data['cases'])} cases, "
          f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"sha256 {hashlib.sha256(blob).hexdigest()[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
