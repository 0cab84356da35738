"""The nuScenes dataset type: frames of a nuScenes-layout database through the official devkit
(real nuScenes or the synthetic world), scored by the official DetectionEval.

Options (``dataset.``): ``version`` (the table folder, e.g. v1.0-trainval, v1.0-synthetic) and
``num_sweeps`` (key frame plus earlier sweeps, >= 1), ``sweep_ego_radius`` (earlier sweeps lose their points
within this many metres of the sensor in x and y, default 1.0 as OpenPCDet and mmdetection3d do; 0 keeps
them). Points are x, y, z, intensity, time lag (s).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from datasets.base import DatasetConfig, DetectionDataset
from datasets.nuscenes_dataset import NuScenesDataset
from datasets.nuscenes_export import evaluate_nuscenes, lidar_boxes_to_results, write_results


@dataclass
class NuScenesConfig(DatasetConfig):
    type: str = "nuscenes"
    version: str = "v1.0-trainval"
    num_sweeps: int = 10
    sweep_ego_radius: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if not self.version:
            raise ValueError("dataset.version must not be empty")
        if self.num_sweeps < 1:   # the key frame counts as one
            raise ValueError(f"dataset.num_sweeps: must be >= 1, got {self.num_sweeps}")
        if not 0 <= self.sweep_ego_radius <= 10:
            raise ValueError(f"dataset.sweep_ego_radius: metres in [0, 10], got {self.sweep_ego_radius!r}")


class NuScenesFrames(DetectionDataset):
    """A split of a nuScenes-layout database; ``num_points_in_gt`` are the annotations' own counts."""

    point_features = ("x", "y", "z", "intensity", "time_lag")

    def __init__(self, config: NuScenesConfig, split: str, class_names):
        self.source = NuScenesDataset(config.root, config.version, split, config.num_sweeps, class_names,
                                      sweep_ego_radius=config.sweep_ego_radius)
        self.class_names = self.source.class_names

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        frame = self.source[index]
        frame["num_points_in_gt"] = np.asarray(frame["meta"]["num_lidar_pts"], dtype=np.int64)
        return frame

    def label_sets(self) -> list[set[str]]:
        return [set(info.gt_names) for info in self.source.infos]

    @property
    def source_key(self) -> dict:
        return self.source.source_key

    def point_files_fingerprint(self) -> dict:
        return self.source.point_files_fingerprint()


class NuScenesEvaluator:
    """The evaluator contract (:class:`datasets.base.Evaluator`) for nuScenes: detections →
    ``results_nusc.json`` (global frame) → the devkit's metrics (``metrics_summary.json``)."""

    def __init__(self, config: NuScenesConfig, split: str, class_names):
        self.config, self.split, self.class_names = config, split, list(class_names)
        self._poses: dict[str, dict] = {}
        self.results: dict[str, list[dict]] = {}

    def add_frame(self, frame_id, frame: dict) -> None:
        """Register a frame: its sample token and LiDAR poses (``meta``) place its detections."""
        frame_id = str(frame_id)
        if frame_id in self._poses:
            raise ValueError(f"frame {frame_id!r} registered twice")
        self._poses[frame_id] = frame["meta"]

    def process(self, frame_id, pred_boxes, scores, labels) -> None:
        frame_id = str(frame_id)
        if frame_id not in self._poses:
            raise ValueError(f"detections of frame {frame_id!r}, which was never registered with add_frame")
        meta = self._poses[frame_id]
        boxes, scores, labels = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                                 for v in (pred_boxes, scores, labels))
        labels = labels.astype(np.int64).reshape(-1)
        # A frame without detections is a result too (numpy cannot infer the -1 of an empty reshape).
        boxes = np.zeros((0, 9)) if len(labels) == 0 and boxes.size == 0 else boxes.reshape(len(labels), -1)
        self.results[meta["token"]] = lidar_boxes_to_results(
            meta["token"], boxes, scores.reshape(-1),
            [self.class_names[label] for label in labels], meta["lidar_to_ego"], meta["ego_to_global"])

    def evaluate(self, out_dir: str | None = None) -> dict:
        if len(self.results) != len(self._poses):
            raise ValueError(f"{len(self._poses)} frames registered, {len(self.results)} processed")
        if out_dir is None:
            raise ValueError("the nuScenes devkit evaluates a results file: give out_dir")
        os.makedirs(out_dir, exist_ok=True)
        results_path = os.path.join(out_dir, "results_nusc.json")
        write_results(results_path, self.results)
        return evaluate_nuscenes(self.config.root, self.config.version, self.split, results_path, out_dir)

    @staticmethod
    def format(metrics: dict) -> str:
        lines = [f"mAP {metrics['mean_ap']:.4f}  NDS {metrics['nd_score']:.4f}"]
        lines += [f"  {name:<22} AP {ap:.4f}" for name, ap in metrics["mean_dist_aps"].items()]
        return "\n".join(lines)
