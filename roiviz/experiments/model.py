"""The networks: a small strided backbone and the mask + class head every strategy feeds.

Backbone
    A space-to-depth stem (``pixel_unshuffle(4)``: each stride-4 cell holds its 4x4 pixels
    exactly), a 3x3 conv, then ``log2(stride / 4)`` stages of a 2x2 stride-2 conv and a 3x3
    conv. Space-to-depth and 2x2/stride-2 kernels tile the image exactly, so feature cell ``k``
    of the final map is centred at image coordinate ``(k + 0.5) * stride`` — the convention of
    ``roi_align(aligned=True)`` and of the integer crops — and the whole net stays cheap enough
    for a CPU. It is *pretrained once* on a dense, strategy-agnostic task (per-pixel class
    segmentation decoded from the stride-``s`` map by a linear pixel-shuffle layer, which
    forces each cell to describe its ``s x s`` patch at pixel
precision) and then frozen, the way a detector starts from an ImageNet backbone.
MaskHead
    Mask R-CNN's mask branch in miniature: two 3x3 convs on the ``P x P`` pooled features, a 2x
    transposed conv, a 1x1 conv to one class-agnostic mask logit per cell (``2P x 2P``), and a
    linear classifier on the flattened trunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Backbone", "MaskHead", "SegmentationDecoder"]

_STAGE_CHANNELS = (32, 48, 64, 64, 64)  # stride 4, 8, 16, 32, 64


class Backbone(nn.Module):
    """A strided conv feature extractor: ``Tensor[N, 1, S, S] -> Tensor[N, C, S/stride, S/stride]``.

    Parameters
    ----------
    stride : int
        A power of two between 4 and 64 (8, 16 and 32 are the interesting ones).
    out_channels : int
        Channels of the output feature map.

    Examples
    --------
    >>> net = Backbone(stride=16, out_channels=8)
    >>> tuple(net(torch.zeros(2, 1, 64, 64)).shape)
    (2, 8, 4, 4)
    """

    def __init__(self, stride: int = 16, out_channels: int = 32) -> None:
        super().__init__()
        if not isinstance(stride, int) or stride < 4 or stride > 64 or stride & (stride - 1):
            raise ValueError(f"stride must be a power of two in [4, 64], got {stride!r}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.stride = stride
        self.out_channels = out_channels
        c_in = _STAGE_CHANNELS[0]
        layers: list[nn.Module] = [
            nn.PixelUnshuffle(4),  # [N, 16, S/4, S/4]: exact, no parameters
            nn.Conv2d(16, c_in, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for level in range(1, int(math.log2(stride)) - 1):
            c_out = _STAGE_CHANNELS[level]
            layers += [
                nn.Conv2d(c_in, c_out, 2, stride=2),
                nn.ReLU(inplace=True),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, out_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class SegmentationDecoder(nn.Module):
    """Pixel-shuffle decoder used only to pretrain the backbone.

    Maps ``Tensor[N, C, h, w]`` to per-pixel class logits ``Tensor[N, K, h*stride, w*stride]``
    with two 1x1 convs per cell: whatever a pixel's class is, it must be read from its own
    cell's feature vector, so the features learn to describe their patch at pixel precision.

    Examples
    --------
    >>> dec = SegmentationDecoder(in_channels=8, num_classes=5, stride=4)
    >>> tuple(dec(torch.zeros(1, 8, 3, 3)).shape)
    (1, 5, 12, 12)
    """

    def __init__(self, in_channels: int, num_classes: int, stride: int, hidden: int = 128) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes * stride * stride, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.proj(features), self.stride)


class MaskHead(nn.Module):
    """Mask + class head on fixed-size ROI features ``Tensor[K, C, P, P]``.

    Returns ``(mask_logits Tensor[K, 2P, 2P], class_logits Tensor[K, num_classes])``.

    Examples
    --------
    >>> head = MaskHead(in_channels=8, pooled_size=7, num_classes=4, width=16)
    >>> m, c = head(torch.zeros(3, 8, 7, 7))
    >>> tuple(m.shape), tuple(c.shape)
    ((3, 14, 14), (3, 4))
    """

    def __init__(self, in_channels: int, pooled_size: int, num_classes: int, width: int = 48) -> None:
        super().__init__()
        if pooled_size < 1 or num_classes < 1 or width < 1:
            raise ValueError("pooled_size, num_classes and width must be >= 1")
        self.pooled_size = pooled_size
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.up = nn.ConvTranspose2d(width, width // 2 or 1, 2, stride=2)
        self.mask = nn.Conv2d(width // 2 or 1, 1, 1)
        self.cls = nn.Linear(width * pooled_size * pooled_size, num_classes)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trunk = self.trunk(pooled)  # [K, W, P, P]
        masks = self.mask(F.relu(self.up(trunk))).squeeze(1)  # [K, 2P, 2P]
        return masks, self.cls(trunk.flatten(1))  # [K, num_classes]
