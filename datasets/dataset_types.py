"""The table of dataset types: ``dataset.type`` → its config, dataset, evaluator and metrics table.

Adding a dataset type is one module (a :class:`datasets.base.DatasetConfig` subclass with the
type's options, a :class:`datasets.base.DetectionDataset`, a factory of an evaluator) plus one entry
here; ``tests/datasets/test_dataset_contract.py`` then checks its frames and its evaluator.
Training, evaluation and the tools only call :func:`build_dataset`, :func:`build_evaluator` and
:func:`format_metrics`.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from datasets import custom_eval, kitti_eval
from datasets.base import DatasetConfig, DetectionDataset, Evaluator
from datasets.custom_type import CustomConfig, CustomDataset, custom_evaluator
from datasets.kitti_type import KittiConfig, KittiFrames, kitti_evaluator
from datasets.nuscenes_type import NuScenesConfig, NuScenesEvaluator, NuScenesFrames


@dataclass(frozen=True)
class DatasetType:
    config: type                 # a DatasetConfig subclass: the type's options
    dataset: type                # a DetectionDataset, built as dataset(config, split, class_names)
    evaluator: Callable          # (config, split, class_names) → an Evaluator
    format: Callable             # the evaluator's metrics dict → text


DATASET_TYPES = {
    "nuscenes": DatasetType(NuScenesConfig, NuScenesFrames, NuScenesEvaluator, NuScenesEvaluator.format),
    "kitti": DatasetType(KittiConfig, KittiFrames, kitti_evaluator, kitti_eval.format_table),
    "custom": DatasetType(CustomConfig, CustomDataset, custom_evaluator, custom_eval.format_table),
}


def dataset_type(name: str) -> DatasetType:
    if name not in DATASET_TYPES:
        close = difflib.get_close_matches(str(name), list(DATASET_TYPES), 1)
        raise ValueError(f"dataset.type must be one of {list(DATASET_TYPES)}, got {name!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
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
    return _entry(config).format(metrics)
