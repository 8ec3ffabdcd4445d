"""The drag-to-resize Explorer: drag a box over a picture, see every strategy's output at once.

>>> from roiviz.widgets import Explorer
>>> ex = Explorer("checkerboard")
>>> ex.box = (10, 20, 60, 90)          # exactly what a drag does
>>> ex.status.split(" · ")[0]
'box (x1, y1, x2, y2) = (10.0, 20.0, 60.0, 90.0)'

Two layers:

- :class:`ExplorerModel` (``traitlets.HasTraits``) holds the state -- the boxes in *image
  pixels*, the active one as the ``box`` trait (validated: clamped into the image, a zero width
  or height widened to one pixel, with a visible ``message``), the output size, ROI Align's
  ``sampling_ratio`` and ``aligned``, the ``stride`` of the feature map, the ``channel`` shown --
  and recomputes ``results`` (every strategy's output and metrics) synchronously on each change.
  It also decides every colour (:meth:`ExplorerModel.color_scale`) and which input cells each
  output cell reads (:func:`read_windows`). It needs no browser: set a trait, read ``results``.
- :class:`Explorer` (an ``ipywidgets.VBox``) is the view: an :class:`ExplorerView` (anywidget:
  ``roiviz/static/explorer.js`` draws on canvases, in the browser, the numbers the model
  computed) and ipywidgets controls linked to the model. The browser draws a drag at once and
  sends the box back throttled, latest wins; every number it shows comes from the kernel.

The multi-scale (FPN) mode, ``Explorer(image, levels=(2, 3, 4, 5))``, adds a row: the level
:func:`roiviz.map_levels` picks for the box, the level boundaries, and ROI Align's output from
every level of the picture's feature pyramid (:class:`FPNResult`).
"""

from __future__ import annotations

import io
import math
import numbers
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import torch
import traitlets as T

from . import viz
from ._checks import trusted_boxes
from ._threads import torch_threads
from .boxes import sample_grid
from .metrics import box_cells
from .ops.roi_align import roi_align
from .reference import roi_pool_bins
from .strategies import STRATEGIES

__all__ = ["Explorer", "ExplorerModel", "ExplorerResult", "ExplorerView", "FPNResult", "read_windows", "sample_axes", "sample_points", "static_figure"]

Box = tuple[float, float, float, float]
STRIDES = (1, 2, 4, 8, 16)


@dataclass(frozen=True, eq=False)  # eq=False: traitlets compares results by identity
class ExplorerResult:
    """Everything one box change computes.

    Attributes
    ----------
    box : (x1, y1, x2, y2)
        The active box in image pixels.
    map_box : (x1, y1, x2, y2)
        The same box on the map the strategies see (``box * spatial_scale``).
    spatial_scale : float
        Image pixels to map cells.
    outputs : dict of str to ndarray
        Each shown strategy's output ``[C, PH, PW]`` for the active box.
    metrics : MetricsTable or None
        :func:`roiviz.metrics.strategy_metrics` of the shown strategies (None while dragging).
    quantization : Quantization
        :func:`roiviz.metrics.quantization` of the box (ROI Pool's lost and gained cells).
    region : (x0, y0, x1, y1)
        The whole cells ROI Pool and the crop strategies keep, in map coordinates.
    samples : ndarray
        ROI Align's sample points ``[N, 2]`` as ``(x, y)`` in map drawing coordinates.
    samples_outside : ndarray
        ``[N]`` bool: samples outside the map (they add 0 but count in the mean).
    elapsed_ms : float
        Time spent computing (not drawing).
    """

    box: Box
    map_box: Box
    spatial_scale: float
    outputs: dict[str, np.ndarray]
    metrics: Any
    quantization: Any
    region: tuple[int, int, int, int]
    samples: np.ndarray
    samples_outside: np.ndarray
    elapsed_ms: float
    #: ROI Align's sample coordinates along each axis, ``(xs [PW * GW], ys [PH * GH])``, in map
    #: drawing coordinates: the samples are their outer product (``samples`` lists them all).
    sample_axes: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))
    #: The box's cells (centre rule), ``(x0, y0, x1, y1)`` exclusive ends, on the map.
    box_region: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: The FPN levels of the box, in the multi-scale mode (``levels`` given), else None.
    fpn: FPNResult | None = None


@dataclass(frozen=True, eq=False)
class FPNResult:
    """The multi-scale (FPN) part of one box change: which level the box goes to, and what
    ROI Align pools from every level.

    Attributes
    ----------
    levels : tuple of int
        The pyramid's levels, finest first; level ``k`` is the map of stride ``2**k``.
    level : int
        The level the box is pooled from (:func:`roiviz.map_levels`, or
        :func:`roiviz.poolers.map_levels_mmdet` with ``level_rule="mmdetection"``).
    size : float
        ``sqrt(w * h)`` of the box in image pixels (float32, as the rule computes it).
    boundaries : list of (int, float, float)
        :func:`roiviz.poolers.level_boundaries`: ``(level, low, high)``, the box sizes each
        level takes.
    outputs : dict of int to ndarray
        ``roi_align`` of the box from each level's map, ``[C, PH, PW]``, with the model's
        ``output_size``, ``sampling_ratio`` and ``aligned``.
    map_boxes : dict of int to (x1, y1, x2, y2)
        The box on each level's map (``box / 2**k``).
    """

    levels: tuple[int, ...]
    level: int
    size: float
    boundaries: list[tuple[int, float, float]]
    outputs: dict[int, np.ndarray]
    map_boxes: dict[int, Box]


def sample_points(
    box: Sequence[float], output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int,
    aligned: bool, height: int, width: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """ROI Align's sample points of one box, vectorised: ``(xy [N, 2], outside [N], count)``.

    ``xy`` is in drawing coordinates (cell ``c`` covers ``[c, c + 1]``, see :mod:`roiviz.viz`);
    ``outside`` marks samples beyond ``[-1, H] x [-1, W]`` (index coordinates), which ROI Align
    treats as 0; ``count`` is its divisor. The same points as
    :func:`roiviz.reference.roi_align_sample_points`, in one go, because the Explorer needs
    them on every box change.

    Examples
    --------
    >>> xy, outside, count = sample_points((0, 0, 4, 4), (1, 1), 1.0, 2, True, 8, 8)
    >>> xy.tolist(), count
    ([[1.0, 1.0], [3.0, 1.0], [1.0, 3.0], [3.0, 3.0]], 4)
    """
    ph_n, pw_n = output_size
    # float32, in the kernel's order (roiviz.boxes): the points roi_align really samples on a
    # float32 map (a 1e-12-tall box has height 0 there: 1e-12 - 0.5 rounds back to -0.5).
    roi = torch.tensor([[0.0, *box]], dtype=torch.float32)
    ys, xs, grid_h, grid_w = sample_grid(roi, spatial_scale, ph_n, pw_n, sampling_ratio, aligned)
    gh, gw = int(grid_h[0]), int(grid_w[0])
    ys, xs = ys[0, :, :gh].double().numpy(), xs[0, :, :gw].double().numpy()  # [PH, GH], [PW, GW]
    # In the reference's order: bin (ph, pw), then sample (iy, ix).
    yy, xx = np.broadcast_arrays(ys[:, None, :, None], xs[None, :, None, :])  # [PH, PW, GH, GW]
    yy, xx = yy.ravel(), xx.ravel()
    outside = (yy < -1.0) | (yy > height) | (xx < -1.0) | (xx > width)
    return np.stack([xx + 0.5, yy + 0.5], axis=1), outside, max(gh * gw, 1)


def _float_box(value: Any) -> Box:
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise T.TraitError(f"box must be 4 numbers (x1, y1, x2, y2), got {value!r}") from None
    if len(values) != 4:
        raise T.TraitError(f"box must be 4 numbers (x1, y1, x2, y2), got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise T.TraitError(f"box must be finite, got {tuple(values)}")
    return (values[0], values[1], values[2], values[3])


class ExplorerModel(T.HasTraits):
    """The Explorer's state and computation, without any view.

    Parameters
    ----------
    image : array, Tensor or str
        A picture (numpy ``H x W`` or ``H x W x 3``, tensor ``[C, H, W]`` with ``C`` 1 or 3, or
        the name of a :data:`roiviz.images.SAMPLES` image), on which ``stride`` > 1 runs a fixed
        :class:`roiviz.images.FeatureExtractor`; or a feature map (a tensor ``[C, H, W]`` or
        ``[1, C, H, W]`` with another ``C``, or any input with ``spatial_scale`` given), which
        the strategies see directly, at ``spatial_scale``.
    boxes : list of (x1, y1, x2, y2), optional
        The ROIs in image pixels; by default one box in the middle.
    spatial_scale : float, optional
        Marks ``image`` as a feature map of that scale: boxes are then in the pixels of the
        image it came from (``H / spatial_scale`` by ``W / spatial_scale``).
    levels : sequence of int, optional
        The multi-scale (FPN) mode: a feature pyramid with these consecutive levels (within 1..5;
        level ``k`` is the :class:`roiviz.images.FeatureExtractor` map of stride ``2**k``, the
        maps the ``stride`` control shows). Each box change then also computes
        ``results.fpn`` (:class:`FPNResult`): the box's level, the level boundaries and
        ROI Align's output from every level. Only for a picture.
    level_rule : {"torchvision", "mmdetection"}
        How the level is chosen: :func:`roiviz.map_levels` (``floor(4 + log2(sqrt(wh) / 224))``)
        or :func:`roiviz.poolers.map_levels_mmdet` (``finest_scale=56``).

    Notes
    -----
    The rule sends a box to level 4 at ``sqrt(wh) = 224``: on a 128-pixel picture every box goes
    to level 2 or 3; a 512-pixel one (``size=512``) reaches all of P2-P5.

    Examples
    --------
    >>> m = ExplorerModel("checkerboard", output_size=4)
    >>> m.box = (-5, 10, 40, 10)      # outside the image, and of zero height
    >>> m.box, m.message
    ((0.0, 10.0, 40.0, 11.0), 'box clamped into the 128x128 image; zero height: widened to 1 px')
    >>> sorted(m.results.outputs) == sorted(m.strategies)
    True

    The multi-scale mode:

    >>> f = ExplorerModel("grace_hopper", size=512, levels=(2, 3, 4, 5), output_size=2)
    >>> f.box = (100, 100, 400, 350)  # sqrt(300 * 250) = 273.9: level 4
    >>> f.results.fpn.level, f.fpn_label()
    (4, 'sqrt(w*h) = 273.9 px -> P4 (stride 16): level 4 for sqrt(w*h) in [224, 448), torchvision rule')
    """

    #: The active ROI ``(x1, y1, x2, y2)`` in image pixels: any 4 numbers (a tuple, list, array),
    #: stored as a tuple of floats after validation (see :meth:`_validate_box`).
    box = T.Any((0.0, 0.0, 1.0, 1.0))
    #: Every ROI, in image pixels; ``boxes[active]`` is ``box``.
    boxes = T.List(T.Tuple(T.Float(), T.Float(), T.Float(), T.Float()))
    #: Index of the active ROI.
    active = T.Int(0)
    #: The strategies computed and shown, in :data:`roiviz.STRATEGIES` order.
    strategies = T.List(T.Unicode(), default_value=list(STRATEGIES))
    output_size = T.Int(7)
    #: ROI Align's samples per bin side (``<= 0``: adaptive, ``ceil(bin size)``).
    sampling_ratio = T.Int(2)
    #: ROI Align's half-pixel offset.
    aligned = T.Bool(True)
    #: Stride of the feature map the strategies see (1: the picture itself).
    stride = T.Int(1)
    #: Channel shown; -1 shows RGB as colour and other maps as their channel mean.
    channel = T.Int(-1)
    #: True while the mouse drags the box: updates then skip the metrics (the slow part) and
    #: the metrics follow when the drag ends (``dragging`` back to False).
    dragging = T.Bool(False)
    #: What validation last did to a box (clamped, widened, refused), or ``""``.
    message = T.Unicode("")
    #: The traceback of the last failed computation, or ``""``.
    error = T.Unicode("")
    #: The last :class:`ExplorerResult`.
    results = T.Any(None, allow_none=True)
    #: The FPN mode's level rule: ``"torchvision"`` (:func:`roiviz.map_levels`) or
    #: ``"mmdetection"`` (:func:`roiviz.poolers.map_levels_mmdet`).
    level_rule = T.Enum(("torchvision", "mmdetection"), "torchvision")

    def __init__(self, image: Any, *, boxes: Sequence[Sequence[float]] | None = None,
                 strategies: Sequence[str] | None = None, output_size: int = 7, sampling_ratio: int = 2,
                 aligned: bool = True, stride: int = 1, channel: int = -1, spatial_scale: float | None = None,
                 feature_channels: int = 16, seed: int = 0, size: int = 128,
                 levels: Sequence[int] | None = None, level_rule: str = "torchvision") -> None:
        super().__init__()
        from .images import FeatureExtractor, sample_image

        if isinstance(image, str):
            image = sample_image(image, size)
        chw = viz.as_chw(image)
        self.is_image = spatial_scale is None and chw.shape[0] in (1, 3)
        if spatial_scale is not None and not (isinstance(spatial_scale, (int, float)) and 0 < spatial_scale <= 1):
            raise ValueError(f"spatial_scale must be in (0, 1], got {spatial_scale!r}")
        self.picture = chw  # what the big axes shows: [C, H, W]
        self._feature_scale = 1.0 if spatial_scale is None else float(spatial_scale)
        h, w = chw.shape[-2:]
        #: Size of the image the boxes are given in, ``(H, W)`` pixels.
        self.image_size = (round(h / self._feature_scale), round(w / self._feature_scale))
        self._features: dict[int, torch.Tensor] = {}
        self._extractor = lambda s: FeatureExtractor(stride=s, channels=feature_channels, seed=seed)
        #: The FPN levels (finest first), or ``()`` outside the multi-scale mode.
        self.levels = self._check_levels(levels)
        if level_rule not in ("torchvision", "mmdetection"):
            raise ValueError(f"level_rule must be 'torchvision' or 'mmdetection', got {level_rule!r}")
        self._ready = False  # no recomputation while the constructor sets the traits
        with self.hold_trait_notifications():
            self.output_size = output_size
            self.sampling_ratio = sampling_ratio
            self.aligned = aligned
            self.stride = stride if self.is_image else 1
            self.channel = channel
            self.level_rule = level_rule
            if strategies is not None:
                self.strategies = list(strategies)
            ih, iw = self.image_size
            start = [tuple(b) for b in boxes] if boxes else [(iw * 0.25, ih * 0.25, iw * 0.75, ih * 0.6)]
            self.boxes = [self._validate_box(b, quiet=True) for b in start]
            self.active = 0
            self.box = self.boxes[0]
        self._ready = True
        self._held = 0  # > 0 inside batch(): recompute once at the end
        self._missed = False
        self._scales: dict[tuple[int, int], tuple[str, float, float]] = {}
        self.recompute()

    def batch(self) -> Any:
        """A context in which trait changes recompute once, at the end (a drag sets two traits)."""
        model = self

        class _Batch:
            def __enter__(self) -> None:
                model._held += 1

            def __exit__(self, *exc: Any) -> None:
                model._held -= 1
                if model._held == 0 and model._missed:
                    model._missed = False
                    model.recompute()

        return _Batch()

    def drag(self, box: Sequence[float], dragging: bool) -> None:
        """What the mouse does: move the active box, with ``dragging`` set, in one recomputation."""
        with self.batch():
            self.dragging = dragging
            self.box = box

    # ---------------------------------------------------------------- what the strategies see
    @property
    def input(self) -> torch.Tensor:
        """The map the strategies see, ``Tensor[1, C, h, w]``: the picture or its features."""
        if self.stride == 1:
            return self.picture[None]
        return self.features(self.stride)

    def features(self, stride: int) -> torch.Tensor:
        """The picture's feature map of ``stride`` (computed once), ``Tensor[1, C, h, w]``."""
        if stride not in self._features:
            with torch.no_grad():
                rgb = self.picture if self.picture.shape[0] == 3 else self.picture.expand(3, -1, -1)
                self._features[stride] = self._extractor(stride)(rgb[None]).detach()
        return self._features[stride]

    def _check_levels(self, levels: Sequence[int] | None) -> tuple[int, ...]:
        if levels is None:
            return ()
        if isinstance(levels, (str, bytes)) or not all(
                isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in levels):
            raise ValueError(f"levels must be a sequence of ints, e.g. (2, 3, 4, 5), got {levels!r}")
        ks = tuple(int(k) for k in levels)
        if not ks or ks != tuple(range(ks[0], ks[0] + len(ks))):
            raise ValueError(f"levels must be consecutive increasing ints, e.g. (2, 3, 4, 5), got {levels!r}")
        if ks[0] < 1 or ks[-1] > 5:
            raise ValueError(f"levels must lie within 1..5 (strides 2 to 32), got {levels!r}")
        if not self.is_image:
            raise ValueError("levels (the FPN mode) need a picture: its pyramid comes from FeatureExtractor")
        return ks

    @property
    def spatial_scale(self) -> float:
        """Image pixels to map cells: ``1 / stride`` (or the scale a feature map was given with)."""
        return self._feature_scale / self.stride

    # ---------------------------------------------------------------- validation
    def _validate_box(self, value: Any, quiet: bool = False) -> Box:
        x1, y1, x2, y2 = _float_box(value)
        ih, iw = self.image_size
        notes = []
        if x1 > x2 or y1 > y2:
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            notes.append("corners swapped")
        c = (min(max(x1, 0.0), iw), min(max(y1, 0.0), ih), min(max(x2, 0.0), iw), min(max(y2, 0.0), ih))
        if c != (x1, y1, x2, y2):
            notes.append(f"box clamped into the {ih}x{iw} image")
        x1, y1, x2, y2 = c
        # A box of zero width or height has no pixels to pool: widen it to one pixel, inside.
        if x2 - x1 < 1e-6:
            x1 = min(x1, iw - 1.0)
            x2 = x1 + 1.0
            notes.append("zero width: widened to 1 px")
        if y2 - y1 < 1e-6:
            y1 = min(y1, ih - 1.0)
            y2 = y1 + 1.0
            notes.append("zero height: widened to 1 px")
        if not quiet:
            self.message = "; ".join(notes)
        return (x1, y1, x2, y2)

    @T.validate("box")
    def _valid_box(self, proposal: Any) -> Box:
        try:
            return self._validate_box(proposal["value"])
        except T.TraitError as e:
            self.message = f"refused: {e}"
            raise

    @T.validate("output_size")
    def _valid_output_size(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 64:
            raise T.TraitError(f"output_size must be in [1, 64], got {proposal['value']}")
        return proposal["value"]

    @T.validate("stride")
    def _valid_stride(self, proposal: Any) -> int:
        s = proposal["value"]
        if s not in STRIDES:
            raise T.TraitError(f"stride must be one of {STRIDES}, got {s}")
        if s != 1 and not self.is_image:
            raise T.TraitError("stride only applies to a picture; this Explorer shows a feature map")
        return s

    @T.validate("channel")
    def _valid_channel(self, proposal: Any) -> int:
        c, c_n = proposal["value"], self.n_channels
        if not -1 <= c < c_n:
            raise T.TraitError(f"channel must be -1 (all) or in [0, {c_n}), got {c}")
        return c

    @T.validate("strategies")
    def _valid_strategies(self, proposal: Any) -> list[str]:
        unknown = [s for s in proposal["value"] if s not in STRATEGIES]
        if unknown:
            raise T.TraitError(f"unknown strategies {unknown}; known strategies: {', '.join(STRATEGIES)}")
        return [s for s in STRATEGIES if s in proposal["value"]]  # registry order, no duplicates

    @property
    def n_channels(self) -> int:
        """Channels of the map the strategies see at the current stride."""
        if self.stride == 1:
            return int(self.picture.shape[0])
        return int(self.input.shape[1])

    # ---------------------------------------------------------------- ROIs
    @T.observe("box")
    def _on_box(self, change: Any) -> None:
        if not self._ready:
            return
        boxes = list(self.boxes)
        boxes[self.active] = change["new"]
        self.boxes = boxes
        self.recompute()

    @T.validate("active")
    def _valid_active(self, proposal: Any) -> int:
        if not 0 <= proposal["value"] < max(len(self.boxes), 1):
            raise T.TraitError(f"active must be in [0, {len(self.boxes)}), got {proposal['value']}")
        return proposal["value"]

    @T.observe("active")
    def _on_active(self, change: Any) -> None:
        if not self._ready:
            return
        if tuple(self.boxes[change["new"]]) == tuple(self.box):
            self.recompute()  # same box, other ROI: no 'box' change, still a new status
        else:
            self.box = self.boxes[change["new"]]

    def add_box(self, box: Sequence[float] | None = None) -> int:
        """Add a ROI (by default the active one moved down and right) and make it active."""
        if box is None:
            x1, y1, x2, y2 = self.box
            ih, iw = self.image_size
            dx, dy = min(iw * 0.1, iw - x2), min(ih * 0.1, ih - y2)
            box = (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
        self.boxes = [*self.boxes, self._validate_box(box)]
        self.active = len(self.boxes) - 1
        return self.active

    def remove_box(self, index: int | None = None) -> None:
        """Remove ROI ``index`` (the active one by default); the last ROI cannot be removed."""
        index = self.active if index is None else index
        if len(self.boxes) == 1:
            self.message = "the last ROI cannot be removed"
            return
        if not 0 <= index < len(self.boxes):
            raise ValueError(f"index must be in [0, {len(self.boxes)}), got {index}")
        boxes = [b for i, b in enumerate(self.boxes) if i != index]
        new_active = min(self.active if self.active < index else max(self.active - 1, 0), len(boxes) - 1)
        with self.hold_trait_notifications():
            self.boxes = boxes
            self.active = new_active
        self.box = boxes[new_active]
        self.recompute()

    # ---------------------------------------------------------------- computation
    @T.observe("output_size", "sampling_ratio", "aligned", "stride", "strategies", "channel", "dragging",
               "level_rule")
    def _on_param(self, change: Any) -> None:
        if not self._ready:
            return
        if change["name"] == "stride" and self.channel >= self.n_channels:
            self.channel = -1
        self.recompute()

    def compute(self, box: Sequence[float] | None = None, metrics: bool = True) -> ExplorerResult:
        """Every shown strategy's output (and metrics) for ``box`` (the active box by default)."""
        # One thread: the Explorer's tensors are tiny, and on a busy machine a second thread only
        # waits for a core (measured: one box's metrics took 42 ms on one thread, 1.7 s on two).
        with torch_threads(1):
            return self._compute(box, metrics)

    def _compute(self, box: Sequence[float] | None, with_metrics: bool) -> ExplorerResult:
        from .metrics import quantization, strategy_metrics

        t0 = time.perf_counter()
        box = tuple(self.box if box is None else _float_box(box))
        x, scale, size = self.input, self.spatial_scale, (self.output_size, self.output_size)
        _, _, h, w = x.shape
        rois = torch.tensor([[0.0, *box]], dtype=torch.float32)
        fns = {name: self._strategy(name) for name in self.strategies}
        # The box was validated on the way in: skip the per-call value checks of the ops.
        with torch.no_grad(), trusted_boxes():
            outputs = {name: f(x, rois, size, scale) for name, f in fns.items()}
        metrics = None
        if with_metrics and fns:
            metrics = strategy_metrics(x, box, size, scale, strategies=fns, outputs=outputs)
        q = quantization(box, scale, h, w)
        # The whole cells kept by ROI Pool and the crop strategies, as (x0, y0, x1, y1).
        y0, x0, ch, cw = q.crop
        region = (x0, y0, x0 + cw, y0 + ch)
        xy, outside, _ = sample_points(box, size, scale, self.sampling_ratio, self.aligned, h, w)
        axes = sample_axes(box, size, scale, self.sampling_ratio, self.aligned)
        by0, by1, bx0, bx1 = box_cells(box, scale, h, w)
        fpn = self._compute_fpn(box, rois) if self.levels else None
        return ExplorerResult(box, viz.box_in_map(box, scale), scale,
                              {name: out[0].numpy() for name, out in outputs.items()}, metrics, q, region, xy,
                              outside, (time.perf_counter() - t0) * 1e3, axes, (bx0, by0, bx1, by1), fpn)

    def _compute_fpn(self, box: Box, rois: torch.Tensor) -> FPNResult:
        from .poolers import level_boundaries, map_levels, map_levels_mmdet

        k_min, k_max = self.levels[0], self.levels[-1]
        if self.level_rule == "mmdetection":
            level = int(map_levels_mmdet(rois[:, 1:], k_min, k_max)[0])
        else:
            level = int(map_levels(rois[:, 1:], k_min, k_max)[0])
        size = float(torch.sqrt((rois[0, 3] - rois[0, 1]) * (rois[0, 4] - rois[0, 2])))
        size_ = (self.output_size, self.output_size)
        outputs, map_boxes = {}, {}
        with torch.no_grad(), trusted_boxes():
            for k in self.levels:
                s = 1.0 / 2**k
                out = roi_align(self.features(2**k), rois, size_, s, sampling_ratio=self.sampling_ratio,
                                aligned=self.aligned)
                outputs[k] = out[0].numpy()  # [C, PH, PW]
                map_boxes[k] = viz.box_in_map(box, s)
        return FPNResult(self.levels, level, size, level_boundaries(k_min, k_max), outputs, map_boxes)

    def _strategy(self, name: str) -> Any:
        if name == "roi_align":  # honour the sampling_ratio and aligned controls
            sr, al = self.sampling_ratio, self.aligned
            return lambda x, b, size, scale=1.0: roi_align(x, b, size, scale, sampling_ratio=sr, aligned=al)
        return STRATEGIES[name]

    def recompute(self) -> None:
        """Recompute ``results`` now; a failure goes to ``error`` (and the view shows it)."""
        if self._held:
            self._missed = True
            return
        try:
            self.results = self.compute(metrics=not self.dragging)
            self.error = ""
        except Exception:
            self.error = traceback.format_exc()

    # ---------------------------------------------------------------- colours (what the view paints)
    def color_scale(self) -> tuple[str, float, float]:
        """How the map and every panel are coloured: ``(kind, lo, hi)``, one scale for all.

        ``kind`` is ``"rgb"`` for a colour photo at stride 1 shown as colour (each channel
        ``lo..hi``, at least 0..1, to 0..255), else ``"map"`` (one value per cell through viridis). The range
        is every value a strategy can produce for the view, not just the map's: per channel a
        strategy's output lies within ``[min(c_min, 0), max(c_max, 0)]`` (averages, bilinear
        taps and maxima stay in the channel's range; zero fill adds 0), so the channel-mean view
        spans the mean of those bounds. Max-based strategies (``roi_pool``, ``adaptive_max``)
        therefore never saturate, and a colour means the same value in every panel and box.

        Examples
        --------
        >>> ExplorerModel("checkerboard", size=16).color_scale()
        ('map', 0.0, 1.0)
        """
        key = (self.stride, self.channel)
        if key not in self._scales:
            x = self.input[0].reshape(self.input.shape[1], -1)
            lows = torch.clamp(x.min(dim=1).values, max=0.0).double()
            highs = torch.clamp(x.max(dim=1).values, min=0.0).double()
            if self._rgb_view():
                # A photo's own 0..1 (wider if its values are): its true colours.
                kind, lo, hi = "rgb", float(lows.min()), max(float(highs.max()), 1.0)
            elif self.channel >= 0:
                kind, lo, hi = "map", float(lows[self.channel]), float(highs[self.channel])
            else:
                kind, lo, hi = "map", float(lows.mean()), float(highs.mean())
            self._scales[key] = (kind, lo, hi if hi > lo else lo + 1.0)
        return self._scales[key]

    def color_scale_note(self) -> str:
        """One sentence saying what the colour scale spans (shown under the colour bar)."""
        if self._rgb_view():
            return "the photo's colours"
        if self.channel < 0 and self.n_channels > 1:
            return (f"Cells show the mean of {self.n_channels} channels; the scale spans the mean of each "
                    "channel's min..max (and 0), so max-based panels never saturate.")
        return "The scale spans the channel's min..max (and 0): no panel can saturate."

    def fpn_color_scale(self, level: int) -> tuple[float, float]:
        """The colour range of level ``level`` in the FPN row, its map and its output panel alike:
        viridis over the channel mean, from the min to the max of that level's channel-mean map.

        Each level gets its own range (deeper features span less). No panel can saturate: ROI
        Align is linear, so the channel mean of its output is ROI Align of the channel-mean map,
        a weighted mean of that map's cells (a box inside the picture has no zero-filled sample).

        Examples
        --------
        >>> m = ExplorerModel("checkerboard", size=64, levels=(2, 3))
        >>> lo, hi = m.fpn_color_scale(3)
        >>> bool(lo < hi)
        True
        """
        key = (-1, level)
        if key not in self._scales:
            shown = self.features(2**level)[0].mean(dim=0)  # [h, w]
            lo, hi = float(shown.min()), float(shown.max())
            self._scales[key] = ("map", lo, hi if hi > lo else lo + 1.0)
        _, lo, hi = self._scales[key]
        return lo, hi

    def fpn_label(self) -> str:
        """The FPN mode's line: the box's size, its level and that level's range of sizes.

        ``""`` outside the multi-scale mode. The range is :func:`roiviz.poolers.level_boundaries`
        rounded to whole pixels (the exact edges are ``224 * 2**(k - 4)``, less one part in 10**6).
        """
        f = self.results.fpn if self.results is not None else None
        if f is None:
            return ""
        _, lo, hi = next(b for b in f.boundaries if b[0] == f.level)
        return (f"sqrt(w*h) = {f.size:.1f} px -> P{f.level} (stride {2 ** f.level}): level {f.level} for "
                f"sqrt(w*h) in [{_edge(lo)}, {_edge(hi)}), {self.level_rule} rule")

    def _rgb_view(self) -> bool:
        return self.stride == 1 and self.channel < 0 and self.is_image and self.n_channels == 3

    def shown(self, values: np.ndarray) -> np.ndarray:
        """What the view shows of a ``[C, h, w]`` array: ``h x w x 3`` (colour), the channel
        chosen, or the mean over channels (float32)."""
        v = np.asarray(values, dtype=np.float32)
        if self._rgb_view():
            return np.moveaxis(v, 0, -1)
        if self.channel >= 0:
            return v[self.channel]
        return v.mean(axis=0, dtype=np.float32) if v.shape[0] > 1 else v[0]

    def map_bytes(self) -> np.ndarray:
        """The map the strategies see as ``h x w x 3`` RGB bytes, on :meth:`color_scale`."""
        kind, lo, hi = self.color_scale()
        shown = self.shown(self.input[0].numpy())
        if kind == "rgb":
            return rgb_bytes(shown, (lo, hi))
        return _viridis_lut()[color_index(shown, (lo, hi))]

    def picture_bytes(self) -> np.ndarray:
        """The picture the boxes are drawn on, ``H x W x C`` bytes (C 1 or 3): the photo, or a
        feature map given directly as its channel mean through viridis."""
        if self.is_image:
            a = np.clip(np.moveaxis(self.picture.numpy(), 0, -1), 0.0, 1.0)
            return np.round(a * 255).astype(np.uint8)
        shown = self.picture.numpy().mean(axis=0)
        lo, hi = float(shown.min()), float(shown.max())
        return _viridis_lut()[color_index(shown, (lo, hi if hi > lo else lo + 1))]

    # ---------------------------------------------------------------- text
    def status(self) -> str:
        """One line: the box, then any message or error, the ROI, where the box lands on the map,
        what ROI Pool's rounding does, and the time the computation took.

        Messages come right after the box so that they stay visible when the line is cut.
        """
        r = self.results
        x1, y1, x2, y2 = self.box
        parts = [f"box (x1, y1, x2, y2) = ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})"]
        if self.error:
            parts.append("error: " + self.error.strip().splitlines()[-1])
        if self.message:
            parts.append(self.message)
        parts.append(f"ROI {self.active + 1}/{len(self.boxes)}")
        if r is not None:
            h, w = self.input.shape[-2:]
            mx1, my1, mx2, my2 = r.map_box
            parts.append(f"stride {round(1 / r.spatial_scale)}, {h}x{w} map: "
                         f"({mx1:.2f}, {my1:.2f}, {mx2:.2f}, {my2:.2f})")
            parts.append(f"ROI Pool rounding: {int(r.quantization.lost)} cells lost, "
                         f"{int(r.quantization.gained)} gained")
            parts.append(f"computed in {r.elapsed_ms:.0f} ms")
        return " · ".join(parts)




def _edge(v: float) -> str:
    """A level boundary as text: whole pixels, or "inf"."""
    return "inf" if math.isinf(v) else f"{round(v)}"


def sample_axes(
    box: Sequence[float], output_size: tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """ROI Align's sample coordinates along x and y, ``(xs [PW * GW], ys [PH * GH])``.

    In drawing coordinates, bin by bin; the samples are every ``(x, y)`` pair, the same points
    as :func:`sample_points` (which lists them all). The Explorer sends these two short axes
    to the browser instead of thousands of points.

    Examples
    --------
    >>> xs, ys = sample_axes((0, 0, 4, 4), (1, 1), 1.0, 2, True)
    >>> xs.tolist(), ys.tolist()
    ([1.0, 3.0], [1.0, 3.0])
    """
    ph_n, pw_n = output_size
    # One bin row and one bin column: the grid is separable (see sample_points for the rule).
    xy_row, _, _ = sample_points(box, (1, pw_n), spatial_scale, sampling_ratio, aligned, 1, 1)
    xy_col, _, _ = sample_points(box, (ph_n, 1), spatial_scale, sampling_ratio, aligned, 1, 1)
    xs = np.unique(xy_row[:, 0]) if len(xy_row) else np.empty(0)
    ys = np.unique(xy_col[:, 1]) if len(xy_col) else np.empty(0)
    return xs, ys


def read_windows(
    name: str, box: Sequence[float], output_size: int, spatial_scale: float, height: int, width: int,
    sampling_ratio: int = 2, aligned: bool = True,
) -> np.ndarray:
    """The input cells each output row and column of strategy ``name`` reads.

    Every strategy is separable: output cell ``(i, j)`` reads rows ``[r0[i], r1[i])`` and
    columns ``[c0[j], c1[j])`` of the map (possibly empty, e.g. ``crop``'s zero fill). Returns
    ``int16 [4, n]``: ``r0, r1, c0, c1``. For ROI Align these are the cells its bilinear taps
    touch on a float32 map (the Explorer's), from the kernel's own float32 sample coordinates;
    for a strategy not listed here, the cells with a non-zero gradient (a probe).

    Examples
    --------
    >>> read_windows("adaptive_avg", (0, 0, 4, 4), 2, 1.0, 8, 8).tolist()  # crop 0..4: 5 cells
    [[0, 2], [3, 5], [0, 2], [3, 5]]
    >>> read_windows("crop", (0, 0, 1, 1), 3, 1.0, 8, 8).tolist()  # 2 cells, then zero fill
    [[0, 1, 0], [1, 2, 0], [0, 1, 0], [1, 2, 0]]
    """
    from .boxes import crop_bounds

    n = output_size
    i = np.arange(n)
    rois = torch.tensor([[0.0, *(float(v) for v in box)]], dtype=torch.float32)
    y0, x0, h, w = (int(v) for v in crop_bounds(rois, spatial_scale, height, width))

    def crop_like(start: int, size: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        r = i + offset
        ok = (r >= 0) & (r < size)
        return np.where(ok, start + r, 0), np.where(ok, start + r + 1, 0)

    def axis(start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        if name == "crop":
            return crop_like(start, size, 0)
        if name == "pad":
            return crop_like(start, size, (size - n) // 2)
        if name in ("adaptive_max", "adaptive_avg"):
            if size == 0:
                return np.zeros(n, int), np.zeros(n, int)
            return start + (i * size) // n, start + -((-(i + 1) * size) // n)
        if name == "resize":
            if size == 0:
                return np.zeros(n, int), np.zeros(n, int)
            src = np.maximum(np.float32(size) / np.float32(n) * (i.astype(np.float32) + np.float32(0.5))
                             - np.float32(0.5), 0).astype(np.float32)
            i0 = src.astype(int)
            i1 = i0 + (i0 < size - 1)
            return start + i0, start + i1 + 1
        raise KeyError(name)

    if name == "roi_pool":
        bins = roi_pool_bins(rois[0], n, n, spatial_scale, height, width)
        rows = np.array([bins[k][0][:2] for k in range(n)]).T
        cols = np.array([bins[0][k][2:] for k in range(n)]).T
        return np.concatenate([rows, cols]).astype(np.int16)
    if name == "roi_align":
        xs, ys = sample_axes(box, (n, n), spatial_scale, sampling_ratio, aligned)
        out = []
        for coords, size in ((ys, height), (xs, width)):
            per = coords.reshape(n, -1) - 0.5  # index coordinates of each bin's samples
            ok = (per >= -1.0) & (per <= size)  # beyond: the sample reads 0, no cell
            lo = np.clip(np.floor(np.where(ok, per, np.inf)).min(1), 0, size - 1)
            hi = np.clip(np.floor(np.where(ok, per, -np.inf)).max(1) + 1, 0, size - 1)
            empty = ~ok.any(1)
            out += [np.where(empty, 0, lo), np.where(empty, 0, hi + 1)]
        return np.array(out).astype(np.int16)
    if name in ("crop", "pad", "adaptive_max", "adaptive_avg", "resize"):
        r0, r1 = axis(y0, h)
        c0, c1 = axis(x0, w)
        return np.array([r0, r1, c0, c1]).astype(np.int16)
    return _windows_by_gradient(name, rois, n, spatial_scale, height, width)


def _windows_by_gradient(name: str, rois: torch.Tensor, n: int, scale: float, height: int, width: int) -> np.ndarray:
    """Rows and columns with a non-zero gradient, per output row and column (any smooth strategy)."""
    x = torch.rand(1, 1, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    x.requires_grad_(True)
    out = STRATEGIES[name](x, rois.double(), n, scale)[0, 0]  # [n, n]
    windows = np.zeros((4, n), np.int16)
    for k in range(n):
        for axis_, sel in ((0, out[k, :]), (1, out[:, k])):
            (g,) = torch.autograd.grad(sel.sum(), x, retain_graph=True)
            used = (g[0, 0] != 0).any(dim=1 - axis_).nonzero().flatten()
            if len(used):
                windows[2 * axis_, k], windows[2 * axis_ + 1, k] = int(used.min()), int(used.max()) + 1
    return windows


#: matplotlib's viridis as 256 RGB bytes: the colours of every single-channel view.
def _viridis_lut() -> np.ndarray:
    import matplotlib

    return np.asarray(matplotlib.colormaps["viridis"](np.arange(256), bytes=True))[:, :3].copy()


def color_index(values: np.ndarray, clim: tuple[float, float]) -> np.ndarray:
    """Index into the 256-colour map of each value, as matplotlib's ``Normalize`` + colormap pick it.

    Values below ``clim`` take the first colour and above it the last (no saturation happens with
    the Explorer's scale, which spans every value a strategy can produce).

    Examples
    --------
    >>> color_index(np.array([0.0, 0.5, 1.0, 2.0]), (0.0, 1.0)).tolist()
    [0, 128, 255, 255]
    """
    f = np.float32
    lo, hi = f(clim[0]), f(clim[1])
    x = (np.asarray(values, dtype=f) - lo) / (hi - lo)
    x = x * f(256)
    x[x == 256] = 255
    x = np.clip(x, -1, 256).astype(int)
    return np.clip(x, 0, 255).astype(np.uint8)


def rgb_bytes(values: np.ndarray, clim: tuple[float, float]) -> np.ndarray:
    """``... x 3`` RGB values mapped linearly from ``clim`` to bytes 0..255 (rounded)."""
    lo, hi = clim
    return np.round(np.clip((np.asarray(values, np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255).astype(np.uint8)

# ================================================================================================
# The view
# ================================================================================================

STATIC = Path(__file__).parent / "static"

#: The metrics table's columns: (header, field, format, unit, what it measures) -- the tooltips.
METRIC_COLUMNS = (
    ("coverage", "coverage", "{:.1%}", "% of box", "share of the box's cells that influence the output (from its gradient)"),
    ("leak", "leak", "{:d}", "cells", "cells outside the box that influence the output"),
    ("q_lost", "quant_lost", "{:d}", "cells", "box cells dropped by ROI Pool's integer rounding of the box"),
    ("q_gained", "quant_gained", "{:d}", "cells", "cells outside the box added by ROI Pool's integer rounding"),
    ("aspect", "aspect_distortion", "{:+.3f}", "log ratio", "log((box w/h) / (PW/PH)) of the region the output is stretched from; 0: no stretch"),
    ("PSNR", "psnr", "{:.1f}", "dB", "the output resized back onto the box, compared with the true crop (higher: closer)"),
    ("misalign", "misalignment", "{:.2f}", "cells", "mean distance a point feature moves between box and output, in input cells"),
)


def metrics_html(table: Any) -> str:
    """The metrics table as styled HTML: aligned numbers, a unit under each header, a tooltip
    (``title``) per column saying what it measures.

    Examples
    --------
    >>> m = ExplorerModel("checkerboard", size=32, output_size=2, strategies=["crop"])
    >>> html_ = metrics_html(m.results.metrics)
    >>> 'title="share of the box' in html_ and "<td>crop</td>" in html_
    True
    """
    import html

    head = '<th title="the strategy">strategy</th>' + "".join(
        f'<th title="{html.escape(tip)}">{html.escape(h)}<br><small>{html.escape(unit)}</small></th>'
        for h, _, _, unit, tip in METRIC_COLUMNS)
    rows = []
    for m in table:
        cells = [f"<td>{html.escape(m.strategy)}</td>"]
        for _, field, fmt, _, _ in METRIC_COLUMNS:
            v = getattr(m, field)
            bad = v is None or (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, int) and v == -1)
            cells.append(f"<td>{'n/a' if bad else html.escape(fmt.format(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="roiviz-metrics-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            "<caption>hover a column header for what it measures</caption></table>")


def _bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


class ExplorerView(anywidget.AnyWidget):
    """The drawing part of the Explorer: an ES module (``roiviz/static/explorer.js``) that draws
    the picture, the boxes, the map and the strategy panels on canvases from the numbers of an
    :class:`ExplorerModel`, and sends the dragged box back.

    What it sends to the browser: the picture once (``picture``), the map at the current stride
    and channel when they change (``map_image``), and per update one ``frame`` (JSON: boxes,
    status, metrics table, layout, offsets) with one binary ``frame_data`` (the panels' colours
    and values, read windows, sample axes: a few KB, see :meth:`frame_payload`).
    """

    _esm = STATIC / "explorer.js"
    _css = STATIC / "explorer.css"

    picture = T.Bytes(b"").tag(sync=True)
    picture_shape = T.List(T.Int(), [0, 0, 3]).tag(sync=True)
    #: CSS pixels per image pixel.
    scale = T.Float(3.0).tag(sync=True)
    lut = T.Bytes(b"").tag(sync=True)
    map_image = T.Bytes(b"").tag(sync=True)
    frame = T.Dict().tag(sync=True)
    frame_data = T.Bytes(b"").tag(sync=True)
    #: The FPN mode's level maps (RGB bytes, finest first, offsets in ``frame["fpn"]``), sent once.
    fpn_maps = T.Bytes(b"").tag(sync=True)

    def __init__(self, model: ExplorerModel, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.seq = 0  # the last box request from the browser this frame answers
        self.frames_sent = 0
        self._map_key: tuple[int, int] | None = None
        self.lut = _bytes(_viridis_lut())
        ih, iw = model.image_size
        self.scale = float(max(1.0, 384.0 / max(ih, iw)))
        pic = model.picture_bytes()
        self.picture_shape = list(pic.shape)
        self.picture = _bytes(pic)
        if model.levels:
            self.fpn_maps = self.fpn_map_bytes()

    def frame_payload(self) -> tuple[dict[str, Any], bytes]:
        """The ``frame`` and ``frame_data`` of the model's current state (what one update sends).

        ``frame_data`` holds, in this order (offsets in ``frame``): float32 values of each panel
        (single-channel views) and ROI Align's sample axes; int16 read windows of each panel
        (:func:`read_windows`; not in the frames of a drag, ``win_off`` -1); the colour of each
        panel cell (an index into ``lut``, or RGB bytes for a colour photo), computed here so
        that the browser only paints; in the FPN mode, then each level's output
        (:meth:`_fpn_payload`).
        """
        m, r = self.model, self.model.results
        ih, iw = m.image_size
        frame: dict[str, Any] = {
            "seq": self.seq, "status": m.status(), "error": bool(m.error), "image_size": [ih, iw],
            "boxes": [list(b) for b in m.boxes], "active": m.active, "output_size": m.output_size,
            "panels": [],
        }
        if r is None:
            frame["metrics"] = ""
            return frame, b""
        kind, lo, hi = m.color_scale()
        h, w = m.input.shape[-2:]
        frame.update(
            map={"h": int(h), "w": int(w), "key": f"{m.stride},{m.channel}"},
            scale={"kind": kind, "lo": lo, "hi": hi, "note": m.color_scale_note()},
            map_box=list(r.map_box), region=list(r.region), box_region=list(r.box_region),
        )
        if not m.strategies:
            frame["metrics"] = "<p><i>no strategy selected</i></p>"
        elif r.metrics is not None:
            frame["metrics"] = metrics_html(r.metrics)
            self._last_metrics = frame["metrics"]
        else:
            frame["metrics"] = ("<p><i>dragging: the metrics follow when you release the box</i></p>"
                                + getattr(self, "_last_metrics", ""))
        floats: list[np.ndarray] = []
        shorts: list[np.ndarray] = []
        colors: list[np.ndarray] = []
        n_float = 0
        panels = []
        # The read windows only serve the hover line, which a drag cannot use (the pointer is on
        # the picture); they cost half of a drag frame (ROI Pool's bins, PrRoI Pool's gradient
        # probe), so drag frames leave them out and the frame that settles carries them.
        windows = r.metrics is not None or not m.dragging
        for name, out in r.outputs.items():
            shown = m.shown(out)
            entry: dict[str, Any] = {"name": name, "values_off": -1}
            if kind == "rgb":
                colors.append(rgb_bytes(shown, (lo, hi)).ravel())
            else:
                entry["values_off"] = 4 * n_float
                floats.append(shown.astype(np.float32).ravel())
                n_float += shown.size
                colors.append(color_index(shown, (lo, hi)).ravel())
            if windows:
                shorts.append(read_windows(name, r.box, m.output_size, r.spatial_scale, int(h), int(w),
                                           m.sampling_ratio, m.aligned).ravel())
            else:
                shorts.append(np.empty(0, np.int16))
            panels.append(entry)
        xs, ys = r.sample_axes
        frame["samples"] = {"shown": "roi_align" in m.strategies, "nx": len(xs), "ny": len(ys),
                            "x_off": 4 * n_float, "y_off": 4 * (n_float + len(xs)),
                            "grid": [len(ys) // max(m.output_size, 1), len(xs) // max(m.output_size, 1)]}
        floats += [xs.astype(np.float32), ys.astype(np.float32)]
        f_bytes = b"".join(_bytes(a) for a in floats)
        off = len(f_bytes)
        for entry, a in zip(panels, shorts, strict=True):
            entry["win_off"] = off if a.size else -1  # -1: a drag frame, no windows
            off += 2 * a.size
        s_bytes = b"".join(_bytes(a) for a in shorts)
        for entry, a in zip(panels, colors, strict=True):
            entry["colors_off"] = off
            off += a.size
        frame["panels"] = panels
        data = f_bytes + s_bytes + b"".join(_bytes(a) for a in colors)
        if r.fpn is not None:
            frame["fpn"], extra = self._fpn_payload(r.fpn, len(data))
            data += extra
        return frame, data

    def _fpn_payload(self, f: FPNResult, start: int) -> tuple[dict[str, Any], bytes]:
        """The FPN row of a frame: the level label and boundaries (text made by the model), and
        per level the box on its map and ROI Align's output from it (float32 channel means, then
        colour indices on that level's scale), at offsets from ``start`` in ``frame_data``."""
        m = self.model
        chunks: list[bytes] = []
        levels, off, map_off = [], start, 0
        for k in f.levels:
            lo, hi = m.fpn_color_scale(k)
            shown = f.outputs[k].mean(axis=0, dtype=np.float32)  # [PH, PW]
            _, _, h, w = m.features(2**k).shape
            values, colors = _bytes(shown.astype(np.float32)), _bytes(color_index(shown, (lo, hi)))
            levels.append({"level": k, "stride": 2**k, "h": int(h), "w": int(w), "map_off": map_off,
                           "map_box": list(f.map_boxes[k]), "lo": lo, "hi": hi,
                           "values_off": off, "colors_off": off + len(values)})
            chunks += [values, colors]
            off += len(values) + len(colors)
            map_off += int(h) * int(w) * 3
        boundaries = [{"level": k, "text": f"P{k}: [{_edge(lo)}, {_edge(hi)})"} for k, lo, hi in f.boundaries]
        fpn = {"label": m.fpn_label(), "level": f.level, "boundaries": boundaries, "levels": levels}
        return fpn, b"".join(chunks)

    def fpn_map_bytes(self) -> bytes:
        """Every level's map as RGB bytes (its channel mean through viridis, on that level's
        :meth:`ExplorerModel.fpn_color_scale`), finest first: what ``fpn_maps`` sends."""
        m, out = self.model, []
        for k in m.levels:
            shown = m.features(2**k)[0].numpy().mean(axis=0, dtype=np.float32)
            out.append(_bytes(_viridis_lut()[color_index(shown, m.fpn_color_scale(k))]))
        return b"".join(out)

    def push(self) -> None:
        """Send the model's current state (one message; the map too when stride or channel changed)."""
        frame, data = self.frame_payload()
        with self.hold_sync():
            key = (self.model.stride, self.model.channel)
            if key != self._map_key and self.model.results is not None:
                self.map_image = _bytes(self.model.map_bytes())
                self._map_key = key
            self.frame = frame
            self.frame_data = data
        self.frames_sent += 1


class Explorer(W.VBox):
    """Drag and resize ROIs on a picture; every strategy's output and metrics follow live.

    Parameters
    ----------
    image_or_features : array, Tensor or str
        See :class:`ExplorerModel` (a picture, a sample name, or a feature map).
    **model_kwargs
        ``boxes``, ``strategies``, ``output_size``, ``sampling_ratio``, ``aligned``, ``stride``,
        ``channel``, ``spatial_scale``, ``size`` (of a sample image), and for the multi-scale
        (FPN) mode ``levels`` and ``level_rule``: see :class:`ExplorerModel`.

    Examples
    --------
    The multi-scale mode: below the panels, a row shows the level the box goes to, the level
    boundaries, and ROI Align's output from each level's map (the chosen one marked).

    >>> ex = Explorer("grace_hopper", size=512, levels=(2, 3, 4, 5), boxes=[(60, 80, 160, 200)])
    >>> ex.model.fpn_label()
    'sqrt(w*h) = 109.5 px -> P2 (stride 4): level 2 for sqrt(w*h) in [0, 112), torchvision rule'
    >>> ex.box = (60, 80, 300, 330)
    >>> ex.model.results.fpn.level
    4

    Attributes
    ----------
    model : ExplorerModel
        The state and every computed number (the single source of truth).
    view : ExplorerView
        The canvases (an anywidget): the picture (CSS class ``roiviz-image``), the map, the
        panels (``roiviz-panels``), the colour bar, the status (``roiviz-status``), the metrics
        table and the hover line.
    errors : ipywidgets.Output
        CSS class ``roiviz-errors``: tracebacks of failed updates.

    Notes
    -----
    The browser draws a drag at once and sends the box with at most two requests in flight
    (beyond that, latest wins); the model validates it and recomputes; the view sends back the
    new numbers.
    In a notebook saved with its outputs, the Explorer also leaves a static PNG (drawn with
    matplotlib from the model, :func:`static_figure`) for readers without a kernel.
    """

    def __init__(self, image_or_features: Any, **model_kwargs: Any) -> None:
        self.model = ExplorerModel(image_or_features, **model_kwargs)
        self.view = ExplorerView(self.model)
        self._syncing = False
        self._build_controls()
        self.errors = W.Output()
        self.errors.add_class("roiviz-errors")
        super().__init__([self.view, self._controls_box, self.errors])
        self.add_class("roiviz-explorer")
        m = self.model
        m.observe(self._on_change, ["results", "message", "error", "boxes", "active"])
        m.observe(self._on_error, "error")
        m.observe(self._on_boxes, "boxes")
        m.observe(self._on_model_strategies, "strategies")
        m.observe(self._on_stride, "stride")
        self.view.on_msg(self._on_msg)
        self.view.push()

    # ---------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        m = self.model
        style = {"description_width": "initial"}
        self.output_size_slider = W.IntSlider(value=m.output_size, min=1, max=16, description="output size",
                                              continuous_update=False, style=style)
        self.output_size_slider.add_class("roiviz-output-size")
        self.sampling_ratio_dropdown = W.Dropdown(
            options=[("adaptive", -1), ("1", 1), ("2", 2), ("3", 3), ("4", 4)],
            value=m.sampling_ratio if m.sampling_ratio in (1, 2, 3, 4) else -1,
            description="sampling_ratio", style=style, layout=W.Layout(width="200px"))
        self.sampling_ratio_dropdown.add_class("roiviz-sampling-ratio")
        self.aligned_checkbox = W.Checkbox(value=m.aligned, description="aligned", indent=False,
                                           layout=W.Layout(width="90px"))
        self.aligned_checkbox.add_class("roiviz-aligned")
        self.stride_dropdown = W.Dropdown(options=list(STRIDES), value=m.stride, description="stride",
                                          disabled=not m.is_image, style=style, layout=W.Layout(width="130px"))
        self.stride_dropdown.add_class("roiviz-stride")
        self.channel_dropdown = W.Dropdown(options=self._channel_options(), value=m.channel, description="channel",
                                           style=style, layout=W.Layout(width="170px"))
        self.channel_dropdown.add_class("roiviz-channel")
        self.roi_dropdown = W.Dropdown(options=self._roi_options(), value=m.active, description="ROI",
                                       style=style, layout=W.Layout(width="130px"))
        self.roi_dropdown.add_class("roiviz-roi")
        self.add_button = W.Button(description="add ROI", layout=W.Layout(width="90px"))
        self.add_button.add_class("roiviz-add")
        self.remove_button = W.Button(description="remove ROI", layout=W.Layout(width="100px"))
        self.remove_button.add_class("roiviz-remove")
        self.add_button.on_click(lambda _: self._guard(self.model.add_box))
        self.remove_button.on_click(lambda _: self._guard(self.model.remove_box))
        self.strategy_buttons = {
            name: W.ToggleButton(value=name in m.strategies, description=name, layout=W.Layout(width="auto"))
            for name in STRATEGIES
        }
        for name, b in self.strategy_buttons.items():
            b.add_class(f"roiviz-toggle-{name}")
            b.observe(self._on_strategy_button, "value")
        # Plain values are linked both ways: a control moves the model, the model moves the control.
        self._links = [
            T.link((m, "output_size"), (self.output_size_slider, "value")),
            T.link((m, "sampling_ratio"), (self.sampling_ratio_dropdown, "value")),
            T.link((m, "aligned"), (self.aligned_checkbox, "value")),
            T.link((m, "stride"), (self.stride_dropdown, "value")),
            T.link((m, "channel"), (self.channel_dropdown, "value")),
            T.link((m, "active"), (self.roi_dropdown, "value")),
        ]
        self._controls_box = W.VBox([
            W.HBox(list(self.strategy_buttons.values()), layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.output_size_slider, self.sampling_ratio_dropdown, self.aligned_checkbox],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.stride_dropdown, self.channel_dropdown, self.roi_dropdown, self.add_button,
                    self.remove_button], layout=W.Layout(flex_flow="row wrap")),
        ])
        self._controls_box.add_class("roiviz-controls")

    def _channel_options(self) -> list[tuple[str, int]]:
        c_n = self.model.n_channels
        first = "RGB" if c_n == 3 and self.model.is_image and self.model.stride == 1 else (
            "all" if c_n == 1 else f"mean of {c_n}")
        return [(first, -1)] + [(str(c), c) for c in range(c_n)]

    def _roi_options(self) -> list[tuple[str, int]]:
        return [(f"ROI {i + 1}", i) for i in range(len(self.model.boxes))]

    def __repr__(self) -> str:
        m = self.model
        box = ", ".join(f"{v:g}" for v in m.box)
        levels = f", levels={m.levels}" if m.levels else ""
        return (f"Explorer(box=({box}), rois={len(m.boxes)}, stride={m.stride}, output_size={m.output_size}"
                f"{levels})")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The live widget, plus a static PNG of the same state for renderers without a kernel."""
        import base64

        data = super()._repr_mimebundle_(**kwargs) or {}
        if isinstance(data, tuple):
            data = data[0]
        data = dict(data)
        data["image/png"] = base64.b64encode(self.png()).decode("ascii")
        return data

    def png(self, dpi: int = 80) -> bytes:
        """A static PNG of the Explorer's current state (matplotlib, from the model's numbers)."""
        buf = io.BytesIO()
        fig = static_figure(self.model)
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    # ---------------------------------------------------------------- public shortcuts
    @property
    def box(self) -> Box:
        """The active ROI ``(x1, y1, x2, y2)`` in image pixels; setting it updates everything."""
        return self.model.box

    @box.setter
    def box(self, value: Sequence[float]) -> None:
        self.model.box = value

    @property
    def boxes(self) -> list[Box]:
        """Every ROI, in image pixels (change them with ``model.add_box``/``remove_box``)."""
        return list(self.model.boxes)

    @property
    def status(self) -> str:
        """The status line the widget shows (:meth:`ExplorerModel.status`)."""
        return self.model.status()

    # ---------------------------------------------------------------- events
    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a callback; show any failure in the status line and the errors Output."""
        try:
            return fn(*args)
        except T.TraitError as e:
            self.model.message = f"refused: {e}"
        except Exception:
            self.model.error = traceback.format_exc()
        return None

    def _on_msg(self, _: Any, content: dict[str, Any], buffers: Any) -> None:
        """The browser's requests: a dragged box, or another ROI made active (and "nudge", which
        only carries the browser's TCP acknowledgement to the server: see NUDGE_MS in explorer.js)."""
        before = self.view.frames_sent
        kind = content.get("type")
        if kind == "nudge":
            return
        if kind == "box":
            self.view.seq = max(self.view.seq, int(content.get("seq", 0)))
            self._guard(self.model.drag, content.get("box"), bool(content.get("dragging")))
        elif kind == "active":
            self._guard(setattr, self.model, "active", int(content.get("index", 0)))
        if self.view.frames_sent == before:  # nothing changed: still answer, so the browser settles
            self.view.push()

    def _on_change(self, change: Any) -> None:
        # Inside a batch (a drag sets `dragging` and `box`) the boxes change before the results:
        # send one frame, with both, when the batch recomputes.
        if change["name"] == "results" or not self.model._held:
            self.view.push()

    def _on_error(self, change: Any) -> None:
        if change["new"]:
            self.errors.append_stderr(change["new"])

    def _on_strategy_button(self, change: Any) -> None:
        if self._syncing:
            return
        chosen = [n for n, b in self.strategy_buttons.items() if b.value]
        self._guard(setattr, self.model, "strategies", chosen)

    def _on_model_strategies(self, change: Any) -> None:
        self._syncing = True
        try:
            for name, b in self.strategy_buttons.items():
                b.value = name in change["new"]
        finally:
            self._syncing = False

    def _on_stride(self, change: Any) -> None:
        self._syncing = True
        try:
            options = self._channel_options()
            if list(self.channel_dropdown.options) != options:
                value = self.model.channel
                self.channel_dropdown.options = options
                self.channel_dropdown.value = value
        finally:
            self._syncing = False

    def _on_boxes(self, change: Any) -> None:
        options = self._roi_options()
        if list(self.roi_dropdown.options) != options:
            self._syncing = True
            try:
                self.roi_dropdown.options = options
                self.roi_dropdown.value = self.model.active
            finally:
                self._syncing = False


# ================================================================================================
# The static picture (for notebooks read without a kernel)
# ================================================================================================


def static_figure(model: ExplorerModel) -> Any:
    """The Explorer's current state as a matplotlib figure: picture and ROIs, the map zoomed on
    the active box (kept, lost, gained cells; ROI Align's samples), every panel on the shared
    colour scale with its colour bar, and the status line as the title. 10 inches wide.

    Examples
    --------
    >>> fig = static_figure(ExplorerModel("checkerboard", size=32, output_size=2))
    >>> round(fig.get_figwidth())
    10
    """
    import textwrap

    import matplotlib.colors
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    m, r = model, model.results
    names = list(r.outputs) if r is not None else []
    n_cols = 4
    n_rows = max(2, math.ceil(len(names) / n_cols))
    fpn = r.fpn if r is not None else None
    fig = Figure(figsize=(10.0, 1.9 * (n_rows + (fpn is not None)) + 1.3), layout="constrained")
    status = "\n".join(textwrap.wrap(m.status(), 120))
    fig.suptitle(status, fontsize=9, family="monospace", ha="left", x=0.01)
    gs = fig.add_gridspec(n_rows + (fpn is not None), 2 + n_cols, width_ratios=[1.6, 1.6] + [1] * n_cols)
    ax_pic = fig.add_subplot(gs[:n_rows, 0])
    ax_map = fig.add_subplot(gs[:n_rows, 1])
    ih, iw = m.image_size
    pic = m.picture_bytes()
    ax_pic.imshow(pic if pic.shape[2] == 3 else pic[..., 0], cmap="gray", extent=(0, iw, ih, 0),
                  interpolation="nearest", vmin=0, vmax=255)
    for i, b in enumerate(m.boxes):
        active = i == m.active
        ax_pic.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False,
                                   edgecolor=viz.BOX_COLORS[0] if active else viz.BOX_COLORS[1 + i % 6],
                                   linewidth=2.0 if active else 1.2, linestyle="-" if active else "--"))
    ax_pic.set_title("picture and ROIs", fontsize=10)
    if r is None:
        return fig
    kind, lo, hi = m.color_scale()
    mp = m.map_bytes()
    h, w = mp.shape[:2]
    ax_map.imshow(mp, extent=(0, w, h, 0), interpolation="nearest")
    q = r.quantization
    cells = np.zeros((h, w, 4))
    cells[np.asarray(q.lost_mask)] = matplotlib.colors.to_rgba(viz.LOST_COLOR, 0.55)
    cells[np.asarray(q.gained_mask)] = matplotlib.colors.to_rgba(viz.GAINED_COLOR, 0.55)
    ax_map.imshow(cells, extent=(0, w, h, 0), interpolation="nearest")
    c0, r0, c1, r1 = r.region
    ax_map.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, fill=False, edgecolor="white", linewidth=1.5))
    mx1, my1, mx2, my2 = r.map_box
    ax_map.add_patch(Rectangle((mx1, my1), mx2 - mx1, my2 - my1, fill=False, edgecolor=viz.BOX_COLORS[0],
                               linestyle="--", linewidth=1.5))
    if "roi_align" in r.outputs and len(r.samples):
        ax_map.scatter(r.samples[:, 0], r.samples[:, 1], s=min(6.0, 600.0 / len(r.samples)), color="#ff9f0a",
                       linewidths=0)
    pad = max(1.0, 0.15 * max(mx2 - mx1, my2 - my1))
    lo_x, hi_x, lo_y, hi_y = min(mx1, c0) - pad, max(mx2, c1) + pad, min(my1, r0) - pad, max(my2, r1) + pad
    side = max(hi_x - lo_x, hi_y - lo_y)
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    ax_map.set_xlim(cx - side / 2, cx + side / 2)
    ax_map.set_ylim(cy + side / 2, cy - side / 2)
    ax_map.set_title("map (zoomed)", fontsize=10)
    im = None
    for k, name in enumerate(names):
        ax = fig.add_subplot(gs[k // n_cols, 2 + k % n_cols])
        shown = m.shown(r.outputs[name])
        if kind == "rgb":
            ax.imshow(rgb_bytes(shown, (lo, hi)), interpolation="nearest")
        else:
            im = ax.imshow(shown, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=10)
    panel_axes = fig.axes[2:]
    if fpn is not None:
        _static_fpn(fig, gs, n_rows, m, fpn)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=panel_axes, shrink=0.8, label="one scale for every panel")
    return fig


def _static_fpn(fig: Any, gs: Any, row: int, m: ExplorerModel, fpn: FPNResult) -> None:
    """The FPN row of :func:`static_figure`: the level line and boundaries, then ROI Align's
    output from each level (channel mean, each on its level's scale), the chosen one marked."""
    import textwrap

    ax_text = fig.add_subplot(gs[row, :2])
    ax_text.axis("off")
    bounds = " · ".join(f"P{k}: [{_edge(lo)}, {_edge(hi)})" for k, lo, hi in fpn.boundaries)
    ax_text.text(0.0, 0.5, "\n".join(textwrap.wrap("FPN: " + m.fpn_label(), 52)) + "\n" + bounds,
                 fontsize=8, family="monospace", va="center", transform=ax_text.transAxes)
    for i, k in enumerate(fpn.levels[:4]):  # four columns, as the panels above
        ax = fig.add_subplot(gs[row, 2 + i])
        lo, hi = m.fpn_color_scale(k)
        ax.imshow(fpn.outputs[k].mean(axis=0, dtype=np.float32), cmap="viridis", vmin=lo, vmax=hi,
                  interpolation="nearest")
        chosen = k == fpn.level
        ax.set_title(f"P{k} (stride {2**k})" + ("\nchosen" if chosen else ""), fontsize=10,
                     color=viz.BOX_COLORS[0] if chosen else "black", fontweight="bold" if chosen else None)
