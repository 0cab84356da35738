"""Your own data (``dataset.type: custom``), in OpenPCDet's custom layout::

    ROOT/points/NAME.npy     (N, C) float array, or NAME.bin: raw float32, C values per point
    ROOT/labels/NAME.txt     one object a line: x y z dx dy dz heading class
    ROOT/ImageSets/train.txt, val.txt (one NAME a line; the split names the file)

Labels are in the LiDAR frame of the points, in the project's box convention: (x, y, z) the box
centre in metres, dx the length along the heading, heading in radians about +z from +x. The class
names come from the model (``model.head.class_names``); a label of a class the config neither
detects nor lists in ``dataset.ignore_classes`` is an error, so a typo cannot drop boxes silently.
The point columns are ``dataset.point_features`` (x, y, z first), one per model input feature.

Evaluation (:class:`datasets.custom_eval.CustomEvaluator`) scores every labelled box: BEV and 3D AP
with the KITTI matcher without its difficulty rules at a per-class IoU threshold
(``dataset.iou_thresholds``, else ``default_iou_threshold``), and nuScenes' centre-distance AP at
each of ``distance_thresholds``; fractions in [0, 1].
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from datasets.base import DatasetConfig, DetectionDataset, count_points_in_boxes
from datasets.custom_eval import CustomEvaluator
from datasets.detection_matching import SAMPLINGS
from datasets.point_files import implausibility, read_point_file

POINT_SUFFIXES = (".npy", ".bin")


@dataclass
class CustomConfig(DatasetConfig):
    type: str = "custom"
    point_features: list[str] = field(default_factory=lambda: ["x", "y", "z", "intensity"])
    ignore_classes: list[str] = field(default_factory=list)   # label classes that are not detected
    iou_thresholds: dict[str, float] = field(default_factory=dict)  # per class; others default_iou_threshold
    default_iou_threshold: float = 0.5
    distance_thresholds: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])   # metres
    sampling: str = "every_point"    # IoU AP at every operating point, or KITTI's 'official' <= 41 thresholds

    def __post_init__(self):
        super().__post_init__()
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"dataset.sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")
        if list(self.point_features[:3]) != ["x", "y", "z"]:
            raise ValueError(f"dataset.point_features must start with x, y, z, got {self.point_features}")
        if len(set(self.point_features)) != len(self.point_features):
            raise ValueError(f"dataset.point_features repeats a name: {self.point_features}")
        for name, threshold in {**self.iou_thresholds, "default": self.default_iou_threshold}.items():
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"dataset.iou_thresholds: {name} must be in (0, 1), got {threshold}")
        if not self.distance_thresholds or min(self.distance_thresholds) <= 0:
            raise ValueError(f"dataset.distance_thresholds must be positive metres, got {self.distance_thresholds}")


def read_custom_labels(path: str) -> tuple[np.ndarray, list[str]]:
    """(boxes (M, 7) float32 x, y, z, dx, dy, dz, heading; class names) of a labels/NAME.txt file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label file not found: {path} (every frame needs one; empty for no objects)")
    boxes, names = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 8:
                raise ValueError(f"{path}:{number}: expected 8 fields 'x y z dx dy dz heading class', "
                                 f"got {len(fields)}: {line.strip()!r}")
            try:
                values = [float(v) for v in fields[:7]]
            except ValueError:
                raise ValueError(f"{path}:{number}: the first 7 fields must be numbers: {line.strip()!r}") from None
            if not np.isfinite(values).all() or min(values[3:6]) <= 0:
                raise ValueError(f"{path}:{number}: need finite values and positive dx, dy, dz: {line.strip()!r}")
            boxes.append(values)
            names.append(fields[7])
    return np.array(boxes, dtype=np.float32).reshape(-1, 7), names


def read_custom_points(path: str, point_features: tuple[str, ...]) -> np.ndarray:
    """(N, C) float32 of a points/NAME.npy or .bin file (:func:`datasets.point_files.read_point_file`),
    C = len(point_features); a raw .bin read is checked for values plausible for those columns (a
    float64 file read as float32 has a whole number of points too, of garbage)."""
    width = len(point_features)
    if path.endswith(".npy"):
        points = read_point_file(path).points
    else:
        points = read_point_file(path, point_width=width, dtype=np.float32, check_values=False).points
        problem = implausibility(points, tuple(point_features))
        if problem:
            raise ValueError(f"{path}: read as float32 x {width} ({', '.join(point_features)}: "
                             f"dataset.point_features), the values are implausible: {problem}")
    if points.shape[1] != width:
        raise ValueError(f"{path}: {points.shape[1]} values per point, dataset.point_features names {width}")
    return points


class CustomDataset(DetectionDataset):
    """A split of a custom-layout folder (module docstring)."""

    def __init__(self, config: CustomConfig, split: str, class_names):
        self.root, self.class_names = config.root, list(class_names)
        self.point_features = tuple(config.point_features)
        self.ignore_classes = set(config.ignore_classes)
        overlap = self.ignore_classes & set(self.class_names)
        if overlap:
            raise ValueError(f"dataset.ignore_classes names detected classes {sorted(overlap)}")
        listing = os.path.join(self.root, "ImageSets", f"{split}.txt")
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"split {split!r}: {listing} not found (custom data lists each split's frame "
                                    "names in ImageSets/<split>.txt)")
        with open(listing) as f:
            self.names = [line.strip() for line in f if line.strip()]
        if not self.names:
            raise ValueError(f"{listing} is empty: split {split!r} has no frames")
        repeated = sorted(name for name, count in Counter(self.names).items() if count > 1)
        if repeated:   # a frame listed twice would count twice in training and evaluation
            raise ValueError(f"{listing} lists frame(s) {', '.join(repeated[:5])} more than once")
        self.point_paths = [self._point_path(name, listing) for name in self.names]

    def _point_path(self, name: str, listing: str) -> str:
        for suffix in POINT_SUFFIXES:
            path = os.path.join(self.root, "points", name + suffix)
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"{listing} names frame {name!r}, which has no points/{name}.npy or .bin "
                                f"under {self.root}")

    def __len__(self) -> int:
        return len(self.names)

    def _labels(self, index: int) -> tuple[np.ndarray, list[str]]:
        path = os.path.join(self.root, "labels", self.names[index] + ".txt")
        boxes, names = read_custom_labels(path)
        unknown = sorted(set(names) - set(self.class_names) - self.ignore_classes)
        if unknown:
            raise ValueError(f"{path}: classes {unknown} are neither detected (model.head.class_names "
                             f"{self.class_names}) nor in dataset.ignore_classes")
        return boxes, names

    def __getitem__(self, index: int) -> dict:
        points = read_custom_points(self.point_paths[index], self.point_features)
        boxes7, names = self._labels(index)
        keep = np.array([name in self.class_names for name in names], dtype=bool)
        boxes = np.zeros((int(keep.sum()), 9), dtype=np.float32)
        boxes[:, :7] = boxes7[keep]
        labels = np.array([self.class_names.index(n) for n, k in zip(names, keep) if k], dtype=np.int64)
        return {"points": points, "gt_boxes": boxes, "gt_labels": labels,
                "num_points_in_gt": count_points_in_boxes(points, boxes),
                "meta": {"name": self.names[index], "ignored_boxes": int((~keep).sum())}}

    @property
    def source_key(self) -> dict:
        return {"type": "custom", "root": os.path.abspath(self.root), "names": self.names,
                "class_names": self.class_names, "point_features": list(self.point_features),
                "ignore_classes": sorted(self.ignore_classes)}

    def source_files(self) -> list[str]:
        return self.point_paths + [os.path.join(self.root, "labels", name + ".txt") for name in self.names]

    def label_sets(self) -> list[set[str]]:
        return [set(self._labels(i)[1]) & set(self.class_names) for i in range(len(self))]


def custom_evaluator(config: CustomConfig, split: str, class_names) -> CustomEvaluator:
    """The custom evaluator (:class:`datasets.custom_eval.CustomEvaluator`) with the config's thresholds."""
    unknown = sorted(set(config.iou_thresholds) - set(class_names))
    if unknown:
        raise ValueError(f"dataset.iou_thresholds names {unknown}, not among the classes {list(class_names)}")
    thresholds = {name: config.iou_thresholds.get(name, config.default_iou_threshold) for name in class_names}
    return CustomEvaluator(class_names, thresholds, config.distance_thresholds, config.sampling)
