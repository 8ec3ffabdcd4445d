"""The detector ROI ops: :func:`roi_pool` and :func:`roi_align`, with their modules."""

from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool

__all__ = ["RoIAlign", "RoIPool", "roi_align", "roi_pool"]
