"""roiviz: exact ROI Pool / ROI Align and every fixed-size ROI strategy, and what each costs.

A detector crops regions of different sizes out of a feature map; a conv head wants a fixed
``[K, C, PH, PW]``. roiviz implements the ways to get there as *strategies* with one signature
``f(input, boxes, output_size, spatial_scale=1.0) -> Tensor[K, C, PH, PW]``:

>>> import torch, roiviz
>>> x = torch.randn(2, 8, 50, 68)
>>> boxes = torch.tensor([[0, 10., 20., 300., 200.], [1, 0., 0., 64., 64.]])
>>> [tuple(f(x, boxes, (7, 7), spatial_scale=1 / 16).shape) for f in roiviz.STRATEGIES.values()]
[(2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7), (2, 8, 7, 7)]
>>> list(roiviz.STRATEGIES)
['crop', 'pad', 'adaptive_max', 'adaptive_avg', 'resize', 'roi_pool', 'roi_align', 'prroi_pool']
"""

from __future__ import annotations

from ._checks import trusted_boxes
from .boxes import crop_bounds, to_rois
from .ops.prroi_pool import PrRoIPool, prroi_pool
from .ops.roi_align import RoIAlign, roi_align
from .ops.roi_pool import RoIPool, roi_pool
from .poolers import MultiScaleRoIAlign, map_levels
from .strategies import (
    STRATEGIES,
    adaptive_avg,
    adaptive_max,
    crop,
    crop_rois,
    get_strategy,
    pad,
    pad_to_max,
    resize,
)

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "MultiScaleRoIAlign",
    "PrRoIPool",
    "RoIAlign",
    "RoIPool",
    "__version__",
    "adaptive_avg",
    "adaptive_max",
    "crop",
    "crop_bounds",
    "crop_rois",
    "get_strategy",
    "map_levels",
    "pad",
    "pad_to_max",
    "prroi_pool",
    "resize",
    "roi_align",
    "roi_pool",
    "to_rois",
    "trusted_boxes",
]
