"""A dataset whose items call the ROI ops, for the DataLoader-worker tests (importable by spawned workers)."""

from __future__ import annotations

import torch

import roiviz


class RoiDataset(torch.utils.data.Dataset):
    """Item ``i``: roi_align, roi_pool and adaptive_max of a seeded map, with the check of a bad box."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return features(i)


def features(i: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(i)
    x = torch.randn(2, 8, 24, 20, generator=gen)
    boxes = torch.tensor([[0, 1.0, 2.0, 15.0, 19.0], [1, 0.5, 0.5, 6.0, 23.0], [1, 3.0, 3.0, 3.0, 3.0]])
    try:  # the checks must run in a worker too
        roiviz.roi_align(x, torch.tensor([[0, 5.0, 1.0, 2.0, 2.0]]), 2)
        refused = torch.tensor(False)
    except ValueError:
        refused = torch.tensor(True)
    return {
        "align": roiviz.roi_align(x, boxes, 7, 0.5, 0, True),
        "pool": roiviz.roi_pool(x, boxes, (3, 4), 0.5),
        "adaptive_max": roiviz.adaptive_max(x, boxes, 3, 0.5),
        "refused": refused,
    }
