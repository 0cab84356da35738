"""Running a trained CenterPoint on point files: a model from a checkpoint (read with
``torch.load(weights_only=True)``, :mod:`detectors.checkpoints`), a file's columns matched to the
model's point features, and one detections record (JSON-ready) per file.

The model's input columns are those of its training data: the point features its dataset type
declares (the dataset contract's ``point_features``; ``dataset.point_features`` of a custom type).
A file's columns are matched to them by name:

- a feature the file has by name is taken from that column (e.g. a nuScenes ``.pcd.bin``'s
  x, y, z, intensity; its ``ring`` column is not a model feature and is left out); ``intensity``
  and ``reflectance`` name the same thing;
- an unnamed column (``.npy`` arrays, a raw file's ``value4`` ...) stands for the model's feature at
  its position, when the file has exactly as many columns as the model has features (a ``.npy``
  holds the model's features in order, as OpenPCDet's custom ``points/``); with more, which of them
  are the features is unknown: name them (``columns``);
- ``time_lag`` of a file that holds one sweep (raw ``.bin``/``.pcd.bin``, PCD, LAS/LAZ) is 0 for
  every point, as the nuScenes loader sets it for the key frame; the record says it was filled;
- anything else the model needs and the file lacks is an error naming both column lists.

Intensity scale (KITTI 0..1, nuScenes 0..255, 16-bit sensors 0..65535) is not in any file, and a
model fed the wrong scale gives plausible-looking, wrong detections. The scale a cloud uses is read
off its largest intensity (<= 1: 0..1; <= 255: 0..255; else 0..65535); when it differs from the
training data's (:data:`TRAINING_INTENSITY_SCALE`), :func:`model_points` raises, unless asked to
rescale (then the factor is recorded). A type without an entry there is not checked (the record
says so).

Points are used as the file holds them: no camera field-of-view crop (a KITTI-trained model also
reports objects outside the camera's view, where its training had no labels).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from datasets.dataset_types import dataset_type
from datasets.point_files import read_point_file
from detectors.centerpoint import CenterPoint
from detectors.checkpoints import load_checkpoint, load_state_checked, model_state
from detectors.config import ConfigError, apply_overrides, from_dict, load_config, read_yaml_with_bases, to_dict
from detectors.experiment import CenterPointConfig
from detectors.test_time_augmentation import unseen_in_training

BOX_FIELDS = ("x", "y", "z", "dx", "dy", "dz", "yaw", "vx", "vy")
BOX_CONVENTION = ("LiDAR frame of the point file; x, y, z the box centre (m); dx, dy, dz its size along the "
                  "heading, across it and up (m); yaw about +z from +x (rad); vx, vy velocity (m/s)")
RECORD_FORMAT = "sparsevox detections 1"

# The intensity range of each dataset type's points: KITTI reflectance 0..1, nuScenes 0..255.
TRAINING_INTENSITY_SCALE = {"nuscenes": 255.0, "kitti": 1.0}
INTENSITY_NAMES = ("intensity", "reflectance")
INTENSITY_SCALES = (1.0, 255.0, 65535.0)
SINGLE_SWEEP_FEATURE = "time_lag"

@dataclass(frozen=True)
class ModelInput:
    """The point features a model takes: ``features`` (C names, the model's column order) and the
    intensity range of its training data (``intensity_scale``; None: unknown, unchecked)."""
    features: tuple[str, ...]
    intensity_scale: float | None
    source: str                      # where this was learnt, in words


@dataclass
class PointMapping:
    """How a file's columns became the model's input (all JSON-ready)."""
    file: str
    layout: str                      # how the file was read, e.g. 'raw float32 x 5'
    file_columns: list[str]
    model_features: list[str]
    taken_from: dict[str, str]       # model feature → file column, or 'filled 0 (one sweep)'
    intensity: dict = field(default_factory=dict)  # file_max, file_scale, model_scale, rescaled_by
    points_read: int = 0
    nonfinite_dropped: int = 0

    def as_dict(self) -> dict:
        return dict(vars(self))


def model_input(config: CenterPointConfig) -> ModelInput:
    """The features the model of ``config`` takes: its dataset type's point features (module docstring)."""
    count = config.model.num_point_features
    if config.dataset is None:
        generic = ("x", "y", "z", "intensity", *(f"feature{i}" for i in range(4, count)))[:count]
        return ModelInput(generic, None, "no dataset section: features by position, intensity unchecked")
    kind = config.dataset.type
    features = tuple(getattr(config.dataset, "point_features", None) or dataset_type(kind).dataset.point_features)
    if len(features) != count:
        raise ConfigError(f"model.num_point_features = {count}, but dataset.type {kind!r} gives {len(features)} "
                          f"point features: {list(features)}")
    return ModelInput(features, TRAINING_INTENSITY_SCALE.get(kind), f"dataset.type {kind!r}")


# ------------------------------------------------------------------------------------- checkpoints

def checkpoint_config(checkpoint_path: str, state: dict, overrides=()) -> tuple[CenterPointConfig, str]:
    """The config a checkpoint was trained with: its 'config' entry, else the run folder's
    ``config.yaml`` beside it. Returns (config, where it came from)."""
    if isinstance(state.get("config"), dict):
        return from_dict(CenterPointConfig, apply_overrides(state["config"], list(overrides))), \
            f"{checkpoint_path} ('config' entry)"
    beside = os.path.join(os.path.dirname(os.path.abspath(checkpoint_path)), "config.yaml")
    if os.path.isfile(beside):
        return from_dict(CenterPointConfig, apply_overrides(read_yaml_with_bases(beside), list(overrides))), beside
    raise ConfigError(f"{checkpoint_path}: holds no config and there is no config.yaml beside it; pass the config")


# Settings that change what the weights mean without changing their shapes: a config given beside a
# checkpoint must agree with the checkpoint's own on these, or the boxes come out silently wrong.
MUST_MATCH_TRAINING = ("model.num_point_features", "model.geometry", "model.head.class_names",
                       "model.head.class_groups", "dataset.type")


def _setting(mapping: dict | None, dotted: str):
    for key in dotted.split("."):
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return mapping


def check_same_training(config: CenterPointConfig, trained: CenterPointConfig, trained_source: str) -> None:
    """Raise ValueError when ``config`` differs from the checkpoint's config in :data:`MUST_MATCH_TRAINING`."""
    given, own = to_dict(config), to_dict(trained)
    for dotted in MUST_MATCH_TRAINING:
        if _setting(given, dotted) != _setting(own, dotted):
            raise ValueError(f"the config sets {dotted} = {_setting(given, dotted)}, but the checkpoint was trained "
                             f"with {_setting(own, dotted)} ({trained_source})")


def load_detector(checkpoint_path: str, config: CenterPointConfig | str | None = None, device="cpu",
                  overrides=()) -> CenterPoint:
    """A CenterPoint in eval mode on ``device`` with a checkpoint's weights.

    config: a :class:`CenterPointConfig`, a YAML path (``overrides`` applied), or None for the
    checkpoint's own (:func:`checkpoint_config`); a given config must agree with the checkpoint's own,
    where it has one, on :data:`MUST_MATCH_TRAINING`. The model's input features are set as
    ``model.point_features`` (:class:`ModelInput`) for :func:`model_points`.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but torch sees no CUDA device (use --device cpu)")
    state = load_checkpoint(checkpoint_path, map_location=device)
    if isinstance(config, str):
        config = load_config(CenterPointConfig, config, overrides)
    if config is None:  # the checkpoint's own, whose views its own training showed (checked when it loads)
        config, _ = checkpoint_config(checkpoint_path, state, overrides)
    else:
        try:
            trained, trained_source = checkpoint_config(checkpoint_path, state)
        except ConfigError:
            trained = None  # a bare state_dict away from its run folder: only the shapes are checked
        if trained is not None:
            check_same_training(config, trained, trained_source)
            unseen = unseen_in_training(config.model.test_augmentation, trained.train.augmentation)
            if unseen:
                raise ValueError(f"model.test_augmentation: {unseen} ({trained_source}); or set "
                                 f"model.test_augmentation: none")
    model = CenterPoint(config.model)
    load_state_checked(model, model_state(state, checkpoint_path), checkpoint_path)
    model.point_features = model_input(config)
    return model.to(device).eval()


# ------------------------------------------------------------------------------ points for a model

def _holds_one_sweep(path: str, columns: tuple[str, ...]) -> bool:
    """A file of one LiDAR sweep: raw KITTI / nuScenes key-frame files, PCD and LAS scans. A float16
    stack named ``_N<k>`` holds several sweeps; an ``.npy`` array may hold anything."""
    lower = os.path.basename(path).lower()
    if SINGLE_SWEEP_FEATURE in columns or lower.endswith(".npy"):
        return False
    if lower.endswith((".pcd", ".las", ".laz", ".pcd.bin")):
        return True
    return lower.endswith(".bin") and "float16" not in lower


def _is_unnamed(column: str) -> bool:
    return column.startswith("value") and column[5:].isdigit()


def intensity_scale_of(values: np.ndarray) -> float | None:
    """The range a cloud's intensities use, from their largest finite value: 1, 255 or 65535
    (None for an empty cloud or one whose intensities are all 0)."""
    finite = values[np.isfinite(values)]
    top = float(finite.max()) if finite.size else 0.0
    if top <= 0.0:
        return None
    return next((scale for scale in INTENSITY_SCALES if top <= scale), INTENSITY_SCALES[-1])


def model_points(path: str, model_in: ModelInput, columns: list[str] | None = None,
                 rescale_intensity: bool = False) -> tuple[np.ndarray, PointMapping]:
    """Read a point file as the model's (N', C) float32 input (module docstring for the rules).

    columns: names for the file's columns, replacing those of the reader (same count; for a raw file
        also its values per point).
    rescale_intensity: scale intensities to the training range instead of refusing a mismatch.
    Points with a NaN or inf in a used column are dropped and counted (``nonfinite_dropped``).
    Raises ValueError naming the file, its columns and the model's features when they do not match.
    """
    raw = not path.lower().endswith((".npy", ".pcd", ".las", ".laz"))
    read = read_point_file(path, point_width=len(columns) if columns is not None and raw else None)
    points, names, layout = read.points, tuple(read.columns), read.layout
    if columns is not None:
        if len(columns) != points.shape[1]:
            raise ValueError(f"{path}: --columns names {len(columns)} columns ({', '.join(columns)}) but the file "
                             f"was read with {points.shape[1]} ({', '.join(names)}; {layout})")
        names = tuple(columns)
    wanted = model_in.features
    taken, selected = {}, []
    one_sweep = _holds_one_sweep(path, names)
    for position, feature in enumerate(wanted):
        aliases = INTENSITY_NAMES if feature in INTENSITY_NAMES else (feature,)
        named = [name for name in aliases if name in names]
        if named:
            taken[feature], index = named[0], names.index(named[0])
        elif position < len(names) and _is_unnamed(names[position]) and len(names) == len(wanted):
            taken[feature], index = names[position], position
        elif feature == SINGLE_SWEEP_FEATURE and one_sweep:
            taken[feature], index = "filled 0 (one sweep)", None
        else:
            raise ValueError(f"{path}: the model takes {len(wanted)} features ({', '.join(wanted)}; "
                             f"{model_in.source}) but the file has {len(names)} columns ({', '.join(names)}; "
                             f"{layout}): no column for {feature!r} (name the columns with --columns)")
        selected.append(index)
    used = np.empty((len(points), len(wanted)), dtype=np.float32)
    for position, index in enumerate(selected):
        used[:, position] = 0.0 if index is None else points[:, index]
    finite = np.isfinite(used).all(axis=1)
    if not finite.all():
        used = used[finite]
    mapping = PointMapping(os.path.abspath(path), layout, list(names), list(wanted), taken,
                           points_read=len(points), nonfinite_dropped=int((~finite).sum()))
    intensity = [position for position, feature in enumerate(wanted) if feature in INTENSITY_NAMES]
    if intensity and model_in.intensity_scale is None:
        mapping.intensity = {"checked": False, "why": f"no intensity range known for {model_in.source}"}
    elif intensity:
        column = intensity[0]
        file_scale = intensity_scale_of(used[:, column])
        mapping.intensity = {"file_max": float(used[:, column].max()) if len(used) else None,
                             "file_scale": file_scale, "model_scale": model_in.intensity_scale, "rescaled_by": 1.0}
        if file_scale is not None and file_scale != model_in.intensity_scale:
            if not rescale_intensity:
                raise ValueError(f"{path}: intensities reach {used[:, column].max():g}, a 0..{file_scale:g} scale, but "
                                 f"the model was trained on 0..{model_in.intensity_scale:g} ({model_in.source}); "
                                 f"pass --rescale-intensity to multiply by {model_in.intensity_scale / file_scale:g}")
            factor = model_in.intensity_scale / file_scale
            used[:, column] *= np.float32(factor)
            mapping.intensity["rescaled_by"] = factor
    return used, mapping


# ------------------------------------------------------------------------------ detections per file

def detect_points(model: CenterPoint, points: np.ndarray) -> dict:
    """``model.predict`` on one cloud (on the model's device) → {'boxes' (K, 9), 'scores' (K,),
    'labels' (K,) indices} as CPU tensors, and 'dropped': the voxelizer's DroppedPoints."""
    tensor, dropped = model.voxelize(model.test_views([torch.from_numpy(np.ascontiguousarray(points))]))
    detections = {k: v.cpu() for k, v in model.predict_voxels(tensor)[0].items()}
    detections["dropped"] = dropped[0]  # of the cloud itself, the first view
    return detections


def detections_with_names(model: CenterPoint, points: np.ndarray,
                          calibration=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(boxes (K, 9), scores (K,), class names) of ``model`` in eval mode on one cloud, the scores calibrated
    by ``calibration`` (detectors.score_calibration) when given; the form :func:`datasets.realism.sim_to_real`
    asks of a detector."""
    model.eval()
    found = detect_points(model, np.asarray(points, dtype=np.float32))
    names = model.config.head.class_names
    labels = [names[int(i)] for i in found["labels"]]
    scores = found["scores"].numpy()
    return found["boxes"].numpy(), scores if calibration is None else calibration.apply(scores, labels), labels


def detection_record(model: CenterPoint, path: str, checkpoint: str, config_source: str, overrides=(),
                     columns=None, rescale_intensity: bool = False) -> tuple[dict, np.ndarray, dict]:
    """Detect on one point file. Returns (the JSON-ready record, the model's input points, the
    detections as tensors). The record: boxes (K, 9) as :data:`BOX_FIELDS`, scores, label names,
    the point mapping and counts, the checkpoint and config, timing in seconds."""
    started = time.perf_counter()
    points, mapping = model_points(path, model.point_features, columns, rescale_intensity)
    read_s = time.perf_counter() - started
    detections = detect_points(model, points)
    predict_s = time.perf_counter() - started - read_s
    names = model.config.head.class_names
    dropped = detections["dropped"]
    record = {
        "format": RECORD_FORMAT,
        "file": os.path.abspath(path),
        "checkpoint": os.path.abspath(checkpoint),
        "config": config_source,
        "overrides": list(overrides),
        "device": str(next(model.parameters()).device),
        "box_fields": list(BOX_FIELDS),
        "box_convention": BOX_CONVENTION,
        "class_names": list(names),
        "score_threshold": model.config.decode.score_threshold,
        "test_augmentation": model.config.test_augmentation,
        "num_detections": int(len(detections["scores"])),
        "boxes": detections["boxes"].double().tolist(),
        "scores": detections["scores"].double().tolist(),
        "labels": [names[int(label)] for label in detections["labels"]],
        "points": {**mapping.as_dict(), "points_used": int(len(points)),
                   "dropped_by_voxelizer": {"out_of_range": dropped.out_of_range, "voxel_full": dropped.voxel_full,
                                            "voxel_limit": dropped.voxel_limit, "nonfinite": dropped.nonfinite}},
        "timing_s": {"read": read_s, "predict": predict_s},
    }
    return record, points, detections


def calibrate_record(record: dict, calibration, calibration_path: str, min_score: float | None = None) -> dict:
    """``record`` (of :func:`detection_record`) with its scores calibrated (detectors.score_calibration): the
    model's own scores kept as 'raw_scores' ('score_threshold' stays the decoder's, on them), and with
    ``min_score`` only the detections whose calibrated score reaches it ('calibrated_score_threshold')."""
    calibrated = calibration.apply(record["scores"], record["labels"])
    keep = [i for i, score in enumerate(calibrated) if min_score is None or score >= min_score]
    return {**record, "boxes": [record["boxes"][i] for i in keep], "labels": [record["labels"][i] for i in keep],
            "scores": [float(calibrated[i]) for i in keep], "raw_scores": [record["scores"][i] for i in keep],
            "num_detections": len(keep), "score_calibration": os.path.abspath(calibration_path),
            "calibrated_score_threshold": min_score}


def output_paths(files, out_dir: str, overwrite: bool = False, suffixes=(".json",),
                 stale_suffixes=()) -> list[dict[str, str]]:
    """Per point file, its output paths ``out_dir/NAME<suffix>`` (NAME keeps the file's extension, so
    ``a.bin`` and ``a.npy`` do not collide). Checked before any work: every input exists, no two
    inputs share a name, and no output exists unless ``overwrite``.

    stale_suffixes: outputs an earlier run may have written that this one does not (a PNG without
    ``--png``). One that exists is refused like an output, and with ``overwrite`` it is removed once
    every check has passed, so that no picture of older detections is left beside the new JSON."""
    plans, seen, stale = [], {}, []
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"point file not found: {path}")
        name = os.path.basename(path)
        if name in seen:
            raise ValueError(f"{seen[name]} and {path} would both write {os.path.join(out_dir, name)}.*; "
                             f"detect them into different --out folders")
        seen[name] = path
        plan = {suffix: os.path.join(out_dir, name + suffix) for suffix in suffixes}
        earlier = [os.path.join(out_dir, name + suffix) for suffix in stale_suffixes if suffix not in suffixes]
        existing = [p for p in [*plan.values(), *earlier] if os.path.exists(p)]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it (an output this run does "
                                  f"not write is removed), or another --out")
        stale.extend(p for p in earlier if os.path.exists(p))
        plans.append(plan)
    for path in stale:
        os.remove(path)
    return plans


__all__ = ["BOX_FIELDS", "MUST_MATCH_TRAINING", "ModelInput", "PointMapping", "TRAINING_INTENSITY_SCALE",
           "check_same_training", "checkpoint_config", "detect_points", "detection_record", "intensity_scale_of",
           "load_detector", "model_input", "model_points", "output_paths"]
