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
