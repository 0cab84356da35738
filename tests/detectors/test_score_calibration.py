"""Per-class score calibration (Platt scaling): the fit recovers the map that generated the outcomes, keeps
each class's ranking, stays finite where a class was always right or always wrong, and its file is refused
for another checkpoint."""
import json
from pathlib import Path

import numpy as np
import pytest

from detectors.experiment import load_centerpoint_config
from detectors.score_calibration import (
    MIN_SLOPE,
    ClassCalibration,
    ScoreCalibration,
    file_sha256,
    fit_platt,
    fit_score_calibration,
    load_score_calibration,
    model_key,
)

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")


def logit(p):
    return np.log(p / (1 - p))


def test_the_fit_recovers_the_map_that_drew_the_outcomes():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.05, 0.95, 40000)
    truth = 1 / (1 + np.exp(-(2.5 * logit(scores) - 1.0)))     # right with this probability
    slope, offset = fit_platt(scores, rng.random(len(scores)) < truth)
    assert slope == pytest.approx(2.5, abs=0.1) and offset == pytest.approx(-1.0, abs=0.05)


def test_degenerate_classes_get_finite_increasing_maps():
    scores = np.array([0.2, 0.4, 0.6, 0.8])
    for outcomes in ([False] * 4, [True] * 4, [True, False, True, False]):
        slope, offset = fit_platt(scores, np.array(outcomes))
        assert np.isfinite([slope, offset]).all() and slope >= MIN_SLOPE, outcomes
    never = ScoreCalibration({"car": ClassCalibration(*fit_platt(scores, np.zeros(4, bool)), 4, 0)}, "x", {}, {})
    always = ScoreCalibration({"car": ClassCalibration(*fit_platt(scores, np.ones(4, bool)), 4, 4)}, "x", {}, {})
    assert never.apply(scores, ["car"] * 4).max() < 0.5 < always.apply(scores, ["car"] * 4).min()
    assert fit_platt(np.zeros(0), np.zeros(0, bool)) == (1.0, 0.0)   # no detections: the scores as they are


def test_each_class_keeps_its_ranking_and_gets_its_own_map():
    calibration = ScoreCalibration({"car": ClassCalibration(3.0, 1.0, 10, 5),
                                    "pedestrian": ClassCalibration(2.0, -1.5, 10, 1)}, "x", {}, {})
    scores = np.array([0.9, 0.3, 0.5, 0.3, 0.7, 0.12])
    names = ["car", "car", "pedestrian", "pedestrian", "car", "pedestrian"]
    calibrated = calibration.apply(scores, names)
    for name in ("car", "pedestrian"):
        mine = np.array(names) == name
        assert (np.argsort(scores[mine]) == np.argsort(calibrated[mine])).all()
    expected = [1 / (1 + np.exp(-(a * logit(0.3) + b))) for a, b in ((3.0, 1.0), (2.0, -1.5))]
    assert calibrated[[1, 3]] == pytest.approx(expected)   # the same raw score, a precision of its class
    with pytest.raises(ValueError, match=r"no map for classes \['bus'\]"):
        calibration.apply([0.5], ["bus"])


def box(x, y):
    return [x, y, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]


def test_fit_matches_detections_to_objects_of_their_class_within_2_m(tmp_path):
    """A detector that finds every car at score 0.8 (0.5 m off) and adds a false car at 0.3 and a pedestrian
    on a car at 0.6: the car map says 0.8 was right and 0.3 was not; the pedestrian one that 0.6 was not."""
    frames = [{"points": np.full((1, 5), float(i), np.float32), "gt_boxes": np.array([box(10.0 * i, 0), box(0, 20)]),
               "gt_labels": np.array([0, 0])} for i in range(1, 31)]

    def detect(points):
        i = float(points[0, 0])
        return (np.array([box(10 * i + 0.5, 0), box(0.5, 20), box(-30, -30), box(10 * i, 0)]),
                np.array([0.8, 0.8, 0.3, 0.6]), ["car", "car", "car", "pedestrian"])

    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    model = load_centerpoint_config(CONFIG).model      # class 0 is car
    calibration = fit_score_calibration(detect, frames, model, str(checkpoint), {"split": "val"})
    car, pedestrian = calibration.classes["car"], calibration.classes["pedestrian"]
    assert (car.detections, car.true_positives, pedestrian.detections, pedestrian.true_positives) == (90, 60, 30, 0)
    high, low = calibration.apply([0.8, 0.3], ["car", "car"])
    assert high > 0.9 and low < 0.1
    assert calibration.apply([0.6], ["pedestrian"])[0] < 0.1
    assert calibration.fitted_on == {"split": "val", "frames": 30, "match_distance": 2.0}

    path = tmp_path / "calibration.json"
    calibration.save(str(path))
    loaded = load_score_calibration(str(path), str(checkpoint), model)
    assert loaded == calibration
    # NMS decides which detections there are: a calibration of circle NMS does not hold for rotated NMS.
    # The score threshold only drops detections below it, and is not part of the key.
    assert load_score_calibration(str(path), str(checkpoint),
                                  load_centerpoint_config(CONFIG, ["model.decode.score_threshold=0.3"]).model)
    rotated = load_centerpoint_config(CONFIG, ["model.decode.nms=rotated"]).model
    with pytest.raises(ValueError, match=r"fitted with another model config \(model.decode.nms: fitted 'circle', "
                                         r"requested 'rotated'\)"):
        load_score_calibration(str(path), str(checkpoint), rotated)
    checkpoint.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="was fitted for another checkpoint"):
        load_score_calibration(str(path), str(checkpoint))
    assert json.loads(path.read_text())["checkpoint_sha256"] == calibration.checkpoint_sha256 != file_sha256(
        str(checkpoint))
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a score calibration file"):
        load_score_calibration(str(path), str(checkpoint))


def test_a_hand_edited_file_is_refused_with_the_class_and_the_problem(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    path = tmp_path / "calibration.json"

    model = load_centerpoint_config(CONFIG).model

    def saved(classes):
        ScoreCalibration(classes, file_sha256(str(checkpoint)), model_key(model), {}).save(str(path))
        return str(path)

    good = {name: ClassCalibration(2.0, 0.5 - i, 10, 3) for i, name in enumerate(model.head.class_names)}
    assert load_score_calibration(saved(good), str(checkpoint), model).classes == good
    with pytest.raises(ValueError, match=r"maps no scores of classes \['bus'\] of the model"):
        load_score_calibration(saved({k: v for k, v in good.items() if k != "bus"}), str(checkpoint), model)
    with pytest.raises(ValueError, match=r"class 'car' has slope -2.0; a map keeps the ranking only with a slope > 0"):
        load_score_calibration(saved({"car": ClassCalibration(-2.0, 0.5, 10, 3)}), str(checkpoint))
    saved(good)
    data = json.loads(path.read_text())
    for model_config, problem in (({**data["model_config"], "head": {**data["model_config"]["head"],
                                                                     "heading": "sideways"}},
                                   r"model.head.heading must be one of \['sin_cos', 'axis_direction'\]"),
                                  (None, "model: expected a mapping for ModelConfig, got None")):
        path.write_text(json.dumps({**data, "model_config": model_config}))
        with pytest.raises(ValueError, match=r"its 'model_config' is not a model config \(" + problem):
            load_score_calibration(str(path), str(checkpoint), model)
    for car in ({"slope": 2.0}, {"slope": "2", "offset": 0, "detections": 1, "true_positives": 0}, [2.0, 0.5]):
        data["classes"]["car"] = car
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=r"class 'car' needs the finite numbers \['slope', 'offset', 'detections'"):
            load_score_calibration(str(path), str(checkpoint))
    data["classes"] = ["car"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'classes' must map class names to their maps"):
        load_score_calibration(str(path), str(checkpoint))
    del data["checkpoint_sha256"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"was fitted for another checkpoint \(sha256 None"):
        load_score_calibration(str(path), str(checkpoint))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a score calibration file"):
        load_score_calibration(str(path), str(checkpoint))
