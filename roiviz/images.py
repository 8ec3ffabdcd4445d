"""Offline, real inputs for the figures and the Explorer: a photo, synthetic images, conv features.

Nothing here downloads anything:

- :func:`sample_image` gives matplotlib's bundled photo of Grace Hopper (``grace_hopper.jpg`` in
  matplotlib's sample data) or a synthetic image made to show what each ROI strategy does
  (``checkerboard``, ``shapes``, ``thin_lines``);
- :func:`to_tensor` turns an image (numpy ``HxW`` / ``HxWxC`` or a tensor) into ``Tensor[1, C, H, W]``;
- :class:`FeatureExtractor` is a small *fixed* conv backbone (seeded weights, no training) with a
  power-of-two ``stride``, so that a box drawn on the photo maps onto its feature map through
  ``spatial_scale = 1 / stride``, exactly as in a detector.

Examples
--------
>>> import roiviz.images as images
>>> img = images.sample_image("grace_hopper", size=64)
>>> img.shape, img.dtype, float(img.min()) >= 0.0, float(img.max()) <= 1.0
((64, 64, 3), dtype('float32'), True, True)
>>> features = images.FeatureExtractor(stride=8, channels=16)
>>> tuple(features(img).shape), features.spatial_scale
((1, 16, 8, 8), 0.125)
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SAMPLES", "FeatureExtractor", "sample_image", "to_tensor"]

#: The names :func:`sample_image` knows, photo first.
SAMPLES: tuple[str, ...] = ("grace_hopper", "checkerboard", "shapes", "thin_lines")

_STRIDES = (1, 2, 4, 8, 16, 32)


# --------------------------------------------------------------------------------------------
# Sample images
# --------------------------------------------------------------------------------------------


def sample_image(name: str = "grace_hopper", size: int = 128) -> np.ndarray:
    """A square sample image as a float32 numpy array with values in ``[0, 1]``.

    ============== =================== ==========================================================
    name           shape               what it shows
    ============== =================== ==========================================================
    grace_hopper   ``(size, size, 3)`` matplotlib's bundled photo, centre-cropped to a square
                                       (rows 44..555 of the 600x512 original) and resized with
                                       antialiased bilinear interpolation
    checkerboard   ``(size, size)``    8x8 black/white squares of ``size // 8`` pixels (the
                                       remainder, if any, continues the pattern); 0 and 1 only
    shapes         ``(size, size, 3)`` a red disc, a green square, a blue triangle and a yellow
                                       ring on a dark grey (0.1) background, with crisp edges
    thin_lines     ``(size, size)``    one-pixel lines (value 1 on 0): vertical lines with gaps
                                       of 1, 2, 3, ... pixels (top half), horizontal lines every
                                       4 pixels (bottom left) and a diagonal (bottom right):
                                       what pooling and sampling can miss
    ============== =================== ==========================================================

    Parameters
    ----------
    name : str
        One of :data:`SAMPLES`.
    size : int
        Side in pixels, 8 to 4096.

    Returns
    -------
    numpy.ndarray
        A new array (safe to modify), ``float32``, values in ``[0, 1]``.

    Examples
    --------
    >>> sample_image("checkerboard", 16)[:2, :6]
    array([[0., 0., 1., 1., 0., 0.],
           [0., 0., 1., 1., 0., 0.]], dtype=float32)
    >>> [sample_image(n, 32).shape for n in SAMPLES]
    [(32, 32, 3), (32, 32), (32, 32, 3), (32, 32)]
    >>> sample_image("lena")
    Traceback (most recent call last):
    ...
    ValueError: unknown sample image 'lena'; known samples: grace_hopper, checkerboard, shapes, thin_lines
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {', '.join(SAMPLES)}; got {type(name).__name__}")
    if name not in SAMPLES:
        raise ValueError(f"unknown sample image {name!r}; known samples: {', '.join(SAMPLES)}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an int, got {size!r}")
    size = int(size)
    if not 8 <= size <= 4096:
        raise ValueError(f"size must be between 8 and 4096 pixels, got {size}")
    return _MAKERS[name](size)


@functools.lru_cache(maxsize=1)
def _grace_hopper_full() -> Tensor:
    """The bundled photo as ``Tensor[1, 3, 512, 512]`` in ``[0, 1]`` (read once)."""
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = np.asarray(mpimg.imread(path))  # (600, 512, 3) uint8
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top : top + side, left : left + side, :3]
    return torch.tensor(square).permute(2, 0, 1)[None].float() / 255.0


def _grace_hopper(size: int) -> np.ndarray:
    full = _grace_hopper_full()
    if full.shape[-1] != size:
        # antialias only matters (and is only allowed) when shrinking.
        full = F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=size < full.shape[-1])
    return full[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy().astype(np.float32, copy=True)


def _checkerboard(size: int) -> np.ndarray:
    tile = size // 8
    idx = np.arange(size) // tile
    return ((idx[:, None] + idx[None, :]) % 2).astype(np.float32)


def _shapes(size: int) -> np.ndarray:
    img = np.full((size, size, 3), 0.1, dtype=np.float32)
    # Pixel centres in units of the image side, so the layout scales with size.
    c = (np.arange(size) + 0.5) / size
    y, x = c[:, None], c[None, :]
    disc = (x - 0.28) ** 2 + (y - 0.28) ** 2 <= 0.18**2
    square = (np.abs(x - 0.72) <= 0.16) & (np.abs(y - 0.3) <= 0.16)
    # Triangle with apex (0.28, 0.56) and base from (0.08, 0.92) to (0.48, 0.92).
    triangle = (y >= 0.56) & (y <= 0.92) & (np.abs(x - 0.28) <= (y - 0.56) * (0.2 / 0.36))
    r = np.sqrt((x - 0.72) ** 2 + (y - 0.74) ** 2)
    ring = (r >= 0.11) & (r <= 0.17)
    img[disc] = (0.9, 0.15, 0.1)
    img[square] = (0.15, 0.8, 0.2)
    img[triangle] = (0.15, 0.3, 0.95)
    img[ring] = (0.95, 0.85, 0.1)
    return img


def _thin_lines(size: int) -> np.ndarray:
    img = np.zeros((size, size), dtype=np.float32)
    half = size // 2
    # Vertical one-pixel lines in the top half, gaps 1, 2, 3, ... pixels wide.
    col, gap = 1, 1
    while col < size:
        img[:half, col] = 1.0
        col += gap + 1
        gap += 1
    # Horizontal lines every 4 pixels in the bottom-left quarter.
    img[half + 1 :: 4, :half] = 1.0
    # A diagonal in the bottom-right quarter.
    d = np.arange(size - half)
    img[half + d, half + d] = 1.0
    return img


_MAKERS = {
    "grace_hopper": _grace_hopper,
    "checkerboard": _checkerboard,
    "shapes": _shapes,
    "thin_lines": _thin_lines,
}


# --------------------------------------------------------------------------------------------
# Images to tensors
# --------------------------------------------------------------------------------------------


def to_tensor(image: np.ndarray | Tensor) -> Tensor:
    """An image as a contiguous ``float32`` ``Tensor[1, C, H, W]``.

    Accepted forms:

    - numpy ``(H, W)`` -> ``C = 1``; numpy ``(H, W, C)`` with ``C`` in 1, 3, 4 (channels last,
      as matplotlib and PIL give them) -> ``C`` channels;
    - tensor ``(H, W)``, ``(C, H, W)`` (channels first, as torch gives them) or ``(1, C, H, W)``.

    ``uint8`` values are divided by 255; other integer and bool values are converted as they
    are. The result never shares memory with ``image``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> to_tensor(np.zeros((4, 5))).shape, to_tensor(np.zeros((4, 5, 3))).shape
    (torch.Size([1, 1, 4, 5]), torch.Size([1, 3, 4, 5]))
    >>> to_tensor(torch.zeros(2, 4, 5)).shape
    torch.Size([1, 2, 4, 5])
    >>> to_tensor(np.full((1, 1), 255, dtype=np.uint8))
    tensor([[[[1.]]]])
    >>> to_tensor(np.zeros((4, 5, 7)))
    Traceback (most recent call last):
    ...
    ValueError: image as a 3-D numpy array must be (H, W, C) with C in 1, 3 or 4, got shape (4, 5, 7)
    """
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            t = torch.tensor(image)[None]  # a copy (also of read-only arrays)
        elif image.ndim == 3:
            if image.shape[2] not in (1, 3, 4):
                raise ValueError(
                    f"image as a 3-D numpy array must be (H, W, C) with C in 1, 3 or 4, got shape {image.shape}"
                )
            t = torch.tensor(image).permute(2, 0, 1)
        else:
            raise ValueError(
                f"image as a numpy array must be (H, W) or (H, W, C), got {image.ndim}-D with shape {image.shape}"
            )
    elif isinstance(image, Tensor):
        t = image.detach()
        if t.dim() == 2:
            t = t[None]
        elif t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"image as a 4-D tensor must be (1, C, H, W), got shape {tuple(t.shape)}")
            t = t[0]
        elif t.dim() != 3:
            raise ValueError(
                f"image as a tensor must be (H, W), (C, H, W) or (1, C, H, W), got {t.dim()}-D with shape {tuple(t.shape)}"
            )
    else:
        raise TypeError(f"image must be a numpy array or a torch.Tensor, got {type(image).__name__}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif t.dtype.is_complex:
        raise TypeError(f"image must be real, got {t.dtype}")
    c_n, height, width = t.shape
    if c_n == 0 or height == 0 or width == 0:
        raise ValueError(f"image must not be empty, got (C, H, W) = {(c_n, height, width)}")
    out = t.to(device="cpu" if t.device.type == "meta" else t.device, dtype=torch.float32).clone()
    if not bool(torch.isfinite(out).all()):
        raise ValueError("image has NaN or infinite values")
    return out.contiguous()[None]


# --------------------------------------------------------------------------------------------
# A fixed conv backbone
# --------------------------------------------------------------------------------------------


def _gabor(size: int, theta: float, wavelength: float, sigma: float, phase: float) -> np.ndarray:
    r = np.arange(size) - size // 2
    y, x = np.meshgrid(r, r, indexing="ij")
    u = x * math.cos(theta) + y * math.sin(theta)
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2)) * np.cos(2 * math.pi * u / wavelength + phase)
    g -= g.mean()  # zero mean: a flat patch gives no response
    return g / np.abs(g).sum()


def _gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


_LUMA = np.array([0.299, 0.587, 0.114])


def _first_layer_bank(channels: int, seed: int, size: int = 7) -> np.ndarray:
    """The fixed ``[channels, 3, size, size]`` first-layer filters (see :class:`FeatureExtractor`)."""
    bank: list[np.ndarray] = []  # each [3, size, size]
    luma = _LUMA[:, None, None]
    angles = [0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]
    for phase in (0.0, math.pi / 2):  # even (lines), then odd (edges)
        for theta in angles:
            bank.append(luma * _gabor(size, theta, 4.0, 1.5, phase))
    dog = _gaussian(size, 0.8) - _gaussian(size, 2.0)
    bank.append(luma * dog)  # bright blob
    bank.append(-luma * dog)  # dark blob
    blur = _gaussian(size, 1.5)
    bank.append(np.stack([blur, -blur, 0 * blur]))  # red minus green
    bank.append(np.stack([-blur / 2, -blur / 2, blur]))  # blue minus yellow
    bank.append(luma * blur)  # brightness above mid-grey
    bank.append(-luma * blur)  # darkness below mid-grey
    for theta in (0.0, math.pi / 2):  # coarser stripes
        bank.append(luma * _gabor(size, theta, 8.0, 2.5, 0.0))
    rng = np.random.default_rng(seed)
    while len(bank) < channels:  # extra channels: seeded zero-mean random filters
        f = rng.standard_normal((3, size, size))
        f -= f.mean()
        bank.append(f / np.abs(f).sum() * 3)
    return np.stack(bank[:channels]).astype(np.float32)


class FeatureExtractor(nn.Module):
    """A small fixed conv backbone: real feature maps, a real stride, no training, no download.

    Layers (weights are fixed; ``seed`` decides the random parts):

    1. a 7x7 convolution (stride 1, zero padding 3) of the image minus 0.5 with a fixed filter
       bank: Gabor filters (lines and edges at 0, 45, 90, 135 degrees), bright and dark blobs,
       red-green and blue-yellow opponency, brightness, darkness, coarse stripes; channels past
       the 16 named filters are seeded random zero-mean filters; then ReLU;
    2. ``log2(stride)`` times: a 3x3 convolution with stride 2 and zero padding 1, whose weights
       are a per-channel binomial blur plus a small seeded random mixing of channels; then ReLU.

    **Output size rule:** each stride-2 layer maps a side ``n`` to ``floor((n - 1) / 2) + 1 =
    ceil(n / 2)``, so an ``H x W`` image gives exactly ``ceil(H / stride) x ceil(W / stride)``.
    Feature cell ``(i, j)`` covers image pixels ``[i*stride, (i+1)*stride)``, and a box in image
    pixels maps to the feature map with :attr:`spatial_scale` ``= 1 / stride``.

    Parameters
    ----------
    stride : int
        1, 2, 4, 8, 16 or 32.
    channels : int
        Number of feature channels, 1 to 256.
    seed : int
        Seed of the random weights (the first 16 first-layer filters do not depend on it).

    Examples
    --------
    >>> import torch
    >>> fx = FeatureExtractor(stride=4, channels=8)
    >>> fx
    FeatureExtractor(stride=4, channels=8, seed=0)
    >>> tuple(fx(torch.rand(3, 30, 17)).shape), fx.output_shape(30, 17)
    ((1, 8, 8, 5), (8, 5))
    >>> FeatureExtractor(stride=3)
    Traceback (most recent call last):
    ...
    ValueError: stride must be one of 1, 2, 4, 8, 16, 32 (a power of two), got 3
    """

    def __init__(self, stride: int = 8, channels: int = 16, seed: int = 0) -> None:
        super().__init__()
        for arg, value in (("stride", stride), ("channels", channels), ("seed", seed)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{arg} must be an int, got {value!r}")
        if int(stride) not in _STRIDES:
            raise ValueError(f"stride must be one of {', '.join(map(str, _STRIDES))} (a power of two), got {stride}")
        if not 1 <= int(channels) <= 256:
            raise ValueError(f"channels must be between 1 and 256, got {channels}")
        self.stride = int(stride)
        self.channels = int(channels)
        self.seed = int(seed)
        bank = torch.from_numpy(_first_layer_bank(self.channels, self.seed))
        self.register_buffer("first", bank)  # [C, 3, 7, 7]
        gen = torch.Generator().manual_seed(self.seed)
        binomial = torch.tensor([1.0, 2.0, 1.0])
        blur = binomial[:, None] * binomial[None, :] / 16.0  # [3, 3], sums to 1
        eye = torch.eye(self.channels)[:, :, None, None]  # [C, C, 1, 1]
        downs = []
        for _ in range(int(math.log2(self.stride))):
            mix = torch.randn(self.channels, self.channels, generator=gen) * (0.1 / math.sqrt(self.channels))
            downs.append((eye + mix[:, :, None, None]) * blur)  # [C, C, 3, 3]
        self.register_buffer("downs", torch.stack(downs) if downs else torch.zeros(0, self.channels, self.channels, 3, 3))

    @property
    def spatial_scale(self) -> float:
        """``1 / stride``: multiply image coordinates by it to get feature-map coordinates."""
        return 1.0 / self.stride

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(ceil(height / stride), ceil(width / stride))``, the feature map's size."""
        return -(-int(height) // self.stride), -(-int(width) // self.stride)

    def forward(self, image: np.ndarray | Tensor) -> Tensor:
        """Feature map ``Tensor[1, channels, ceil(H / stride), ceil(W / stride)]`` of an image.

        ``image`` is anything :func:`to_tensor` takes, with 1 (grey) or 3 (RGB) channels; an
        RGBA image loses its alpha channel. Values are expected in ``[0, 1]``.
        """
        x = to_tensor(image).to(self.first.device)
        c_n = x.shape[1]
        if c_n == 1:
            x = x.expand(1, 3, *x.shape[2:])
        elif c_n == 4:
            x = x[:, :3]
        elif c_n != 3:
            raise ValueError(f"image must have 1, 3 or 4 channels for FeatureExtractor, got {c_n}")
        y = F.relu(F.conv2d(x - 0.5, self.first, padding=3))  # [1, C, H, W]
        for w in self.downs:
            y = F.relu(F.conv2d(y, w, stride=2, padding=1))  # [1, C, ceil(h/2), ceil(w/2)]
        return y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, channels={self.channels}, seed={self.seed}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
