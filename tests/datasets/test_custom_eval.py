"""The evaluator for user data: IoU AP and centre-distance AP against hand-computed values, the
centre-distance AP against the nuScenes devkit's own accumulate / calc_ap on the same boxes, GT as
detections, IoU thresholds per class, the evaluator contract's errors, and the written file."""
import json
import math

import numpy as np
import pytest
import torch

from datasets.custom_eval import CustomEvaluator, format_table


def box(x, y=0.0, z=0.0, size=(4.0, 2.0, 1.5), yaw=0.0):
    return [x, y, z, *size, yaw, 0.0, 0.0]


def single_class(truth_frames, detection_frames, **options):
    """Metrics of one class 'car': truth_frames per frame a list of boxes; detection_frames per frame
    a list of (box, score)."""
    evaluator = CustomEvaluator(["car"], **options)
    for index, (truth, found) in enumerate(zip(truth_frames, detection_frames)):
        evaluator.add_ground_truth(f"f{index}", np.array(truth, float).reshape(-1, 9), np.zeros(len(truth)))
        evaluator.process(f"f{index}", np.array([b for b, _ in found], float).reshape(-1, 9),
                          [s for _, s in found], np.zeros(len(found)))
    return evaluator.evaluate()


def test_ground_truth_as_detections_gives_ap_1_everywhere():
    rng = np.random.default_rng(0)
    evaluator = CustomEvaluator(["car", "pedestrian", "cyclist"], iou_thresholds={"car": 0.7, "pedestrian": 0.5,
                                                                                  "cyclist": 0.5})
    for index in range(5):
        count = int(rng.integers(1, 6))
        boxes = np.column_stack([rng.uniform(-40, 40, (count, 2)) + np.arange(count)[:, None] * 100,
                                 rng.uniform(-1, 1, count), rng.uniform(0.5, 4, (count, 3)),
                                 rng.uniform(-np.pi, np.pi, count), np.zeros((count, 2))])
        labels = rng.integers(0, 2, count)                     # no cyclist at all
        evaluator.add_ground_truth(index, boxes, labels)
        evaluator.process(index, torch.from_numpy(boxes).float(), torch.rand(count), torch.from_numpy(labels))
    metrics = evaluator.evaluate()
    for name in ("car", "pedestrian"):
        assert metrics["num_gt"][name] > 0
        assert metrics["ap"][name] == {"bev": 1.0, "3d": 1.0} and metrics["ap_r11"][name] == {"bev": 1.0, "3d": 1.0}
        assert metrics["distance_ap"][name] == pytest.approx({"0.5": 1.0, "1.0": 1.0, "2.0": 1.0, "4.0": 1.0})
        assert metrics["mean_distance_ap"][name] == pytest.approx(1.0) and metrics["recall"][name]["3d"] == 1.0
    assert metrics["ap"]["cyclist"] == {"bev": None, "3d": None} and metrics["num_gt"]["cyclist"] == 0
    assert metrics["mean_distance_ap"]["cyclist"] is None
    assert metrics["mean_ap"] == pytest.approx({"bev": 1.0, "3d": 1.0, "distance": 1.0})
    assert "pedestrian" in format_table(metrics)


def test_iou_ap_by_hand():
    # 2 GTs; scores 0.9 TP, 0.8 FP, 0.7 TP: (r, p) = (1/2, 1) (1/2, 1/2) (1, 2/3).
    # R40 = (20 × 1 + 20 × 2/3) / 40; R11 = (6 × 1 + 5 × 2/3) / 11 (r = 0 .. 0.5, then 0.6 .. 1).
    truth = [[box(0.0), box(20.0)]]
    found = [[(box(0.0), 0.9), (box(50.0), 0.8), (box(20.0), 0.7)]]
    metrics = single_class(truth, found)
    assert metrics["ap"]["car"]["bev"] == pytest.approx((20 + 40 / 3) / 40)
    assert metrics["ap"]["car"]["3d"] == pytest.approx((20 + 40 / 3) / 40)
    assert metrics["ap_r11"]["car"]["3d"] == pytest.approx((6 + 10 / 3) / 11)
    # The same under KITTI's official sampling: thresholds 0.9 and 0.7 in slots 0 and 1: R40 = (2/3) / 40.
    official = single_class(truth, found, sampling="official")
    assert official["ap"]["car"]["3d"] == pytest.approx((2 / 3) / 40)
    assert official["ap_r11"]["car"]["3d"] == pytest.approx(1 / 11)


def test_a_box_shifted_along_its_length_fails_at_iou_0_7_and_passes_at_0_5():
    # Shifted 1 m along its 4 m length: BEV and 3D IoU 3/5, turned or not.
    turned = single_class([[box(0.0, yaw=0.3)]], [[(box(math.cos(0.3), math.sin(0.3), yaw=0.3), 0.9)]],
                          iou_thresholds=0.7)
    assert turned["ap"]["car"] == {"bev": 0.0, "3d": 0.0}
    truth, found = [[box(0.0)]], [[(box(1.0), 0.9)]]
    strict, loose = single_class(truth, found, iou_thresholds=0.7), single_class(truth, found, iou_thresholds=0.5)
    assert strict["ap"]["car"] == {"bev": 0.0, "3d": 0.0} and strict["recall"]["car"]["bev"] == 0.0
    assert loose["ap"]["car"] == {"bev": 1.0, "3d": 1.0}
    # Centre 1 m away: a miss at 0.5 m and at 1 m (a match must be strictly nearer), a hit at 2 and 4 m.
    assert strict["distance_ap"]["car"] == pytest.approx({"0.5": 0.0, "1.0": 0.0, "2.0": 1.0, "4.0": 1.0})
    assert strict["mean_distance_ap"]["car"] == pytest.approx(0.5)
    # Raised by 0.75 m (half of its height): BEV IoU stays 1, 3D IoU 1/3.
    lifted = single_class([[box(0.0)]], [[(box(0.0, z=0.75), 0.9)]], iou_thresholds=0.5)
    assert lifted["ap"]["car"] == {"bev": 1.0, "3d": 0.0}


def test_iou_thresholds_per_class():
    evaluator = CustomEvaluator(["car", "pedestrian"], iou_thresholds={"car": 0.7, "pedestrian": 0.5})
    shifted = box(1.0)
    evaluator.add_ground_truth("a", [box(0.0), box(0.0, y=30.0)], [0, 1])
    evaluator.process("a", [shifted, box(1.0, y=30.0)], [0.9, 0.9], [0, 1])
    metrics = evaluator.evaluate()
    assert metrics["ap"]["car"]["bev"] == 0.0 and metrics["ap"]["pedestrian"]["bev"] == 1.0
    assert metrics["mean_ap"]["bev"] == 0.5


def test_centre_distance_ap_by_hand():
    # 4 GTs, 3 found at precision 1: precision 1 up to recall 3/4, 0 beyond. Recalls 0.11 .. 0.75 are
    # 65 of the 90 kept: AP = 65 × (1 - 0.1) / 90 / (1 - 0.1).
    truth = [[box(0.0), box(10.0), box(20.0), box(30.0)]]
    metrics = single_class(truth, [[(box(0.0), 0.9), (box(10.0), 0.8), (box(20.0), 0.7)]])
    assert metrics["distance_ap"]["car"]["2.0"] == pytest.approx(65 / 90)
    # 2 GTs; an FP first: (r, p) = (0, 0) (1/2, 1/2) (1, 2/3), linear between: p(r) = r up to 1/2,
    # then 1/2 + (r - 1/2) / 3.
    metrics = single_class([[box(0.0), box(10.0)]], [[(box(50.0), 0.9), (box(0.0), 0.8), (box(10.0), 0.7)]])

    def precision(r):
        return r if r <= 0.5 else 0.5 + (r - 0.5) / 3

    expected = np.mean([max(precision(k / 100) - 0.1, 0.0) for k in range(11, 101)]) / 0.9
    assert metrics["distance_ap"]["car"]["0.5"] == pytest.approx(expected)


def devkit_boxes(frames, name_of, with_scores):
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    boxes = EvalBoxes()
    for token, (rows, labels, scores) in frames.items():
        boxes.add_boxes(token, [DetectionBox(sample_token=token, translation=tuple(row[:3]), size=(1.0, 1.0, 1.0),
                                             rotation=(1.0, 0.0, 0.0, 0.0), detection_name=name_of[int(label)],
                                             detection_score=float(score) if with_scores else -1.0)
                                for row, label, score in zip(rows, labels, scores)])
    return boxes


def test_centre_distance_ap_equals_the_devkits_accumulate_and_calc_ap():
    from nuscenes.eval.common.utils import center_distance
    from nuscenes.eval.detection.algo import accumulate, calc_ap

    names = ["car", "pedestrian", "bicycle"]
    rng = np.random.default_rng(3)
    for trial in range(12):
        evaluator = CustomEvaluator(names)
        truth, found = {}, {}
        for index in range(int(rng.integers(1, 7))):
            token = f"sample{trial}_{index}"
            count = int(rng.integers(0, 8))
            gt = np.column_stack([rng.uniform(-20, 20, (count, 2)), np.zeros(count), np.ones((count, 3)),
                                  np.zeros(count)])
            gt_labels = rng.integers(0, 3, count)
            # Detections near some GTs (about 1.5 m off), two anywhere; scores in steps so that some tie.
            near = gt[rng.random(count) < 0.7].copy()
            near[:, :2] += rng.normal(0.0, 1.5, (len(near), 2))
            extra = np.column_stack([rng.uniform(-20, 20, (2, 2)), np.zeros(2), np.ones((2, 3)), np.zeros(2)])
            det = np.vstack([near, extra])
            det_labels = rng.integers(0, 3, len(det))
            scores = rng.integers(1, 10, len(det)) / 10.0
            evaluator.add_ground_truth(token, gt, gt_labels)
            evaluator.process(token, det, scores, det_labels)
            truth[token] = (gt, gt_labels, np.zeros(count))
            found[token] = (det, det_labels, scores)
        metrics = evaluator.evaluate()
        gt_boxes, pred_boxes = devkit_boxes(truth, names, False), devkit_boxes(found, names, True)
        for name in names:
            for threshold in (0.5, 1.0, 2.0, 4.0):
                expected = calc_ap(accumulate(gt_boxes, pred_boxes, name, center_distance, threshold), 0.1, 0.1)
                got = metrics["distance_ap"][name][str(threshold)]
                if metrics["num_gt"][name] == 0:
                    assert got is None and expected == 0.0      # the devkit gives 0 without GT, we say None
                else:
                    assert got == pytest.approx(expected, abs=1e-12), (trial, name, threshold)


def test_contract_errors_name_the_frame_and_the_problem(tmp_path):
    evaluator = CustomEvaluator(["car", "pedestrian"])
    with pytest.raises(ValueError, match=r"ground truth of frame '7': need boxes \(N, >=7\).*got \(2, 5\)"):
        evaluator.add_ground_truth(7, np.zeros((2, 5)), [0, 1])
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 2\).*got \[0.0, 2.0\]"):
        evaluator.add_ground_truth("a", [box(0.0), box(5.0)], [0, 2])
    with pytest.raises(ValueError, match="box sizes dx, dy, dz must be positive"):
        evaluator.add_ground_truth("a", [box(0.0, size=(4.0, 0.0, 1.0))], [0])
    evaluator.add_ground_truth("a", [box(0.0)], [0])
    with pytest.raises(ValueError, match="frame 'a' registered twice"):
        evaluator.add_ground_truth("a", [box(0.0)], [0])
    with pytest.raises(ValueError, match="1 scores for 2 boxes"):
        evaluator.process("a", [box(0.0), box(1.0)], [0.5], [0, 0])
    with pytest.raises(ValueError, match="scores must be finite"):
        evaluator.process("a", [box(0.0)], [float("nan")], [0])
    with pytest.raises(ValueError, match=r"1 frames with ground truth were never processed \(e.g. \['a'\]\)"):
        evaluator.evaluate()
    evaluator.process("a", np.zeros((0, 9)), [], [])
    evaluator.process("b", [box(0.0)], [0.5], [1])
    with pytest.raises(ValueError, match=r"1 processed frames have no registered ground truth \(e.g. \['b'\]\)"):
        evaluator.evaluate()
    evaluator.add_ground_truth("b", np.zeros((0, 7)), [])
    metrics = evaluator.evaluate(str(tmp_path / "eval"))
    assert json.loads((tmp_path / "eval" / "metrics_custom.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["ap"]["car"]["3d"] == 0.0 and metrics["num_detections"] == {"car": 0, "pedestrian": 1}
    assert metrics["ap"]["pedestrian"]["3d"] is None and metrics["mean_ap"]["3d"] == 0.0
    with pytest.raises(ValueError, match=r"iou_thresholds must name exactly the classes.*missing \['pedestrian'\]"):
        CustomEvaluator(["car", "pedestrian"], iou_thresholds={"car": 0.7})
    with pytest.raises(ValueError, match=r"iou_thresholds\['car'\] must be in \[0, 1\), got 1.5"):
        CustomEvaluator(["car"], iou_thresholds=1.5)
    with pytest.raises(ValueError, match="sampling must be one of"):
        CustomEvaluator(["car"], sampling="r40")
    with pytest.raises(ValueError, match="nothing to evaluate"):
        CustomEvaluator(["car"]).evaluate()
    # 1 m and 1.0 m are one key of distance_ap: the mean would have been over fewer thresholds than listed
    with pytest.raises(ValueError, match=r"distance_thresholds must be distinct, got \[1, 1.0, 2.0\]"):
        CustomEvaluator(["car"], distance_thresholds=[1, 1.0, 2.0])
    with pytest.raises(ValueError, match="need 0 <= min_precision < 1"):
        CustomEvaluator(["car"], min_precision=1.0)
