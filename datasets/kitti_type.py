"""The KITTI dataset type: a KITTI object folder (velodyne/, label_2/, calib/, optionally image_2/
and ImageSets/), with camera-frame labels turned into LiDAR boxes by :mod:`datasets.kitti_dataset`,
scored by :mod:`datasets.kitti_eval`.

Options (``dataset.``): ``fov_crop`` (default true): keep only the points that project into the
image of camera 2, as the benchmark does — KITTI labels only what that camera sees, so points
outside it would teach the detector to call every unlabelled car there background. ``sampling``:
the evaluator's score-threshold sampling (``official``, or ``every_point``). A split names
``ImageSets/<split>.txt``. Points are x, y, z, reflectance.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from datasets.base import DatasetConfig, DetectionDataset, count_points_in_boxes
from datasets.detection_matching import SAMPLINGS
from datasets.kitti_dataset import DEFAULT_IMAGE_SIZE, KittiDataset, read_label_rows, split_ids
from datasets.kitti_eval import KittiEvaluator


@dataclass
class KittiConfig(DatasetConfig):
    type: str = "kitti"
    fov_crop: bool = True
    sampling: str = "official"       # AP: the benchmark's <= 41 score thresholds, or 'every_point'

    def __post_init__(self):
        super().__post_init__()
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"dataset.sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")


def in_camera_view(points: np.ndarray, calibration: dict[str, np.ndarray], image_size=DEFAULT_IMAGE_SIZE,
                   near: float = 0.0) -> np.ndarray:
    """(N,) bool: which LiDAR points (N, >=3) lie in front of camera 2 (depth > near, metres) and
    project into its image (``image_size`` = (width, height) pixels), with the calib matrices
    ``Tr_velo_to_cam`` (3x4), ``R0_rect`` (3x3) and ``P2`` (3x4)."""
    for key in ("Tr_velo_to_cam", "R0_rect", "P2"):
        if key not in calibration:
            raise ValueError(f"the calibration lacks {key}, needed to crop the points to the camera's view")
    velo_to_cam, rect, projection = (np.asarray(calibration[k], dtype=np.float64)
                                     for k in ("Tr_velo_to_cam", "R0_rect", "P2"))
    camera = points[:, :3].astype(np.float64) @ (rect @ velo_to_cam[:, :3]).T + rect @ velo_to_cam[:, 3]
    pixels = camera @ projection[:, :3].T + projection[:, 3]
    depth = pixels[:, 2]
    front = depth > max(near, 1e-6)
    u = np.divide(pixels[:, 0], depth, out=np.full(len(depth), -1.0), where=front)
    v = np.divide(pixels[:, 1], depth, out=np.full(len(depth), -1.0), where=front)
    width, height = image_size
    return front & (camera[:, 2] > near) & (u >= 0) & (u < width) & (v >= 0) & (v < height)


class KittiFrames(DetectionDataset):
    """A split of a KITTI object folder; ``num_points_in_gt`` counted on the (cropped) points."""

    point_features = ("x", "y", "z", "reflectance")

    def __init__(self, config: KittiConfig, split: str, class_names):
        ids = split_ids(config.root, split)
        self.source = KittiDataset(config.root, ids, class_names)
        self.class_names, self.fov_crop = self.source.class_names, config.fov_crop

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        frame = self.source[index]
        meta = frame["meta"]
        if self.fov_crop:
            visible = in_camera_view(frame["points"], meta["calibration"], meta["image_size"])
            meta["points_outside_view"] = int((~visible).sum())
            frame["points"] = frame["points"][visible]
        frame["num_points_in_gt"] = count_points_in_boxes(frame["points"], frame["gt_boxes"])
        return frame

    @property
    def source_key(self) -> dict:
        return {"type": "kitti", "root": os.path.abspath(self.source.root), "ids": list(self.source.ids),
                "class_names": self.class_names, "fov_crop": self.fov_crop}

    def source_files(self) -> list[str]:
        return [os.path.join(self.source.root, folder, f"{frame_id}.{suffix}") for frame_id in self.source.ids
                for folder, suffix in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt"))]

    def label_sets(self) -> list[set[str]]:
        sets = []
        for frame_id in self.source.ids:
            rows = read_label_rows(os.path.join(self.source.root, "label_2", f"{frame_id}.txt"))
            sets.append({row["name"] for row in rows if row["name"] in self.class_names})
        return sets


def kitti_evaluator(config: KittiConfig, split: str, class_names) -> KittiEvaluator:
    """The KITTI evaluator (:class:`datasets.kitti_eval.KittiEvaluator`) with the config's sampling."""
    return KittiEvaluator(class_names, sampling=config.sampling)
