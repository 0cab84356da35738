"""KITTI object detection: velodyne scans, label_2 and calib, with the camera-frame labels turned
into LiDAR-frame boxes of the project's convention at this boundary and nowhere else.

Layout: ``<root>/velodyne/NNNNNN.bin``, ``<root>/label_2/NNNNNN.txt``, ``<root>/calib/NNNNNN.txt``.
A frame is ``{'points': (N, 4) x, y, z, reflectance, 'gt_boxes': (M, 9) [x, y, z, dx, dy, dz, yaw,
0, 0] (z = box centre, dx = length along the heading), 'gt_labels': (M,), 'meta': {...}}``.
``DontCare`` regions are not boxes: they are dropped and counted in ``meta['dont_care']``; their
image boxes are kept in ``meta['dont_care_bbox_2d']`` for evaluation (see :mod:`datasets.kitti_eval`),
with every labelled object's class, LiDAR box, image box, truncation and occlusion in
``meta['annotations']`` and the image size in ``meta['image_size']``.
"""
from __future__ import annotations

import math
import os
import struct
from collections import Counter

import numpy as np

from datasets.point_files import read_points

KITTI_CLASSES = ["Car", "Pedestrian", "Cyclist"]
# The size of most KITTI object images (a few are 1241x376, 1224x370, 1238x374), used when image_2/ is absent.
DEFAULT_IMAGE_SIZE = (1242, 375)   # width, height in pixels


def read_calibration(path: str) -> dict[str, np.ndarray]:
    """The matrices of a KITTI calib file; Tr_* and P* as 3x4, R0_rect as 3x3."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"KITTI calibration file not found: {path}")
    matrices = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if ":" not in line:
                continue
            key, values = line.split(":", 1)
            try:
                numbers = np.array([float(v) for v in values.split()])
            except ValueError:
                raise ValueError(f"{path}:{number}: {key.strip()} has a value that is not a number") from None
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


def read_label_rows(path: str) -> list[dict]:
    """Every row of a label_2 file, DontCare included, in file order: {'name', 'truncated' (0..1),
    'occluded' (0 visible .. 3 unknown), 'alpha', 'bbox_2d' [x1, y1, x2, y2] pixels, 'hwl', 'location'
    (bottom centre, rectified camera frame), 'rotation_y'}. A 16th field (a detection score) is allowed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"KITTI label file not found: {path}")
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (15, 16):
                raise ValueError(f"{path}:{number}: expected 15 fields (16 with a score), got {len(fields)}")
            try:
                values = [float(v) for v in fields[1:15]]
                occluded = int(fields[2])
            except ValueError:
                raise ValueError(f"{path}:{number}: fields 2-15 must be numbers (occlusion an integer): "
                                 f"{line.strip()!r}") from None
            rows.append({"name": fields[0], "truncated": values[0], "occluded": occluded, "alpha": values[2],
                         "bbox_2d": values[3:7], "hwl": values[7:10], "location": values[10:13],
                         "rotation_y": values[13]})
    return rows


def camera_rows_to_lidar_boxes(rows: list[dict], to_lidar: np.ndarray) -> np.ndarray:
    """(M, 9) LiDAR-frame boxes of label rows (see :func:`read_label_rows`).

    KITTI gives dimensions h, w, l, the bottom centre in the rectified camera frame and rotation_y
    about the camera's y axis (down); the heading is the object's +x (length) direction.
    """
    boxes = []
    for row in rows:
        height, width, length = row["hwl"]
        bottom = np.array(row["location"])
        rotation_y = row["rotation_y"]
        centre_cam = bottom - np.array([0.0, height / 2, 0.0])  # camera y points down
        centre = to_lidar @ np.append(centre_cam, 1.0)
        heading_cam = np.array([math.cos(rotation_y), 0.0, -math.sin(rotation_y)])
        heading = to_lidar[:3, :3] @ heading_cam
        yaw = math.atan2(heading[1], heading[0])
        boxes.append([*centre[:3], length, width, height, yaw, 0.0, 0.0])
    return np.array(boxes, dtype=np.float32).reshape(-1, 9)


def read_labels(path: str, to_lidar: np.ndarray) -> tuple[np.ndarray, list[str], int]:
    """(boxes (M, 9) in the LiDAR frame, class names, number of DontCare rows) of a label_2 file."""
    rows = read_label_rows(path)
    objects = [row for row in rows if row["name"] != "DontCare"]
    return camera_rows_to_lidar_boxes(objects, to_lidar), [row["name"] for row in objects], len(rows) - len(objects)


def image_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG file's header, None when the file is absent."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        header = f.read(24)
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n" or header[12:16] != b"IHDR":
        raise ValueError(f"{path}: not a PNG image (cannot read its size)")
    return struct.unpack(">II", header[16:24])


ALL_SCANS_SPLIT = "all"   # every velodyne scan, when ImageSets/ does not define a split of that name


def check_kitti_root(root: str) -> None:
    """One clear error when ``root`` is not a KITTI object folder (``velodyne/`` with ``.bin`` scans)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    if os.path.isdir(os.path.join(root, "velodyne")):
        return
    if os.path.isdir(os.path.join(root, "training", "velodyne")):
        hint = f"; it holds training/velodyne: use {os.path.join(root, 'training')} as the root"
    elif any(os.path.isfile(os.path.join(root, name, "sample.json")) for name in os.listdir(root)):
        hint = "; it looks like a nuScenes database: set dataset.type nuscenes"
    else:
        hint = ""
    raise ValueError(f"{root} is not a KITTI object folder: no velodyne/ (expected velodyne/, label_2/, calib/){hint}")


def scan_ids(root: str) -> list[str]:
    """The ids of every ``velodyne/*.bin`` scan, in name order; an error when there are none."""
    check_kitti_root(root)
    folder = os.path.join(root, "velodyne")
    ids = sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".bin"))
    if not ids:
        raise ValueError(f"{folder} holds no .bin scans")
    return ids


def available_splits(root: str) -> list[str]:
    """The split names of ``<root>/ImageSets/*.txt`` (none when that folder is absent)."""
    folder = os.path.join(root, "ImageSets")
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-4] for name in os.listdir(folder) if name.endswith(".txt"))


def split_ids(root: str, split: str) -> list[str]:
    """The frame ids of ``<root>/ImageSets/<split>.txt`` (one id a line); split ``'all'`` without such a
    file is every velodyne scan. Every id must have a velodyne scan.

    Raises:
        ValueError: the split is not defined (the message lists the ImageSets splits), is empty or
            repeats an id; ``root`` is not a KITTI object folder.
        FileNotFoundError: an id without its velodyne scan.
    """
    check_kitti_root(root)
    path = os.path.join(root, "ImageSets", f"{split}.txt")
    if not os.path.isfile(path):
        if split == ALL_SCANS_SPLIT:
            return scan_ids(root)
        available = available_splits(root)
        if available:
            raise ValueError(f"unknown split {split!r}: {root}/ImageSets has {', '.join(available)} "
                             f"(or {ALL_SCANS_SPLIT!r} for every scan)")
        raise ValueError(f"split {split!r} is undefined: {root} has no ImageSets/ folder; add ImageSets/{split}.txt "
                         f"(one frame id a line) or use split {ALL_SCANS_SPLIT!r} for every scan")
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise ValueError(f"{path} is empty: split {split!r} has no frames")
    repeated = sorted(frame_id for frame_id, count in Counter(ids).items() if count > 1)
    if repeated:
        raise ValueError(f"{path} lists frame(s) {', '.join(repeated[:5])} more than once (each would count twice)")
    for frame_id in ids:
        if not os.path.isfile(os.path.join(root, "velodyne", f"{frame_id}.bin")):
            padded = frame_id.zfill(6)
            hint = f" (ids are zero-padded: {padded})" if frame_id.isdigit() and padded != frame_id and \
                os.path.isfile(os.path.join(root, "velodyne", f"{padded}.bin")) else ""
            raise FileNotFoundError(f"{path} names frame {frame_id!r}, which has no {root}/velodyne/{frame_id}.bin"
                                    f"{hint}")
    return ids


class KittiDataset:
    """Frames of a KITTI object folder; ``ids`` default to every velodyne scan, in name order."""

    def __init__(self, root: str, ids: list[str] | None = None, class_names=KITTI_CLASSES):
        self.root = root
        self.class_names = list(class_names)
        if ids is None:
            ids = scan_ids(root)
        else:
            check_kitti_root(root)
        self.ids = list(ids)
        if not self.ids:
            raise ValueError(f"no frames: the list of KITTI frame ids for {root} is empty")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        frame_id = self.ids[index]
        points = read_points(os.path.join(self.root, "velodyne", f"{frame_id}.bin"), point_width=4,
                             dtype=np.float32)
        calibration = read_calibration(os.path.join(self.root, "calib", f"{frame_id}.txt"))
        rows = read_label_rows(os.path.join(self.root, "label_2", f"{frame_id}.txt"))
        objects = [row for row in rows if row["name"] != "DontCare"]
        boxes, names = camera_rows_to_lidar_boxes(objects, rect_to_lidar(calibration)), [r["name"] for r in objects]
        keep = np.array([name in self.class_names for name in names], dtype=bool)
        labels = np.array([self.class_names.index(n) for n, k in zip(names, keep) if k], dtype=np.int64)
        size = image_size(os.path.join(self.root, "image_2", f"{frame_id}.png"))
        annotations = {"names": names, "boxes": boxes,
                       "bbox_2d": np.array([r["bbox_2d"] for r in objects], dtype=np.float64).reshape(-1, 4),
                       "truncated": np.array([r["truncated"] for r in objects], dtype=np.float64),
                       "occluded": np.array([r["occluded"] for r in objects], dtype=np.int64)}
        dont_care_boxes = np.array([r["bbox_2d"] for r in rows if r["name"] == "DontCare"],
                                   dtype=np.float64).reshape(-1, 4)
        return {"points": points, "gt_boxes": boxes[keep], "gt_labels": labels,
                "meta": {"id": frame_id, "calibration": calibration, "dont_care": len(dont_care_boxes),
                         "other_boxes": boxes[~keep], "other_names": [n for n, k in zip(names, keep) if not k],
                         "annotations": annotations, "dont_care_bbox_2d": dont_care_boxes,
                         "image_size": size or DEFAULT_IMAGE_SIZE, "image_size_known": size is not None}}
