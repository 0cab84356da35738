"""Overlaps of boxes for evaluation: rotated bird's-eye-view (BEV) IoU, 3D IoU, and 2D image-box IoU.

3D boxes are ``(x, y, z, dx, dy, dz, yaw, ...)`` of the project's convention (z = box centre, yaw about
+z); image boxes are ``[x1, y1, x2, y2]`` in pixels. Every function returns an (M, N) float64 matrix
for M first and N second boxes.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.boxes import as_boxes, bev_intersection_area


def box_overlaps(boxes1, boxes2) -> dict[str, np.ndarray]:
    """{'bev': (M, N), '3d': (M, N)} IoUs of boxes1 (M, >=7) and boxes2 (N, >=7), from one rotated
    intersection computation: BEV IoU is the IoU of the rectangles seen from above; 3D IoU is the
    BEV intersection times the overlap of the z extents over the union of volumes (boxes rotate about
    z only, so this is the exact volume IoU)."""
    a, b = as_boxes(boxes1, "boxes1"), as_boxes(boxes2, "boxes2")
    intersection = np.zeros((len(a), len(b)))
    if len(a) and len(b):
        intersection = bev_intersection_area(torch.from_numpy(a[:, :7]), torch.from_numpy(b[:, :7])).numpy()
    top = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bottom = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    volume = intersection * np.clip(top - bottom, 0.0, None)
    area1, area2 = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    volume1, volume2 = area1 * a[:, 5], area2 * b[:, 5]
    return {"bev": intersection / np.maximum(area1[:, None] + area2[None, :] - intersection, 1e-12),
            "3d": volume / np.maximum(volume1[:, None] + volume2[None, :] - volume, 1e-12)}


def bev_iou(boxes1, boxes2) -> np.ndarray:
    """(M, N) rotated bird's-eye-view IoU of boxes (M, >=7) and (N, >=7) ``(x, y, z, dx, dy, dz, yaw)``."""
    return box_overlaps(boxes1, boxes2)["bev"]


def iou_3d(boxes1, boxes2) -> np.ndarray:
    """(M, N) 3D IoU: rotated BEV intersection × overlap of the z extents (z = box centre), over the
    union of volumes."""
    return box_overlaps(boxes1, boxes2)["3d"]


def _image_intersection(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    width = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) - np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
    height = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) - np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    return np.clip(width, 0.0, None) * np.clip(height, 0.0, None)


def _image_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def image_iou(boxes1, boxes2) -> np.ndarray:
    """(M, N) IoU of 2D boxes (M, 4) and (N, 4) ``[x1, y1, x2, y2]`` (areas (x2 - x1)(y2 - y1), as the
    KITTI devkit, no +1 pixel)."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    intersection = _image_intersection(boxes1, boxes2)
    union = _image_areas(boxes1)[:, None] + _image_areas(boxes2)[None, :] - intersection
    return intersection / np.maximum(union, 1e-12)


def image_box_overlap_of_first(boxes1, boxes2) -> np.ndarray:
    """(M, N) intersection of 2D boxes [x1, y1, x2, y2] over the area of the first box (the KITTI
    DontCare criterion)."""
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    return _image_intersection(boxes1, boxes2) / np.maximum(_image_areas(boxes1), 1e-12)[:, None]
