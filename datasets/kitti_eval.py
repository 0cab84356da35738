"""KITTI object evaluation of LiDAR 3D detections: BEV AP and 3D AP at 40 recall positions (R40).

The protocol of the KITTI 3D object benchmark (``evaluate_object.cpp`` of the devkit; OpenPCDet's
``kitti_object_eval_python`` computes the same), per class and difficulty:

- Classes and IoU thresholds: Car 0.7, Pedestrian 0.5, Cyclist 0.5; a detection matches a ground
  truth (GT) when their IoU is strictly above the threshold. BEV IoU is the rotated IoU of the two
  boxes seen from above; 3D IoU is (rotated BEV intersection × height overlap) / union of volumes.
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
- Matching, at each score threshold t (detections with score >= t): GTs in label order each take,
  among the unassigned detections above the IoU threshold, the one of largest IoU (the first
  ignored one only when no valid one is there). Unassigned valid detections are FPs.
- DontCare regions: in the official code a detection whose 2D box lies in a DontCare box
  (intersection / detection area above the IoU threshold) is no FP for the *2D image* metric only;
  for BEV and 3D the overlap is taken with the DontCare row's 3D box, which is a placeholder
  (location -1000), so it never applies. That is the default here (``dont_care_in_3d=False``);
  ``dont_care_in_3d=True`` applies the 2D DontCare rule to BEV and 3D as well.
- AP: precision p = TP / (TP + FP) and recall r = TP / (TP + FN) at every distinct score; at each of
  the 40 recall positions r_k = k/40 (k = 1..40) the interpolated precision is the largest precision
  at any recall >= r_k (0 when that recall is never reached); AP = 100 × their mean.
  The official code evaluates precision only at (at most 41) score thresholds picked so that their
  recalls approach k/40; that is the same number for large GT counts, but with fewer than 40 GTs it
  has fewer thresholds than recall positions and under-reports (2 perfectly detected GTs score 2.5).
  Here every operating point is evaluated, which is the stated definition exactly.

Detections of a LiDAR-only detector have no 2D box: it is computed by projecting the 3D box into
the image of camera 2 (Tr_velo_to_cam, R0_rect, P2), the part of the box behind the plane 0.1 m in
front of the camera cut off, and clipping to the image ([0, width-1] x [0, height-1]; the image size
from ``image_2/`` when the dataset has it, else 1242x375, reported in the metrics). Detections whose
box does not reach into the image are dropped before evaluation: KITTI labels only what the camera
sees (OpenPCDet feeds the network only points in the camera's view; mmdetection3d drops such boxes).

IoUs are computed on the LiDAR-frame boxes of the project's convention (both GT, converted from the
camera labels at the dataset boundary, and detections); the official code computes them in the
rectified camera frame, whose vertical axis is tilted from the LiDAR's by a fraction of a degree.
Not computed: the 2D image-box AP and AOS (orientation similarity).
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.boxes import box_corners
from datasets.kitti_dataset import DEFAULT_IMAGE_SIZE, KittiDataset, split_ids
from detectors.box_geometry import bev_intersection_area

CLASSES = ("Car", "Pedestrian", "Cyclist")
IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
NEIGHBOUR_CLASSES = {"Car": "Van", "Pedestrian": "Person_sitting"}
DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)          # pixels, per difficulty
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
METRICS = ("bev", "3d")
RECALL_POSITIONS = np.arange(1, 41) / 40.0
NEAR_PLANE = 0.1                         # metres in front of the camera; box parts nearer are cut off
PROTOCOL = ("KITTI 3D object, R40: AP = mean over recall 1/40..40/40 of the max precision at recall >= r; "
            "IoU > 0.7 Car, 0.5 Pedestrian/Cyclist; easy/moderate/hard by 2D height, occlusion, truncation")

# The 12 edges of a box, as index pairs into the corners of datasets.boxes.box_corners.
_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]])


# ---------------------------------------------------------------------------------------------- IoU

def _as_boxes(boxes, what: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f"{what} must be (N, >=7) [x, y, z, dx, dy, dz, yaw, ...], got shape {boxes.shape}")
    return boxes


def _intersection_and_areas(boxes1: np.ndarray, boxes2: np.ndarray) -> tuple[np.ndarray, ...]:
    """(M, N) BEV intersection areas, (M, N) height overlaps, (M,) and (N,) BEV areas."""
    a, b = _as_boxes(boxes1, "boxes1"), _as_boxes(boxes2, "boxes2")
    intersection = np.zeros((len(a), len(b)))
    if len(a) and len(b):
        intersection = bev_intersection_area(torch.from_numpy(a[:, :7]), torch.from_numpy(b[:, :7])).numpy()
    top = np.minimum(a[:, None, 2] + a[:, None, 5] / 2, b[None, :, 2] + b[None, :, 5] / 2)
    bottom = np.maximum(a[:, None, 2] - a[:, None, 5] / 2, b[None, :, 2] - b[None, :, 5] / 2)
    return intersection, np.clip(top - bottom, 0.0, None), a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]


def _overlaps(boxes1, boxes2) -> dict[str, np.ndarray]:
    """{'bev': (M, N), '3d': (M, N)} IoUs from one intersection computation."""
    intersection, height, area1, area2 = _intersection_and_areas(boxes1, boxes2)
    volume = intersection * height
    volume1, volume2 = area1 * np.asarray(boxes1)[:, 5], area2 * np.asarray(boxes2)[:, 5]
    return {"bev": intersection / np.maximum(area1[:, None] + area2[None, :] - intersection, 1e-12),
            "3d": volume / np.maximum(volume1[:, None] + volume2[None, :] - volume, 1e-12)}


def bev_iou(boxes1, boxes2) -> np.ndarray:
    """(M, N) rotated bird's-eye-view IoU of boxes (M, >=7) and (N, >=7) ``(x, y, z, dx, dy, dz, yaw)``."""
    return _overlaps(boxes1, boxes2)["bev"]


def iou_3d(boxes1, boxes2) -> np.ndarray:
    """(M, N) 3D IoU: rotated BEV intersection × overlap of the z extents (z = box centre), over the
    union of volumes (boxes rotate about z only, so this is the exact volume IoU)."""
    return _overlaps(boxes1, boxes2)["3d"]


def image_box_overlap_of_first(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """(M, N) intersection of 2D boxes [x1, y1, x2, y2] over the area of the first box (the
    official DontCare criterion)."""
    width = np.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) - np.maximum(boxes1[:, None, 0], boxes2[None, :, 0])
    height = np.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) - np.maximum(boxes1[:, None, 1], boxes2[None, :, 1])
    intersection = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    area = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    return intersection / np.maximum(area, 1e-12)[:, None]


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
    boxes = _as_boxes(boxes, "boxes")
    for key in ("Tr_velo_to_cam", "R0_rect", "P2"):
        if key not in calibration:
            raise ValueError(f"the calibration lacks {key}, needed to project boxes into the image")
    width, height = image_size
    velo_to_cam, rect, projection = (np.asarray(calibration[k], dtype=np.float64)
                                     for k in ("Tr_velo_to_cam", "R0_rect", "P2"))
    corners = box_corners(boxes)                                              # (N, 8, 3) LiDAR frame
    camera = corners @ (rect @ velo_to_cam[:, :3]).T + rect @ velo_to_cam[:, 3]   # rectified camera frame
    start, end = camera[:, _EDGES[:, 0]], camera[:, _EDGES[:, 1]]             # (N, 12, 3)
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


# ---------------------------------------------------------------------------------------- matching

def _assign(hits, overlaps, gt_flags, det_flags, not_fp, considered) -> tuple[int, int, int]:
    """(TP, FP, FN) of one frame with the detections in ``considered``; official assignment (module
    docstring). hits/overlaps (D, G); not_fp (D,): detections in a DontCare region."""
    assigned = np.zeros(len(det_flags), dtype=bool)
    tp = fn = 0
    for i in range(len(gt_flags)):
        candidates = hits[:, i] & considered & ~assigned
        valid = candidates & (det_flags == 0)
        if valid.any():
            j = int(np.argmax(np.where(valid, overlaps[:, i], -1.0)))   # largest IoU, the first on ties
        elif candidates.any():
            j = int(np.argmax(candidates))                              # the first ignored detection
        else:
            fn += int(gt_flags[i] == 0)
            continue
        assigned[j] = True
        tp += int(gt_flags[i] == 0 and det_flags[j] == 0)
    fp = int((considered & ~assigned & (det_flags == 0) & ~not_fp).sum())
    return tp, fp, fn


def frame_operating_points(overlaps, scores, gt_flags, det_flags, iou_threshold: float,
                           in_dont_care=None) -> tuple[np.ndarray, np.ndarray, int]:
    """One frame's statistics at each of its distinct detection scores.

    overlaps (D, G) IoU; scores (D,); gt_flags (G,) and det_flags (D,) from :func:`ground_truth_flags`
    and :func:`detection_flags`; in_dont_care (D,) bool: detections not to count as FP.
    Returns ``(levels (L,) descending, stats (L, 3) [TP, FP, FN] with every detection scoring >= the
    level, FN with no detection)``.
    """
    gt_keep, det_keep = gt_flags != -1, det_flags != -1
    overlaps = np.asarray(overlaps, dtype=np.float64).reshape(len(det_flags), len(gt_flags))[det_keep][:, gt_keep]
    gt_flags, det_flags, scores = gt_flags[gt_keep], det_flags[det_keep], np.asarray(scores)[det_keep]
    not_fp = (np.zeros(len(det_keep), bool) if in_dont_care is None else np.asarray(in_dont_care))[det_keep]
    fn_alone = int((gt_flags == 0).sum())
    if len(scores) == 0:
        return np.zeros(0), np.zeros((0, 3), dtype=np.int64), fn_alone
    levels = np.unique(scores)[::-1]
    hits = overlaps > iou_threshold
    # Only a detection above the IoU threshold with some GT can change the assignment; any other
    # valid one is an FP once its score is reached.
    matchable = hits.any(axis=1)
    plain_fp = np.sort(scores[~matchable & (det_flags == 0) & ~not_fp])
    stats = np.zeros((len(levels), 3), dtype=np.int64)
    stats[:, 1] = len(plain_fp) - np.searchsorted(plain_fp, levels, side="left")
    stats[:, 2] = fn_alone
    if matchable.any():
        index = np.flatnonzero(matchable)                      # label order of the detections is kept
        own_levels = np.unique(scores[index])[::-1]
        own_stats = np.array([_assign(hits[index], overlaps[index], gt_flags, det_flags[index], not_fp[index],
                                      scores[index] >= level) for level in own_levels], dtype=np.int64)
        reached = np.searchsorted(-own_levels, -levels, side="right")   # matchable levels >= each level
        stats[reached > 0] += own_stats[reached[reached > 0] - 1] - np.array([0, 0, fn_alone])
    return levels, stats, fn_alone


def r40_average_precision(recall, precision) -> float:
    """100 × mean over r = 1/40 .. 40/40 of the largest precision at a recall >= r (0 where none).

    recall, precision: (P,) at the operating points, in any order."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    reached = recall[None, :] >= RECALL_POSITIONS[:, None] - 1e-9
    interpolated = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
    return float(100.0 * interpolated.mean())


def _curve(frames: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray, int]:
    """Dataset-wide (recall, precision) at every distinct score, and the number of counted GTs."""
    total_gt = sum(fn for _, _, fn in frames)
    levels, deltas = [], []
    for frame_levels, stats, fn_alone in frames:
        if len(frame_levels):
            previous = np.vstack([[0, 0, fn_alone], stats[:-1]])
            levels.append(frame_levels)
            deltas.append(stats - previous)
    if not levels:
        return np.zeros(0), np.zeros(0), total_gt
    levels, deltas = np.concatenate(levels), np.concatenate(deltas)
    order = np.argsort(-levels, kind="stable")
    levels, totals = levels[order], np.cumsum(deltas[order], axis=0) + np.array([0, 0, total_gt])
    last = np.append(levels[1:] != levels[:-1], True)          # the state once every tie is in
    tp, fp, fn = totals[last].T.astype(np.float64)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
    return recall, precision, total_gt


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
    det_bbox = detection.get("bbox_2d")
    if det_bbox is not None:
        det_bbox = np.asarray(det_bbox, dtype=np.float64).reshape(-1, 4)
        if len(det_bbox) != len(scores):
            raise ValueError(f"{where}: bbox_2d has {len(det_bbox)} rows for {len(scores)} detections")
    return (names, gt_boxes, bbox, truncated, occluded, dont_care), (det_boxes, scores, det_names, det_bbox)


def evaluate_kitti(ground_truth: list[dict], detections: list[dict], classes=CLASSES,
                   dont_care_in_3d: bool = False) -> dict:
    """BEV and 3D AP (R40, the protocol of the module docstring) per class and difficulty.

    ground_truth: per frame the ``meta`` of :class:`datasets.kitti_dataset.KittiDataset`: ``annotations``
    {names (G,), boxes (G, >=7) LiDAR frame, bbox_2d (G, 4) pixels, truncated (G,), occluded (G,)},
    ``dont_care_bbox_2d`` (K, 4), and, for detections without ``bbox_2d``, ``calibration`` and
    ``image_size`` (width, height; 1242x375 when absent).
    detections: per frame {boxes (D, >=7) LiDAR frame, scores (D,), names (D,) class names (case is
    ignored), optionally bbox_2d (D, 4): then used as is, else projected (and boxes outside the image
    dropped)}.
    Returns a JSON-ready dict: ``ap[class][metric][difficulty]`` in percent (None where no GT counts),
    ``recall`` (with every detection) alike, ``num_gt[class][difficulty]``, and bookkeeping.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"ground_truth has {len(ground_truth)} frames, detections {len(detections)}")
    classes = list(classes)
    for name in classes:
        if name not in CLASSES:
            raise ValueError(f"classes: {name!r} is not a KITTI evaluation class; valid: {list(CLASSES)}")
    per_frame = {(c, m, d): [] for c in classes for m in METRICS for d in range(len(DIFFICULTIES))}
    dropped = assumed_size = total = 0
    for index, (truth, detection) in enumerate(zip(ground_truth, detections)):
        (names, gt_boxes, gt_bbox, truncated, occluded, dont_care), (det_boxes, scores, det_names, det_bbox) = \
            _frame_inputs(index, truth, detection)
        total += len(scores)
        if det_bbox is None:
            if "calibration" not in truth:
                raise ValueError(f"ground_truth[{index}]: detections without bbox_2d need the frame's 'calibration'")
            if "image_size" not in truth or not truth.get("image_size_known", True):
                assumed_size += 1
            try:
                det_bbox, inside = image_boxes(det_boxes, truth["calibration"],
                                               truth.get("image_size", DEFAULT_IMAGE_SIZE))
            except ValueError as error:
                raise ValueError(f"ground_truth[{index}] (frame {truth.get('id', index)!r}): {error}") from None
            dropped += int((~inside).sum())
            det_boxes, scores, det_bbox = det_boxes[inside], scores[inside], det_bbox[inside]
            det_names = [n for n, keep in zip(det_names, inside) if keep]
        overlaps = _overlaps(det_boxes, gt_boxes)
        for class_name in classes:
            threshold = IOU_THRESHOLDS[class_name]
            in_dont_care = None
            if dont_care_in_3d and len(dont_care):
                in_dont_care = (image_box_overlap_of_first(det_bbox, dont_care) > threshold).any(axis=1)
            for difficulty in range(len(DIFFICULTIES)):
                gt_flags = ground_truth_flags(names, gt_bbox, truncated, occluded, class_name, difficulty)
                det_flags = detection_flags(det_names, det_bbox, class_name, difficulty)
                for metric in METRICS:
                    per_frame[class_name, metric, difficulty].append(frame_operating_points(
                        overlaps[metric], scores, gt_flags, det_flags, threshold, in_dont_care))
    ap, recall, num_gt = {}, {}, {}
    for class_name in classes:
        ap[class_name] = {m: {} for m in METRICS}
        recall[class_name] = {m: {} for m in METRICS}
        num_gt[class_name] = {}
        for metric in METRICS:
            for difficulty, level in enumerate(DIFFICULTIES):
                recalls, precisions, count = _curve(per_frame[class_name, metric, difficulty])
                num_gt[class_name][level] = count
                ap[class_name][metric][level] = r40_average_precision(recalls, precisions) if count else None
                recall[class_name][metric][level] = (float(recalls[-1]) if len(recalls) else 0.0) if count else None
    return {"protocol": PROTOCOL, "classes": classes, "iou_thresholds": {c: IOU_THRESHOLDS[c] for c in classes},
            "ap": ap, "recall": recall, "num_gt": num_gt, "num_frames": len(ground_truth),
            "num_detections": total, "num_detections_outside_image": dropped,
            "frames_with_assumed_image_size": assumed_size, "assumed_image_size": list(DEFAULT_IMAGE_SIZE),
            "dont_care_in_3d": dont_care_in_3d}


def evaluate_detector_on_kitti(predict, root: str, split: str, class_names, num_point_features: int = 4) -> dict:
    """Run ``predict`` on every frame of a KITTI split and evaluate (:func:`evaluate_kitti`).

    predict: (N, 4) float32 LiDAR points [x, y, z, reflectance] → {'boxes': (K, >=7) LiDAR frame,
    'scores': (K,), 'labels': (K,) indices into class_names} (tensors or arrays); root: the KITTI
    object folder; split: ``ImageSets/{split}.txt``, or 'all' for every scan (see
    :func:`datasets.kitti_dataset.split_ids`).
    """
    if num_point_features != 4:
        raise ValueError(f"KITTI scans have 4 point features (x, y, z, reflectance); the model takes "
                         f"model.num_point_features = {num_point_features}")
    classes = evaluated_classes(class_names)
    frames = KittiDataset(root, split_ids(root, split), class_names)
    truths, detections = [], []
    for index in range(len(frames)):
        frame = frames[index]
        predicted = predict(frame["points"])
        labels = np.asarray(predicted["labels"]).astype(np.int64).reshape(-1)
        truths.append(frame["meta"])
        detections.append({"boxes": np.asarray(predicted["boxes"], dtype=np.float64),
                           "scores": np.asarray(predicted["scores"], dtype=np.float64),
                           "names": [class_names[label] for label in labels]})
    return evaluate_kitti(truths, detections, classes)


def format_table(metrics: dict) -> str:
    """The AP table of :func:`evaluate_kitti` as text, one row per class and metric."""
    lines = [f"KITTI AP R40 ({metrics['num_frames']} frames, {metrics['num_detections']} detections)",
             f"{'class':<12}{'metric':<8}" + "".join(f"{level:>10}" for level in DIFFICULTIES) + f"{'IoU':>7}"]
    for class_name in metrics["classes"]:
        for metric in METRICS:
            values = metrics["ap"][class_name][metric]
            cells = "".join(f"{values[level]:>10.2f}" if values[level] is not None else f"{'-':>10}"
                            for level in DIFFICULTIES)
            lines.append(f"{class_name:<12}{metric.upper():<8}{cells}{metrics['iou_thresholds'][class_name]:>7.1f}")
    if metrics.get("frames_with_assumed_image_size"):
        width, height = metrics["assumed_image_size"]
        lines.append(f"({metrics['frames_with_assumed_image_size']} frames without image_2/: image size "
                     f"assumed {width}x{height})")
    return "\n".join(lines)
