"""Random ROI cases for property tests: small maps, every kind of box, every scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

SCALES = (1.0, 0.5, 0.25, 0.125, 1 / 16, 0.1, 2.0)


@dataclass
class Case:
    input: torch.Tensor
    boxes: torch.Tensor
    output_size: tuple[int, int]
    spatial_scale: float

    def __repr__(self) -> str:  # short, so hypothesis' falsifying examples stay readable
        return (f"Case(input={tuple(self.input.shape)}, boxes={self.boxes.tolist()}, "
                f"output_size={self.output_size}, spatial_scale={self.spatial_scale})")


@st.composite
def roi_cases(draw, dtype: torch.dtype = torch.float64, max_rois: int = 4, max_side: int = 10) -> Case:
    """A map ``[N, C, H, W]`` and boxes inside, across and outside it, tiny and zero-area."""
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    scale = draw(st.sampled_from(SCALES))
    k = draw(st.integers(0, max_rois))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # Integer-valued input half the time: ties make the "first maximum" rule visible.
    if draw(st.booleans()):
        x = torch.randint(-3, 4, (n, c, h, w), generator=gen).to(dtype)
    else:
        x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    rows = []
    for _ in range(k):
        kind = draw(st.sampled_from(["inside", "across", "outside", "tiny", "zero", "half"]))
        if kind == "half":  # corners on half cells: rounding ties
            x1 = draw(st.integers(-2, 2 * w)) / 2
            y1 = draw(st.integers(-2, 2 * h)) / 2
            bw = draw(st.integers(0, 2 * w)) / 2
            bh = draw(st.integers(0, 2 * h)) / 2
            rows.append([draw(st.integers(0, n - 1)), x1 / scale, y1 / scale, (x1 + bw) / scale, (y1 + bh) / scale])
            continue
        lo_x, hi_x = {"inside": (0, w), "across": (-3, w + 3), "outside": (w + 1, w + 6),
                      "tiny": (0, w), "zero": (-1, w + 1)}[kind]
        lo_y, hi_y = {"inside": (0, h), "across": (-3, h + 3), "outside": (-6, -2),
                      "tiny": (0, h), "zero": (-1, h + 1)}[kind]
        x1 = draw(st.floats(lo_x, hi_x, allow_nan=False))
        y1 = draw(st.floats(lo_y, hi_y, allow_nan=False))
        size = {"inside": 1.2 * max(h, w), "across": 2.0 * max(h, w), "outside": 3.0, "tiny": 0.6, "zero": 0.0}[kind]
        bw = 0.0 if kind == "zero" and draw(st.booleans()) else draw(st.floats(0, size, allow_nan=False))
        bh = 0.0 if kind == "zero" else draw(st.floats(0, size, allow_nan=False))
        rows.append([draw(st.integers(0, n - 1)), x1 / scale, y1 / scale, (x1 + bw) / scale, (y1 + bh) / scale])
    boxes = torch.tensor(rows, dtype=dtype).reshape(k, 5)
    output_size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return Case(x, boxes, output_size, scale)
