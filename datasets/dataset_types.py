"""The table of dataset types: config name → (config dataclass, dataset, evaluator).

Adding a dataset type is one module (a :class:`datasets.base.DatasetConfig` subclass with the
type's options, a :class:`datasets.base.DetectionDataset`, an :class:`datasets.base.Evaluator`)
plus one entry here; ``tests/datasets/test_dataset_contract.py`` then checks its frames. Training,
evaluation and the tools only call :func:`build_dataset` and :func:`build_evaluator`.
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.base import DatasetConfig, DetectionDataset, Evaluator
from datasets.custom_type import CustomConfig, CustomDataset, CustomEvaluator
from datasets.kitti_type import KittiConfig, KittiEvaluator, KittiFrames
from datasets.nuscenes_type import NuScenesConfig, NuScenesEvaluator, NuScenesFrames


@dataclass(frozen=True)
class DatasetType:
    config: type      # a DatasetConfig subclass: the type's options
    dataset: type     # DetectionDataset subclass, built as dataset(config, split, class_names)
    evaluator: type   # Evaluator subclass, built as evaluator(config, split, class_names)


DATASET_TYPES = {
    "nuscenes": DatasetType(NuScenesConfig, NuScenesFrames, NuScenesEvaluator),
    "kitti": DatasetType(KittiConfig, KittiFrames, KittiEvaluator),
    "custom": DatasetType(CustomConfig, CustomDataset, CustomEvaluator),
}


def dataset_type(name: str) -> DatasetType:
    if name not in DATASET_TYPES:
        raise ValueError(f"dataset.type must be one of {list(DATASET_TYPES)}, got {name!r}")
    return DATASET_TYPES[name]


def _entry(config: DatasetConfig) -> DatasetType:
    entry = dataset_type(config.type)
    if not isinstance(config, entry.config):
        raise TypeError(f"dataset.type {config.type!r} needs a {entry.config.__name__}, got {type(config).__name__}")
    return entry


def build_dataset(config: DatasetConfig, split: str, class_names) -> DetectionDataset:
    """The frames of ``split`` (e.g. ``config.train_split``) with ``class_names`` as the label indices."""
    return _entry(config).dataset(config, split, list(class_names))


def build_evaluator(config: DatasetConfig, split: str, class_names) -> Evaluator:
    """The evaluator of the type, for detections labelled by ``class_names``."""
    return _entry(config).evaluator(config, split, list(class_names))


def format_metrics(config: DatasetConfig, metrics: dict) -> str:
    """The metrics of the type's evaluator as text."""
    return _entry(config).evaluator.format(metrics)
