"""Per-class score calibration: a detection's score mapped to the share of detections like it that were right.

A CenterPoint heatmap peak is not a probability: on the demo's synthetic validation split, cars scoring
0.2-0.3 were right 13 % of the time and pedestrians 5 % (docs/synthetic_world.md), so one threshold means
a different precision for each class. Platt scaling fits, per class, ``p = sigmoid(a * logit(score) + b)``
with ``a > 0`` to whether each detection found an object of its class (nuScenes' rule: the nearest free
object within 2 m of its centre, detections taken in decreasing score) on a labelled split. The map is
strictly increasing, so each class's ranking, hence every per-class AP and the nuScenes metrics, stay the
same; a threshold on the calibrated score is then one precision for every class, where it was fitted.

Fit on data the model did not train on (the validation split). The file records the sha256 of the
checkpoint and the model config it was fitted for (the decoder's NMS changes which detections there are),
and loading it for another checkpoint or config is refused. The decoder's score threshold is left out of
that key: NMS keeps a box by comparing it with higher-scoring ones only, so a threshold changes nothing
above it.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from atomic_files import write_json_atomically
from datasets.detection_matching import centre_distance_matches
from detectors.config import ConfigError, from_dict, to_dict
from detectors.run_folder import config_differences

FORMAT = "sparsevox-score-calibration-1"
MIN_SLOPE = 0.1          # a flatter fit (scores that tell little) is held here: the map must stay increasing
SCORE_CLIP = 1e-6        # logit of scores 0 and 1


@dataclass
class ClassCalibration:
    slope: float          # a
    offset: float         # b
    detections: int       # detections of the class the fit saw
    true_positives: int   # of them, those that found an object


@dataclass
class ScoreCalibration:
    classes: dict[str, ClassCalibration]
    checkpoint_sha256: str
    model_config: dict    # model_key() of the config it was fitted with
    fitted_on: dict       # what the fit saw: dataset, split, frames, match distance

    def apply(self, scores: np.ndarray, names) -> np.ndarray:
        """Calibrated scores of detections of the given class names (float64)."""
        scores = np.asarray(scores, dtype=np.float64)
        unknown = sorted(set(names) - set(self.classes))
        if unknown:
            raise ValueError(f"the score calibration has no map for classes {unknown}; it maps "
                             f"{sorted(self.classes)}")
        slope = np.array([self.classes[name].slope for name in names], dtype=np.float64)
        offset = np.array([self.classes[name].offset for name in names], dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-(slope * _logit(scores) + offset)))

    def save(self, path: str) -> None:
        write_json_atomically(path, {"format": FORMAT, "checkpoint_sha256": self.checkpoint_sha256,
                                     "model_config": self.model_config, "fitted_on": self.fitted_on,
                                     "classes": {name: asdict(c) for name, c in self.classes.items()}})


def model_key(model_config) -> dict:
    """The model config (detectors.centerpoint.ModelConfig) as a calibration is keyed by: all of it, as JSON
    reads it back, but the decoder's score threshold (module docstring)."""
    key = json.loads(json.dumps(to_dict(model_config)))
    del key["decode"]["score_threshold"]
    return key


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, SCORE_CLIP, 1 - SCORE_CLIP)
    return np.log(clipped / (1 - clipped))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fit_platt(scores: np.ndarray, is_tp: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a * logit(score) + b)`` by Newton's method on the log-loss, with Platt's targets
    (N+ + 1) / (N+ + 2) and 1 / (N- + 2) in place of 1 and 0, so that a class whose detections were all right
    or all wrong still gets a finite map; a slope below MIN_SLOPE is held at MIN_SLOPE and b fitted alone.
    No detections: the identity (1, 0)."""
    x, labels = _logit(np.asarray(scores, np.float64)), np.asarray(is_tp, bool)
    if len(x) == 0:
        return 1.0, 0.0
    positives, negatives = labels.sum(), (~labels).sum()
    target = np.where(labels, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def newton(a, b, fit_slope):
        for _ in range(iterations):
            p = 1 / (1 + np.exp(-(a * x + b)))
            w = np.maximum(p * (1 - p), 1e-12)
            residual = p - target
            if fit_slope:
                hessian = np.array([[(w * x * x).sum(), (w * x).sum()], [(w * x).sum(), w.sum()]])
                step = np.linalg.solve(hessian + 1e-9 * np.eye(2), [(residual * x).sum(), residual.sum()])
            else:
                step = np.array([0.0, residual.sum() / w.sum()])
            a, b = a - step[0], b - step[1]
            if np.abs(step).max() < 1e-10:
                break
        return float(a), float(b)

    a, b = newton(1.0, 0.0, fit_slope=True)
    if not (math.isfinite(a) and math.isfinite(b)) or a < MIN_SLOPE:
        a, b = newton(MIN_SLOPE, 0.0, fit_slope=False)
    return a, b


def fit_score_calibration(detect, frames, model_config, checkpoint: str, fitted_on: dict,
                          match_distance: float = 2.0) -> ScoreCalibration:
    """Fit one map per class of ``model_config.head.class_names``. ``detect(points)`` → (boxes (K, >=2),
    scores (K,), K names): the model of ``model_config`` with the weights of ``checkpoint``; ``frames``:
    dataset frames with 'points', 'gt_boxes' and 'gt_labels' (indices into the class names)."""
    class_names = model_config.head.class_names
    per_class = {name: [] for name in class_names}
    for frame in frames:
        boxes, scores, names = detect(frame["points"])
        boxes, names = np.asarray(boxes, np.float64).reshape(len(scores), -1), np.asarray(names, dtype=object)
        gt_boxes = np.asarray(frame["gt_boxes"], np.float64)
        gt_centres = gt_boxes[:, :2] if gt_boxes.ndim == 2 else np.zeros((0, 2))
        gt_labels = np.asarray(frame["gt_labels"])
        for index, name in enumerate(class_names):
            mine = names == name
            per_class[name].append((gt_centres[gt_labels == index], boxes[mine, :2], np.asarray(scores)[mine]))
    classes = {}
    for name, class_frames in per_class.items():
        scores, is_tp, _ = centre_distance_matches(class_frames, match_distance)
        slope, offset = fit_platt(scores, is_tp)
        classes[name] = ClassCalibration(slope, offset, int(len(scores)), int(is_tp.sum()))
    return ScoreCalibration(classes, file_sha256(checkpoint), model_key(model_config),
                            {**fitted_on, "frames": len(frames), "match_distance": match_distance})


def load_score_calibration(path: str, checkpoint: str, model_config=None) -> ScoreCalibration:
    """The calibration in ``path``, refused (ValueError) unless it was fitted for ``checkpoint``'s bytes and,
    given the ``model_config`` that will detect, for that config (:func:`model_key`), mapping each of its
    classes."""
    try:
        with open(path) as stream:
            data = json.load(stream)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a score calibration file ({error})") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != FORMAT:
        raise ValueError(f"{path}: not a score calibration file (format {found!r}, expected {FORMAT!r})")
    digest, fitted_for = file_sha256(checkpoint), str(data.get("checkpoint_sha256"))
    if fitted_for != digest:
        raise ValueError(f"{path} was fitted for another checkpoint (sha256 {fitted_for[:12]}…), not "
                         f"{checkpoint} (sha256 {digest[:12]}…); fit it again for this one")
    if not isinstance(data.get("classes"), dict):
        raise ValueError(f"{path}: 'classes' must map class names to their maps, got {data.get('classes')!r}")
    if model_config is not None:
        try:  # read back as a config: a setting added since the file was fitted reads as its default, as then
            fitted = model_key(from_dict(type(model_config), data.get("model_config"), "model"))
        except (ConfigError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: its 'model_config' is not a model config ({error}); fit it again") from None
        differences = config_differences({"model": fitted}, {"model": model_key(model_config)}, ignored=())
        if differences:
            raise ValueError(f"{path} was fitted with another model config (" + "; ".join(differences[:6]).replace(
                ": run ", ": fitted ") + "); fit it again with this one")
    classes, fields = {}, list(ClassCalibration.__dataclass_fields__)
    for name, values in data["classes"].items():
        if not isinstance(values, dict) or sorted(values) != sorted(fields) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
            raise ValueError(f"{path}: class {name!r} needs the finite numbers {fields}, got {values!r}")
        classes[name] = ClassCalibration(**values)
        if classes[name].slope <= 0:
            raise ValueError(f"{path}: class {name!r} has slope {classes[name].slope}; a map keeps the ranking only "
                             f"with a slope > 0")
    missing = [name for name in (model_config.head.class_names if model_config else ()) if name not in classes]
    if missing:
        raise ValueError(f"{path} maps no scores of classes {missing} of the model; it maps {sorted(classes)}")
    return ScoreCalibration(classes, digest, data.get("model_config"), data.get("fitted_on", {}))
