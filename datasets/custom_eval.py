"""Evaluation of 3D detections on a user's own data (``dataset.type: custom``): per class, BEV AP and
3D AP at configurable IoU thresholds, and nuScenes-style centre-distance AP.

- **IoU AP**: the KITTI matching of :mod:`datasets.detection_matching` without KITTI's difficulty
  levels, neighbouring classes, image boxes or DontCare regions: every GT of the class counts, every
  detection of the class counts, other classes play no part. A detection matches a GT when their BEV
  (resp. 3D) IoU is strictly above the class's threshold. AP at 40 recall positions (R40) and at 11
  (R11). ``sampling='every_point'`` (the default here) evaluates precision at every distinct score;
  ``'official'`` samples at most 41 score thresholds as the KITTI benchmark does, which under-reports
  classes with fewer than 40 GTs (0 with one GT; see :mod:`datasets.detection_matching`).
- **Centre-distance AP**: the nuScenes detection benchmark's matching and AP
  (``nuscenes.eval.detection.algo.accumulate`` and ``calc_ap``): greedy by decreasing score, nearest
  untaken GT by BEV centre distance, a match when nearer than the threshold (0.5, 1, 2, 4 m by
  default); precision interpolated at 101 recalls, those up to ``min_recall`` (0.1) left out,
  ``min_precision`` (0.1) subtracted and the rest rescaled to [0, 1]; the mean over the thresholds
  is the class's nuScenes AP. Unlike the nuScenes benchmark, GTs are neither filtered by range nor
  by their point count: the dataset decides which boxes to register.

Every AP is a fraction in [0, 1] (nuScenes' unit; KITTI's tables are in percent). A class without GT
has AP None and is left out of the means.

Use::

    evaluator = CustomEvaluator(["car", "pedestrian"], iou_thresholds={"car": 0.7, "pedestrian": 0.5})
    for frame in frames:
        evaluator.add_ground_truth(frame_id, gt_boxes, gt_labels)          # (M, >=7), (M,)
        evaluator.process(frame_id, pred_boxes, scores, labels)             # (K, >=7), (K,), (K,)
    metrics = evaluator.evaluate(out_dir)                                   # also writes metrics_custom.json
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from atomic_files import write_json_atomically
from datasets.box_overlaps import box_overlaps
from datasets.detection_matching import (
    SAMPLINGS,
    DetectionCurve,
    centre_distance_average_precision,
    check_ap_clipping,
)

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)      # metres, as nuScenes
DEFAULT_IOU_THRESHOLD = 0.5
IOU_METRICS = ("bev", "3d")
METRICS_FILE = "metrics_custom.json"


def _as_array(values, dtype, what: str) -> np.ndarray:
    """``values`` (array, list or tensor) as a numpy array of ``dtype``."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: cannot be read as {np.dtype(dtype).name} ({error})") from None


class CustomEvaluator:
    """Scores detections against registered ground truth, frame by frame (module docstring).

    class_names: the detector's classes; labels are indices into them.
    iou_thresholds: one IoU threshold for every class, or a mapping {class name: threshold} that names
    every class; each in [0, 1).
    distance_thresholds: centre distances in metres (> 0) for the nuScenes-style AP.
    sampling: ``'every_point'`` (default) or ``'official'`` (KITTI's 41 score thresholds) for IoU AP.
    min_recall, min_precision: the nuScenes AP's clipping (0.1 and 0.1 as the benchmark).
    """

    def __init__(self, class_names: Sequence[str], iou_thresholds: float | Mapping[str, float] = DEFAULT_IOU_THRESHOLD,
                 distance_thresholds: Sequence[float] = DISTANCE_THRESHOLDS, sampling: str = "every_point",
                 min_recall: float = 0.1, min_precision: float = 0.1):
        self.class_names = [str(name) for name in class_names]
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be distinct and not empty, got {list(class_names)}")
        if isinstance(iou_thresholds, Mapping):
            unknown = sorted(set(iou_thresholds) - set(self.class_names))
            missing = [name for name in self.class_names if name not in iou_thresholds]
            if unknown or missing:
                raise ValueError(f"iou_thresholds must name exactly the classes {self.class_names}: "
                                 f"missing {missing}, unknown {unknown}")
            self.iou_thresholds = {name: float(iou_thresholds[name]) for name in self.class_names}
        else:
            self.iou_thresholds = {name: float(iou_thresholds) for name in self.class_names}
        for name, threshold in self.iou_thresholds.items():
            if not 0.0 <= threshold < 1.0:
                raise ValueError(f"iou_thresholds[{name!r}] must be in [0, 1), got {threshold}")
        self.distance_thresholds = [float(t) for t in distance_thresholds]
        if not self.distance_thresholds or any(not t > 0.0 for t in self.distance_thresholds):
            raise ValueError(f"distance_thresholds must be positive metres, got {list(distance_thresholds)}")
        if len(set(self.distance_thresholds)) != len(self.distance_thresholds):
            # one key per threshold in distance_ap: a repeat would drop out of the mean the table lists it in
            raise ValueError(f"distance_thresholds must be distinct, got {list(distance_thresholds)}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        check_ap_clipping(min_recall, min_precision)
        self.sampling, self.min_recall, self.min_precision = sampling, float(min_recall), float(min_precision)
        self._truth: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._detections: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # ---------------------------------------------------------------------------------- frames

    def _checked(self, frame_id, boxes, labels, what: str) -> tuple[str, np.ndarray, np.ndarray]:
        frame_id = str(frame_id)
        boxes = _as_array(boxes, np.float64, f"{what} of frame {frame_id!r}: boxes")
        labels = _as_array(labels, np.float64, f"{what} of frame {frame_id!r}: labels").reshape(-1)
        if boxes.size == 0 and len(labels) == 0:
            boxes = boxes.reshape(0, 7)
        if boxes.ndim != 2 or boxes.shape[1] < 7 or boxes.shape[0] != len(labels):
            raise ValueError(f"{what} of frame {frame_id!r}: need boxes (N, >=7) [x, y, z, dx, dy, dz, yaw, ...] "
                             f"and labels (N,), got {boxes.shape} and {labels.shape}")
        if not np.isfinite(boxes[:, :7]).all():
            raise ValueError(f"{what} of frame {frame_id!r}: boxes have non-finite values")
        if (boxes[:, 3:6] <= 0).any():
            raise ValueError(f"{what} of frame {frame_id!r}: box sizes dx, dy, dz must be positive")
        if len(labels) and ((labels != np.round(labels)).any() or labels.min() < 0
                            or labels.max() >= len(self.class_names)):
            raise ValueError(f"{what} of frame {frame_id!r}: labels must be integers in [0, {len(self.class_names)}) "
                             f"(indices into {self.class_names}), got {sorted(set(labels.tolist()))}")
        return frame_id, boxes[:, :7].copy(), labels.astype(np.int64)

    def add_ground_truth(self, frame_id, boxes, labels) -> None:
        """Register a frame's GT: boxes (M, >=7) ``(x, y, z, dx, dy, dz, yaw, ...)`` in the frame the
        detections use, labels (M,) class indices. Every evaluated frame needs this, even with M = 0."""
        frame_id, boxes, labels = self._checked(frame_id, boxes, labels, "ground truth")
        if frame_id in self._truth:
            raise ValueError(f"ground truth of frame {frame_id!r} registered twice")
        self._truth[frame_id] = (boxes, labels)

    def add_frame(self, frame_id, frame: dict) -> None:
        """Register the ground truth of a dataset frame ``{'points', 'gt_boxes', 'gt_labels', 'meta'}``."""
        if not isinstance(frame, dict) or "gt_boxes" not in frame or "gt_labels" not in frame:
            raise ValueError(f"frame {frame_id!r}: expected a dataset frame with 'gt_boxes' and 'gt_labels'")
        self.add_ground_truth(frame_id, frame["gt_boxes"], frame["gt_labels"])

    def process(self, frame_id, pred_boxes, scores, labels) -> None:
        """A frame's detections: pred_boxes (K, >=7) (velocities ignored), scores (K,), labels (K,)
        class indices; arrays or tensors. Call it once for every frame with GT, with K = 0 when nothing
        was detected."""
        frame_id, boxes, labels = self._checked(frame_id, pred_boxes, labels, "detections")
        scores = _as_array(scores, np.float64, f"detections of frame {frame_id!r}: scores").reshape(-1)
        if scores.shape != labels.shape:
            raise ValueError(f"detections of frame {frame_id!r}: {len(scores)} scores for {len(labels)} boxes")
        if not np.isfinite(scores).all():
            raise ValueError(f"detections of frame {frame_id!r}: scores must be finite")
        if frame_id in self._detections:
            raise ValueError(f"detections of frame {frame_id!r} processed twice")
        self._detections[frame_id] = (boxes, scores, labels)

    # ------------------------------------------------------------------------------ evaluation

    def _frames(self) -> list[str]:
        undetected = [f for f in self._truth if f not in self._detections]
        unknown = [f for f in self._detections if f not in self._truth]
        if unknown:
            raise ValueError(f"{len(unknown)} processed frames have no registered ground truth (e.g. {unknown[:3]}); "
                             "call add_ground_truth for each, with empty arrays for a frame without objects")
        if undetected:
            raise ValueError(f"{len(undetected)} frames with ground truth were never processed (e.g. "
                             f"{undetected[:3]}); call process for each, with empty arrays when nothing was detected")
        if not self._truth:
            raise ValueError("nothing to evaluate: no frame was registered")
        return list(self._truth)

    def evaluate(self, out_dir: str | None = None) -> dict:
        """The metrics as a JSON-ready dict (fractions in [0, 1]; None for a class without GT):

        - ``ap[class]['bev' | '3d']``: R40 IoU AP; ``ap_r11`` alike; ``recall[class][metric]`` with every
          detection; ``iou_thresholds[class]``;
        - ``distance_ap[class][str(threshold)]`` nuScenes-style AP per centre distance (keys '0.5', '1.0',
          '2.0', '4.0'); ``mean_distance_ap[class]`` their mean;
        - ``mean_ap``: {'bev', '3d', 'distance'} means over the classes with GT;
        - ``num_gt[class]``, ``num_detections[class]``, ``num_frames``, ``sampling``, ``protocol``.

        With ``out_dir`` the dict is also written to ``out_dir/metrics_custom.json``.
        """
        frames = self._frames()
        curves = {(c, m): DetectionCurve(self.iou_thresholds[c]) for c in self.class_names for m in IOU_METRICS}
        centres = {c: [] for c in self.class_names}
        num_detections = {c: 0 for c in self.class_names}
        for frame_id in frames:
            gt_boxes, gt_labels = self._truth[frame_id]
            det_boxes, scores, det_labels = self._detections[frame_id]
            for index, class_name in enumerate(self.class_names):
                gt, det = gt_boxes[gt_labels == index], det_boxes[det_labels == index]
                det_scores = scores[det_labels == index]
                num_detections[class_name] += len(det)
                overlaps = box_overlaps(det, gt)
                for metric in IOU_METRICS:
                    curves[class_name, metric].add_frame(overlaps[metric], det_scores, np.zeros(len(gt), np.int8),
                                                         np.zeros(len(det), np.int8))
                centres[class_name].append((gt[:, :2], det[:, :2], det_scores))
        ap, ap_r11, recall, num_gt, distance_ap, mean_distance_ap = {}, {}, {}, {}, {}, {}
        for class_name in self.class_names:
            ap[class_name], ap_r11[class_name], recall[class_name] = {}, {}, {}
            for metric in IOU_METRICS:
                result = curves[class_name, metric].average_precision(self.sampling)
                ap[class_name][metric], ap_r11[class_name][metric] = result["r40"], result["r11"]
                recall[class_name][metric] = result["recall"]
                num_gt[class_name] = result["num_gt"]
            distance_ap[class_name] = {
                str(threshold): centre_distance_average_precision(centres[class_name], threshold, self.min_recall,
                                                                  self.min_precision)
                for threshold in self.distance_thresholds}
            values = list(distance_ap[class_name].values())
            mean_distance_ap[class_name] = None if values[0] is None else float(np.mean(values))
        with_gt = [c for c in self.class_names if num_gt[c] > 0]

        def mean(values) -> float | None:
            return float(np.mean(values)) if values else None

        metrics = {
            "protocol": (f"custom: IoU AP (R40, R11; {self.sampling.replace('_', ' ')} sampling) in BEV and 3D, and "
                         f"nuScenes centre-distance AP (thresholds {self.distance_thresholds} m, min recall "
                         f"{self.min_recall}, min precision {self.min_precision}); fractions in [0, 1]"),
            "sampling": self.sampling, "classes": self.class_names, "iou_thresholds": self.iou_thresholds,
            "distance_thresholds": self.distance_thresholds, "ap": ap, "ap_r11": ap_r11, "recall": recall,
            "distance_ap": distance_ap, "mean_distance_ap": mean_distance_ap,
            "mean_ap": {"bev": mean([ap[c]["bev"] for c in with_gt]), "3d": mean([ap[c]["3d"] for c in with_gt]),
                        "distance": mean([mean_distance_ap[c] for c in with_gt])},
            "num_gt": num_gt, "num_detections": num_detections, "num_frames": len(frames)}
        if out_dir is not None:
            write_json_atomically(os.path.join(out_dir, METRICS_FILE), metrics)
        return metrics


def format_table(metrics: dict) -> str:
    """The metrics of :meth:`CustomEvaluator.evaluate` as text: one row per class."""
    thresholds = metrics["distance_thresholds"]

    def cell(value) -> str:
        return f"{value:>9.4f}" if value is not None else f"{'-':>9}"

    lines = [f"custom AP ({metrics['num_frames']} frames; {metrics['sampling'].replace('_', ' ')} sampling; "
             "fractions)",
             f"{'class':<14}{'GT':>6}{'IoU':>6}{'BEV R40':>9}{'3D R40':>9}{'BEV R11':>9}{'3D R11':>9}"
             + "".join(f"{f'd{t:g}m':>9}" for t in thresholds) + f"{'dist AP':>9}"]
    for name in metrics["classes"]:
        lines.append(f"{name:<14}{metrics['num_gt'][name]:>6}{metrics['iou_thresholds'][name]:>6.2f}"
                     + cell(metrics["ap"][name]["bev"]) + cell(metrics["ap"][name]["3d"])
                     + cell(metrics["ap_r11"][name]["bev"]) + cell(metrics["ap_r11"][name]["3d"])
                     + "".join(cell(metrics["distance_ap"][name][str(float(t))]) for t in thresholds)
                     + cell(metrics["mean_distance_ap"][name]))
    means = metrics["mean_ap"]
    lines.append(f"{'mean':<14}{'':>6}{'':>6}" + cell(means["bev"]) + cell(means["3d"]) + f"{'':>18}"
                 + f"{'':>9}" * len(thresholds) + cell(means["distance"]))
    return "\n".join(lines)
