"""Accuracy, not speed: roiviz's and torchvision's float32 roi_align against the float64 result.

roiviz's CPU roi_align forward sums in matrix-product order, torchvision's kernel sequentially,
so their float32 outputs differ by a few ulp. This script shows how that difference compares with
each one's own float32 error (distance to the same computation in float64 on the same input).
The input gradient sums torchvision's terms in torchvision's order: its difference should be 0.

Run in an environment with torchvision:
    PYTHONPATH=. <venv with torchvision>/bin/python benchmarks/accuracy_vs_float64.py
"""


import torch
from torchvision.ops import roi_align as tva

import roiviz

torch.manual_seed(0)
for name, (shape, k, out, scale) in {"W1": ((2, 256, 50, 68), 1024, 7, 1/16), "W3": ((2, 256, 100, 136), 200, 14, 1/8)}.items():
    x64 = torch.randn(*shape).double()  # float32 values: the truth sees the same input
    xy = torch.rand(k, 2, dtype=torch.float64) * torch.tensor([1088 - 200, 800 - 200.])
    wh = 8 + torch.rand(k, 2, dtype=torch.float64) * 192
    b64 = torch.cat([torch.randint(0, 2, (k, 1)).double(), xy, xy + wh], 1)
    b64 = b64.float().double()  # the same (float32) boxes in both precisions
    g64 = torch.randn(k, shape[1], out, out).double()
    for sr in (2, -1):
        res = {}
        for impl, fn in (("roiviz", roiviz.roi_align), ("torchvision", tva)):
            for dt in (torch.float32, torch.float64):
                x = x64.to(dt).requires_grad_()
                y = fn(x, b64.to(dt), out, scale, sr, True)
                (g,) = torch.autograd.grad((y * g64.to(dt)).sum(), x)
                res[impl, dt] = (y.detach().double(), g.double())
        truth_y, truth_g = res["torchvision", torch.float64]
        for impl in ("roiviz", "torchvision"):
            y, g = res[impl, torch.float32]
            print(f"{name} sr={sr:2d} {impl:11s} fwd err vs f64 truth {(y - truth_y).abs().max():.2e}  grad err {(g - truth_g).abs().max():.2e}")
        y1, g1 = res["roiviz", torch.float32]
        y2, g2 = res["torchvision", torch.float32]
        print(f"{name} sr={sr:2d} roiviz vs torchvision (float32): fwd {(y1 - y2).abs().max():.2e} grad {(g1 - g2).abs().max():.2e} (max |grad| {truth_g.abs().max():.1f})")
