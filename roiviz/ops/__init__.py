"""The detector ROI ops: :func:`roi_pool`, :func:`roi_align` and :func:`prroi_pool`, with their modules."""

from .prroi_pool import PrRoIPool, prroi_pool
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ = ["PrRoIPool", "RoIAlign", "RoIPool", "prroi_pool", "roi_align", "roi_pool"]
