"""Evaluating a trained CenterPoint: detect on every frame of a split and score the detections with
the dataset type's evaluator (``datasets.dataset_types``). An evaluation of nothing (0 frames) is an
error, not a result."""
from __future__ import annotations

import os

from datasets.dataset_types import build_evaluator
from detectors.experiment import CenterPointConfig, split_frames
from detectors.inference import load_detector


def evaluate(config: CenterPointConfig, checkpoint_path: str, out_dir: str, split: str | None = None) -> dict:
    """Detect on every frame of a split and score it with the dataset type's evaluator (nuScenes: the
    results JSON and the official metrics; KITTI: BEV / 3D AP; custom: BEV / 3D / distance AP);
    returns its metrics, which it writes under ``out_dir``. The checkpoint is loaded as by
    ``detectors.inference.load_detector``: a config that differs from the one the checkpoint was
    trained with (its run folder's config.yaml) in geometry, classes or point features is refused,
    since weights of the same shapes would load and score wrongly."""
    if config.dataset is None:
        raise ValueError("the config has no dataset section; evaluation needs dataset.root")
    split = split or config.dataset.val_split
    model = load_detector(checkpoint_path, config)
    frames = split_frames(config, split)
    if len(frames) == 0:
        raise ValueError(f"the split {split!r} of {config.dataset.root} has no frames: nothing to evaluate")
    evaluator = build_evaluator(config.dataset, split, config.model.head.class_names)
    for index in range(len(frames)):
        frame = frames[index]
        detections = model.predict([frame["points"]])[0]
        evaluator.add_frame(str(index), frame)
        evaluator.process(str(index), detections["boxes"], detections["scores"], detections["labels"])
    os.makedirs(out_dir, exist_ok=True)
    return evaluator.evaluate(out_dir)
