"""Box maths shared by the datasets: boxes are (x, y, z, dx, dy, dz, yaw), z the centre, dx along
the heading, yaw about +z from +x."""
from __future__ import annotations

import math

import numpy as np


def rotation_z(yaw: float) -> np.ndarray:
    """(3, 3) rotation about +z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def points_in_box(points: np.ndarray, box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N,) bool: which points (N, >=3) lie inside box (>=7 values), in the same frame."""
    local = (points[:, :3] - box[:3]) @ rotation_z(float(box[6]))
    return (np.abs(local) <= np.asarray(box[3:6]) / 2 + margin).all(axis=1)


# Unit-box corners: bottom face (z = -1/2) then top face, each counter-clockwise from front-left seen
# from above; index k and k + 4 are the same BEV corner (the order of detectors.box_geometry.bev_corners).
UNIT_CORNERS = np.array([[1, 1, -1], [-1, 1, -1], [-1, -1, -1], [1, -1, -1],
                         [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], dtype=np.float64) / 2


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners of boxes (N, >=7) in their frame, in the order of :data:`UNIT_CORNERS`."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"boxes must be (N, >=7) [x, y, z, dx, dy, dz, yaw, ...], got shape {boxes.shape}")
    local = UNIT_CORNERS[None] * boxes[:, None, 3:6]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]
