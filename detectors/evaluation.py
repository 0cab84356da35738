"""Evaluating a trained CenterPoint: detect on every frame of a split and score the detections with
the dataset type's evaluator (``datasets.dataset_types``). An evaluation of nothing (0 frames) is an
error, not a result."""
from __future__ import annotations

import os

from datasets.dataset_types import build_evaluator
from detectors.experiment import CenterPointConfig, split_frames
from detectors.inference import load_detector

# What the evaluators write into out_dir (nuScenes: the results and the devkit's metrics; KITTI; custom).
EVALUATION_FILES = ("results_nusc.json", "metrics_summary.json", "metrics_details.json", "metrics_kitti.json",
                    "metrics_custom.json")


def earlier_evaluation(out_dir: str) -> list[str]:
    """The evaluation files already in ``out_dir``."""
    return [name for name in EVALUATION_FILES if os.path.exists(os.path.join(out_dir, name))]


def evaluate(config: CenterPointConfig, checkpoint_path: str, out_dir: str, split: str | None = None,
             overwrite: bool = False) -> dict:
    """Detect on every frame of a split and score it with the dataset type's evaluator (nuScenes: the
    results JSON and the official metrics; KITTI: BEV / 3D AP; custom: BEV / 3D / distance AP);
    returns its metrics, which it writes under ``out_dir``. The checkpoint is loaded as by
    ``detectors.inference.load_detector``: a config that differs from the one the checkpoint was
    trained with (its run folder's config.yaml) in geometry, classes or point features is refused,
    since weights of the same shapes would load and score wrongly. An ``out_dir`` holding an earlier
    evaluation is refused before any work unless ``overwrite`` (its metrics would be replaced)."""
    if config.dataset is None:
        raise ValueError("the config has no dataset section; evaluation needs dataset.root")
    earlier = earlier_evaluation(out_dir)
    if earlier and not overwrite:
        raise FileExistsError(f"{out_dir} holds an earlier evaluation ({', '.join(earlier)}); choose another output "
                              f"folder, or overwrite it (--overwrite)")
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
