"""A seeded, offline dataset where an object's position matters at sub-pixel precision.

Each grey-level image holds a few non-overlapping shapes of four classes — ``disc``,
``square``, ``bar`` (thin, horizontal or vertical) and ``triangle`` — with centres and sizes
drawn from continuous distributions, so edges fall anywhere between pixels. Every shape is an
*analytic* set (an inside-test on continuous coordinates), which gives us exactly:

- the image, rendered with anti-aliasing (coverage estimated on an ``s x s`` sub-pixel grid),
- the ground-truth box ``(x1, y1, x2, y2)`` (the tight continuous box, not rounded),
- the ground-truth mask *resampled into any box at any resolution*
  (:func:`mask_in_boxes`): this is the mask head's target in the proposal's frame, and also
  how predictions are scored at a higher resolution than the head outputs.

Proposals are the ground-truth boxes with each edge jittered by a fraction of the box size,
so the object sits at a different sub-pixel offset inside every proposal: a head can only
place the mask correctly if the pooled features tell it where the box edges fall.

Convention
----------
Continuous image coordinates: pixel ``(i, j)`` (row, column) covers ``[j, j+1) x [i, i+1)``,
its centre is ``(j + 0.5, i + 0.5)``. This is the convention of ``roi_align(aligned=True)``.
A mask of size ``M x M`` in box ``(x1, y1, x2, y2)`` samples cell ``(u, v)`` around the point
``(x1 + (v + 0.5) * (x2 - x1) / M, y1 + (u + 0.5) * (y2 - y1) / M)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CLASSES",
    "LARGE_OBJECTS",
    "SMALL_OBJECTS",
    "SPLITS",
    "DataConfig",
    "ShapeSet",
    "inside",
    "jitter_boxes",
    "make_dataset",
    "mask_in_boxes",
]

#: Class names, in label order.
CLASSES: tuple[str, ...] = ("disc", "square", "bar", "triangle")


@dataclass(frozen=True)
class DataConfig:
    """How to draw a dataset (all lengths in image pixels).

    Attributes
    ----------
    image_size : int
        Images are ``image_size x image_size``; a multiple of every stride used.
    objects : tuple[int, int]
        Inclusive range of the number of shapes per image.
    size_range : tuple[float, float]
        Range of a shape's extent (disc diameter, square side, bar length, triangle side).
    bar_width : tuple[float, float]
        Range of a bar's thickness: a few pixels, much thinner than one feature cell.
    jitter : float
        Each proposal edge moves by ``U(-jitter, jitter) * box side``.
    proposals : int
        Jittered proposals per object in the training split (the test split uses one).
    supersample : int
        Sub-pixels per pixel side used to estimate coverage (image and masks).
    noise : float
        Standard deviation of the Gaussian pixel noise added to the image.
    """

    image_size: int = 128
    objects: tuple[int, int] = (2, 4)
    size_range: tuple[float, float] = (18.0, 56.0)
    bar_width: tuple[float, float] = (3.0, 7.0)
    jitter: float = 0.2
    proposals: int = 4
    supersample: int = 4
    noise: float = 0.05

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        lo, hi = self.objects
        if not 1 <= lo <= hi:
            raise ValueError(f"objects must be a range 1 <= lo <= hi, got {self.objects}")
        smin, smax = self.size_range
        if not 0 < smin <= smax < self.image_size:
            raise ValueError(f"size_range must satisfy 0 < lo <= hi < image_size, got {self.size_range}")
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5), got {self.jitter}")
        if self.proposals < 1 or self.supersample < 1:
            raise ValueError("proposals and supersample must be >= 1")


#: Objects of 18-56 px in 128-px images: 1-3.5 stride-16 cells, 0.6-1.75 stride-32 cells. At
#: stride 32 a cell is as large as the object, so every strategy falls toward "fill the box".
SMALL_OBJECTS = DataConfig()
#: Objects of 80-200 px in 256-px images: 2.5-6 stride-32 cells (and bars 4-10 px thick, still
#: thinner than a stride-16 cell), as COCO's objects are large relative to Mask R-CNN's features.
LARGE_OBJECTS = DataConfig(image_size=256, objects=(1, 3), size_range=(80.0, 200.0), bar_width=(4.0, 10.0))


@dataclass
class ShapeSet:
    """A split of the dataset: images, their shapes and the proposals to train or score on.

    Attributes
    ----------
    images : Tensor[N, 1, S, S]
        Rendered images, float32.
    shapes : Tensor[O, 6]
        One row per object: ``(image_index, class, cx, cy, a, b)``; ``a``, ``b`` are half-sizes
        (disc: radius, radius; square and bar: half-width, half-height; triangle: half-side, half-height).
    gt_boxes : Tensor[O, 4]
        The exact tight box of each object.
    rois : Tensor[K, 5]
        Proposals ``(image_index, x1, y1, x2, y2)``.
    roi_object : Tensor[K]
        Index into ``shapes`` of the object each proposal belongs to.
    segmentation : Tensor[N, S, S]
        Per-pixel class map (0 = background, ``1 + class`` where a shape covers at least half
        the pixel): the dense, strategy-agnostic task the backbone is pretrained on.
    """

    images: torch.Tensor
    shapes: torch.Tensor
    gt_boxes: torch.Tensor
    rois: torch.Tensor
    roi_object: torch.Tensor
    segmentation: torch.Tensor

    @property
    def labels(self) -> torch.Tensor:
        """Class label of each proposal, ``Tensor[K]`` (int64)."""
        return self.shapes[self.roi_object, 1].long()

    def targets(self, size: int, supersample: int = 4) -> torch.Tensor:
        """Ground-truth mask of each proposal's object in the proposal's frame, ``Tensor[K, size, size]``."""
        return mask_in_boxes(self.shapes[self.roi_object], self.rois[:, 1:], size, supersample)


def inside(shapes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether points lie inside shapes (the analytic definition of every class).

    Parameters
    ----------
    shapes : Tensor[O, 6]
        Rows ``(image_index, class, cx, cy, a, b)`` as in :class:`ShapeSet`.
    x, y : Tensor[O, ...]
        Continuous point coordinates, one batch of points per shape.

    Returns
    -------
    Tensor[O, ...] (bool)

    Examples
    --------
    >>> s = torch.tensor([[0, 0, 10.0, 10.0, 3.0, 3.0]])          # a disc of radius 3
    >>> inside(s, torch.tensor([[10.0, 12.9, 13.1]]), torch.tensor([[10.0, 10.0, 10.0]]))
    tensor([[ True,  True, False]])
    """
    extra = (1,) * (x.dim() - 1)
    cls, cx, cy, a, b = (shapes[:, i].view(-1, *extra) for i in range(1, 6))
    dx, dy = x - cx, y - cy
    disc = dx.square() + dy.square() <= a.square()
    rect = (dx.abs() <= a) & (dy.abs() <= b)  # squares and bars
    # Upward isosceles triangle: apex (cx, cy - b), base from (cx - a, cy + b) to (cx + a, cy + b).
    tri = (dy <= b) & (dx.abs() <= a * (dy + b) / (2 * b))
    return torch.where(cls == 0, disc, torch.where(cls == 3, tri, rect))


def _boxes_of(shapes: torch.Tensor) -> torch.Tensor:
    cx, cy, a, b = shapes[:, 2], shapes[:, 3], shapes[:, 4], shapes[:, 5]
    return torch.stack([cx - a, cy - b, cx + a, cy + b], dim=1)


def mask_in_boxes(
    shapes: torch.Tensor, boxes: torch.Tensor, size: int, supersample: int = 4
) -> torch.Tensor:
    """Coverage of each shape on a ``size x size`` grid laid over a box (the mask target).

    Parameters
    ----------
    shapes : Tensor[O, 6]
        One shape per box.
    boxes : Tensor[O, 4]
        ``(x1, y1, x2, y2)`` in image pixels; need not contain the shape.
    size : int
        Grid cells per side.
    supersample : int
        Sub-samples per cell side; the result is the fraction inside, in ``[0, 1]``.

    Returns
    -------
    Tensor[O, size, size] (float32)

    Examples
    --------
    >>> s = torch.tensor([[0, 1, 8.0, 8.0, 4.0, 4.0]])             # square [4, 12] x [4, 12]
    >>> mask_in_boxes(s, torch.tensor([[0.0, 0.0, 16.0, 16.0]]), 4)[0]
    tensor([[0., 0., 0., 0.],
            [0., 1., 1., 0.],
            [0., 1., 1., 0.],
            [0., 0., 0., 0.]])
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be >= 1, got {size}, {supersample}")
    n = size * supersample
    t = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # [n] in (0, 1)
    x1, y1, x2, y2 = (boxes[:, i : i + 1].float() for i in range(4))  # [O, 1]
    xs = x1 + t * (x2 - x1)  # [O, n]
    ys = y1 + t * (y2 - y1)  # [O, n]
    hit = inside(shapes.float(), xs[:, None, :], ys[:, :, None]).float()  # [O, n, n]
    return hit.view(-1, size, supersample, size, supersample).mean(dim=(2, 4))


def jitter_boxes(boxes: torch.Tensor, jitter: float, generator: torch.Generator) -> torch.Tensor:
    """Move each edge of ``boxes`` by ``U(-jitter, jitter)`` times the box's side.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> jitter_boxes(torch.tensor([[10.0, 10.0, 30.0, 20.0]]), 0.0, g)
    tensor([[10., 10., 30., 20.]])
    """
    w = (boxes[:, 2] - boxes[:, 0]).unsqueeze(1)
    h = (boxes[:, 3] - boxes[:, 1]).unsqueeze(1)
    scale = torch.cat([w, h, w, h], dim=1)  # [O, 4]
    noise = (torch.rand(boxes.shape, generator=generator) * 2 - 1) * jitter
    return boxes + noise * scale


def _draw_shapes(n_images: int, config: DataConfig, rng: np.random.Generator) -> torch.Tensor:
    """Draw non-overlapping shapes (their boxes keep a 2-pixel gap) fully inside each image."""
    rows: list[list[float]] = []
    size = config.image_size
    for img in range(n_images):
        want = int(rng.integers(config.objects[0], config.objects[1] + 1))
        placed: list[tuple[float, float, float, float]] = []
        for _ in range(50 * want):  # rejection sampling; gives up quietly on a crowded image
            if len(placed) == want:
                break
            cls = int(rng.integers(len(CLASSES)))
            extent = float(rng.uniform(*config.size_range))
            if cls == 2:  # bar: long and thin, horizontal or vertical
                half_w, half_h = extent / 2, float(rng.uniform(*config.bar_width)) / 2
                if rng.random() < 0.5:
                    half_w, half_h = half_h, half_w
            elif cls == 3:  # triangle: side `extent`, height sqrt(3)/2 * side
                half_w, half_h = extent / 2, extent * math.sqrt(3) / 4
            else:
                half_w = half_h = extent / 2
            cx = float(rng.uniform(half_w + 1, size - half_w - 1))
            cy = float(rng.uniform(half_h + 1, size - half_h - 1))
            box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
            if any(
                box[0] < p[2] + 2 and p[0] < box[2] + 2 and box[1] < p[3] + 2 and p[1] < box[3] + 2
                for p in placed
            ):
                continue
            placed.append(box)
            rows.append([img, cls, cx, cy, half_w, half_h])
    return torch.tensor(rows, dtype=torch.float32)


def _render(
    shapes: torch.Tensor, n_images: int, config: DataConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    size, ss = config.image_size, config.supersample
    images = torch.zeros(n_images, 1, size, size)
    segmentation = torch.zeros(n_images, size, size, dtype=torch.long)
    # Each object gets its own brightness; its coverage is computed in its own pixel window only.
    brightness = torch.from_numpy(rng.uniform(0.4, 1.0, size=len(shapes))).float()
    boxes = _boxes_of(shapes)
    for o in range(len(shapes)):
        img = int(shapes[o, 0])
        bx0, by0, bx1, by1 = (float(v) for v in boxes[o])
        x0, y0 = max(math.floor(bx0) - 1, 0), max(math.floor(by0) - 1, 0)
        x1, y1 = min(math.ceil(bx1) + 1, size), min(math.ceil(by1) + 1, size)
        h, w = y1 - y0, x1 - x0
        tx = x0 + (torch.arange(w * ss, dtype=torch.float32) + 0.5) / ss
        ty = y0 + (torch.arange(h * ss, dtype=torch.float32) + 0.5) / ss
        hit = inside(shapes[o : o + 1], tx[None, None, :], ty[None, :, None]).float()[0]
        cover = hit.view(h, ss, w, ss).mean(dim=(1, 3))  # [h, w]
        images[img, 0, y0:y1, x0:x1] += brightness[o] * cover
        seg = segmentation[img, y0:y1, x0:x1]
        seg[cover >= 0.5] = int(shapes[o, 1]) + 1
    noise = torch.from_numpy(rng.normal(0.0, config.noise, size=images.shape)).float()
    return images + noise, segmentation


#: Split names; each draws from its own random stream, so splits never repeat each other.
SPLITS: tuple[str, ...] = ("train", "test", "pretrain")


def make_dataset(n_images: int, seed: int, config: DataConfig | None = None, split: str = "train") -> ShapeSet:
    """Draw a split of the synthetic dataset; the same ``(n_images, seed, config, split)`` gives the same tensors.

    Parameters
    ----------
    n_images : int
        Number of images.
    seed : int
        Seeds the shapes, brightness, noise and proposal jitter.
    config : DataConfig, optional
        Defaults to ``DataConfig()``.
    split : {"train", "test", "pretrain"}
        ``"test"`` gets one jittered proposal per object, the others ``config.proposals``.
        ``"pretrain"`` is the backbone's own images, disjoint from the heads' ``"train"``.

    Examples
    --------
    >>> d = make_dataset(2, seed=0, config=DataConfig(image_size=32, size_range=(6.0, 12.0)))
    >>> d.images.shape, d.rois.shape[1], bool((d.rois[:, 0] < 2).all())
    (torch.Size([2, 1, 32, 32]), 5, True)
    """
    config = DataConfig() if config is None else config
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be an int >= 1, got {n_images!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    shapes = _draw_shapes(n_images, config, rng)
    images, segmentation = _render(shapes, n_images, config, rng)
    gt = _boxes_of(shapes)
    reps = 1 if split == "test" else config.proposals
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    roi_object = torch.arange(len(shapes)).repeat_interleave(reps)
    boxes = jitter_boxes(gt[roi_object], config.jitter, gen)
    boxes = boxes.clamp(0, config.image_size)
    rois = torch.cat([shapes[roi_object, :1], boxes], dim=1)
    return ShapeSet(images, shapes, gt, rois, roi_object, segmentation)
