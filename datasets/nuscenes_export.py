"""Detections → the nuScenes results JSON (global frame), and the official DetectionEval on it."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from atomic_files import write_json_atomically
from optional_dependencies import require

# The devkit's attribute for a detection class, moving or not (the 0.2 m/s rule of the official baselines).
_ATTRIBUTES = {
    "car": ("vehicle.moving", "vehicle.parked"), "truck": ("vehicle.moving", "vehicle.parked"),
    "construction_vehicle": ("vehicle.moving", "vehicle.parked"), "bus": ("vehicle.moving", "vehicle.stopped"),
    "trailer": ("vehicle.moving", "vehicle.parked"), "motorcycle": ("cycle.with_rider", "cycle.without_rider"),
    "bicycle": ("cycle.with_rider", "cycle.without_rider"), "pedestrian": ("pedestrian.moving", "pedestrian.standing"),
    "barrier": ("", ""), "traffic_cone": ("", ""),
}
MAX_BOXES_PER_SAMPLE = 500
RESULTS_META = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}


def _quaternion_wxyz(matrix: np.ndarray) -> list[float]:
    from pyquaternion import Quaternion

    q = Quaternion(matrix=matrix, atol=1e-6)
    return [float(q.w), float(q.x), float(q.y), float(q.z)]


def lidar_boxes_to_results(sample_token: str, boxes: np.ndarray, scores: np.ndarray, names: list[str],
                           lidar_to_ego: np.ndarray, ego_to_global: np.ndarray) -> list[dict]:
    """One sample's boxes (K, 9) in the LiDAR frame → nuScenes result dicts in the global frame.

    Centre and heading go through LiDAR → ego → global; the velocity is rotated (not translated) and taken
    to lie on the ground (the global x-y plane), whatever the mount's tilt;
    size becomes [w, l, h] = [dy, dx, dz]; at most 500 boxes, highest scores first.
    """
    to_global = ego_to_global @ lidar_to_ego
    order = np.argsort(-np.asarray(scores), kind="stable")[:MAX_BOXES_PER_SAMPLE]
    results = []
    for i in order:
        x, y, z, dx, dy, dz, yaw, vx, vy = (float(v) for v in boxes[i][:9])
        centre = to_global @ np.array([x, y, z, 1.0])
        heading = to_global[:3, :3] @ np.array([[math.cos(yaw), -math.sin(yaw), 0.0],
                                                 [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        # (vx, vy) is a ground velocity seen in the LiDAR frame with the frame's z dropped (as the loader keeps
        # it): on a tilted mount, the z that puts it back on the ground, not 0, so the round trip is exact
        rotation = to_global[:3, :3]
        vz = -(rotation[2, 0] * vx + rotation[2, 1] * vy) / rotation[2, 2]
        velocity = rotation @ np.array([vx, vy, vz])
        moving, still = _ATTRIBUTES[names[i]]
        attribute = moving if math.hypot(velocity[0], velocity[1]) > 0.2 else still
        results.append({"sample_token": sample_token, "translation": [float(v) for v in centre[:3]],
                        "size": [dy, dx, dz], "rotation": _quaternion_wxyz(heading),
                        "velocity": [float(velocity[0]), float(velocity[1])], "detection_name": names[i],
                        "detection_score": float(scores[i]), "attribute_name": attribute})
    return results


def write_results(path: str, results_by_sample: dict[str, list[dict]]) -> None:
    """The results JSON the devkit reads (written atomically)."""
    write_json_atomically(path, {"meta": RESULTS_META, "results": results_by_sample})


def evaluate_nuscenes(root: str, version: str, split: str, results_path: str, output_dir: str) -> dict:
    """Run the official ``DetectionEval`` (detection_cvpr_2019) and return its metrics summary.

    When no sample has a single box (an untrained model), the devkit cannot run ("Invalid box
    type: None"); the summary then reports mAP 0, NDS 0 and AP 0 per class, with ``empty: True``.
    """
    require("nuscenes", "the official nuScenes evaluation")
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.nuscenes import NuScenes

    with open(results_path) as f:
        results = json.load(f)["results"]
    config = config_factory("detection_cvpr_2019")
    os.makedirs(output_dir, exist_ok=True)
    if not any(results.values()):
        summary = {"mean_ap": 0.0, "nd_score": 0.0, "empty": True,
                   "mean_dist_aps": dict.fromkeys(config.class_names, 0.0)}
        write_json_atomically(os.path.join(output_dir, "metrics_summary.json"), summary)
        return summary
    nusc = NuScenes(version, root, verbose=False)
    evaluation = DetectionEval(nusc, config, results_path, split, output_dir, verbose=False)
    return evaluation.main(plot_examples=0, render_curves=False)
