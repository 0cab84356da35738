"""The experiment schema: a CenterPoint model with the dataset it reads, its optimizer and its training.

``load_centerpoint_config`` reads one from YAML (bases merged, overrides applied) and checks it as it
is built: the model part in ``detectors.centerpoint``, the rest here (the training options' ranges,
the augmentation's ranges, GT sampling naming only the head's classes). :func:`split_frames` gives the
frames of a split of the config's dataset, for training and evaluation alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

from datasets.augmentation import Augmenter
from datasets.base import DatasetConfig, DetectionDataset  # one DatasetConfig subclass per dataset.type
from datasets.dataset_types import build_dataset
from detectors.centerpoint import ModelConfig
from detectors.config import (
    Bounds,
    ConfigError,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    load_config,
)
from detectors.test_time_augmentation import unseen_in_training


@dataclass
class OptimizerConfig:
    """Adam(W) with a one-cycle learning rate, as CenterPoint trains."""
    lr: PositiveFloat = 1e-3                 # the peak of the cycle
    weight_decay: NonNegativeFloat = 0.01
    grad_clip: PositiveFloat = 35.0
    pct_start: Annotated[float, Bounds(0, 1, low_open=True, high_open=True)] = 0.4
    div_factor: PositiveFloat = 10.0


@dataclass
class GTSamplingConfig:
    database: str                    # .npz, built from the training split, rebuilt when that changes (cwd-relative)
    sample_groups: dict[str, NonNegativeInt]    # objects pasted per class and frame
    min_points: NonNegativeInt = 5


@dataclass
class TrainConfig:
    epochs: PositiveInt = 20
    batch_size: PositiveInt = 4              # per process
    # Training processes that train() starts on this machine (DDP, gloo on CPU; one GPU each on CUDA),
    # each with batch_size frames a step and an equal share of the CPU threads; 1: this process alone.
    # Under torchrun the launcher's count holds instead.
    processes: PositiveInt = 1
    # With more than one process: "global" normalises over the global batch (the same training as one
    # process with all the frames); "per_process" over each process's own frames, which spares a wait for
    # every other process at every BatchNorm (on 2 CPU cores: 0.84 against 1.15 s per step).
    batch_norm: Literal["global", "per_process"] = "global"
    num_workers: NonNegativeInt = 0
    seed: NonNegativeInt = 0
    checkpoint_every: NonNegativeInt = 0        # steps; 0: at the end of each epoch only
    log_every: PositiveInt = 10
    augmentation: Augmenter | None = None  # global flips, rotation, scaling, translation; None: off
    gt_sampling: GTSamplingConfig | None = None  # copy-paste of training-split objects; None: off
    cbgs: bool = False                     # class-balanced resampling of the training frames
    # GT boxes with fewer key-frame LiDAR points are no training targets (as OpenPCDet's
    # FILTER_MIN_POINTS_IN_GT): the official evaluation drops them, so learning to fire on them
    # only teaches false positives.
    min_points_in_gt: NonNegativeInt = 1
    # After the last epoch, replace BatchNorm's running statistics by their exact values over this
    # many training batches (PreciseBN); 0: keep the moving averages. For short runs, whose
    # averages (momentum 0.01) lag behind the weights.
    precise_bn_batches: NonNegativeInt = 0

    def __post_init__(self):
        if self.augmentation is not None:
            check_augmentation(self.augmentation, "train.augmentation")


def check_augmentation(augmenter: Augmenter, where: str) -> None:
    """Augmenter's fields are plain lists and floats; the ranges that make sense, checked here."""
    def numbers(name, count):
        value = getattr(augmenter, name)
        if not isinstance(value, (list, tuple)) or len(value) != count or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise ConfigError(f"{where}.{name} must be {count} finite numbers, got {value!r}")
        return value

    for name in ("flip_x", "flip_y", "half_turn"):
        value = getattr(augmenter, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{where}.{name} is a probability in [0, 1], got {value!r}")
    low, high = numbers("rotation", 2)
    if low > high:
        raise ConfigError(f"{where}.rotation is [low, high] in radians with low <= high, got {[low, high]}")
    low, high = numbers("scaling", 2)
    if not 0 < low <= high:
        raise ConfigError(f"{where}.scaling is [low, high] with 0 < low <= high, got {[low, high]}")
    value = augmenter.tilt
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 0.2:
        raise ConfigError(f"{where}.tilt is the largest sensor pitch/roll in radians, in [0, 0.2] (11 degrees), "
                          f"got {value!r}")
    if min(numbers("translation_std", 3)) < 0:
        raise ConfigError(f"{where}.translation_std is 3 standard deviations >= 0 (metres), got "
                          f"{augmenter.translation_std}")


@dataclass
class CenterPointConfig:
    model: ModelConfig
    dataset: DatasetConfig | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        sampling = self.train.gt_sampling
        if sampling is not None:
            unknown = sorted(set(sampling.sample_groups) - set(self.model.head.class_names))
            if unknown:
                raise ConfigError(f"train.gt_sampling.sample_groups names {unknown}, not in model.head.class_names "
                                  f"{self.model.head.class_names}")
        unseen = unseen_in_training(self.model.test_augmentation, self.train.augmentation)
        if unseen:  # refused before training, not when the trained model is first evaluated
            raise ConfigError(f"model.test_augmentation: {unseen}; or set model.test_augmentation: none")


def load_centerpoint_config(path: str, overrides=()) -> CenterPointConfig:
    """A CenterPoint config from YAML (bases merged, ``a.b=value`` overrides applied, keys checked)."""
    return load_config(CenterPointConfig, path, overrides)


def split_frames(config: CenterPointConfig, split: str) -> DetectionDataset:
    """The frames of a split of the config's dataset, checked against the model's point features."""
    frames = build_dataset(config.dataset, split, config.model.head.class_names)
    if frames.num_point_features != config.model.num_point_features:
        raise ValueError(f"dataset.type {config.dataset.type!r} gives {frames.num_point_features} point features "
                         f"{list(frames.point_features)}; model.num_point_features is "
                         f"{config.model.num_point_features}")
    return frames
