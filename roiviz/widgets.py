"""The drag-to-resize Explorer: drag a box over a picture, see every strategy's output at once.

>>> from roiviz.widgets import Explorer
>>> ex = Explorer("checkerboard", backend="inline")
>>> ex.box = (10, 20, 60, 90)          # exactly what a drag does
>>> ex.status.value.split(" · ")[0]
'box (x1, y1, x2, y2) = (10.0, 20.0, 60.0, 90.0)'

Two layers, as in the ipywidgets tutorial on object-oriented widgets:

- :class:`ExplorerModel` (``traitlets.HasTraits``) holds the state -- the boxes in *image
  pixels*, the active one as the ``box`` trait (validated: clamped into the image, a zero width
  or height widened to one pixel, with a visible ``message``), the output size, ROI Align's
  ``sampling_ratio`` and ``aligned``, the ``stride`` of the feature map, the ``channel`` shown --
  and recomputes ``results`` (every strategy's output and metrics) synchronously on each change.
  It needs no browser: set a trait, read ``results``.
- :class:`Explorer` (an ``ipywidgets.VBox``) is the view: one matplotlib figure (the picture
  with its boxes, the map the strategies see, one panel per strategy) and the controls, joined
  to the model with ``link``/``observe``. With ipympl the figure is a live canvas and the box is
  a :class:`matplotlib.widgets.RectangleSelector` you drag and resize by its handles; without
  ipympl (``backend="inline"``) the figure is re-rendered as a PNG and the sliders move the box.

Redraws only change artists in place (``set_data``, ``set_bounds``, ``set_offsets``,
``set_text``) and ask for one ``draw_idle``. Errors are shown in an ``Output`` widget and in
the status line, never swallowed.
"""

from __future__ import annotations

import io
import math
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import matplotlib.colors
import matplotlib.image
import numpy as np
import torch
import traitlets as T
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import viz
from ._checks import trusted_boxes
from ._threads import torch_threads
from .ops.roi_align import roi_align
from .strategies import STRATEGIES

__all__ = ["Explorer", "ExplorerModel", "ExplorerResult", "sample_points"]

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
    # float32, in the kernel's order: the points roi_align really samples on a float32 map
    # (a 1e-12-tall box has height 0 there: 1e-12 - 0.5 rounds back to -0.5).
    f = np.float32
    offset = f(0.5) if aligned else f(0.0)
    x1, y1, x2, y2 = (f(v) * f(spatial_scale) for v in box)
    start_w, start_h = x1 - offset, y1 - offset
    roi_w, roi_h = (x2 - offset) - start_w, (y2 - offset) - start_h
    if not aligned:  # legacy ROI Align forces a malformed box to at least 1x1
        roi_w, roi_h = max(roi_w, f(1.0)), max(roi_h, f(1.0))
    bin_h, bin_w = roi_h / f(ph_n), roi_w / f(pw_n)
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / f(ph_n))
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / f(pw_n))
    # y of sample iy in bin ph: start + ph * bin + (iy + 0.5) * bin / grid.
    ph = np.arange(ph_n, dtype=f)[:, None]
    pw = np.arange(pw_n, dtype=f)[:, None]
    iy = np.arange(grid_h, dtype=f)[None, :] + f(0.5)
    ix = np.arange(grid_w, dtype=f)[None, :] + f(0.5)
    ys = start_h + ph * bin_h + iy * bin_h / f(max(grid_h, 1))
    xs = start_w + pw * bin_w + ix * bin_w / f(max(grid_w, 1))
    # In the reference's order: bin (ph, pw), then sample (iy, ix).
    yy, xx = np.broadcast_arrays(ys[:, None, :, None], xs[None, :, None, :])  # [PH, PW, GH, GW]
    yy, xx = yy.ravel().astype(np.float64), xx.ravel().astype(np.float64)
    outside = (yy < -1.0) | (yy > height) | (xx < -1.0) | (xx > width)
    return np.stack([xx + 0.5, yy + 0.5], axis=1), outside, max(grid_h * grid_w, 1)


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

    Examples
    --------
    >>> m = ExplorerModel("checkerboard", output_size=4)
    >>> m.box = (-5, 10, 40, 10)      # outside the image, and of zero height
    >>> m.box, m.message
    ((0.0, 10.0, 40.0, 11.0), 'box clamped into the 128x128 image; zero height: widened to 1 px')
    >>> sorted(m.results.outputs) == sorted(m.strategies)
    True
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

    def __init__(self, image: Any, *, boxes: Sequence[Sequence[float]] | None = None,
                 strategies: Sequence[str] | None = None, output_size: int = 7, sampling_ratio: int = 2,
                 aligned: bool = True, stride: int = 1, channel: int = -1, spatial_scale: float | None = None,
                 feature_channels: int = 16, seed: int = 0, size: int = 128) -> None:
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
        self._ready = False  # no recomputation while the constructor sets the traits
        with self.hold_trait_notifications():
            self.output_size = output_size
            self.sampling_ratio = sampling_ratio
            self.aligned = aligned
            self.stride = stride if self.is_image else 1
            self.channel = channel
            if strategies is not None:
                self.strategies = list(strategies)
            ih, iw = self.image_size
            start = [tuple(b) for b in boxes] if boxes else [(iw * 0.25, ih * 0.25, iw * 0.75, ih * 0.6)]
            self.boxes = [self._validate_box(b, quiet=True) for b in start]
            self.active = 0
            self.box = self.boxes[0]
        self._ready = True
        self.recompute()

    # ---------------------------------------------------------------- what the strategies see
    @property
    def input(self) -> torch.Tensor:
        """The map the strategies see, ``Tensor[1, C, h, w]``: the picture or its features."""
        if self.stride == 1:
            return self.picture[None]
        if self.stride not in self._features:
            with torch.no_grad():
                rgb = self.picture if self.picture.shape[0] == 3 else self.picture.expand(3, -1, -1)
                self._features[self.stride] = self._extractor(self.stride)(rgb[None]).detach()
        return self._features[self.stride]

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
    @T.observe("output_size", "sampling_ratio", "aligned", "stride", "strategies", "channel", "dragging")
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
        return ExplorerResult(box, viz.box_in_map(box, scale), scale,
                              {name: out[0].numpy() for name, out in outputs.items()}, metrics, q, region, xy,
                              outside, (time.perf_counter() - t0) * 1e3)

    def _strategy(self, name: str) -> Any:
        if name == "roi_align":  # honour the sampling_ratio and aligned controls
            sr, al = self.sampling_ratio, self.aligned
            return lambda x, b, size, scale=1.0: roi_align(x, b, size, scale, sampling_ratio=sr, aligned=al)
        return STRATEGIES[name]

    def recompute(self) -> None:
        """Recompute ``results`` now; a failure goes to ``error`` (and the view shows it)."""
        try:
            self.results = self.compute(metrics=not self.dragging)
            self.error = ""
        except Exception:
            self.error = traceback.format_exc()

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


# ================================================================================================
# The view
# ================================================================================================


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _ipympl_available() -> bool:
    try:
        import ipympl.backend_nbagg  # noqa: F401
    except ImportError:
        return False
    return True


class Explorer(W.VBox):
    """Drag and resize ROIs on a picture; every strategy's output and metrics follow live.

    Parameters
    ----------
    image_or_features : array, Tensor or str
        See :class:`ExplorerModel` (a picture, a sample name, or a feature map).
    backend : {"auto", "ipympl", "inline", "agg"}
        ``"ipympl"``: a live canvas with a draggable, resizable RectangleSelector.
        ``"inline"``: the figure re-rendered as a PNG (an ``Image`` widget) after each change;
        the sliders move the box. ``"agg"``: draw on an Agg canvas only, nothing to display
        the figure (benchmarks, saving). ``"auto"`` picks ipympl inside a Jupyter kernel when
        it is installed, else inline.
    continuous_update : bool
        With ipympl, update while dragging (not only on release).
    **model_kwargs
        ``boxes``, ``strategies``, ``output_size``, ``sampling_ratio``, ``aligned``, ``stride``,
        ``channel``, ``spatial_scale``, ``size`` (of a sample image): see :class:`ExplorerModel`.

    Attributes
    ----------
    model : ExplorerModel
    figure : matplotlib.figure.Figure
    image_ax, map_ax : Axes
        The picture with every ROI (data coordinates are image pixels); the map the strategies
        see, zoomed on the active box, with the cells ROI Pool keeps (white frame), loses (red)
        and gains (blue), and ROI Align's sample points (orange).
    panels : roiviz.viz.StrategyPanels
        One panel per strategy, hidden when the strategy is not shown.
    selector : RectangleSelector or None
        The draggable box (ipympl only).
    status : ipywidgets.Label
        CSS class ``roiviz-status``; starts with ``box (x1, y1, x2, y2) = (...)``.
    metrics_html : ipywidgets.HTML
        CSS class ``roiviz-metrics``: the metrics table of the shown strategies.
    errors : ipywidgets.Output
        CSS class ``roiviz-errors``: tracebacks of failed updates.

    Notes
    -----
    Drawing is split like matplotlib's blitting tutorial: titles, the picture and the axes are
    drawn once into a background; a box change restores it and draws only the changed artists
    (marked ``animated``). Anything that changes the layout (output size, strategies shown,
    stride, channel) redraws the whole figure once.
    """

    def __init__(self, image_or_features: Any, *, backend: str = "auto", continuous_update: bool = True,
                 figsize: tuple[float, float] = (10.0, 4.4), dpi: float = 80, **model_kwargs: Any) -> None:
        if backend not in ("auto", "ipympl", "inline", "agg"):
            raise ValueError(f"backend must be 'auto', 'ipympl', 'inline' or 'agg', got {backend!r}")
        if backend == "auto":
            backend = "ipympl" if _in_kernel() and _ipympl_available() else "inline"
        if backend == "ipympl" and not _ipympl_available():
            raise ValueError("backend='ipympl' needs the ipympl package; install it or use backend='inline'")
        self.model = ExplorerModel(image_or_features, **model_kwargs)
        self.backend = backend
        self.continuous_update = continuous_update
        self._syncing = False  # True while the view writes back a value the model just sent
        self._dragging = False
        self._background: Any = None  # the static part of the figure, for blitting
        self._layout_key: tuple[Any, ...] | None = None
        self._map_key: tuple[int, int] | None = None
        self._metrics_table = ""
        self.draw_count = 0  # full draws
        self.blit_count = 0  # partial redraws of the changed artists

        self.figure = Figure(figsize=figsize, dpi=dpi)
        self.canvas: Any = None
        self.picture: W.Image | None = None
        if backend == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            self.canvas = Canvas(self.figure)
            FigureManager(self.canvas, 0)  # wires the canvas to ipympl's front-end protocol
            self.canvas.header_visible = False
            self.canvas.footer_visible = False
            self.canvas.toolbar_visible = False
            self.canvas.resizable = False  # a stable layout for the mouse (and for tests)
            self.canvas.add_class("roiviz-canvas")
            figure_view: list[W.Widget] = [self.canvas]
        else:
            FigureCanvasAgg(self.figure)
            if backend == "inline":
                self.picture = W.Image(format="png")
                self.picture.add_class("roiviz-picture")
                figure_view = [self.picture]
            else:
                figure_view = []
        self.figure.canvas.mpl_connect("draw_event", self._on_draw_event)
        self._build_figure()
        self._build_controls()
        super().__init__([self.status, *figure_view, self._controls_box, self.metrics_html, self.errors])
        self.add_class("roiviz-explorer")
        self.model.observe(self._on_results, "results")
        self.model.observe(self._on_error, "error")
        self.model.observe(self._on_boxes, "boxes")
        self.model.observe(self._on_model_strategies, "strategies")
        self.model.observe(self._on_stride, "stride")
        self.model.observe(self._on_message, "message")
        self._render()

    # ---------------------------------------------------------------- figure
    def _build_figure(self) -> None:
        m = self.model
        fig = self.figure
        fig.subplots_adjust(left=0.01, right=0.99, top=0.94, bottom=0.02, wspace=0.08, hspace=0.2)
        gs = fig.add_gridspec(2, 6)
        self.image_ax = fig.add_subplot(gs[:, :2])
        self.map_ax = fig.add_subplot(gs[0, 2])
        slots = [gs[0, 3], gs[0, 4], gs[0, 5], gs[1, 2], gs[1, 3], gs[1, 4], gs[1, 5]]
        # Metrics go in the HTML table under the figure: text is the slowest thing Agg draws.
        self.panels = viz.StrategyPanels([fig.add_subplot(s) for s in slots], list(STRATEGIES), fontsize=9,
                                         show_metrics=False)
        for ax in fig.axes:
            ax.set_axis_off()  # no ticks or frames: nothing to read there, and cheaper to draw

        ih, iw = m.image_size
        self._picture_image = self.image_ax.imshow(np.zeros((1, 1)), extent=(0, iw, ih, 0), cmap="gray",
                                                   interpolation="nearest")
        self.image_ax.set_xlim(0, iw)
        self.image_ax.set_ylim(ih, 0)
        self._box_artists = viz.draw_boxes(self.image_ax, [], linewidth=2.0)

        ax = self.map_ax
        self._map_image = ax.imshow(np.zeros((1, 1)), cmap="viridis", interpolation="nearest", extent=(0, 1, 1, 0))
        self._cells = ax.imshow(np.zeros((1, 1, 4)), interpolation="nearest", extent=(0, 1, 1, 0), zorder=2)
        self._region = Rectangle((0, 0), 1, 1, fill=False, edgecolor="white", linewidth=1.5, zorder=3)
        self._map_box = Rectangle((0, 0), 1, 1, fill=False, edgecolor=viz.BOX_COLORS[0], linewidth=1.5,
                                  linestyle="--", zorder=4)
        ax.add_patch(self._region)
        ax.add_patch(self._map_box)
        self._samples = ax.scatter(np.empty(0), np.empty(0), s=4, color="#ff9f0a", zorder=5, linewidths=0)
        ax.set_title("map (zoomed)", fontsize=9)
        self._animated = [self._map_image, self._cells, self._region, self._map_box, self._samples,
                          *self.panels.images.values()]
        for a in self._animated:
            a.set_animated(True)

        self.selector = None
        if self.backend == "ipympl":
            from matplotlib.widgets import RectangleSelector

            color = viz.BOX_COLORS[0]
            self.selector = RectangleSelector(
                self.image_ax, self._on_select, interactive=True, useblit=False, button=[1],
                drag_from_anywhere=True, props={"edgecolor": color, "facecolor": color, "alpha": 0.15, "fill": True},
                handle_props={"markeredgecolor": color, "markerfacecolor": "white", "markersize": 7},
            )
            self._place_selector(m.box)
            self.canvas.mpl_connect("button_press_event", self._on_press)
            self.canvas.mpl_connect("motion_notify_event", self._on_motion)
            self.canvas.mpl_connect("button_release_event", self._on_release)

    # ---------------------------------------------------------------- controls
    def _build_controls(self) -> None:
        m = self.model
        ih, iw = m.image_size
        style = {"description_width": "initial"}
        x1, y1, x2, y2 = m.box
        self.x_slider = W.FloatRangeSlider(value=(x1, x2), min=0, max=iw, step=0.5, description="x1, x2",
                                           continuous_update=False, readout_format=".1f", style=style)
        self.y_slider = W.FloatRangeSlider(value=(y1, y2), min=0, max=ih, step=0.5, description="y1, y2",
                                           continuous_update=False, readout_format=".1f", style=style)
        self.x_slider.add_class("roiviz-x")
        self.y_slider.add_class("roiviz-y")
        self.x_slider.observe(self._on_slider, "value")
        self.y_slider.observe(self._on_slider, "value")

        self.output_size_slider = W.IntSlider(value=m.output_size, min=1, max=16, description="output size",
                                              continuous_update=False, style=style)
        self.output_size_slider.add_class("roiviz-output-size")
        self.sampling_ratio_dropdown = W.Dropdown(
            options=[("adaptive", -1), ("1", 1), ("2", 2), ("3", 3), ("4", 4)],
            value=m.sampling_ratio if m.sampling_ratio in (1, 2, 3, 4) else -1,
            description="sampling_ratio", style=style, layout=W.Layout(width="200px"))
        self.aligned_checkbox = W.Checkbox(value=m.aligned, description="aligned", indent=False,
                                           layout=W.Layout(width="90px"))
        self.stride_dropdown = W.Dropdown(options=list(STRIDES), value=m.stride, description="stride",
                                          disabled=not m.is_image, style=style, layout=W.Layout(width="130px"))
        self.channel_dropdown = W.Dropdown(options=self._channel_options(), value=m.channel, description="channel",
                                           style=style, layout=W.Layout(width="170px"))
        self.roi_dropdown = W.Dropdown(options=self._roi_options(), value=m.active, description="ROI",
                                       style=style, layout=W.Layout(width="130px"))
        self.add_button = W.Button(description="add ROI", layout=W.Layout(width="90px"))
        self.remove_button = W.Button(description="remove ROI", layout=W.Layout(width="100px"))
        self.add_button.on_click(lambda _: self._guard(self.model.add_box))
        self.remove_button.on_click(lambda _: self._guard(self.model.remove_box))
        self.strategy_buttons = {
            name: W.ToggleButton(value=name in m.strategies, description=name, layout=W.Layout(width="auto"))
            for name in STRATEGIES
        }
        for b in self.strategy_buttons.values():
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

        self.status = W.Label(value="")
        self.status.add_class("roiviz-status")
        self.metrics_html = W.HTML(value="")
        self.metrics_html.add_class("roiviz-metrics")
        self.errors = W.Output()
        self.errors.add_class("roiviz-errors")
        self._controls_box = W.VBox([
            W.HBox([self.x_slider, self.y_slider]),
            W.HBox(list(self.strategy_buttons.values())),
            W.HBox([self.output_size_slider, self.sampling_ratio_dropdown, self.aligned_checkbox]),
            W.HBox([self.stride_dropdown, self.channel_dropdown, self.roi_dropdown, self.add_button,
                    self.remove_button]),
        ])

    def _channel_options(self) -> list[tuple[str, int]]:
        c_n = self.model.n_channels
        first = "RGB" if c_n == 3 else ("all" if c_n == 1 else f"mean of {c_n}")
        return [(first, -1)] + [(str(c), c) for c in range(c_n)]

    def _roi_options(self) -> list[tuple[str, int]]:
        return [(f"ROI {i + 1}", i) for i in range(len(self.model.boxes))]

    def __repr__(self) -> str:
        m = self.model
        box = ", ".join(f"{v:g}" for v in m.box)
        return (f"Explorer(box=({box}), rois={len(m.boxes)}, stride={m.stride}, "
                f"output_size={m.output_size}, backend={self.backend!r})")

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

    def data_to_canvas(self, x: float, y: float) -> tuple[float, float]:
        """Pixel position of image point ``(x, y)`` on the canvas, from its top-left corner.

        A browser test adds this to the canvas element's bounding box to aim the mouse.
        """
        px, py = self.image_ax.transData.transform((x, y))
        return float(px), float(self.figure.bbox.height - py)

    # ---------------------------------------------------------------- events from the controls
    def _guard(self, fn: Any, *args: Any) -> Any:
        """Run a callback; show any failure in the status line and the errors Output."""
        try:
            return fn(*args)
        except T.TraitError as e:
            self.model.message = f"refused: {e}"
        except Exception:
            self._show_error(traceback.format_exc())
        return None

    def _on_slider(self, change: Any) -> None:
        if self._syncing:
            return
        (x1, x2), (y1, y2) = self.x_slider.value, self.y_slider.value
        self._guard(setattr, self.model, "box", (x1, y1, x2, y2))

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

    def _on_message(self, change: Any) -> None:
        self.status.value = self.model.status()

    # ---------------------------------------------------------------- events from the mouse (ipympl)
    def _selector_box(self) -> Box:
        xmin, xmax, ymin, ymax = self.selector.extents
        return (xmin, ymin, xmax, ymax)

    def _on_press(self, event: Any) -> None:
        if event.inaxes is self.image_ax and event.button == 1:
            self._dragging = True
            self._guard(setattr, self.model, "dragging", True)

    def _on_motion(self, event: Any) -> None:
        if self._dragging and self.continuous_update and self.selector is not None:
            box = self._selector_box()
            if box[2] - box[0] > 0 and box[3] - box[1] > 0:
                self._guard(setattr, self.model, "box", box)

    def _on_select(self, eclick: Any, erelease: Any) -> None:
        x1, y1, x2, y2 = self._selector_box()
        if x2 - x1 <= 0 and y2 - y1 <= 0:  # a bare click starts no box: keep the one we have
            self.model.message = "refused: a click without a drag draws no box; the box is kept"
            return
        self._guard(setattr, self.model, "box", (x1, y1, x2, y2))

    def _on_release(self, event: Any) -> None:
        if not self._dragging:
            return
        self._dragging = False
        # Put the selector on the validated box (it may have been clamped, widened or refused).
        self._place_selector(self.model.box)
        self._guard(setattr, self.model, "dragging", False)  # recomputes, now with the metrics

    def _place_selector(self, box: Box) -> None:
        x1, y1, x2, y2 = box
        self.selector.extents = (x1, x2, y1, y2)
        self.selector.set_visible(True)
        # A box set from code (or restored after a bare click cleared the selector) must behave
        # like one the user drew: matplotlib only calls back for a completed selection.
        if hasattr(self.selector, "_selection_completed"):
            self.selector._selection_completed = True

    # ---------------------------------------------------------------- redraw
    def _on_results(self, change: Any) -> None:
        self._render()

    def _on_error(self, change: Any) -> None:
        if change["new"]:
            self._show_error(change["new"])

    def _show_error(self, text: str) -> None:
        self.errors.append_stderr(text)
        line = text.strip().splitlines()[-1] if text.strip() else "error"
        self.status.value = self.model.status() if self.model.error else f"{self.model.status()} · error: {line}"

    def _update_static(self) -> bool:
        """Redo what changes with the stride or channel (the picture, the map's colours); True if done."""
        m = self.model
        key = (m.stride, m.channel)
        if key == self._map_key:
            return False
        channel = None if m.channel < 0 else m.channel
        x = m.input[0]
        h, w = x.shape[-2:]
        shown = viz.display_array(x, channel)
        lo, hi = min(float(shown.min()), 0.0), max(float(shown.max()), 0.0)
        self._clim = (lo, hi if hi > lo else lo + 1.0)
        if shown.ndim == 3:
            shown = viz._rgb_in_clim(shown, self._clim)
        self._map_image.set_data(shown)
        self._map_image.set_clim(*self._clim)
        for im in (self._map_image, self._cells):
            im.set_extent((0, w, h, 0))
        # The picture is what the strategies see at stride 1, else the photo the features came from.
        if m.stride == 1:
            picture, clim = shown, self._clim
        else:
            picture = viz.display_array(m.picture)
            clim = (float(picture.min()), float(picture.max()) or 1.0)
            picture = np.clip(picture, 0.0, 1.0) if picture.ndim == 3 else picture
        self._picture_image.set_data(picture)
        if picture.ndim == 2:
            self._picture_image.set_clim(*clim)
        self._map_key = key
        return True

    def _render(self) -> None:
        """Push the model's results into the artists and widgets, then draw once."""
        full = False
        try:
            full = self._render_artists()
        except Exception:
            self._show_error(traceback.format_exc())
        self.status.value = self.model.status()
        self._draw(full)

    def _render_artists(self) -> bool:
        m, r = self.model, self.model.results
        # Controls follow the model (e.g. a clamped box moves the sliders back).
        self._syncing = True
        try:
            x1, y1, x2, y2 = m.box
            if self.x_slider.value != (x1, x2):
                self.x_slider.value = (x1, x2)
            if self.y_slider.value != (y1, y2):
                self.y_slider.value = (y1, y2)
        finally:
            self._syncing = False
        # The picture: every ROI; the active one is the selector when there is one.
        rects = self._box_artists.rects
        while len(rects) < len(m.boxes):
            (rect,) = viz.draw_boxes(self.image_ax, [m.boxes[len(rects)]]).rects
            rect.set_animated(True)
            self._animated.append(rect)
            rects.append(rect)
        for i, rect in enumerate(rects):
            if i < len(m.boxes):
                self._box_artists.update(i, m.boxes[i])
                rect.set_linestyle("-" if i == m.active else "--")
                rect.set_visible(not (self.selector is not None and i == m.active))
                rect.set_edgecolor(viz.BOX_COLORS[0] if i == m.active else viz.BOX_COLORS[1 + i % 6])
            else:
                rect.set_visible(False)
        if self.selector is not None and not self._dragging:
            if tuple(self.selector.extents) != (x1, x2, y1, y2):
                self._place_selector(m.box)
        if r is None:
            return False
        full = self._update_static()
        # The map: the box, the cells kept, lost and gained, ROI Align's samples; zoomed on the box.
        mx1, my1, mx2, my2 = r.map_box
        self._map_box.set_bounds(mx1, my1, mx2 - mx1, my2 - my1)
        c0, r0, c1, r1 = r.region
        self._region.set_bounds(c0, r0, c1 - c0, r1 - r0)
        q = r.quantization
        cells = viz._cells_rgba(np.asarray(q.lost_mask), viz.LOST_COLOR, 0.6)
        cells[np.asarray(q.gained_mask)] = matplotlib.colors.to_rgba(viz.GAINED_COLOR, 0.6)
        self._cells.set_data(cells)
        show_samples = "roi_align" in m.strategies
        self._samples.set_offsets(r.samples if show_samples and len(r.samples) else np.empty((0, 2)))
        pad = max(1.0, 0.15 * max(mx2 - mx1, my2 - my1))
        lo_x, hi_x = min(mx1, c0) - pad, max(mx2, c1) + pad
        lo_y, hi_y = min(my1, r0) - pad, max(my2, r1) + pad
        side = max(hi_x - lo_x, hi_y - lo_y)  # square limits keep the cells square
        cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
        self.map_ax.set_xlim(cx - side / 2, cx + side / 2)
        self.map_ax.set_ylim(cy + side / 2, cy - side / 2)
        # The panels: one colour scale, that of the map (so colours also compare across boxes).
        self.panels.update(r.outputs, channel=None if m.channel < 0 else m.channel, clim=self._clim)
        if not m.strategies:
            self.metrics_html.value = "<p><i>no strategy selected</i></p>"
        elif r.metrics is not None:
            self._metrics_table = r.metrics._repr_html_()
            self.metrics_html.value = self._metrics_table
        elif "follow" not in self.metrics_html.value:
            note = "<p><i>dragging: the metrics follow when you release the box</i></p>"
            self.metrics_html.value = note + self._metrics_table
        layout = (tuple(m.strategies), m.output_size, m.stride, m.channel)
        full = full or layout != self._layout_key
        self._layout_key = layout
        return full

    def _on_draw_event(self, event: Any) -> None:
        """After any full draw: keep the static background, then draw the changing artists on it."""
        self._background = self.figure.canvas.copy_from_bbox(self.figure.bbox)
        self._draw_animated()

    def _draw_animated(self) -> None:
        for a in self._animated:
            if a.get_visible() and a.axes is not None and a.axes.get_visible():
                self.figure.draw_artist(a)

    def _draw(self, full: bool = False) -> None:
        """Full draw when the layout changed, else restore the background and blit."""
        canvas = self.figure.canvas
        if full or self._background is None:
            self._background = None
            self.draw_count += 1
            if self.backend == "ipympl":
                canvas.draw_idle()  # the front-end asks for the image; draw_event keeps the background
                return
            canvas.draw()  # Agg: draw_event keeps the background and draws the changing artists
        else:
            self.blit_count += 1
            canvas.restore_region(self._background)
            self._draw_animated()
            canvas.blit(self.figure.bbox)  # ipympl sends the changed pixels; Agg has them already
        if self.picture is not None:
            self.picture.value = self.png()

    def png(self) -> bytes:
        """The figure as it is now on the canvas, as PNG bytes (no redraw)."""
        buf = io.BytesIO()
        matplotlib.image.imsave(buf, np.asarray(self.figure.canvas.buffer_rgba()), format="png")
        return buf.getvalue()
