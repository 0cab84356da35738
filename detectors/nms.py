"""Greedy non-maximum suppression in bird's-eye view: by centre distance (CenterPoint's circle NMS)
and by rotated IoU. Boxes are visited in descending score; a kept box suppresses every later box
that is too close to it. Returns the kept indices in descending score."""
from __future__ import annotations

import numpy as np
import torch

from datasets.boxes import bev_iou_pairs


def _greedy(scores: torch.Tensor, too_close: torch.Tensor, max_keep: int | None) -> torch.Tensor:
    """too_close: (N, N) bool in the original order."""
    order = torch.argsort(scores, descending=True, stable=True)
    # The loop runs on NumPy on the host: per-element tensor indexing costs microseconds a box (a device
    # sync each on a GPU), NumPy's a fraction of that.
    close = too_close[order][:, order].cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):  # a loop over the kept boxes; each step is vectorised over the rest
        if suppressed[i]:
            continue
        kept.append(i)
        if max_keep is not None and len(kept) == max_keep:
            break
        suppressed |= close[i]
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def circle_nms(boxes: torch.Tensor, scores: torch.Tensor, radius: float, max_keep: int | None = None) -> torch.Tensor:
    """Keep boxes whose BEV centre lies at least ``radius`` metres from every higher-scoring kept box."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    distance = torch.cdist(boxes[:, :2].double(), boxes[:, :2].double())
    return _greedy(scores, distance < radius, max_keep)


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float,
                max_keep: int | None = None) -> torch.Tensor:
    """Keep boxes whose rotated BEV IoU with every higher-scoring kept box is at most ``iou_threshold``."""
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Only pairs whose bounding circles meet can overlap: the IoU is computed for those alone.
    radius = torch.hypot(boxes[:, 3], boxes[:, 4]).double() / 2
    near = torch.cdist(boxes[:, :2].double(), boxes[:, :2].double()) < radius[:, None] + radius[None, :]
    near.fill_diagonal_(False)
    first, second = near.nonzero(as_tuple=True)
    overlapping = torch.zeros_like(near)
    overlapping[first, second] = bev_iou_pairs(boxes[first], boxes[second]) > iou_threshold
    return _greedy(scores, overlapping, max_keep)
