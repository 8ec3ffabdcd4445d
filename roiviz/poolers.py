"""Multi-scale ROI Align over a feature pyramid (FPN), as torchvision computes it.

A Feature Pyramid Network has one feature map per level ``k`` (stride ``2**k``). Each box is
pooled from *one* level, chosen by its size — equation (1) of the FPN paper:

    ``k = floor(canonical_level + log2(sqrt(w * h) / canonical_scale) + eps)``, clamped to
    ``[k_min, k_max]``,

so a ``224 x 224`` box goes to level 4 and every halving of its side moves it one level finer.
:func:`map_levels` is that rule (torchvision's ``LevelMapper``), :func:`level_boundaries`
lists the box sizes where it changes level, and :class:`MultiScaleRoIAlign` pools each box
from its level with :func:`roiviz.roi_align`, with torchvision's signature and results.

mmdetection's ``SingleRoIExtractor`` uses another form of the rule,
``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` with ``finest_scale=56`` counted from the
finest level: :func:`map_levels_mmdet`, and ``level_rule="mmdetection"`` in the module. It has
the same boundaries (``56 * 2**i`` = ``224 * 2**(k - 4)`` for ``k = i + 2``) but puts the
``eps`` inside the logarithm, so boxes *at* a boundary can land one level apart.

For the Explorer's multi-scale mode: :func:`pool_each_level` pools one set of boxes from every
level (what each level would give), :func:`infer_scales` gives each level's scale from the
feature and image sizes, as torchvision infers it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .ops.roi_align import roi_align

__all__ = [
    "MultiScaleRoIAlign",
    "image_pyramid",
    "infer_scales",
    "level_boundaries",
    "map_levels",
    "map_levels_mmdet",
    "pool_each_level",
]


def _box_tensor(boxes: Tensor | Sequence[Tensor], name: str = "boxes") -> Tensor:
    """``Tensor[K, 4]`` from a tensor or a list of ``Tensor[L, 4]`` (concatenated in order)."""
    if isinstance(boxes, Tensor):
        parts = [boxes]
    elif isinstance(boxes, (list, tuple)):
        parts = list(boxes)
        if not parts:
            raise ValueError(f"{name} must not be an empty list (give one Tensor[L, 4] per image)")
    else:
        raise TypeError(f"{name} must be a Tensor[K, 4] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    for i, b in enumerate(parts):
        if not isinstance(b, Tensor):
            raise TypeError(f"{name}[{i}] must be a Tensor[L, 4], got {type(b).__name__}")
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"{name}[{i}] must have shape [L, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
        if not b.is_floating_point():
            raise TypeError(f"{name}[{i}] must be a floating-point tensor, got {b.dtype}")
    return torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]


def _check_levels(k_min: object, k_max: object) -> tuple[int, int]:
    for name, v in (("k_min", k_min), ("k_max", k_max)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if k_max < k_min:  # type: ignore[operator]
        raise ValueError(f"k_max must be >= k_min, got k_min={k_min}, k_max={k_max}")
    return int(k_min), int(k_max)  # type: ignore[call-overload]


def map_levels(
    boxes: Tensor | Sequence[Tensor],
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """The FPN level of each box: ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``.

    torchvision's ``LevelMapper`` rule, with its float expressions (so float32 boxes exactly on
    a boundary go where torchvision sends them), clamped to ``[k_min, k_max]``.

    Parameters
    ----------
    boxes : Tensor[K, 4] or list of Tensor[L, 4]
        ``(x1, y1, x2, y2)`` in image pixels; a list is concatenated in order.
    k_min, k_max : int
        The finest and coarsest levels of the pyramid (e.g. 2 and 5 for P2-P5).
    canonical_scale, canonical_level : int
        A ``canonical_scale``-pixel square box maps to ``canonical_level`` (224 and 4: ImageNet
        crops go to the level a ResNet's C4 would give).
    eps : float
        Added before the floor, so a box that is exactly at a boundary in exact arithmetic is not
        sent one level down by rounding.

    Returns
    -------
    Tensor[K] of int64
        The *level* itself (``k_min .. k_max``), not an index into the feature list; torchvision's
        ``LevelMapper`` returns ``level - k_min``.

    Examples
    --------
    >>> import torch
    >>> boxes = torch.tensor([[0., 0., 224., 224.], [0., 0., 111., 111.], [0., 0., 112., 112.],
    ...                       [0., 0., 10., 10.], [0., 0., 2000., 2000.]])
    >>> map_levels(boxes, 2, 5)
    tensor([4, 2, 3, 2, 5])
    """
    k_min, k_max = _check_levels(k_min, k_max)
    b = _box_tensor(boxes)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # torchvision.ops.box_area
    s = torch.sqrt(area)
    target = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    return torch.clamp(target, min=k_min, max=k_max).to(torch.int64)


def map_levels_mmdet(
    boxes: Tensor | Sequence[Tensor], k_min: int, k_max: int, finest_scale: float = 56, eps: float = 1e-6,
) -> Tensor:
    """The FPN level of each box by mmdetection's rule (``SingleRoIExtractor.map_roi_levels``).

    ``k_min + floor(log2(sqrt(area) / finest_scale + eps))``, clamped to ``[k_min, k_max]``:
    a box of side ``finest_scale`` to ``2 * finest_scale`` goes to the finest level.

    Examples
    --------
    >>> import torch
    >>> map_levels_mmdet(torch.tensor([[0., 0., 224., 224.], [0., 0., 111., 111.], [0., 0., 112., 112.]]), 2, 5)
    tensor([4, 2, 3])
    """
    k_min, k_max = _check_levels(k_min, k_max)
    b = _box_tensor(boxes)
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    index = torch.floor(torch.log2(scale / finest_scale + eps))
    return (index.clamp(min=0, max=k_max - k_min).long() + k_min).to(torch.int64)


def level_boundaries(
    k_min: int, k_max: int, canonical_scale: float = 224, canonical_level: int = 4, eps: float = 1e-6,
) -> list[tuple[int, float, float]]:
    """The box sizes ``sqrt(w * h)`` that :func:`map_levels` sends to each level.

    Returns ``[(level, low, high), ...]``: boxes with ``low <= sqrt(area) < high`` go to
    ``level`` (in exact arithmetic; float rounding can move a box within about one part in
    ``10**6`` of a boundary). The finest level starts at 0 and the coarsest ends at infinity.

    Examples
    --------
    >>> [(k, round(lo, 2), round(hi, 2)) for k, lo, hi in level_boundaries(2, 5)]
    [(2, 0.0, 112.0), (3, 112.0, 224.0), (4, 224.0, 448.0), (5, 448.0, inf)]
    """
    k_min, k_max = _check_levels(k_min, k_max)
    edges = [canonical_scale * 2.0 ** (k - canonical_level - eps) for k in range(k_min + 1, k_max + 1)]
    lows = [0.0, *edges]
    highs = [*edges, math.inf]
    return [(k, lo, hi) for k, lo, hi in zip(range(k_min, k_max + 1), lows, highs, strict=True)]


def infer_scales(features: Sequence[Tensor], image_shapes: Sequence[tuple[int, int]]) -> tuple[list[float], int, int]:
    """Each feature map's ``spatial_scale`` and the pyramid's ``(k_min, k_max)``, as torchvision infers them.

    The scale of a map is ``2 ** round(log2(map_height / image_height))`` (computed in float32,
    rounding halves to even, as torchvision does), with ``image_height`` the largest height in
    ``image_shapes``; ``k_min = int(-log2(scales[0]))``, ``k_max = int(-log2(scales[-1]))``.

    Examples
    --------
    >>> import torch
    >>> feats = [torch.zeros(1, 1, 200, 304), torch.zeros(1, 1, 100, 152), torch.zeros(1, 1, 50, 76)]
    >>> infer_scales(feats, [(800, 1216)])
    ([0.25, 0.125, 0.0625], 2, 4)
    """
    if not image_shapes:
        raise ValueError("image_shapes must not be empty (one (height, width) per image)")
    if not features:
        raise ValueError("no feature maps to pool from")
    max_h = max(int(s[0]) for s in image_shapes)
    max_w = max(int(s[1]) for s in image_shapes)
    scales = []
    for feat in features:
        # torchvision's _infer_scale: the scale comes from the height only.
        approx = float(feat.shape[-2]) / float(max_h)
        scales.append(2 ** float(torch.tensor(approx).log2().round()))
    del max_w  # torchvision computes it too, and does not use it
    k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
    k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
    return scales, k_min, k_max


def image_pyramid(image: Tensor, levels: Sequence[int] = (2, 3, 4, 5)) -> dict[str, Tensor]:
    """A stand-in feature pyramid: level ``k`` is ``image`` averaged over ``2**k x 2**k`` blocks.

    Cell ``(i, j)`` of level ``k`` covers image pixels ``[i * 2**k, (i + 1) * 2**k)``, the
    geometry of a real FPN level of stride ``2**k`` (and what :func:`infer_scales` assumes), but
    its "features" are the image itself, so what each level pools can be looked at directly.
    Sides that are not a multiple of ``2**k`` are zero-padded at the end (``ceil(H / 2**k)`` cells).

    Returns ``{"p2": Tensor[N, C, ceil(H/4), ceil(W/4)], "p3": ...}``, finest first.

    Examples
    --------
    >>> import torch
    >>> {k: tuple(v.shape) for k, v in image_pyramid(torch.zeros(1, 3, 100, 64)).items()}
    {'p2': (1, 3, 25, 16), 'p3': (1, 3, 13, 8), 'p4': (1, 3, 7, 4), 'p5': (1, 3, 4, 2)}
    """
    if not isinstance(image, Tensor) or image.dim() != 4 or not image.is_floating_point():
        raise ValueError(f"image must be a floating-point Tensor[N, C, H, W], got {getattr(image, 'shape', image)!r}")
    out = {}
    for k in levels:
        s = 2 ** int(k)
        h, w = image.shape[-2:]
        padded = torch.nn.functional.pad(image, (0, -w % s, 0, -h % s))
        out[f"p{k}"] = torch.nn.functional.avg_pool2d(padded, s)
    return out


def _filter(x: object, featmap_names: Sequence[str]) -> list[Tensor]:
    """The maps of ``x`` named in ``featmap_names``, in ``x``'s order (as torchvision does)."""
    if not isinstance(x, Mapping):
        raise TypeError(f"x must be a dict of feature maps {{name: Tensor[N, C, H, W]}}, got {type(x).__name__}")
    maps = [v for k, v in x.items() if k in featmap_names]
    if not maps:
        raise ValueError(f"x has none of the feature maps {list(featmap_names)}; it has {list(x)}")
    channels = {m.shape[1] for m in maps if isinstance(m, Tensor) and m.dim() == 4}
    if len(channels) > 1:
        raise ValueError(f"all pooled feature maps must have the same number of channels, got {sorted(channels)}")
    return maps


def _rois(boxes: object) -> Tensor:
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a list of Tensor[L, 4] (one per image), got {type(boxes).__name__}")
    cat = _box_tensor(boxes)
    ids = torch.cat([torch.full_like(b[:, :1], i, dtype=cat.dtype) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, cat], dim=1)  # [K, 5]


def pool_each_level(
    features: Sequence[Tensor],
    boxes: Sequence[Tensor],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    scales: Sequence[float],
    aligned: bool = False,
) -> Tensor:
    """Pool every box from *every* level: what each level of the pyramid would give.

    Returns ``Tensor[L, K, C, PH, PW]``; :class:`MultiScaleRoIAlign` keeps, for each box, the
    slice of its level from :func:`map_levels`.

    Examples
    --------
    >>> import torch
    >>> feats = [torch.ones(1, 2, 16, 16), 2 * torch.ones(1, 2, 8, 8)]
    >>> out = pool_each_level(feats, [torch.tensor([[0., 0., 32., 32.]])], 2, 2, [0.25, 0.125])
    >>> out.shape, out[:, 0, 0, 0, 0].tolist()
    (torch.Size([2, 1, 2, 2, 2]), [1.0, 2.0])
    """
    if len(features) != len(scales):
        raise ValueError(f"one scale per feature map: got {len(features)} maps and {len(scales)} scales")
    rois = _rois(boxes)
    sr = sampling_ratio if sampling_ratio > 0 else -1  # torchvision: any sampling_ratio <= 0 is adaptive
    return torch.stack([roi_align(f, rois.to(f.dtype), output_size, s, sr, aligned)
                        for f, s in zip(features, scales, strict=True)])


class MultiScaleRoIAlign(nn.Module):
    """torchvision's ``MultiScaleRoIAlign``: each box pooled from its FPN level with :func:`roiviz.roi_align`.

    Same signature and results as :class:`torchvision.ops.MultiScaleRoIAlign` (tested bit for
    bit). Two differences, both deliberate:

    - the scales and levels are inferred from ``x`` and ``image_shapes`` on *every* call;
      torchvision infers them on the first call and keeps them, so a later call with another
      image size reuses stale scales (roiviz keeps no state between calls);
    - two keyword options: ``aligned`` (torchvision always uses ``aligned=False``) and
      ``level_rule="mmdetection"`` (assign levels with :func:`map_levels_mmdet` and
      ``finest_scale`` instead of :func:`map_levels`).

    Parameters
    ----------
    featmap_names : list of str
        The maps of ``x`` to pool from, finest first (``x``'s order is kept, as in torchvision).
    output_size : int or (int, int)
    sampling_ratio : int
        As in :func:`roiviz.roi_align`; ``<= 0`` is adaptive (torchvision accepts 0 for that).
    canonical_scale, canonical_level : int
        The level rule, see :func:`map_levels`.
    level_rule : {"torchvision", "mmdetection"}
    finest_scale : float
        mmdetection's rule only.
    aligned : bool

    Examples
    --------
    >>> import torch, roiviz
    >>> m = roiviz.MultiScaleRoIAlign(["p2", "p3"], 3, 2)
    >>> x = {"p2": torch.rand(1, 5, 64, 64), "p3": torch.rand(1, 5, 32, 32)}
    >>> m(x, [torch.tensor([[0., 0., 40., 40.], [10., 10., 250., 200.]])], [(256, 256)]).shape
    torch.Size([2, 5, 3, 3])
    >>> m
    MultiScaleRoIAlign(featmap_names=['p2', 'p3'], output_size=(3, 3), sampling_ratio=2)
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int] | list[int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        level_rule: str = "torchvision",
        finest_scale: float = 56,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(featmap_names, str) or not all(isinstance(n, str) for n in featmap_names):
            raise TypeError(f"featmap_names must be a list of str, got {featmap_names!r}")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        if not isinstance(sampling_ratio, numbers.Integral) or isinstance(sampling_ratio, bool):
            raise TypeError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
        if level_rule not in ("torchvision", "mmdetection"):
            raise ValueError(f"level_rule must be 'torchvision' or 'mmdetection', got {level_rule!r}")
        if not isinstance(aligned, bool):
            raise TypeError(f"aligned must be True or False, got {aligned!r}")
        self.featmap_names = featmap_names
        self.output_size = tuple(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.level_rule = level_rule
        self.finest_scale = finest_scale
        self.aligned = aligned

    def levels(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """The FPN level each box is pooled from (``Tensor[K]`` of int64, ``k_min .. k_max``)."""
        _, k_min, k_max = infer_scales(_filter(x, self.featmap_names), image_shapes)
        if self.level_rule == "mmdetection":
            return map_levels_mmdet(boxes, k_min, k_max, self.finest_scale)
        return map_levels(boxes, k_min, k_max, self.canonical_scale, self.canonical_level)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        """Pool ``boxes`` (one ``Tensor[L, 4]`` per image, image pixels) into ``Tensor[K, C, PH, PW]``."""
        maps = _filter(x, self.featmap_names)
        scales, k_min, _ = infer_scales(maps, image_shapes)
        rois = _rois(boxes)
        sr = self.sampling_ratio if self.sampling_ratio > 0 else -1
        if len(maps) == 1:
            return roi_align(maps[0], rois.to(maps[0].dtype), self.output_size, scales[0], sr, self.aligned)
        index = self.levels(x, boxes, image_shapes) - k_min  # [K], into maps
        first = maps[0]
        result = torch.zeros((rois.shape[0], first.shape[1], *self.output_size), dtype=first.dtype, device=first.device)
        for level, (feature, scale) in enumerate(zip(maps, scales, strict=True)):
            idx = torch.where(index == level)[0]
            pooled = roi_align(feature, rois[idx].to(feature.dtype), self.output_size, scale, sr, self.aligned)
            result[idx] = pooled.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio})")
