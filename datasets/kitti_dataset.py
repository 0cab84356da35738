"""KITTI object detection: velodyne scans, label_2 and calib, with the camera-frame labels turned
into LiDAR-frame boxes of the project's convention at this boundary and nowhere else.

Layout: ``<root>/velodyne/NNNNNN.bin``, ``<root>/label_2/NNNNNN.txt``, ``<root>/calib/NNNNNN.txt``.
A frame is ``{'points': (N, 4) x, y, z, reflectance, 'gt_boxes': (M, 9) [x, y, z, dx, dy, dz, yaw,
0, 0] (z = box centre, dx = length along the heading), 'gt_labels': (M,), 'meta': {...}}``.
``DontCare`` regions are not boxes: they are dropped and counted in ``meta['dont_care']``.
"""
from __future__ import annotations

import math
import os

import numpy as np

from datasets.point_files import read_points

KITTI_CLASSES = ["Car", "Pedestrian", "Cyclist"]


def read_calibration(path: str) -> dict[str, np.ndarray]:
    """The matrices of a KITTI calib file; Tr_* and P* as 3x4, R0_rect as 3x3."""
    matrices = {}
    with open(path) as f:
        for line in f:
            if ":" not in line:
                continue
            key, values = line.split(":", 1)
            numbers = np.array([float(v) for v in values.split()])
            if key == "R0_rect":
                matrices[key] = numbers.reshape(3, 3)
            elif numbers.size == 12:
                matrices[key] = numbers.reshape(3, 4)
    for key in ("R0_rect", "Tr_velo_to_cam"):
        if key not in matrices:
            raise ValueError(f"{path}: calibration lacks {key}")
    return matrices


def rect_to_lidar(calibration: dict[str, np.ndarray]) -> np.ndarray:
    """4x4 transform from the rectified camera frame to the LiDAR frame."""
    rect = np.eye(4)
    rect[:3, :3] = calibration["R0_rect"]
    velo_to_cam = np.eye(4)
    velo_to_cam[:3, :] = calibration["Tr_velo_to_cam"]
    return np.linalg.inv(rect @ velo_to_cam)


def read_labels(path: str, to_lidar: np.ndarray) -> tuple[np.ndarray, list[str], int]:
    """(boxes (M, 9) in the LiDAR frame, class names, number of DontCare rows) of a label_2 file.

    KITTI gives dimensions h, w, l, the bottom centre in the rectified camera frame and rotation_y
    about the camera's y axis (down); the heading is the object's +x (length) direction.
    """
    boxes, names, dont_care = [], [], 0
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 15:
                raise ValueError(f"{path}:{number}: expected 15 fields, got {len(fields)}")
            if fields[0] == "DontCare":
                dont_care += 1
                continue
            height, width, length = (float(v) for v in fields[8:11])
            bottom = np.array([float(v) for v in fields[11:14]])
            rotation_y = float(fields[14])
            centre_cam = bottom - np.array([0.0, height / 2, 0.0])  # camera y points down
            centre = to_lidar @ np.append(centre_cam, 1.0)
            heading_cam = np.array([math.cos(rotation_y), 0.0, -math.sin(rotation_y)])
            heading = to_lidar[:3, :3] @ heading_cam
            yaw = math.atan2(heading[1], heading[0])
            boxes.append([*centre[:3], length, width, height, yaw, 0.0, 0.0])
            names.append(fields[0])
    return np.array(boxes, dtype=np.float32).reshape(-1, 9), names, dont_care


class KittiDataset:
    """Frames of a KITTI object folder; ``ids`` default to every velodyne scan, in name order."""

    def __init__(self, root: str, ids: list[str] | None = None, class_names=KITTI_CLASSES):
        self.root = root
        self.class_names = list(class_names)
        if ids is None:
            folder = os.path.join(root, "velodyne")
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"no velodyne folder in {root}")
            ids = sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".bin"))
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        frame_id = self.ids[index]
        points = read_points(os.path.join(self.root, "velodyne", f"{frame_id}.bin"), point_width=4,
                             dtype=np.float32)
        calibration = read_calibration(os.path.join(self.root, "calib", f"{frame_id}.txt"))
        boxes, names, dont_care = read_labels(os.path.join(self.root, "label_2", f"{frame_id}.txt"),
                                              rect_to_lidar(calibration))
        keep = np.array([name in self.class_names for name in names], dtype=bool)
        labels = np.array([self.class_names.index(n) for n, k in zip(names, keep) if k], dtype=np.int64)
        return {"points": points, "gt_boxes": boxes[keep], "gt_labels": labels,
                "meta": {"id": frame_id, "calibration": calibration, "dont_care": dont_care,
                         "other_boxes": boxes[~keep], "other_names": [n for n, k in zip(names, keep) if not k]}}
