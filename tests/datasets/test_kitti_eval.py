"""KITTI 2D / BEV / 3D AP and AOS (R40, R11): IoU against shapely, AP against hand-computed values under
the official threshold sampling and over every operating point, the official sampling against the
procedure redone threshold by threshold, the ignore rules, the projection of boxes into the image and
the observation angles against direct computations and real KITTI labels, and evaluate() end to end on
a tiny KITTI folder."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import KITTI_SCANS, REAL_DATA
from shapely.geometry import Polygon

from datasets.detection_matching import DetectionCurve
from datasets.kitti_dataset import KittiDataset, read_label_rows, split_ids
from datasets.kitti_eval import (
    KittiEvaluator,
    bev_iou,
    evaluate_detector_on_kitti,
    evaluate_kitti,
    evaluated_classes,
    format_table,
    frame_operating_points,
    image_boxes,
    iou_3d,
    observation_angles,
    r40_average_precision,
)
from detectors.centerpoint import CenterPoint
from detectors.config import ConfigError
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")

# A camera looking along LiDAR +x: cam x = -lidar y, cam y = -lidar z, cam z = lidar x.
VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
P2 = np.array([[700.0, 0.0, 620.0, 0.0], [0.0, 700.0, 187.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
CALIBRATION = {"Tr_velo_to_cam": VELO_TO_CAM, "R0_rect": np.eye(3), "P2": P2}


# --------------------------------------------------------------------------------------- helpers

def obj(name, x, y=0.0, height_px=60.0, occluded=0, truncated=0.0, size=(4.0, 1.8, 1.6)):
    """A labelled object: name, LiDAR box, 2D box (its own column of the image), truncation, occlusion."""
    return (name, [x, y, -1.0, *size, 0.3], [10.0 * x, 100.0, 10.0 * x + 40.0, 100.0 + height_px], truncated, occluded)


def frame(objects, dont_care=()):
    return {"id": "test", "annotations": {
        "names": [o[0] for o in objects], "boxes": np.array([o[1] for o in objects], dtype=float).reshape(-1, 7),
        "bbox_2d": np.array([o[2] for o in objects], dtype=float).reshape(-1, 4),
        "truncated": np.array([o[3] for o in objects], dtype=float), "occluded": np.array([o[4] for o in objects])},
        "dont_care_bbox_2d": np.array(dont_care, dtype=float).reshape(-1, 4), "calibration": CALIBRATION}


def detections(objects, scores):
    """Detections with the boxes and 2D boxes of ``objects`` (name, box, bbox_2d, ...) and the given scores."""
    return {"boxes": np.array([o[1] for o in objects], dtype=float).reshape(-1, 7), "scores": np.array(scores, float),
            "names": [o[0] for o in objects], "bbox_2d": np.array([o[2] for o in objects], dtype=float).reshape(-1, 4)}


def ap(metrics, class_name="Car", level="easy", metric="3d"):
    return metrics["ap"][class_name][metric][level]


# -------------------------------------------------------------------------------------------- IoU

def shapely_iou(a, b):
    """Oracle: BEV polygons from the box definition, shapely's intersection, z-extent overlap."""
    def polygon(box):
        x, y, _, dx, dy, _, yaw = box
        c, s = math.cos(yaw), math.sin(yaw)
        return Polygon([(x + c * u - s * v, y + s * u + c * v)
                        for u, v in ((dx / 2, dy / 2), (-dx / 2, dy / 2), (-dx / 2, -dy / 2), (dx / 2, -dy / 2))])
    area = polygon(a).intersection(polygon(b)).area
    height = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
    bev = area / (a[3] * a[4] + b[3] * b[4] - area)
    volume = area * height
    return bev, volume / (a[3] * a[4] * a[5] + b[3] * b[4] * b[5] - volume)


def test_bev_and_3d_iou_match_shapely():
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.uniform(-3, 3, (30, 2)), rng.uniform(-1, 1, 30), rng.uniform(0.5, 5, (30, 3)),
                             rng.uniform(-np.pi, np.pi, 30)])
    same = boxes[:3].copy()
    turned = boxes[3:6].copy()
    turned[:, 6] += np.pi / 2                      # crossing rectangles, and identical ones below
    others = np.vstack([boxes[6:], same, turned])
    got_bev, got_3d = bev_iou(boxes[:6], others), iou_3d(boxes[:6], others)
    for i in range(6):
        for j in range(len(others)):
            expected_bev, expected_3d = shapely_iou(boxes[i], others[j])
            assert got_bev[i, j] == pytest.approx(expected_bev, abs=1e-6), (i, j)
            assert got_3d[i, j] == pytest.approx(expected_3d, abs=1e-6), (i, j)
    assert np.diag(got_3d[:3, 24:27]) == pytest.approx(1.0)
    assert (got_3d > 0.05).sum() >= 10              # the random set does overlap


# ------------------------------------------------------------------------------------------- AP

def test_r40_interpolation_by_hand():
    # Operating points (recall, precision): (0.5, 1), (0.5, 0.5), (1, 2/3): 20 positions at 1, 20 at 2/3.
    assert r40_average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(100 * (20 + 40 / 3) / 40)
    assert r40_average_precision([0.2, 0.4, 0.4, 0.6], [1, 1, 2 / 3, 0.75]) == pytest.approx(100 * (16 + 8 * 0.75) / 40)
    assert r40_average_precision([], []) == 0.0


def statistics_at(threshold_score, overlaps, scores, gt_flags, det_flags, in_dont_care, iou_threshold):
    """Oracle: one frame's (TP, FP, FN) with the detections scoring >= threshold_score, the matching
    rules written out one detection at a time, in label order."""
    assigned = [False] * len(scores)
    tp = fn = 0
    for i, gt_flag in enumerate(gt_flags):
        if gt_flag == -1:
            continue
        chosen, chosen_is_ignored, best = None, False, 0.0
        for j, det_flag in enumerate(det_flags):
            if det_flag == -1 or assigned[j] or scores[j] < threshold_score or overlaps[j, i] <= iou_threshold:
                continue
            if det_flag == 0 and (chosen is None or chosen_is_ignored or overlaps[j, i] > best):
                chosen, chosen_is_ignored, best = j, False, overlaps[j, i]
            elif det_flag == 1 and chosen is None:
                chosen, chosen_is_ignored = j, True
        if chosen is None:
            fn += gt_flag == 0
            continue
        assigned[chosen] = True
        tp += gt_flag == 0 and det_flags[chosen] == 0
    fp = sum(1 for j in range(len(scores)) if det_flags[j] == 0 and not assigned[j] and not in_dont_care[j]
             and scores[j] >= threshold_score)
    return tp, fp, fn


def test_operating_points_equal_the_matching_redone_at_every_score():
    rng = np.random.default_rng(1)
    for _ in range(200):
        detections_count, truths_count = rng.integers(0, 9), rng.integers(0, 6)
        overlaps = rng.choice([0.0, 0.3, 0.6, 0.72, 0.8, 0.9], size=(detections_count, truths_count))
        scores = rng.integers(1, 6, detections_count) / 5.0          # ties on purpose
        gt_flags = rng.choice([-1, 0, 0, 1], truths_count).astype(np.int8)
        det_flags = rng.choice([-1, 0, 0, 0, 1], detections_count).astype(np.int8)
        in_dont_care = rng.random(detections_count) < 0.2
        levels, stats, fn_alone = frame_operating_points(overlaps, scores, gt_flags, det_flags, 0.7, in_dont_care)
        assert fn_alone == int((gt_flags == 0).sum())
        expected_levels = np.unique(scores[det_flags != -1])[::-1]
        assert levels.tolist() == expected_levels.tolist()
        for level, row in zip(levels, stats):
            assert tuple(row) == statistics_at(level, overlaps, scores, gt_flags, det_flags, in_dont_care, 0.7)


def test_two_ground_truths_three_detections_give_the_hand_computed_ap():
    cars = [obj("Car", 10.0), obj("Car", 20.0)]
    far = obj("Car", 40.0)
    # Scores 0.9 (TP), 0.8 (FP), 0.7 (TP): (r, p) = (1/2, 1), (1/2, 1/2), (1, 2/3) → AP = (20 + 20 * 2/3) / 40.
    metrics = evaluate_kitti([frame(cars)], [detections([cars[0], far, cars[1]], [0.9, 0.8, 0.7])],
                             sampling="every_point")
    for metric in ("bev", "3d"):
        for level in ("easy", "moderate", "hard"):
            assert ap(metrics, metric=metric, level=level) == pytest.approx(100 * (20 + 40 / 3) / 40)
            assert metrics["recall"]["Car"][metric][level] == 1.0
    assert metrics["num_gt"]["Car"] == {"easy": 2, "moderate": 2, "hard": 2}
    assert ap(metrics, "Pedestrian") is None and ap(metrics, "Cyclist") is None   # no ground truth

    # Five GTs over two frames; 0.9 TP, 0.8 TP, 0.7 FP, 0.6 TP: (.2, 1), (.4, 1), (.4, 2/3), (.6, 3/4).
    first, second = [obj("Car", 10.0), obj("Car", 20.0), obj("Car", 30.0)], [obj("Car", 10.0), obj("Car", 20.0)]
    metrics = evaluate_kitti([frame(first), frame(second)],
                             [detections([first[0], far, second[1]], [0.9, 0.7, 0.6]),
                              detections([second[0]], [0.8])], sampling="every_point")
    assert ap(metrics) == pytest.approx(100 * (16 + 8 * 0.75) / 40)
    assert metrics["recall"]["Car"]["3d"]["easy"] == pytest.approx(0.6)


def test_ground_truth_as_detections_scores_100_and_dropping_half_halves_recall():
    objects = [obj("Car", 10.0), obj("Car", 20.0, occluded=1), obj("Car", 30.0, height_px=30.0), obj("Car", 40.0),
               obj("Pedestrian", 12.0, size=(0.8, 0.6, 1.7)),
               obj("Pedestrian", 22.0, truncated=0.4, size=(0.8, 0.6, 1.7)),
               obj("Cyclist", 15.0, size=(1.8, 0.6, 1.7)), obj("Van", 50.0), obj("Truck", 60.0, size=(10, 2.5, 3))]
    truth = [frame(objects, dont_care=[[0, 0, 50, 50]])]
    metrics = evaluate_kitti(truth, [detections(objects, np.ones(len(objects)))], sampling="every_point")
    assert metrics["num_gt"] == {"Car": {"easy": 2, "moderate": 4, "hard": 4},
                                 "Pedestrian": {"easy": 1, "moderate": 1, "hard": 2},
                                 "Cyclist": {"easy": 1, "moderate": 1, "hard": 1}}
    for class_name in ("Car", "Pedestrian", "Cyclist"):
        for metric in ("bev", "3d"):
            assert set(metrics["ap"][class_name][metric].values()) == {100.0}, (class_name, metric)
    # Keep the 2 cars counted at easy, drop the others: recall 1 at easy, 1/2 at moderate and hard.
    kept = [objects[0], objects[3]]
    metrics = evaluate_kitti(truth, [detections(kept, [0.9, 0.8])], sampling="every_point")
    assert metrics["recall"]["Car"]["3d"] == {"easy": 1.0, "moderate": 0.5, "hard": 0.5}
    assert ap(metrics, level="easy") == 100.0 and ap(metrics, level="moderate") == pytest.approx(50.0)


def test_iou_threshold_is_per_class():
    # Shifted by 1 m along its 4 m length: IoU 3/5, below Car's 0.7, above Pedestrian's 0.5.
    for name, expected in (("Car", 0.0), ("Pedestrian", 100.0)):
        gt = obj(name, 10.0)
        shifted = (name, [10.0 + math.cos(0.3), math.sin(0.3), *gt[1][2:]], gt[2])   # yaw 0.3
        assert bev_iou(np.array([gt[1]]), np.array([shifted[1]]))[0, 0] == pytest.approx(0.6)
        metrics = evaluate_kitti([frame([gt])], [detections([shifted], [0.9])], sampling="every_point")
        assert ap(metrics, name) == expected and ap(metrics, name, metric="bev") == expected


def test_ignored_ground_truth_and_detections_are_neither_fp_nor_fn():
    valid, occluded, van = obj("Car", 10.0), obj("Car", 20.0, occluded=2), obj("Van", 30.0)
    truck = obj("Truck", 40.0, size=(4.0, 1.8, 1.6))
    truth = [frame([valid, occluded, van, truck], dont_care=[[500.0, 150.0, 600.0, 250.0]])]

    # Detections on the hard-only car and on the Van are assigned to ignored GTs: no FP at easy.
    def as_car(labelled):
        return ("Car", *labelled[1:])
    metrics = evaluate_kitti(truth, [detections([valid, as_car(occluded), as_car(van)], [0.7, 0.9, 0.8])],
                             sampling="every_point")
    assert ap(metrics, level="easy") == 100.0 and metrics["num_gt"]["Car"]["easy"] == 1
    assert ap(metrics, level="hard") == 100.0 and metrics["num_gt"]["Car"]["hard"] == 2
    # Missing the hard-only car is no FN at easy, but one at hard.
    metrics = evaluate_kitti(truth, [detections([valid], [0.9])], sampling="every_point")
    assert metrics["recall"]["Car"]["3d"]["easy"] == 1.0 and metrics["recall"]["Car"]["3d"]["hard"] == 0.5

    # A Car detection on a Truck (not a neighbouring class) is an FP: (0, 0) then (1, 1/2) → AP 50.
    metrics = evaluate_kitti(truth, [detections([valid, as_car(truck)], [0.8, 0.9])], sampling="every_point")
    assert ap(metrics) == pytest.approx(50.0)

    # A Car detection with no GT, inside the DontCare box: an FP in BEV/3D as in the official code,
    # ignored when the 2D DontCare rule is applied to BEV/3D too.
    in_dont_care = ("Car", [60.0, 0.0, -1.0, 4.0, 1.8, 1.6, 0.3], [510.0, 160.0, 590.0, 240.0])
    metrics = evaluate_kitti(truth, [detections([valid, in_dont_care], [0.8, 0.9])], sampling="every_point")
    assert ap(metrics) == pytest.approx(50.0)
    metrics = evaluate_kitti(truth, [detections([valid, in_dont_care], [0.8, 0.9])], dont_care_in_3d=True,
                             sampling="every_point")
    assert ap(metrics) == 100.0 and ap(metrics, metric="bev") == 100.0

    # A detection lower than 40 px is ignored at easy (no FP), counted at moderate (>= 25 px).
    small = ("Car", [60.0, 0.0, -1.0, 4.0, 1.8, 1.6, 0.3], [700.0, 100.0, 740.0, 130.0])
    metrics = evaluate_kitti(truth, [detections([valid, small], [0.8, 0.9])], sampling="every_point")
    assert ap(metrics, level="easy") == 100.0 and ap(metrics, level="moderate") == pytest.approx(50.0)


# ------------------------------------------------------------------------------------ projection

def camera_label_box_2d(row, calibration, width, height):
    """Oracle: the KITTI devkit's box corners in the rectified camera frame (bottom centre, ry about
    camera y), projected with P2 and clipped to the image."""
    h, w, length = row["hwl"]
    x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
    y = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
    z = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
    ry = row["rotation_y"]
    rotation = np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]])
    corners = rotation @ np.vstack([x, y, z]) + np.array(row["location"])[:, None]
    projected = calibration["P2"] @ np.vstack([corners, np.ones(8)])
    u, v = projected[0] / projected[2], projected[1] / projected[2]
    return np.array([np.clip(u.min(), 0, width - 1), np.clip(v.min(), 0, height - 1),
                     np.clip(u.max(), 0, width - 1), np.clip(v.max(), 0, height - 1)])


def test_projection_of_a_box_matches_a_direct_computation():
    # In front: the pinhole projection of the 8 corners, computed here from the camera axes.
    box = np.array([[12.0, 2.0, -0.5, 4.0, 2.0, 1.5, 0.4]])
    got, inside = image_boxes(box, CALIBRATION, (1242, 375))
    c, s = math.cos(0.4), math.sin(0.4)
    corners = [(12 + c * u - s * v, 2 + s * u + c * v, -0.5 + h)
               for u in (-2, 2) for v in (-1, 1) for h in (-0.75, 0.75)]
    us = [620 + 700 * -py / px for px, py, _ in corners]
    vs = [187 + 700 * -pz / px for px, _, pz in corners]
    assert inside[0] and got[0] == pytest.approx([min(us), min(vs), max(us), max(vs)], abs=1e-9)

    # Across the camera plane: cut at 0.1 m, clipped at the image border; behind or beside: not in the image.
    boxes = np.array([[0.5, 1.0, 0.0, 4.0, 1.8, 1.5, 0.0], [-10.0, 0.0, 0.0, 4.0, 1.8, 1.5, 0.0],
                      [3.0, 30.0, 0.0, 4.0, 1.8, 1.5, 0.0]])
    got, inside = image_boxes(boxes, CALIBRATION, (1242, 375))
    assert inside.tolist() == [True, False, False]
    assert got[0, 0] == 0.0 and got[0, 2] > 0 and got[0, 3] == 374.0 and got[1:].tolist() == [[0] * 4] * 2


def lidar_box_2d(box, calibration, width, height):
    """Oracle: the corners of a LiDAR box taken to the rectified camera frame with the calib matrices
    and projected with P2 (for boxes wholly in front of the camera), clipped to the image."""
    x, y, z, dx, dy, dz, yaw = (float(v) for v in box[:7])
    c, s = math.cos(yaw), math.sin(yaw)
    corners = np.array([[x + c * u - s * v, y + s * u + c * v, z + h, 1.0]
                        for u in (-dx / 2, dx / 2) for v in (-dy / 2, dy / 2) for h in (-dz / 2, dz / 2)])
    camera = calibration["R0_rect"] @ (calibration["Tr_velo_to_cam"] @ corners.T)
    projected = calibration["P2"] @ np.vstack([camera, np.ones(8)])
    u, v = projected[0] / projected[2], projected[1] / projected[2]
    return np.array([np.clip(u.min(), 0, width - 1), np.clip(v.min(), 0, height - 1),
                     np.clip(u.max(), 0, width - 1), np.clip(v.max(), 0, height - 1)])


def real_frames_and_labelled_rows():
    """(meta, the label rows other than DontCare, in file order) for each real KITTI frame."""
    dataset = KittiDataset(str(REAL_DATA / "kitti"))
    for index in range(len(dataset)):
        meta = dataset[index]["meta"]
        rows = read_label_rows(str(REAL_DATA / "kitti" / "label_2" / f"{meta['id']}.txt"))
        yield meta, [r for r in rows if r["name"] != "DontCare"]


def test_projection_matches_direct_computations_on_real_frames(real_file):
    real_file(KITTI_SCANS[0])
    checked = 0
    for meta, rows in real_frames_and_labelled_rows():
        assert not meta["image_size_known"] and meta["image_size"] == (1242, 375)
        boxes = meta["annotations"]["boxes"]
        got, inside = image_boxes(boxes, meta["calibration"], meta["image_size"])
        for box, row, box_2d in zip(boxes, rows, got):
            assert box_2d == pytest.approx(lidar_box_2d(box, meta["calibration"], 1242, 375), abs=1e-6)
            # The label's own box, upright in the camera frame: the LiDAR-frame box is upright about
            # LiDAR z, ~0.5 degrees away, which moves the corners of a 2 m object by 1-2 cm (~1 px).
            assert box_2d == pytest.approx(camera_label_box_2d(row, meta["calibration"], 1242, 375), abs=1.5)
            # and near the annotated 2D box
            assert np.abs(box_2d - np.array(row["bbox_2d"])).max() < 15.0
            checked += 1
        assert inside.all()
    assert checked == 4


def test_real_frames_ground_truth_as_detections_and_half_of_them(real_file):
    real_file(KITTI_SCANS[0])
    dataset = KittiDataset(str(REAL_DATA / "kitti"))
    truth = [dataset[i]["meta"] for i in range(len(dataset))]

    def as_detections(keep):
        out = []
        for meta, kept in zip(truth, keep):
            annotations = meta["annotations"]
            out.append({"boxes": annotations["boxes"][kept], "scores": np.ones(int(kept.sum())),
                        "names": [n for n, k in zip(annotations["names"], kept) if k]})   # 2D boxes projected
        return out

    everything = [np.ones(len(m["annotations"]["names"]), bool) for m in truth]
    metrics = evaluate_kitti(truth, as_detections(everything), sampling="every_point")
    assert metrics["num_detections_outside_image"] == 0 and metrics["frames_with_assumed_image_size"] == 2
    # Counted here (oracle: the difficulty table on the raw label fields): the pedestrian of 000000 at
    # every level; the car of 000001 is 21.6 px high and the cyclist's occlusion is 3: never counted.
    expected = {}
    for meta in truth:
        for row in read_label_rows(str(REAL_DATA / "kitti" / "label_2" / f"{meta['id']}.txt")):
            for level, (min_height, occlusion, truncation) in zip(("easy", "moderate", "hard"),
                                                                  ((40, 0, 0.15), (25, 1, 0.3), (25, 2, 0.5))):
                counted = (row["bbox_2d"][3] - row["bbox_2d"][1] > min_height and row["occluded"] <= occlusion
                           and row["truncated"] <= truncation)
                if row["name"] in ("Car", "Pedestrian", "Cyclist"):
                    expected.setdefault(row["name"], {}).setdefault(level, 0)
                    expected[row["name"]][level] += counted
    assert metrics["num_gt"] == expected == {"Pedestrian": {"easy": 1, "moderate": 1, "hard": 1},
                                             "Car": {"easy": 0, "moderate": 0, "hard": 0},
                                             "Cyclist": {"easy": 0, "moderate": 0, "hard": 0}}
    for metric in ("bev", "3d"):
        assert metrics["ap"]["Pedestrian"][metric] == {"easy": 100.0, "moderate": 100.0, "hard": 100.0}
        assert metrics["ap"]["Car"][metric] == {"easy": None, "moderate": None, "hard": None}
    # Every second labelled object dropped (the pedestrian among them): its recall and AP fall to 0.
    order = np.cumsum([0] + [len(k) for k in everything])
    half = [np.arange(order[i], order[i + 1]) % 2 == 1 for i in range(len(truth))]
    metrics = evaluate_kitti(truth, as_detections(half), sampling="every_point")
    assert metrics["recall"]["Pedestrian"]["3d"] == {"easy": 0.0, "moderate": 0.0, "hard": 0.0}
    assert metrics["ap"]["Pedestrian"]["3d"]["moderate"] == 0.0 and metrics["num_detections"] == 2


# ----------------------------------------------------------------------------------- bad inputs

CALIB_TEXT = ("P2: 700 0 620 0 0 700 187 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n"
              "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n")
LABELS = ["Car 0.00 0 0.0 500.0 150.0 600.0 230.0 1.5 1.8 4.0 0.5 1.2 15.0 0.1",
          "Pedestrian 0.00 0 0.0 700.0 140.0 730.0 240.0 1.7 0.6 0.8 -2.0 1.4 12.0 0.0",
          "DontCare -1 -1 -10 100.0 150.0 200.0 200.0 -1 -1 -1 -1000 -1000 -1000 -10"]


def write_kitti(root: Path, frames: int = 2, split: str | None = "val", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for folder in ("velodyne", "label_2", "calib"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        points = np.column_stack([rng.uniform(2, 40, (500, 1)), rng.uniform(-20, 20, (500, 1)),
                                  rng.uniform(-2, 1, (500, 1)), rng.uniform(0, 1, (500, 1))]).astype(np.float32)
        points.tofile(root / "velodyne" / f"{i:06d}.bin")
        (root / "label_2" / f"{i:06d}.txt").write_text("\n".join(LABELS) + "\n")
        (root / "calib" / f"{i:06d}.txt").write_text(CALIB_TEXT)
    if split:
        (root / "ImageSets").mkdir(exist_ok=True)
        (root / "ImageSets" / f"{split}.txt").write_text("".join(f"{i:06d}\n" for i in range(frames)))


def test_bad_inputs_get_errors_naming_the_file_or_field(tmp_path):
    write_kitti(tmp_path, frames=1)
    meta = KittiDataset(str(tmp_path))[0]["meta"]
    assert meta["annotations"]["names"] == ["Car", "Pedestrian"] and meta["dont_care"] == 1
    assert meta["dont_care_bbox_2d"].tolist() == [[100.0, 150.0, 200.0, 200.0]]
    assert meta["annotations"]["bbox_2d"][1].tolist() == [700.0, 140.0, 730.0, 240.0]
    assert meta["image_size"] == (1242, 375) and not meta["image_size_known"]
    (tmp_path / "image_2").mkdir()
    png_header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (1224).to_bytes(4, "big") + (370).to_bytes(4, "big")
    (tmp_path / "image_2" / "000000.png").write_bytes(png_header)
    meta = KittiDataset(str(tmp_path))[0]["meta"]
    assert meta["image_size"] == (1224, 370) and meta["image_size_known"]
    (tmp_path / "image_2" / "000000.png").write_bytes(b"GIF89a" + bytes(20))
    with pytest.raises(ValueError, match=r"image_2/000000.png: not a PNG image"):
        KittiDataset(str(tmp_path))[0]
    (tmp_path / "image_2" / "000000.png").unlink()

    (tmp_path / "label_2" / "000000.txt").write_text(LABELS[0] + "\nCar 0.00 0 0.0 1 2 3\n")
    with pytest.raises(ValueError, match=r"label_2/000000.txt:2: expected 15 fields \(16 with a score\), got 7"):
        KittiDataset(str(tmp_path))[0]
    (tmp_path / "label_2" / "000000.txt").write_text(LABELS[0].replace("0.00 0", "0.00 half") + "\n")
    with pytest.raises(ValueError, match=r"label_2/000000.txt:1: fields 2-15 must be numbers"):
        KittiDataset(str(tmp_path))[0]
    (tmp_path / "label_2" / "000000.txt").write_text(LABELS[0] + "\n")
    (tmp_path / "calib" / "000000.txt").write_text(CALIB_TEXT.replace("187", "x"))
    with pytest.raises(ValueError, match=r"calib/000000.txt:1: P2 has a value that is not a number"):
        KittiDataset(str(tmp_path))[0]
    (tmp_path / "calib" / "000000.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"KITTI calibration file not found: .*calib/000000.txt"):
        KittiDataset(str(tmp_path))[0]
    (tmp_path / "ImageSets" / "val.txt").write_text("000000\n000007\n")
    with pytest.raises(FileNotFoundError, match=r"val.txt names frame '000007'"):
        split_ids(str(tmp_path), "val")
    with pytest.raises(ValueError, match=r"unknown split 'test': .*ImageSets has val \(or 'all' for every scan\)"):
        split_ids(str(tmp_path), "test")    # was None (every frame, training frames included)

    (tmp_path / "calib" / "000000.txt").write_text(CALIB_TEXT.replace("P2", "P1"))
    meta = KittiDataset(str(tmp_path))[0]["meta"]
    box = {"boxes": np.zeros((1, 7)) + 1, "scores": [0.5], "names": ["Car"]}
    with pytest.raises(ValueError, match=r"frame '000000'.*calibration lacks P2"):
        evaluate_kitti([meta], [box])
    with pytest.raises(ValueError, match="ground_truth has 1 frames, detections 0"):
        evaluate_kitti([meta], [])
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes \(1, 7\), scores \(2,\) and 1 names disagree"):
        evaluate_kitti([meta], [dict(box, scores=[0.5, 0.4])])
    with pytest.raises(ValueError, match=r"classes: 'Van' is not a KITTI evaluation class"):
        evaluate_kitti([meta], [box], classes=["Van"])
    with pytest.raises(ValueError, match=r"ground_truth\[0\].*annotations"):
        evaluate_kitti([{"id": "x"}], [box])
    with pytest.raises(ValueError, match="none of the class names"):
        evaluated_classes(["car_x"])
    assert evaluated_classes(["car", "truck", "pedestrian"]) == ["Car", "Pedestrian"]
    with pytest.raises(ConfigError,
                       match=r"dataset.type must be one of \['nuscenes', 'kitti', 'custom'\], got 'waymo'"):
        load_centerpoint_config(CONFIG, ["dataset.type=waymo"])


# ------------------------------------------------------------------------------------ end to end

@pytest.fixture
def one_thread():
    """The tiny model's matrices are too small to share: on a busy machine several intra-op threads
    wait on each other (milliseconds per 300 x 8 product), one thread does not."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_evaluate_on_a_tiny_kitti_folder_writes_the_metrics(tmp_path, one_thread):
    write_kitti(tmp_path / "kitti", frames=2)
    config = load_centerpoint_config(CONFIG, [
        f"dataset={{type: kitti, root: {tmp_path / 'kitti'}, fov_crop: false}}", "model.num_point_features=4",
        "model.head.class_names=[Car, Pedestrian, Cyclist]", "model.head.class_groups=[[Car], [Pedestrian, Cyclist]]",
        "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8", "model.bev.layer_nums=[1, 1]",
        "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]", "model.head.shared_channels=8",
        "model.head.head_channels=8", "model.decode.top_k=50", "model.decode.max_boxes=50", "train.gt_sampling=null"])
    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": CenterPoint(config.model).state_dict()}, checkpoint)
    metrics = evaluate(config, str(checkpoint), str(tmp_path / "eval"))
    written = json.loads((tmp_path / "eval" / "metrics_kitti.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert {"protocol", "ap", "recall", "num_gt", "num_frames", "iou_thresholds"} <= set(written)
    assert written["num_frames"] == 2 and written["classes"] == ["Car", "Pedestrian", "Cyclist"]
    assert written["num_gt"]["Car"] == {"easy": 2, "moderate": 2, "hard": 2}
    for class_name in ("Car", "Pedestrian"):
        for metric in ("bev", "3d"):
            for level in ("easy", "moderate", "hard"):
                assert 0.0 <= written["ap"][class_name][metric][level] <= 100.0
    assert written["ap"]["Cyclist"]["3d"]["easy"] is None
    table = format_table(metrics)
    assert "Pedestrian" in table and "moderate" in table and "3D" in table
    with pytest.raises(ValueError, match="KITTI scans have 4 point features"):
        evaluate_detector_on_kitti(None, str(tmp_path / "kitti"), "val", ["Car"], num_point_features=5)


def test_evaluate_detector_on_kitti_rejects_labels_and_boxes_that_name_no_class_or_place(tmp_path):
    write_kitti(tmp_path, frames=1)
    box = [[10.0, 0.0, -1.0, 4.0, 1.8, 1.6, 0.0]]

    def predicting(labels, boxes=box):
        return lambda points: {"boxes": np.array(boxes), "scores": np.array([0.9]), "labels": np.array(labels)}

    found = evaluate_detector_on_kitti(predicting([0]), str(tmp_path), "val", ["Car", "Cyclist"])
    assert found["num_detections"] == 1 and found["classes"] == ["Car", "Cyclist"]
    # -1 once indexed the class list from its end: a Cyclist, silently
    with pytest.raises(ValueError, match=r"labels must be indices into \['Car', 'Cyclist'\], got \[-1\]"):
        evaluate_detector_on_kitti(predicting([-1]), str(tmp_path), "val", ["Car", "Cyclist"])
    with pytest.raises(ValueError, match=r"labels must be indices"):
        evaluate_detector_on_kitti(predicting([0.5]), str(tmp_path), "val", ["Car", "Cyclist"])
    # a NaN box projects nowhere: it was counted among the detections outside the image
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes have non-finite values"):
        evaluate_detector_on_kitti(predicting([0], [[np.nan, 0, 0, 4, 1.8, 1.6, 0]]), str(tmp_path), "val", ["Car"])


# ------------------------------------------------------------------- the official sampling, AOS, R11

def cars_in_frames(count, per_frame=10):
    """``count`` easy cars, ``per_frame`` to a frame, each with its own 2D box column."""
    frames = []
    for start in range(0, count, per_frame):
        frames.append([obj("Car", 10.0 + 5.0 * k) for k in range(min(per_frame, count - start))])
    return frames


def test_1000_cars_449_found_at_precision_1_score_45_officially_and_42_5_over_every_point():
    # Official: the 449 matched scores fill slots 0..17 at the targets k/40 <= 0.425 and the last one
    # slot 18 (the end slot): R40 = 18/40. Every point: recall 0.449 reaches the positions 1/40..17/40.
    # R11: slots 0, 4, .., 16 (5 of 11) officially; recalls 0, 0.1, .., 0.4 over every point.
    scenes = cars_in_frames(1000)
    found, remaining, scores = [], 449, iter(1.0 - np.arange(1000) / 1000.0)
    for objects in scenes:
        found.append(objects[:max(0, min(len(objects), remaining))])
        remaining -= len(found[-1])
    assert sum(len(f) for f in found) == 449
    truth = [frame(objects) for objects in scenes]
    dets = [detections(kept, [next(scores) for _ in kept]) for kept in found]
    official = evaluate_kitti(truth, dets, classes=["Car"])
    every = evaluate_kitti(truth, dets, classes=["Car"], sampling="every_point")
    assert official["sampling"] == "official" and official["num_gt"]["Car"]["easy"] == 1000
    assert official["num_thresholds"]["Car"]["3d"]["easy"] == 19
    for kind in ("bbox", "bev", "3d", "aos"):
        for level in ("easy", "moderate", "hard"):
            assert ap(official, metric=kind, level=level) == pytest.approx(45.0)
            assert ap(every, metric=kind, level=level) == pytest.approx(42.5)
            assert official["ap_r11"]["Car"][kind][level] == pytest.approx(500 / 11)
            assert every["ap_r11"]["Car"][kind][level] == pytest.approx(500 / 11)
    assert official["recall"]["Car"]["3d"]["easy"] == pytest.approx(0.449)


def test_one_ground_truth_scores_0_at_official_r40_and_few_score_at_most_2_5_each():
    car = obj("Car", 10.0)
    metrics = evaluate_kitti([frame([car])], [detections([car], [0.9])])
    every = evaluate_kitti([frame([car])], [detections([car], [0.9])], sampling="every_point")
    for kind in ("bbox", "bev", "3d", "aos"):
        assert ap(metrics, metric=kind) == 0.0 and metrics["ap_r11"]["Car"][kind]["easy"] == pytest.approx(100 / 11)
        assert ap(every, metric=kind) == 100.0 and every["ap_r11"]["Car"][kind]["easy"] == 100.0
    assert metrics["recall"]["Car"]["3d"]["easy"] == 1.0
    # Two found perfectly: slots 0 and 1 → 1/40; four: slots 0..3 → 3/40.
    for count, expected in ((2, 2.5), (4, 7.5)):
        cars = cars_in_frames(count)[0]
        metrics = evaluate_kitti([frame(cars)], [detections(cars, np.linspace(0.9, 0.5, count))])
        assert ap(metrics) == pytest.approx(expected) and ap(metrics, metric="bbox") == pytest.approx(expected)
        assert "fewer than 40 counted GTs" in format_table(metrics)


def test_r11_and_r40_by_hand_with_false_positives():
    # 5 GTs; scores 0.9 TP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP, 0.4 TP.
    # Operating points (r, p): (.2, 1) (.2, 1/2) (.4, 2/3) (.6, 3/4) (.6, 3/5) (.8, 2/3).
    # Official: thresholds .9 .7 .6 .4 → precisions 1, 2/3, 3/4, 2/3 → slots 1, 3/4, 3/4, 2/3, 0...
    #   R40 = (3/4 + 3/4 + 2/3) / 40; R11 = slot 0 / 11.
    # Every point: R40 = (8 × 1 + 16 × 3/4 + 8 × 2/3) / 40; R11 = (3 × 1 + 4 × 3/4 + 2 × 2/3) / 11.
    cars = cars_in_frames(5)[0]
    far = [obj("Car", 80.0), obj("Car", 90.0)]
    found = [cars[0], far[0], cars[1], cars[2], far[1], cars[3]]
    truth, dets = [frame(cars)], [detections(found, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])]
    official = evaluate_kitti(truth, dets, classes=["Car"])
    every = evaluate_kitti(truth, dets, classes=["Car"], sampling="every_point")
    for kind in ("bbox", "bev", "3d"):
        assert ap(official, metric=kind) == pytest.approx(100 * (0.75 + 0.75 + 2 / 3) / 40)
        assert official["ap_r11"]["Car"][kind]["easy"] == pytest.approx(100 / 11)
        assert ap(every, metric=kind) == pytest.approx(100 * (8 + 12 + 16 / 3) / 40)
        assert every["ap_r11"]["Car"][kind]["easy"] == pytest.approx(100 * (3 + 3 + 4 / 3) / 11)


def turned(objects, angle):
    return [(o[0], [*o[1][:6], o[1][6] + angle], *o[2:]) for o in objects]


def test_aos_equals_2d_ap_with_exact_headings_and_falls_with_wrong_ones():
    cars = cars_in_frames(60, per_frame=20)
    truth = [frame(objects) for objects in cars]
    far = obj("Car", 200.0)
    for sampling in ("official", "every_point"):
        def run(angle):
            dets = [detections(turned(objects[:15], angle) + [far], np.r_[np.linspace(0.9, 0.2, 15), 0.5])
                    for objects in cars]
            return evaluate_kitti(truth, dets, classes=["Car"], sampling=sampling)
        exact, flipped, across = run(0.0), run(math.pi), run(math.pi / 2)
        expected = ap(exact, metric="bbox")
        assert 50.0 < expected < 75.0
        for level in ("easy", "moderate", "hard"):
            assert ap(exact, metric="aos", level=level) == pytest.approx(ap(exact, metric="bbox", level=level))
            assert exact["ap_r11"]["Car"]["aos"][level] == pytest.approx(exact["ap_r11"]["Car"]["bbox"][level])
        # The 2D boxes are given, so the 2D matching is the same; (1 + cos Δα) / 2 is 0 flipped, 1/2 across.
        assert ap(flipped, metric="bbox") == expected and ap(flipped, metric="aos") == 0.0
        assert ap(across, metric="aos") == pytest.approx(expected / 2)
        assert ap(flipped, metric="bev") == ap(exact, metric="bev")          # a box turned by π is the same box


def test_observation_angles_match_the_labelled_alpha_of_real_frames(real_file):
    real_file(KITTI_SCANS[0])
    checked = 0
    for meta, rows in real_frames_and_labelled_rows():
        alphas = observation_angles(meta["annotations"]["boxes"], meta["calibration"])
        for alpha, row in zip(alphas, rows):
            difference = (alpha - row["alpha"] + math.pi) % (2 * math.pi) - math.pi
            assert abs(difference) < 0.02, (meta["id"], row["name"], alpha, row["alpha"])
            checked += 1
    assert checked == 4


def test_real_frames_one_pedestrian_scores_0_under_the_official_r40(real_file):
    real_file(KITTI_SCANS[0])
    dataset = KittiDataset(str(REAL_DATA / "kitti"))
    truth = [dataset[i]["meta"] for i in range(len(dataset))]
    dets = [{"boxes": m["annotations"]["boxes"], "scores": np.ones(len(m["annotations"]["names"])),
             "names": m["annotations"]["names"]} for m in truth]
    metrics = evaluate_kitti(truth, dets)
    assert metrics["num_gt"]["Pedestrian"] == {"easy": 1, "moderate": 1, "hard": 1}
    for kind in ("bbox", "bev", "3d", "aos"):
        assert metrics["ap"]["Pedestrian"][kind] == {"easy": 0.0, "moderate": 0.0, "hard": 0.0}
        assert metrics["ap_r11"]["Pedestrian"][kind]["moderate"] == pytest.approx(100 / 11)
    assert metrics["recall"]["Pedestrian"]["3d"]["moderate"] == 1.0


def official_ap_oracle(frames, iou_threshold):
    """Oracle: the official procedure written out as the benchmark states it. Thresholds from a first
    pass (each GT takes the highest-scoring detection above the IoU threshold), 41-point sampling of
    them, the whole matching redone at each threshold (:func:`statistics_at`), 41 slots."""
    matched, num_gt = [], 0
    for overlaps, scores, gt_flags, det_flags, _ in frames:
        num_gt += int((gt_flags == 0).sum())
        taken = set()
        for i, gt_flag in enumerate(gt_flags):
            if gt_flag == -1:
                continue
            best, best_score = None, -1e7
            for j, det_flag in enumerate(det_flags):
                if det_flag != -1 and j not in taken and overlaps[j, i] > iou_threshold and scores[j] > best_score:
                    best, best_score = j, scores[j]
            if best is not None:
                taken.add(best)
                if gt_flag == 0 and det_flags[best] == 0:
                    matched.append(scores[best])
    matched = sorted(matched, reverse=True)
    thresholds, current = [], 0.0
    for i, score in enumerate(matched):
        left = (i + 1) / num_gt
        right = (i + 2) / num_gt if i < len(matched) - 1 else left
        if right - current < current - left and i < len(matched) - 1:
            continue
        thresholds.append(score)
        current += 1 / 40
    precision = np.zeros(41)
    for k, threshold in enumerate(thresholds):
        tp = fp = 0
        for overlaps, scores, gt_flags, det_flags, in_dont_care in frames:
            t, f, _ = statistics_at(threshold, overlaps, scores, gt_flags, det_flags, in_dont_care, iou_threshold)
            tp, fp = tp + t, fp + f
        precision[k] = tp / (tp + fp)
    for k in range(41):
        precision[k] = precision[k:].max()
    return 100 * precision[1:].sum() / 40, 100 * precision[::4].sum() / 11


def test_official_sampling_equals_the_procedure_redone_threshold_by_threshold():
    rng = np.random.default_rng(7)
    for trial in range(60):
        frames, curve = [], DetectionCurve(0.7)
        for _ in range(rng.integers(1, 8)):
            detections_count, truths_count = rng.integers(0, 9), rng.integers(0, 7)
            overlaps = rng.choice([0.0, 0.3, 0.6, 0.72, 0.8, 0.9], size=(detections_count, truths_count))
            scores = rng.integers(1, 30, detections_count) / 30.0       # ties on purpose
            gt_flags = rng.choice([-1, 0, 0, 0, 1], truths_count).astype(np.int8)
            det_flags = rng.choice([-1, 0, 0, 0, 1], detections_count).astype(np.int8)
            in_dont_care = rng.random(detections_count) < 0.1
            frames.append((overlaps, scores, gt_flags, det_flags, in_dont_care))
            curve.add_frame(overlaps, scores, gt_flags, det_flags, in_dont_care)
        result = curve.average_precision("official")
        if result["num_gt"] == 0:
            assert result["r40"] is None
            continue
        r40, r11 = official_ap_oracle(frames, 0.7)
        assert 100 * result["r40"] == pytest.approx(r40, abs=1e-9), trial
        assert 100 * result["r11"] == pytest.approx(r11, abs=1e-9), trial


def test_kitti_evaluator_contract_gives_what_evaluate_kitti_gives(tmp_path):
    write_kitti(tmp_path, frames=2)
    dataset = KittiDataset(str(tmp_path))
    evaluator = KittiEvaluator(["Car", "Pedestrian", "Cyclist", "Van"])
    truths, found = [], []
    for index in range(len(dataset)):
        frame = dataset[index]
        count = len(frame["gt_boxes"])
        evaluator.add_frame(frame["meta"]["id"], frame)
        evaluator.process(frame["meta"]["id"], torch.from_numpy(frame["gt_boxes"]), torch.full((count,), 0.8),
                          torch.from_numpy(frame["gt_labels"]))
        truths.append(frame["meta"])
        found.append({"boxes": frame["gt_boxes"], "scores": np.full(count, 0.8),
                      "names": [["Car", "Pedestrian", "Cyclist"][label] for label in frame["gt_labels"]]})
    metrics = evaluator.evaluate(str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "metrics_kitti.json").read_text()) == json.loads(json.dumps(metrics))
    assert json.loads(json.dumps(metrics)) == json.loads(json.dumps(evaluate_kitti(truths, found)))
    # Two cars found with tied scores: the two matched scores fill slots 0 and 1 → 2.5 at R40.
    assert metrics["num_gt"]["Car"]["moderate"] == 2 and metrics["classes"] == ["Car", "Pedestrian", "Cyclist"]
    assert ap(metrics, metric="3d", level="moderate") == pytest.approx(2.5)
    with pytest.raises(ValueError, match="frame '000000' processed twice"):
        evaluator.process("000000", np.zeros((0, 7)), [], [])
    with pytest.raises(ValueError, match=r"labels must be indices into \['Car', 'Pedestrian', 'Cyclist', 'Van'\]"):
        evaluator.process("x", np.ones((1, 7)), [0.5], [4])
    with pytest.raises(ValueError, match=r"frames processed without ground truth: \['y'\]"):
        evaluator.process("y", np.zeros((0, 7)), [], [])
        evaluator.evaluate()
