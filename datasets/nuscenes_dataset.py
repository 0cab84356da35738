"""nuScenes through the official devkit: key frame + sweeps in the key frame's LiDAR frame, and the
ground-truth boxes in the project's box convention. Serves real nuScenes and the synthetic world.

A frame is ``{'points': (N, 5) float32 [x, y, z, intensity, time lag s], 'gt_boxes': (M, 9)
[x, y, z, dx, dy, dz, yaw, vx, vy] in the LiDAR frame (z = box centre, dx along the heading),
'gt_labels': (M,) indices into class_names, 'meta': {...}}``. nuScenes' ``wlh`` is converted here.
Infos (paths, transforms, boxes) are built once per (version, split, sweeps) and cached.
"""
from __future__ import annotations

import math
import os
import pickle
from dataclasses import dataclass

import numpy as np

from datasets.atomic_files import write_atomically
from datasets.point_files import read_points
from optional_dependencies import require

DETECTION_CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                     "pedestrian", "traffic_cone"]


def transform_matrix(translation, rotation_wxyz) -> np.ndarray:
    """4x4 homogeneous transform from a translation and a [w, x, y, z] quaternion."""
    from pyquaternion import Quaternion

    matrix = np.eye(4)
    matrix[:3, :3] = Quaternion(rotation_wxyz).rotation_matrix
    matrix[:3, 3] = translation
    return matrix


@dataclass
class SampleInfo:
    token: str
    timestamp: int
    lidar_path: str
    lidar_to_ego: np.ndarray       # 4x4 of the key frame
    ego_to_global: np.ndarray      # 4x4 of the key frame
    sweeps: list                   # [(path, 4x4 sweep sensor → key frame sensor, time lag s)], newest first
    gt_boxes: np.ndarray           # (M, 9) LiDAR frame
    gt_names: list
    num_lidar_pts: np.ndarray      # (M,)


class NuScenesDataset:
    """Frames of one split of a nuScenes-layout database.

    Args:
        root: the dataroot (holding ``<version>/``, ``samples/``, ``sweeps/``).
        version: e.g. 'v1.0-mini', 'v1.0-trainval', 'v1.0-synthetic'.
        split: a predefined split ('mini_val', 'train', ...) or one from ``<version>/splits.json``.
        num_sweeps: key frame plus up to num_sweeps - 1 earlier sweeps (fewer at a scene's start).
        class_names: detection classes kept; boxes of other categories are dropped.
        cache_dir: where the info cache lives (default: ``root``).
    """

    def __init__(self, root: str, version: str, split: str, num_sweeps: int = 10, class_names=DETECTION_CLASSES,
                 cache_dir: str | None = None):
        if num_sweeps < 1:
            raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
        self.root, self.version, self.split, self.num_sweeps = root, version, split, num_sweeps
        self.class_names = list(class_names)
        cache = os.path.join(cache_dir or root, f".sparsevox_infos_{version}_{split}_{num_sweeps}.pkl")
        if os.path.isfile(cache):
            with open(cache, "rb") as f:
                self.infos = pickle.load(f)
        else:
            self.infos = self._build_infos()
            write_atomically(cache, pickle.dumps(self.infos))

    def __len__(self) -> int:
        return len(self.infos)

    def _build_infos(self) -> list[SampleInfo]:
        require("nuscenes", "reading nuScenes databases")
        from nuscenes.eval.detection.utils import category_to_detection_name
        from nuscenes.nuscenes import NuScenes
        from nuscenes.utils.splits import get_scenes_of_split
        from pyquaternion import Quaternion

        nusc = NuScenes(self.version, self.root, verbose=False)
        scene_names = set(get_scenes_of_split(self.split, nusc))
        infos = []
        for sample in nusc.sample:
            if nusc.get("scene", sample["scene_token"])["name"] not in scene_names:
                continue
            lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", lidar["ego_pose_token"])
            lidar_to_ego = transform_matrix(calibration["translation"], calibration["rotation"])
            ego_to_global = transform_matrix(pose["translation"], pose["rotation"])
            global_to_lidar = np.linalg.inv(ego_to_global @ lidar_to_ego)
            sweeps, previous = [], lidar["prev"]
            while previous and len(sweeps) < self.num_sweeps - 1:
                sweep = nusc.get("sample_data", previous)
                sweep_calibration = nusc.get("calibrated_sensor", sweep["calibrated_sensor_token"])
                sweep_pose = nusc.get("ego_pose", sweep["ego_pose_token"])
                to_global = transform_matrix(sweep_pose["translation"], sweep_pose["rotation"]) @ \
                    transform_matrix(sweep_calibration["translation"], sweep_calibration["rotation"])
                sweeps.append((sweep["filename"], global_to_lidar @ to_global,
                               (lidar["timestamp"] - sweep["timestamp"]) / 1e6))
                previous = sweep["prev"]
            boxes, names, counts = [], [], []
            lidar_rotation = Quaternion(matrix=global_to_lidar[:3, :3], atol=1e-6)
            for annotation_token in sample["anns"]:
                annotation = nusc.get("sample_annotation", annotation_token)
                name = category_to_detection_name(annotation["category_name"])
                if name not in self.class_names:
                    continue
                centre = global_to_lidar @ np.array([*annotation["translation"], 1.0])
                orientation = lidar_rotation * Quaternion(annotation["rotation"])
                yaw = math.atan2(orientation.rotation_matrix[1, 0], orientation.rotation_matrix[0, 0])
                velocity = nusc.box_velocity(annotation_token)
                velocity = np.nan_to_num(velocity, nan=0.0)
                velocity = global_to_lidar[:3, :3] @ velocity
                width, length, height = annotation["size"]
                boxes.append([*centre[:3], length, width, height, yaw, velocity[0], velocity[1]])
                names.append(name)
                counts.append(annotation["num_lidar_pts"] + annotation["num_radar_pts"])
            infos.append(SampleInfo(sample["token"], sample["timestamp"], lidar["filename"], lidar_to_ego,
                                    ego_to_global, sweeps, np.array(boxes, dtype=np.float32).reshape(-1, 9),
                                    names, np.array(counts, dtype=np.int64)))
        return infos

    def points(self, index: int) -> np.ndarray:
        """(N, 5) key frame + sweeps in the key frame's LiDAR frame: x, y, z, intensity, time lag."""
        info = self.infos[index]
        key = read_points(os.path.join(self.root, info.lidar_path), point_width=5, dtype=np.float32)
        clouds = [np.column_stack([key[:, :4], np.zeros(len(key), dtype=np.float32)])]
        for path, to_key, lag in info.sweeps:
            sweep = read_points(os.path.join(self.root, path), point_width=5, dtype=np.float32)
            xyz = sweep[:, :3] @ to_key[:3, :3].T.astype(np.float32) + to_key[:3, 3].astype(np.float32)
            clouds.append(np.column_stack([xyz, sweep[:, 3], np.full(len(sweep), lag, dtype=np.float32)]))
        return np.concatenate(clouds).astype(np.float32)

    def __getitem__(self, index: int) -> dict:
        info = self.infos[index]
        labels = np.array([self.class_names.index(name) for name in info.gt_names], dtype=np.int64)
        return {"points": self.points(index), "gt_boxes": info.gt_boxes.copy(), "gt_labels": labels,
                "meta": {"token": info.token, "num_lidar_pts": info.num_lidar_pts,
                         "lidar_to_ego": info.lidar_to_ego, "ego_to_global": info.ego_to_global}}
