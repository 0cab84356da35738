"""KITTI object evaluation of LiDAR 3D detections: 2D image-box AP, AOS, BEV AP and 3D AP, at R40 and R11.

The protocol of the KITTI 3D object benchmark (``evaluate_object.cpp`` of the devkit; OpenPCDet's
``kitti_object_eval_python`` computes the same), per class and difficulty:

- Classes and IoU thresholds: Car 0.7, Pedestrian 0.5, Cyclist 0.5, for every metric; a detection
  matches a ground truth (GT) when their IoU is strictly above the threshold. 2D IoU is the IoU of
  the image boxes; BEV IoU is the rotated IoU of the two boxes seen from above; 3D IoU is (rotated
  BEV intersection × height overlap) / union of volumes.
- Difficulties, from each GT's 2D image box (as labelled) and its label fields; they are cumulative
  (moderate includes easy):

  ========  ====================  =========  ==========
  level     2D box height (px)    occluded   truncated
  ========  ====================  =========  ==========
  easy      > 40                  <= 0       <= 0.15
  moderate  > 25                  <= 1       <= 0.3
  hard      > 25                  <= 2       <= 0.5
  ========  ====================  =========  ==========

  (a GT exactly 40 / 25 px high is outside the level, as the official code tests ``height <= min``.)
- Ignored GT: a GT of the class outside the difficulty, and every GT of the neighbouring class (Van
  for Car, Person_sitting for Pedestrian), is "ignored": a detection matched to it is neither TP nor
  FP, and it is no FN when missed. GTs of other classes play no part (a detection on them is an FP).
- Ignored detections: a detection whose 2D image box is lower than the level's minimum height
  (< 40 / 25 px) is ignored: never an FP, and a valid GT it is matched to is neither TP nor FN.
  As in the official code this holds for small detections of any class.
- Matching at each score threshold, and the two ways of turning the curve into AP (``sampling``):
  :mod:`datasets.detection_matching`. The default, ``'official'``, samples at most 41 thresholds
  from the scores of matched detections, as the benchmark does, and gives the published numbers;
  ``'every_point'`` evaluates every operating point, the stated definition of AP exactly. They differ
  by up to a few AP, most where few GTs count:

  * **1 GT**: the official R40 of a class (or difficulty) with a single counted GT is 0 even when it
    is found (its one threshold sits in slot 0, which R40 leaves out); 2 perfectly found GTs score
    2.5, n < 40 score at most 2.5 (n - 1). Report such classes with ``sampling='every_point'``, or not
    at all.
  * **The end slot**: the lowest matched score always takes the next slot, so the official R40 credits
    up to one recall step (2.5 AP) that was not reached: 449 of 1000 GTs found at precision 1 give 45.00
    officially, 42.50 over every operating point.
- R40 = the mean over 40 recall positions (slots 1..40), R11 = over 11 (slots 0, 4, .., 40); AP in
  percent. AOS (average orientation similarity) is computed on the 2D matching, with (1 + cos Δα) / 2
  in place of each TP, α the observation angle.
- DontCare regions: a detection whose 2D box lies in a DontCare box (intersection / detection area
  above the IoU threshold) is no FP for the *2D image* metric (and AOS). For BEV and 3D the official
  code takes the overlap with the DontCare row's 3D box, which is a placeholder (location -1000), so
  it never applies. That is the default here (``dont_care_in_3d=False``); ``dont_care_in_3d=True``
  applies the 2D DontCare rule to BEV and 3D as well.

Detections of a LiDAR-only detector have no 2D box: it is computed by projecting the 3D box into
the image of camera 2 (Tr_velo_to_cam, R0_rect, P2), the part of the box behind the plane 0.1 m in
front of the camera cut off, and clipping to the image ([0, width-1] x [0, height-1]; the image size
from ``image_2/`` when the dataset has it, else 1242x375, reported in the metrics). Detections whose
box does not reach into the image are dropped before evaluation: KITTI labels only what the camera
sees (OpenPCDet feeds the network only points in the camera's view; mmdetection3d drops such boxes).
Their observation angle α is computed from the LiDAR box the same way (rotation_y in the rectified
camera frame minus the azimuth of the box centre, atan2(x, z)); GTs use ``annotations['alpha']``
when the frame has it, else the same computation.

IoUs are computed on the LiDAR-frame boxes of the project's convention (both GT, converted from the
camera labels at the dataset boundary, and detections); the official code computes them in the
rectified camera frame, whose vertical axis is tilted from the LiDAR's by a fraction of a degree.
"""
from __future__ import annotations

import os

import numpy as np

from atomic_files import write_json_atomically
from datasets.box_overlaps import bev_iou, box_overlaps, image_box_overlap_of_first, image_iou, iou_3d
from datasets.boxes import BOX_EDGES, as_boxes, box_corners
from datasets.detection_matching import (
    R40_RECALLS,
    SAMPLINGS,
    DetectionCurve,
    frame_operating_points,
    interpolated_average_precision,
)
from datasets.kitti_dataset import DEFAULT_IMAGE_SIZE, KittiDataset, split_ids

__all__ = ["CLASSES", "DIFFICULTIES", "METRICS", "SAMPLINGS", "bev_iou", "iou_3d", "image_iou",
           "image_box_overlap_of_first", "frame_operating_points", "r40_average_precision", "image_boxes",
           "observation_angles", "ground_truth_flags", "detection_flags", "evaluated_classes", "evaluate_kitti",
           "evaluate_detector_on_kitti", "format_table", "KittiEvaluator"]

CLASSES = ("Car", "Pedestrian", "Cyclist")
IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOUR_CLASSES = {"Car": "Van", "Pedestrian": "Person_sitting"}
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)          # pixels, per difficulty
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
METRICS = ("bbox", "bev", "3d")          # matched on 2D image boxes, BEV boxes, 3D boxes
AP_KINDS = METRICS + ("aos",)            # AOS rides on the 2D matching
NEAR_PLANE = 0.1                         # metres in front of the camera; box parts nearer are cut off
PROTOCOL = ("KITTI 3D object: AP at 40 (R40) and 11 (R11) recall positions, in percent; IoU > 0.7 Car, "
            "0.5 Pedestrian/Cyclist; easy/moderate/hard by 2D height, occlusion, truncation")
SAMPLING_NOTES = {"official": "official score-threshold sampling (at most 41 thresholds from matched scores)",
                  "every_point": "every operating point (precision at every distinct score)"}

def r40_average_precision(recall, precision) -> float:
    """100 × mean over r = 1/40 .. 40/40 of the largest precision at a recall >= r (0 where none),
    over every operating point. recall, precision: (P,) at the operating points, in any order."""
    return 100.0 * interpolated_average_precision(recall, precision, R40_RECALLS)


# ----------------------------------------------------------------------------------- image boxes

def image_boxes(boxes, calibration: dict[str, np.ndarray], image_size=DEFAULT_IMAGE_SIZE
                ) -> tuple[np.ndarray, np.ndarray]:
    """2D boxes of LiDAR-frame 3D boxes in the image of camera 2.

    boxes: (N, >=7) ``(x, y, z, dx, dy, dz, yaw)`` in the LiDAR frame; calibration: the matrices of a
    KITTI calib file (``Tr_velo_to_cam`` 3x4, ``R0_rect`` 3x3, ``P2`` 3x4); image_size: (width, height).
    Returns ``(boxes_2d (N, 4) [x1, y1, x2, y2] in pixels, in_image (N,) bool)``: the bounding box of
    the projection of the part of the box at least 0.1 m in front of the camera, clipped to
    [0, width-1] x [0, height-1]; ``in_image`` is False (and the row zeros) for a box wholly behind
    that plane or projecting wholly outside the image.
    """
    boxes = as_boxes(boxes, "boxes")
    for key in ("Tr_velo_to_cam", "R0_rect", "P2"):
        if key not in calibration:
            raise ValueError(f"the calibration lacks {key}, needed to project boxes into the image")
    width, height = image_size
    velo_to_cam, rect, projection = (np.asarray(calibration[k], dtype=np.float64)
                                     for k in ("Tr_velo_to_cam", "R0_rect", "P2"))
    corners = box_corners(boxes)                                              # (N, 8, 3) LiDAR frame
    camera = corners @ (rect @ velo_to_cam[:, :3]).T + rect @ velo_to_cam[:, 3]   # rectified camera frame
    start, end = camera[:, BOX_EDGES[:, 0]], camera[:, BOX_EDGES[:, 1]]             # (N, 12, 3)
    depth_start, depth_end = start[..., 2] - NEAR_PLANE, end[..., 2] - NEAR_PLANE
    crosses = depth_start * depth_end < 0
    fraction = depth_start / np.where(crosses, depth_start - depth_end, 1.0)
    crossings = start + fraction[..., None] * (end - start)                   # points on the near plane
    points = np.concatenate([camera, crossings], axis=1)                      # (N, 20, 3)
    valid = np.concatenate([camera[..., 2] >= NEAR_PLANE, crosses], axis=1)
    homogeneous = points @ projection[:, :3].T + projection[:, 3]
    w = np.where(valid, homogeneous[..., 2], 1.0)
    pixels = homogeneous[..., :2] / w[..., None]
    low = np.where(valid[..., None], pixels, np.inf).min(axis=1)
    high = np.where(valid[..., None], pixels, -np.inf).max(axis=1)
    in_image = valid.any(axis=1) & (low[:, 0] < width) & (low[:, 1] < height) & (high[:, 0] > 0) & (high[:, 1] > 0)
    result = np.concatenate([low, high], axis=1)
    result[:, [0, 2]] = np.clip(result[:, [0, 2]], 0.0, width - 1)
    result[:, [1, 3]] = np.clip(result[:, [1, 3]], 0.0, height - 1)
    result[~in_image] = 0.0
    return result, in_image


def observation_angles(boxes, calibration: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) KITTI observation angle α in [-π, π) of LiDAR-frame boxes (N, >=7): the box's rotation_y
    in the rectified camera frame (Tr_velo_to_cam, R0_rect of ``calibration``) minus the azimuth of its
    centre seen from the camera, atan2(x, z)."""
    boxes = as_boxes(boxes, "boxes")
    for key in ("Tr_velo_to_cam", "R0_rect"):
        if key not in calibration:
            raise ValueError(f"the calibration lacks {key}, needed for the observation angle")
    velo_to_cam = np.asarray(calibration["Tr_velo_to_cam"], dtype=np.float64)
    to_camera = np.asarray(calibration["R0_rect"], dtype=np.float64) @ velo_to_cam[:, :3]
    shift = np.asarray(calibration["R0_rect"], dtype=np.float64) @ velo_to_cam[:, 3]
    centres = boxes[:, :3] @ to_camera.T + shift
    headings = np.column_stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), np.zeros(len(boxes))]) @ to_camera.T
    rotation_y = np.arctan2(-headings[:, 2], headings[:, 0])          # camera y points down
    alpha = rotation_y - np.arctan2(centres[:, 0], centres[:, 2])
    return (alpha + np.pi) % (2 * np.pi) - np.pi


# ------------------------------------------------------------------------------------ ignore flags

def ground_truth_flags(names, bbox_2d, truncated, occluded, class_name: str, difficulty: int) -> np.ndarray:
    """(G,) int per GT for one class and difficulty (0 easy, 1 moderate, 2 hard): 0 counts, 1 ignored
    (neighbouring class, or the class outside the difficulty), -1 another class."""
    lower, neighbour = class_name.lower(), NEIGHBOUR_CLASSES.get(class_name, "").lower()
    own = np.array([n.lower() == lower for n in names], dtype=bool)
    near = np.array([n.lower() == neighbour for n in names], dtype=bool) if neighbour else np.zeros(len(names), bool)
    bbox_2d = np.asarray(bbox_2d, dtype=np.float64).reshape(-1, 4)
    outside = ((np.asarray(occluded) > MAX_OCCLUSION[difficulty]) | (np.asarray(truncated) > MAX_TRUNCATION[difficulty])
               | (bbox_2d[:, 3] - bbox_2d[:, 1] <= MIN_HEIGHT[difficulty]))
    flags = np.full(len(names), -1, dtype=np.int8)
    flags[near | (own & outside)] = 1
    flags[own & ~outside] = 0
    return flags


def detection_flags(names, bbox_2d, class_name: str, difficulty: int) -> np.ndarray:
    """(D,) int per detection: 1 ignored (2D box lower than the difficulty's minimum, whatever its
    class, as the official code), else 0 of the class, -1 another class."""
    lower = class_name.lower()
    own = np.array([n.lower() == lower for n in names], dtype=bool)
    bbox_2d = np.asarray(bbox_2d, dtype=np.float64).reshape(-1, 4)
    small = np.abs(bbox_2d[:, 3] - bbox_2d[:, 1]) < MIN_HEIGHT[difficulty]
    return np.where(small, 1, np.where(own, 0, -1)).astype(np.int8)


# ------------------------------------------------------------------------------------- evaluation

def evaluated_classes(class_names) -> list[str]:
    """The KITTI classes (Car, Pedestrian, Cyclist) among a detector's class names, case-insensitively."""
    lower = {name.lower() for name in class_names}
    classes = [name for name in CLASSES if name.lower() in lower]
    if not classes:
        raise ValueError(f"none of the class names {list(class_names)} is a KITTI evaluation class {list(CLASSES)}")
    return classes


def _frame_inputs(index: int, truth: dict, detection: dict) -> tuple:
    """Checked arrays of one frame: GT (names, boxes, bbox_2d, truncated, occluded, dont_care) and
    detections (boxes, scores, names, bbox_2d or None)."""
    where = f"ground_truth[{index}] (frame {truth.get('id', index)!r})" if isinstance(truth, dict) \
        else f"ground_truth[{index}]"
    if not isinstance(truth, dict) or "annotations" not in truth:
        raise ValueError(f"{where}: expected a KITTI frame meta with 'annotations' "
                         "(names, boxes, bbox_2d, truncated, occluded) and 'dont_care_bbox_2d'")
    annotations = truth["annotations"]
    for key in ("names", "boxes", "bbox_2d", "truncated", "occluded"):
        if key not in annotations:
            raise ValueError(f"{where}: annotations lack {key!r}")
    names = list(annotations["names"])
    count = len(names)
    gt_boxes = np.asarray(annotations["boxes"], dtype=np.float64)
    gt_boxes = np.zeros((0, 7)) if count == 0 and gt_boxes.size == 0 else gt_boxes
    bbox = np.asarray(annotations["bbox_2d"], dtype=np.float64).reshape(-1, 4) if count else np.zeros((0, 4))
    truncated, occluded = np.asarray(annotations["truncated"]), np.asarray(annotations["occluded"])
    if gt_boxes.ndim != 2 or gt_boxes.shape[0] != count or gt_boxes.shape[1] < 7 or bbox.shape != (count, 4) \
            or truncated.shape != (count,) or occluded.shape != (count,):
        raise ValueError(f"{where}: annotations of {count} objects need boxes (G, >=7), bbox_2d (G, 4), "
                         f"truncated (G,), occluded (G,); got {gt_boxes.shape}, {bbox.shape}, {truncated.shape}, "
                         f"{occluded.shape}")
    dont_care = np.asarray(truth.get("dont_care_bbox_2d", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)

    where = f"detections[{index}]"
    if not isinstance(detection, dict) or not {"boxes", "scores", "names"} <= set(detection):
        raise ValueError(f"{where}: expected a dict with 'boxes' (D, >=7), 'scores' (D,), 'names' (D,)")
    scores = np.asarray(detection["scores"], dtype=np.float64).reshape(-1)
    det_names = list(detection["names"])
    det_boxes = np.asarray(detection["boxes"], dtype=np.float64)
    det_boxes = np.zeros((0, 7)) if len(scores) == 0 and det_boxes.size == 0 else det_boxes
    if det_boxes.ndim != 2 or det_boxes.shape[0] != len(scores) or det_boxes.shape[1] < 7 \
            or len(det_names) != len(scores):
        raise ValueError(f"{where}: boxes {np.shape(detection['boxes'])}, scores {scores.shape} and "
                         f"{len(det_names)} names disagree; need boxes (D, >=7), scores (D,), names (D,)")
    if not np.isfinite(det_boxes[:, :7]).all():
        # a NaN box would project nowhere and be counted as outside the image, not reported
        raise ValueError(f"{where}: boxes have non-finite values")
    det_bbox = detection.get("bbox_2d")
    if det_bbox is not None:
        det_bbox = np.asarray(det_bbox, dtype=np.float64).reshape(-1, 4)
        if len(det_bbox) != len(scores):
            raise ValueError(f"{where}: bbox_2d has {len(det_bbox)} rows for {len(scores)} detections")
    return (names, gt_boxes, bbox, truncated, occluded, dont_care), (det_boxes, scores, det_names, det_bbox)


def _alphas(values, count: int, where: str) -> np.ndarray:
    alphas = np.asarray(values, dtype=np.float64).reshape(-1)
    if alphas.shape != (count,):
        raise ValueError(f"{where}: alpha has {alphas.size} values for {count} objects")
    return alphas


def evaluate_kitti(ground_truth: list[dict], detections: list[dict], classes=CLASSES,
                   dont_care_in_3d: bool = False, sampling: str = "official") -> dict:
    """2D, BEV and 3D AP and AOS, at R40 and R11, per class and difficulty (the module docstring).

    ground_truth: per frame the ``meta`` of :class:`datasets.kitti_dataset.KittiDataset`: ``annotations``
    {names (G,), boxes (G, >=7) LiDAR frame, bbox_2d (G, 4) pixels, truncated (G,), occluded (G,),
    optionally alpha (G,) radians}, ``dont_care_bbox_2d`` (K, 4), ``calibration`` (for the observation
    angles, and for detections without ``bbox_2d``) and ``image_size`` (width, height; 1242x375 when absent).
    detections: per frame {boxes (D, >=7) LiDAR frame, scores (D,), names (D,) class names (case is
    ignored), optionally bbox_2d (D, 4): then used as is, else projected (and boxes outside the image
    dropped), optionally alpha (D,)}.
    sampling: ``'official'`` (the benchmark's, default) or ``'every_point'``.
    Returns a JSON-ready dict: ``ap[class][kind][difficulty]`` R40 in percent, kind in bbox (2D), bev,
    3d, aos; ``ap_r11`` alike; ``recall[class][metric][difficulty]`` with every detection; None where
    no GT counts; ``num_gt[class][difficulty]``, ``sampling``, and bookkeeping.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"ground_truth has {len(ground_truth)} frames, detections {len(detections)}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
    classes = list(classes)
    for name in classes:
        if name not in CLASSES:
            raise ValueError(f"classes: {name!r} is not a KITTI evaluation class; valid: {list(CLASSES)}")
    curves = {(c, m, d): DetectionCurve(IOU_THRESHOLDS[c], with_orientation=m == "bbox")
              for c in classes for m in METRICS for d in range(len(DIFFICULTIES))}
    dropped = assumed_size = total = 0
    for index, (truth, detection) in enumerate(zip(ground_truth, detections)):
        (names, gt_boxes, gt_bbox, truncated, occluded, dont_care), (det_boxes, scores, det_names, det_bbox) = \
            _frame_inputs(index, truth, detection)
        where = f"ground_truth[{index}] (frame {truth.get('id', index)!r})"
        if not np.isfinite(scores).all():
            raise ValueError(f"detections[{index}]: scores must be finite")
        total += len(scores)
        det_alpha = detection.get("alpha")
        if det_alpha is not None:
            det_alpha = _alphas(det_alpha, len(scores), f"detections[{index}]")
        if det_bbox is None:
            if "calibration" not in truth:
                raise ValueError(f"{where}: detections without bbox_2d need the frame's 'calibration'")
            if "image_size" not in truth or not truth.get("image_size_known", True):
                assumed_size += 1
            try:
                det_bbox, inside = image_boxes(det_boxes, truth["calibration"],
                                               truth.get("image_size", DEFAULT_IMAGE_SIZE))
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            dropped += int((~inside).sum())
            det_boxes, scores, det_bbox = det_boxes[inside], scores[inside], det_bbox[inside]
            det_names = [n for n, keep in zip(det_names, inside) if keep]
            det_alpha = None if det_alpha is None else det_alpha[inside]
        try:
            gt_alpha = (_alphas(truth["annotations"]["alpha"], len(names), where) if "alpha" in truth["annotations"]
                        else observation_angles(gt_boxes, truth["calibration"]) if len(names) else np.zeros(0))
            if det_alpha is None:
                det_alpha = observation_angles(det_boxes, truth["calibration"]) if len(scores) else np.zeros(0)
        except KeyError:
            raise ValueError(f"{where}: the observation angles (AOS) need the frame's 'calibration' "
                             "or 'alpha' in the annotations and detections") from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        overlaps = box_overlaps(det_boxes, gt_boxes)
        overlaps["bbox"] = image_iou(det_bbox, gt_bbox)
        similarity = (1.0 + np.cos(gt_alpha[None, :] - det_alpha[:, None])) / 2.0
        for class_name in classes:
            threshold = IOU_THRESHOLDS[class_name]
            in_dont_care = (image_box_overlap_of_first(det_bbox, dont_care) > threshold).any(axis=1)
            for difficulty in range(len(DIFFICULTIES)):
                gt_flags = ground_truth_flags(names, gt_bbox, truncated, occluded, class_name, difficulty)
                det_flags = detection_flags(det_names, det_bbox, class_name, difficulty)
                for metric in METRICS:
                    rule = metric == "bbox" or dont_care_in_3d
                    curves[class_name, metric, difficulty].add_frame(
                        overlaps[metric], scores, gt_flags, det_flags, in_dont_care if rule else None,
                        similarity if metric == "bbox" else None)
    ap, ap_r11, recall, num_gt, thresholds = {}, {}, {}, {}, {}
    for class_name in classes:
        ap[class_name] = {kind: {} for kind in AP_KINDS}
        ap_r11[class_name] = {kind: {} for kind in AP_KINDS}
        recall[class_name] = {m: {} for m in METRICS}
        num_gt[class_name], thresholds[class_name] = {}, {m: {} for m in METRICS}
        for metric in METRICS:
            for difficulty, level in enumerate(DIFFICULTIES):
                result = curves[class_name, metric, difficulty].average_precision(sampling)
                num_gt[class_name][level] = result["num_gt"]
                recall[class_name][metric][level] = result["recall"]
                thresholds[class_name][metric][level] = result.get("thresholds")
                kinds = (("", metric), ("aos_", "aos")) if metric == "bbox" else (("", metric),)
                for prefix, kind in kinds:
                    for table, key in ((ap, "r40"), (ap_r11, "r11")):
                        value = result[prefix + key]
                        table[class_name][kind][level] = None if value is None else 100.0 * value
    metrics = {"protocol": PROTOCOL, "sampling": sampling, "sampling_note": SAMPLING_NOTES[sampling],
               "classes": classes, "iou_thresholds": {c: IOU_THRESHOLDS[c] for c in classes},
               "ap": ap, "ap_r11": ap_r11, "recall": recall, "num_gt": num_gt, "num_frames": len(ground_truth),
               "num_detections": total, "num_detections_outside_image": dropped,
               "frames_with_assumed_image_size": assumed_size, "assumed_image_size": list(DEFAULT_IMAGE_SIZE),
               "dont_care_in_3d": dont_care_in_3d}
    if sampling == "official":
        metrics["num_thresholds"] = thresholds
    return metrics


def evaluate_detector_on_kitti(predict, root: str, split: str, class_names, num_point_features: int = 4,
                               sampling: str = "official") -> dict:
    """Run ``predict`` on every frame of a KITTI split and evaluate (:func:`evaluate_kitti`).

    predict: (N, 4) float32 LiDAR points [x, y, z, reflectance] → {'boxes': (K, >=7) LiDAR frame,
    'scores': (K,), 'labels': (K,) indices into class_names} (tensors or arrays); root: the KITTI
    object folder; split: ``ImageSets/{split}.txt``, or 'all' for every scan (see
    :func:`datasets.kitti_dataset.split_ids`); sampling: as :func:`evaluate_kitti`.
    """
    if num_point_features != 4:
        raise ValueError(f"KITTI scans have 4 point features (x, y, z, reflectance); the model takes "
                         f"model.num_point_features = {num_point_features}")
    evaluator = KittiEvaluator(class_names, sampling=sampling)
    frames = KittiDataset(root, split_ids(root, split), class_names)
    for index in range(len(frames)):
        frame = frames[index]
        predicted = predict(frame["points"])
        evaluator.add_ground_truth(index, frame["meta"])
        evaluator.process(index, predicted["boxes"], predicted["scores"], predicted["labels"])
    return evaluator.evaluate()


KIND_LABELS = {"bbox": "2D", "bev": "BEV", "3d": "3D", "aos": "AOS"}


def format_table(metrics: dict) -> str:
    """The AP table of :func:`evaluate_kitti` as text: one row per class and kind (2D, BEV, 3D, AOS),
    R40 then R11 for easy / moderate / hard."""
    def cells(values) -> str:
        return "".join(f"{values[level]:>9.2f}" if values[level] is not None else f"{'-':>9}" for level in DIFFICULTIES)

    sampling = metrics.get("sampling_note", SAMPLING_NOTES["every_point"])
    short = ("easy", "mod", "hard")
    lines = [f"KITTI AP, {sampling} ({metrics['num_frames']} frames, {metrics['num_detections']} detections)",
             f"{'class':<12}{'metric':<7}{'IoU':>5}  " + "".join(f"{'R40 ' + s:>9}" for s in short)
             + "  " + "".join(f"{'R11 ' + s:>9}" for s in short)]
    for class_name in metrics["classes"]:
        for kind in AP_KINDS:
            if kind not in metrics["ap"][class_name]:
                continue
            r11 = metrics.get("ap_r11", {}).get(class_name, {}).get(kind)
            lines.append(f"{class_name:<12}{KIND_LABELS[kind]:<7}{metrics['iou_thresholds'][class_name]:>5.2f}  "
                         + cells(metrics["ap"][class_name][kind]) + "  "
                         + (cells(r11) if r11 is not None else ""))
    counts = ", ".join(f"{c} {'/'.join(str(metrics['num_gt'][c][level]) for level in DIFFICULTIES)}"
                       for c in metrics["classes"])
    lines.append(f"counted GTs (easy/moderate/hard): {counts}")
    if metrics.get("sampling") == "official" and any(
            0 < metrics["num_gt"][c][level] < 40 for c in metrics["classes"] for level in DIFFICULTIES):
        lines.append("(fewer than 40 counted GTs: the official R40 under-reports, 0 with 1 GT; "
                     "see sampling='every_point')")
    if metrics.get("frames_with_assumed_image_size"):
        width, height = metrics["assumed_image_size"]
        lines.append(f"({metrics['frames_with_assumed_image_size']} frames without image_2/: image size "
                     f"assumed {width}x{height})")
    return "\n".join(lines)


class KittiEvaluator:
    """The evaluator contract on KITTI frames: register each frame's ground truth, process its
    detections, then :meth:`evaluate` (:func:`evaluate_kitti`, written to ``metrics_kitti.json``).

    class_names: the detector's classes (labels index them); the KITTI classes among them are
    evaluated. sampling, dont_care_in_3d: as :func:`evaluate_kitti`.
    """

    METRICS_FILE = "metrics_kitti.json"

    def __init__(self, class_names, sampling: str = "official", dont_care_in_3d: bool = False):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        self.class_names = [str(name) for name in class_names]
        self.classes = evaluated_classes(self.class_names)
        self.sampling, self.dont_care_in_3d = sampling, dont_care_in_3d
        self._truth: dict[str, dict] = {}
        self._detections: dict[str, dict] = {}

    def add_ground_truth(self, frame_id, meta: dict) -> None:
        """Register a frame: ``meta`` of :class:`datasets.kitti_dataset.KittiDataset` (annotations,
        DontCare boxes, calibration, image size)."""
        frame_id = str(frame_id)
        if frame_id in self._truth:
            raise ValueError(f"ground truth of frame {frame_id!r} registered twice")
        if not isinstance(meta, dict) or "annotations" not in meta:
            raise ValueError(f"ground truth of frame {frame_id!r}: expected a KittiDataset frame's meta with "
                             "'annotations'")
        self._truth[frame_id] = meta

    def add_frame(self, frame_id, frame: dict) -> None:
        """Register the ground truth of a dataset frame ``{'points', 'gt_boxes', 'gt_labels', 'meta'}``."""
        self.add_ground_truth(frame_id, frame.get("meta") if isinstance(frame, dict) else None)

    def process(self, frame_id, pred_boxes, scores, labels) -> None:
        """A frame's detections: pred_boxes (K, >=7) LiDAR frame, scores (K,), labels (K,) indices into
        class_names; arrays or tensors. Call it for every registered frame (K = 0 when none)."""
        frame_id = str(frame_id)
        if frame_id in self._detections:
            raise ValueError(f"detections of frame {frame_id!r} processed twice")
        boxes, scores, labels = (np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
                                 for v in (pred_boxes, scores, labels))
        boxes = boxes.astype(np.float64).reshape(0, 7) if boxes.size == 0 else boxes.astype(np.float64)
        scores, labels = scores.astype(np.float64).reshape(-1), labels.reshape(-1)
        if boxes.ndim != 2 or boxes.shape[1] < 7 or len(boxes) != len(scores) or len(labels) != len(scores):
            raise ValueError(f"detections of frame {frame_id!r}: need boxes (K, >=7), scores (K,), labels (K,); "
                             f"got {boxes.shape}, {scores.shape}, {labels.shape}")
        if len(labels) and ((labels != np.round(labels)).any() or labels.min() < 0
                            or labels.max() >= len(self.class_names)):
            raise ValueError(f"detections of frame {frame_id!r}: labels must be indices into {self.class_names}, "
                             f"got {sorted(set(labels.tolist()))}")
        self._detections[frame_id] = {"boxes": boxes, "scores": scores,
                                      "names": [self.class_names[int(label)] for label in labels]}

    def evaluate(self, out_dir: str | None = None) -> dict:
        """:func:`evaluate_kitti` over the registered frames (in registration order); with ``out_dir``
        also written to ``out_dir/metrics_kitti.json``."""
        unknown = [f for f in self._detections if f not in self._truth]
        missing = [f for f in self._truth if f not in self._detections]
        if unknown or missing:
            raise ValueError(f"frames processed without ground truth: {unknown[:3]}; frames with ground truth "
                             f"never processed: {missing[:3]} (call process with empty arrays for no detections)")
        if not self._truth:
            raise ValueError("nothing to evaluate: no frame was registered")
        frames = list(self._truth)
        metrics = evaluate_kitti([self._truth[f] for f in frames], [self._detections[f] for f in frames],
                                 self.classes, self.dont_care_in_3d, self.sampling)
        if out_dir is not None:
            write_json_atomically(os.path.join(out_dir, self.METRICS_FILE), metrics)
        return metrics
