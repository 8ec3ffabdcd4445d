"""The detector ROI ops: :func:`roi_pool`, :func:`roi_align` and :func:`prroi_pool`, with their modules."""

from ._common import clear_workspace
from .prroi_pool import PrRoIPool, prroi_pool
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ = ["PrRoIPool", "RoIAlign", "RoIPool", "clear_workspace", "prroi_pool", "roi_align", "roi_pool"]
