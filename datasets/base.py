"""The dataset contract: what every dataset type gives training, evaluation and the tools.

A *frame* is a dict:

- ``points``: (N, C) float32 in the LiDAR frame, columns ``x, y, z`` then the type's point features
  (``dataset.num_point_features`` = C = the model's ``num_point_features``);
- ``gt_boxes``: (M, 9) float32 ``x, y, z, dx, dy, dz, yaw, vx, vy`` in the same frame, z the box
  centre, dx the length along the heading, yaw about +z from +x (velocities 0 when unknown);
- ``gt_labels``: (M,) int64 indices into the dataset's ``class_names``;
- ``num_points_in_gt``: (M,) int64 LiDAR points of each box (the source's count where it has one,
  else counted with :func:`datasets.boxes.points_in_boxes` on ``points``);
- ``meta``: a dict the type's evaluator reads (ids, calibration, transforms); training never does.

A dataset type is four things, entered in the table of :mod:`datasets.dataset_types`: a config
dataclass (a subclass of :class:`DatasetConfig` holding the type's options, checked when the
config is loaded), a :class:`DetectionDataset`, a factory of its :class:`Evaluator`, and the
function that prints the evaluator's metrics.
"""
from __future__ import annotations

import abc
import typing
from dataclasses import dataclass

import numpy as np

from datasets.boxes import points_in_boxes
from datasets.derived_files import files_summary

FRAME_KEYS = ("points", "gt_boxes", "gt_labels", "num_points_in_gt", "meta")


@dataclass
class DatasetConfig:
    """The options every dataset type has; a type's config subclasses this and adds its own.

    When a config mapping is loaded, its ``type`` picks the subclass (:meth:`schema_for`), so a key of
    another type is an unknown key, and the subclass's ``__post_init__`` (calling this one's) checks
    the values, raising ValueError naming the key."""
    root: str                        # relative to the current directory
    type: str = "nuscenes"           # a key of datasets.dataset_types.DATASET_TYPES
    train_split: str = "train"
    val_split: str = "val"

    def __post_init__(self):
        for name in ("root", "train_split", "val_split"):
            if not getattr(self, name):
                raise ValueError(f"dataset.{name} must not be empty")

    @classmethod
    def schema_for(cls, mapping) -> type:
        """The config dataclass of the type a mapping names (the config loader asks this)."""
        from datasets.dataset_types import dataset_type

        name = mapping.get("type", cls.type) if isinstance(mapping, dict) else cls.type
        return dataset_type(name).config


class DetectionDataset(abc.ABC):
    """Frames of one split. Subclasses set ``class_names`` (list of str) and ``point_features``
    (the names of the C point columns, starting ``x, y, z``)."""

    class_names: list[str]
    point_features: tuple[str, ...]

    @property
    def num_point_features(self) -> int:
        return len(self.point_features)

    @abc.abstractmethod
    def __len__(self) -> int:
        ...

    @abc.abstractmethod
    def __getitem__(self, index: int) -> dict:
        """The frame ``index`` (see the module docstring)."""

    @abc.abstractmethod
    def label_sets(self) -> list[set[str]]:
        """Per frame, the set of class names of its boxes (class-balanced resampling reads this
        without loading points)."""

    # What files derived from the frames (the GT database) are keyed by: a JSON-ready description of
    # the source (type, root, split, options), and the files the frames read.
    @property
    def source_key(self) -> dict | None:
        return None

    def source_files(self) -> list[str]:
        """Every file the frames read (points, labels, calibration); [] when unknown."""
        return []

    def point_files_fingerprint(self) -> dict | None:
        """Count, total size and a digest of the size and modification time of :meth:`source_files`."""
        paths = self.source_files()
        return files_summary(paths) if paths else None


class Evaluator(typing.Protocol):
    """Scores detections, frame by frame: :meth:`add_frame` and :meth:`process` for every frame (in
    either order), then :meth:`evaluate`. The KITTI and custom evaluators of
    :mod:`datasets.kitti_eval` and :mod:`datasets.custom_eval` have this shape."""

    def add_frame(self, frame_id: str, frame: dict) -> None:
        """Register a frame's ground truth: the frame as the dataset gave it."""

    def process(self, frame_id: str, pred_boxes, scores, labels) -> None:
        """The detector's output on that frame's points: boxes (K, 9) LiDAR frame, scores (K,),
        labels (K,) indices into the class names (K = 0 when nothing was detected)."""

    def evaluate(self, out_dir: str | None = None) -> dict:
        """The metrics of every registered frame (JSON-ready); written under ``out_dir`` when given."""


def count_points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M,) int64: points (N, >=3) inside each box (M, >=7), all in one frame."""
    return np.array([len(inside) for inside in points_in_boxes(points, boxes)], dtype=np.int64)


def check_frame(frame: dict, class_names, num_point_features: int, where: str = "frame") -> None:
    """Raise ValueError naming ``where`` and the key when a frame breaks the contract's shapes and dtypes."""
    missing = [key for key in FRAME_KEYS if key not in frame]
    if missing:
        raise ValueError(f"{where}: lacks {missing}; a frame has {list(FRAME_KEYS)}")
    points, boxes, labels, counts = (frame[k] for k in FRAME_KEYS[:4])
    expected = {"points": ((None, num_point_features), np.float32), "gt_boxes": ((None, 9), np.float32),
                "gt_labels": ((None,), np.int64), "num_points_in_gt": ((None,), np.int64)}
    for key, (shape, dtype) in expected.items():
        value = frame[key]
        if not isinstance(value, np.ndarray) or value.dtype != dtype or value.ndim != len(shape) \
                or any(s is not None and s != v for s, v in zip(shape, value.shape)):
            got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"{where}: {key} must be a {np.dtype(dtype).name} array of shape "
                             f"{tuple('N' if s is None else s for s in shape)}, got {got}")
    if not (len(boxes) == len(labels) == len(counts)):
        raise ValueError(f"{where}: {len(boxes)} gt_boxes, {len(labels)} gt_labels, {len(counts)} num_points_in_gt")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"{where}: gt_labels must index the {len(class_names)} class names, got {labels.tolist()}")
    if not np.isfinite(points[:, :3]).all() or not np.isfinite(boxes).all():
        raise ValueError(f"{where}: points or gt_boxes hold NaN or inf")
    if len(boxes) and (boxes[:, 3:6] <= 0).any():
        raise ValueError(f"{where}: every box needs positive dx, dy, dz")
    if not isinstance(frame["meta"], dict):
        raise ValueError(f"{where}: meta must be a dict, got {type(frame['meta']).__name__}")
