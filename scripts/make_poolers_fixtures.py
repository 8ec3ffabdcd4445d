"""Write golden ``torchvision.ops.MultiScaleRoIAlign`` results for ``tests/test_poolers.py``.

torchvision is a reference, never a dependency: this script runs where it is installed and stores
inputs and torchvision's outputs (and its ``LevelMapper`` levels) for a set of multi-level cases,
so that the tests compare :class:`roiviz.MultiScaleRoIAlign` with torchvision on machines
without it (they also compare live when torchvision imports).

    /work/tv-venv/bin/python scripts/make_poolers_fixtures.py           # writes the fixture
    /work/tv-venv/bin/python scripts/make_poolers_fixtures.py --check   # re-make in memory, compare

Every random tensor comes from a seeded ``torch.Generator``; torchvision's CPU roi_align is a
plain loop, so a re-run gives the same numbers.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

try:
    import torch
    import torchvision
    from torchvision.ops import MultiScaleRoIAlign
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"make_poolers_fixtures.py needs torchvision: {exc}; run it with /work/tv-venv/bin/python")

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "torchvision_multiscale.pt"
SEED = 20261204


def _boxes(g: torch.Generator, k: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """Boxes of every size class: log-uniform sides from 2 to 1.5x the image, some past its edge."""
    if k == 0:
        return torch.zeros(0, 4, dtype=dtype)
    side = torch.exp(torch.empty(k, 2, dtype=torch.float64).uniform_(0.7, float(torch.log(torch.tensor(1.5 * max(h, w)))),
                                                                       generator=g))
    xy = torch.rand(k, 2, generator=g, dtype=torch.float64) * torch.tensor([w, h], dtype=torch.float64) - 8
    b = torch.cat([xy, xy + side], dim=1)
    # Exactly on level boundaries (sqrt(area) = 112, 224, 448) and just below them.
    exact = torch.tensor([[0, 0, 112, 112], [3, 5, 227, 229], [1, 1, 449, 449], [0, 0, 56, 224],
                          [2, 2, 113.9999, 114], [0, 0, 111.99, 112]], dtype=torch.float64)
    return torch.cat([b, exact], dim=0).to(dtype)


def _case(name, g, *, names, strides, channels, image_shapes, boxes_per_image, output_size, sampling_ratio,
          dtype=torch.float32, extra_maps=(), order=None, canonical=None):
    h = max(s[0] for s in image_shapes)
    w = max(s[1] for s in image_shapes)
    n = len(image_shapes)
    x = OrderedDict()
    keys = order or names
    for key in keys:
        stride = strides[names.index(key)]
        x[key] = torch.randn(n, channels, -(-h // stride), -(-w // stride), generator=g, dtype=dtype)
    for key, stride in extra_maps:
        x[key] = torch.randn(n, channels, -(-h // stride), -(-w // stride), generator=g, dtype=dtype)
    boxes = [_boxes(g, k, h, w, dtype) for k in boxes_per_image]
    kw = {} if canonical is None else {"canonical_scale": canonical[0], "canonical_level": canonical[1]}
    m = MultiScaleRoIAlign(names, output_size, sampling_ratio, **kw)
    out = m(x, boxes, image_shapes)
    levels = m.map_levels(boxes) if m.map_levels is not None and len(names) > 1 else None
    return {"name": name, "x": dict(x), "order": list(x), "boxes": boxes, "image_shapes": image_shapes,
            "featmap_names": names, "output_size": output_size, "sampling_ratio": sampling_ratio,
            "canonical": canonical, "out": out, "levels": levels,
            "k_min": m.map_levels.k_min if m.map_levels is not None else None}


def make() -> dict:
    g = torch.Generator().manual_seed(SEED)
    fpn = dict(names=["0", "1", "2", "3"], strides=[4, 8, 16, 32], channels=2)
    cases = [
        _case("faster_rcnn_fpn", g, **fpn, image_shapes=[(256, 320), (240, 300)], boxes_per_image=[20, 14],
              output_size=7, sampling_ratio=2, extra_maps=[("pool", 64)]),
        _case("adaptive_sampling", g, **fpn, image_shapes=[(256, 320)], boxes_per_image=[16],
              output_size=(5, 3), sampling_ratio=0),
        _case("float64", g, **fpn, image_shapes=[(200, 264)], boxes_per_image=[16], output_size=4,
              sampling_ratio=2, dtype=torch.float64),
        _case("subset_in_dict_order", g, names=["p3", "p5", "p4"], strides=[8, 32, 16], channels=2,
              image_shapes=[(256, 256)], boxes_per_image=[18], output_size=3, sampling_ratio=1,
              order=["p3", "p4", "p5"], extra_maps=[("p6", 64)]),
        _case("canonical_112_level_3", g, **fpn, image_shapes=[(256, 320)], boxes_per_image=[16],
              output_size=2, sampling_ratio=2, canonical=(112, 3)),
        _case("single_level", g, names=["c4"], strides=[16], channels=3, image_shapes=[(160, 200)],
              boxes_per_image=[8], output_size=7, sampling_ratio=2),
        _case("an_image_without_boxes", g, **fpn, image_shapes=[(128, 128), (128, 128)], boxes_per_image=[9, 0],
              output_size=2, sampling_ratio=2),
    ]
    return {"meta": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "seed": SEED},
            "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    data = make()
    if args.check:
        stored = torch.load(OUT, weights_only=True)
        ok = all(torch.equal(a["out"], b["out"]) for a, b in zip(stored["cases"], data["cases"], strict=True))
        print("same outputs" if ok else "DIFFERENT outputs")
        return 0 if ok else 1
    torch.save(data, OUT)
    print(f"wrote {len(data['cases'])} cases to {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
