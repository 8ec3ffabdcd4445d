"""Scores for the experiment: mask IoU per proposal and a COCO-style mask AP.

Detections are one per test proposal: its argmax class, scored by that class's probability,
with the head's class-agnostic mask. A detection is a true positive at threshold ``t`` when its
class is the object's class and its mask IoU with the object is at least ``t``. Every test
proposal belongs to a distinct object, so there are no duplicates to suppress; AP is the area
under COCO's 101-point interpolated precision-recall curve, averaged over classes.
"""

from __future__ import annotations

import torch

__all__ = ["COCO_THRESHOLDS", "average_precision", "mask_iou"]

#: IoU thresholds of COCO's AP: 0.50, 0.55, ..., 0.95.
COCO_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks, one value per pair; two empty masks count as IoU 1.

    Parameters
    ----------
    pred, target : Tensor[K, H, W] (bool)

    Returns
    -------
    Tensor[K] (float32)

    Examples
    --------
    >>> a = torch.tensor([[[1, 1], [0, 0]]], dtype=torch.bool)
    >>> b = torch.tensor([[[1, 0], [0, 0]]], dtype=torch.bool)
    >>> mask_iou(a, b)
    tensor([0.5000])
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred and target must both be [K, H, W], got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def average_precision(
    scores: torch.Tensor,
    pred_labels: torch.Tensor,
    gt_labels: torch.Tensor,
    ious: torch.Tensor,
    threshold: float,
    num_classes: int,
) -> float:
    """COCO-style (101-point interpolated) AP at one IoU threshold, averaged over classes.

    Parameters
    ----------
    scores : Tensor[K]
        Confidence of each detection.
    pred_labels, gt_labels : Tensor[K]
        Predicted class of each detection and class of the object its proposal belongs to.
    ious : Tensor[K]
        Mask IoU of each detection with its object.
    threshold : float
        IoU needed for a true positive.
    num_classes : int
        Classes to average over (those with no object are skipped).

    Examples
    --------
    >>> s = torch.tensor([0.9, 0.8, 0.7])
    >>> lab = torch.tensor([0, 0, 0])
    >>> round(average_precision(s, lab, lab, torch.tensor([0.9, 0.2, 0.9]), 0.5, 1), 4)  # TP, FP, TP
    0.5545
    """
    recall_points = torch.linspace(0, 1, 101, dtype=torch.float64)
    per_class = []
    for c in range(num_classes):
        n_gt = int((gt_labels == c).sum())
        if n_gt == 0:
            continue
        det = pred_labels == c
        order = torch.argsort(scores[det], descending=True, stable=True)
        tp = ((gt_labels[det] == c) & (ious[det] >= threshold))[order].double()
        if tp.numel() == 0:
            per_class.append(0.0)
            continue
        ctp = tp.cumsum(0)
        precision = ctp / torch.arange(1, tp.numel() + 1, dtype=torch.float64)
        recall = ctp / n_gt
        # Make precision monotone non-increasing from the right (the interpolated envelope).
        precision = precision.flip(0).cummax(0).values.flip(0)
        idx = torch.searchsorted(recall, recall_points, side="left")
        sampled = torch.where(idx < precision.numel(), precision[idx.clamp(max=precision.numel() - 1)], 0.0)
        per_class.append(float(sampled.mean()))
    return float(sum(per_class) / len(per_class)) if per_class else 0.0
