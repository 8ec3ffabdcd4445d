"""``roiviz explore [IMAGE]``: the Explorer alone on a page (Voilà), for a classroom projector.

Writes a one-cell notebook that shows an :class:`roiviz.widgets.Explorer` into a temporary
folder and serves it with Voilà on ``127.0.0.1`` (no code, no notebook chrome: only the
Explorer). ``IMAGE`` is a sample name (:data:`roiviz.images.SAMPLES`) or an image file
(PNG/JPEG, read with matplotlib). Stop it with Ctrl+C.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["explorer_cell", "load_image", "main"]


def load_image(path: str | Path) -> np.ndarray:
    """An image file as floats in 0..1, ``H x W`` or ``H x W x 3`` (an alpha channel is dropped)."""
    import matplotlib.image

    a = np.asarray(matplotlib.image.imread(str(path)))
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    if a.ndim == 3:
        a = a[..., :3]
    return a.astype(np.float32)


def explorer_cell(image: str, stride: int = 1, size: int = 128, box: list[float] | None = None) -> str:
    """The code of the page's one cell: an Explorer named ``ex`` on ``image``.

    >>> print(explorer_cell("grace_hopper"))
    from roiviz.widgets import Explorer
    ex = Explorer('grace_hopper', stride=1, size=128)
    ex
    """
    boxes = f", boxes=[{tuple(float(v) for v in box)!r}]" if box else ""
    if Path(image).is_file():
        source = f"__import__('roiviz.explore').explore.load_image({str(Path(image).resolve())!r})"
        args = f"{source}, stride={stride}{boxes}"
    else:
        args = f"{image!r}, stride={stride}, size={size}{boxes}"
    return f"from roiviz.widgets import Explorer\nex = Explorer({args})\nex"


def _notebook(cell: str) -> dict[str, Any]:
    return {
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": cell}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def main(argv: list[str] | None = None) -> int:
    from .images import SAMPLES

    p = argparse.ArgumentParser(prog="roiviz explore", description=__doc__.splitlines()[0])
    p.add_argument("image", nargs="?", default="grace_hopper",
                   help=f"a sample ({', '.join(SAMPLES)}) or an image file (default: grace_hopper)")
    p.add_argument("--stride", type=int, default=1, choices=(1, 2, 4, 8, 16))
    p.add_argument("--size", type=int, default=128, help="side of a sample image (default: 128)")
    p.add_argument("--box", type=float, nargs=4, metavar=("X1", "Y1", "X2", "Y2"),
                   help="the first ROI in image pixels (default: one in the middle)")
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = p.parse_args(argv)
    if not Path(args.image).is_file() and args.image not in SAMPLES:
        p.error(f"IMAGE must be an image file or one of {', '.join(SAMPLES)}, got {args.image!r}")
    try:
        import voila  # noqa: F401
    except ImportError:
        print("roiviz explore needs Voilà: pip install voila", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="roiviz-explore-") as tmp:
        nb = Path(tmp) / "Explorer.ipynb"
        nb.write_text(json.dumps(_notebook(explorer_cell(args.image, args.stride, args.size, args.box))), encoding="utf-8")
        cmd = [sys.executable, "-m", "voila", str(nb), f"--port={args.port}", "--Voila.ip=127.0.0.1",
               "--theme=light", "--strip_sources=True"]
        if args.no_browser:
            cmd.append("--no-browser")
        try:
            return subprocess.call(cmd)
        except KeyboardInterrupt:
            return 0
