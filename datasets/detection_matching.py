"""Matching detections to ground truth (GT), and average precision (AP) from the matches.

Two matchers, each the one of a public benchmark:

**IoU matching (the KITTI benchmark's rules, without its difficulty levels).** Each GT and each
detection carries a flag: 0 counts, 1 ignored, -1 plays no part (another class). At a score threshold
t (detections scoring >= t), GTs in their given order each take, among the unassigned detections whose
IoU with it is strictly above the IoU threshold, the valid one of largest IoU (the first on ties),
or the first ignored one when no valid one is there. A GT that counts and got a valid detection is a
true positive (TP); one that got nothing is a false negative (FN); valid detections left unassigned
are false positives (FP), except those marked as lying in a don't-care region. A detection assigned
to an ignored GT, or an ignored detection assigned to a GT, is neither. Recall = TP / (TP + FN),
precision = TP / (TP + FP). The orientation similarity at t (for AOS) is the sum over the TPs of
(1 + cos Δα) / 2, over TP + FP.

AP from that curve, two samplings (``SAMPLINGS``):

- ``'official'`` (the benchmark's ``evaluate_object.cpp``, and OpenPCDet's port of it): thresholds are
  chosen among the scores of the detections matched to counted GTs in a first pass (where each GT
  takes the *highest-scoring* detection above the IoU threshold): walking down the sorted scores,
  the score whose recall is nearest the next target k/40 is kept, and the last score always is,
  so at most 41 thresholds. Precision is computed at each, made non-increasing from the right, and
  put in 41 slots (zeros beyond the thresholds). R40 = mean of slots 1..40; R11 = mean of slots
  0, 4, .., 40. The slot index stands in for the recall: this is what the published numbers are.
- ``'every_point'``: precision at every distinct score; R40 = mean over r = 1/40 .. 40/40, and R11 =
  mean over r = 0, 0.1, .., 1, of the largest precision at a recall >= r (0 where none). That is the
  stated definition of interpolated AP, exactly.

They differ where the slots stand for recalls the detections did not reach, or skip ones they did:

- **1 GT**: one threshold, in slot 0, which R40 leaves out: a perfect detection scores R40 = 0 (and
  R11 = 1/11). n < 40 counted GTs give at most n slots: at most (n - 1) / 40 at R40.
- **The end slot**: the last matched score always takes a slot, one step of 1/40 past the previous
  target, whatever recall it reaches: 1000 GTs of which 449 are found at precision 1 fill slots
  0..18, so R40 = 18/40 = 0.45, where the 17 recall positions <= 0.449 give 0.425 over every point.

AOS uses the same slots (or recall positions) with the orientation similarity in place of precision.

**Centre-distance matching (the nuScenes detection benchmark's, ``nuscenes.eval.detection.algo``).**
Detections of a class, over all frames, in decreasing score (ties: the later one first), each take
the nearest untaken GT of the class in their frame (BEV centre distance; the first on ties) when it
is nearer than the distance threshold (strictly): TP, else FP. Precision and recall after each
detection; precision linearly interpolated at the 101 recalls 0, 0.01, .., 1 (0 beyond the largest
recall); AP = mean over the recalls above ``min_recall`` of max(precision - min_precision, 0), over
1 - min_precision; 0 when nothing matches.
"""
from __future__ import annotations

import numpy as np

SAMPLINGS = ("official", "every_point")
NUM_SAMPLE_POINTS = 41
R40_RECALLS = np.arange(1, 41) / 40.0
R11_RECALLS = np.arange(0, 11) / 10.0


# -------------------------------------------------------------------------------- IoU matching

def _assign(hits, overlaps, gt_flags, det_flags, not_fp, considered, similarity=None) -> tuple:
    """(TP, FP, FN[, similarity sum]) of one frame with the detections in ``considered`` (the IoU
    matching of the module docstring). hits/overlaps/similarity (D, G); not_fp (D,)."""
    assigned = np.zeros(len(det_flags), dtype=bool)
    tp = fn = 0
    orientation = 0.0
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
        if gt_flags[i] == 0 and det_flags[j] == 0:
            tp += 1
            if similarity is not None:
                orientation += float(similarity[j, i])
    fp = int((considered & ~assigned & (det_flags == 0) & ~not_fp).sum())
    return (tp, fp, fn) if similarity is None else (tp, fp, fn, orientation)


def frame_operating_points(overlaps, scores, gt_flags, det_flags, iou_threshold: float,
                           in_dont_care=None, similarity=None) -> tuple[np.ndarray, np.ndarray, int]:
    """One frame's statistics at each of its distinct detection scores.

    overlaps (D, G) IoU; scores (D,); gt_flags (G,) and det_flags (D,): 0 counts, 1 ignored, -1 no
    part; in_dont_care (D,) bool: detections not to count as FP; similarity (D, G): the orientation
    similarity (1 + cos Δα) / 2 of each pair, or None.
    Returns ``(levels (L,) descending, stats, FN with no detection)``: stats (L, 3) int [TP, FP, FN]
    with every detection scoring >= the level, or (L, 4) float with the summed similarity of the TPs
    as the 4th column when ``similarity`` is given.
    """
    gt_flags, det_flags = np.asarray(gt_flags), np.asarray(det_flags)
    gt_keep, det_keep = gt_flags != -1, det_flags != -1
    overlaps = np.asarray(overlaps, dtype=np.float64).reshape(len(det_flags), len(gt_flags))[det_keep][:, gt_keep]
    if similarity is not None:
        similarity = np.asarray(similarity, dtype=np.float64).reshape(len(det_flags), len(gt_flags))
        similarity = similarity[det_keep][:, gt_keep]
    gt_flags, det_flags, scores = gt_flags[gt_keep], det_flags[det_keep], np.asarray(scores)[det_keep]
    not_fp = (np.zeros(len(det_keep), bool) if in_dont_care is None else np.asarray(in_dont_care))[det_keep]
    columns = 3 if similarity is None else 4
    fn_alone = int((gt_flags == 0).sum())
    if len(scores) == 0:
        return np.zeros(0), np.zeros((0, columns), dtype=np.int64 if columns == 3 else np.float64), fn_alone
    levels = np.unique(scores)[::-1]
    hits = overlaps > iou_threshold
    # Only a detection above the IoU threshold with some GT can change the assignment; any other
    # valid one is an FP once its score is reached.
    matchable = hits.any(axis=1)
    plain_fp = np.sort(scores[~matchable & (det_flags == 0) & ~not_fp])
    stats = np.zeros((len(levels), columns), dtype=np.int64 if columns == 3 else np.float64)
    stats[:, 1] = len(plain_fp) - np.searchsorted(plain_fp, levels, side="left")
    stats[:, 2] = fn_alone
    if matchable.any():
        index = np.flatnonzero(matchable)                      # the order of the detections is kept
        own_levels = np.unique(scores[index])[::-1]
        own_similarity = None if similarity is None else similarity[index]
        own_stats = np.array([_assign(hits[index], overlaps[index], gt_flags, det_flags[index], not_fp[index],
                                      scores[index] >= level, own_similarity) for level in own_levels],
                             dtype=stats.dtype)
        reached = np.searchsorted(-own_levels, -levels, side="right")   # matchable levels >= each level
        offset = np.zeros(columns, dtype=stats.dtype)
        offset[2] = fn_alone
        stats[reached > 0] += own_stats[reached[reached > 0] - 1] - offset
    return levels, stats, fn_alone


def matched_scores(overlaps, scores, gt_flags, det_flags, iou_threshold: float) -> np.ndarray:
    """Scores of the detections matched to counted GTs in the official threshold pass: every detection
    with a score >= 0 considered, each GT (in order) takes the unassigned detection of highest score
    (the first on ties) with IoU above the threshold, ignored ones included; the score is kept when
    both the GT and the detection count. overlaps (D, G); flags as :func:`frame_operating_points`."""
    gt_flags, det_flags, scores = np.asarray(gt_flags), np.asarray(det_flags), np.asarray(scores, np.float64)
    overlaps = np.asarray(overlaps, dtype=np.float64).reshape(len(det_flags), len(gt_flags))
    usable = (det_flags != -1) & (scores >= 0.0)
    assigned = np.zeros(len(det_flags), dtype=bool)
    kept = []
    for i in np.flatnonzero(gt_flags != -1):
        candidates = usable & ~assigned & (overlaps[:, i] > iou_threshold)
        if not candidates.any():
            continue
        j = int(np.argmax(np.where(candidates, scores, -np.inf)))
        assigned[j] = True
        if gt_flags[i] == 0 and det_flags[j] == 0:
            kept.append(scores[j])
    return np.array(kept, dtype=np.float64)


def official_thresholds(scores, num_gt: int, num_sample_points: int = NUM_SAMPLE_POINTS) -> np.ndarray:
    """The official score thresholds (at most ``num_sample_points``, descending) from the matched
    scores (:func:`matched_scores` over the whole dataset) and the number of counted GTs."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    chosen = []
    target = 0.0            # summed in steps as the benchmark does, so float ties break the same way
    for i, score in enumerate(scores):
        last = i == len(scores) - 1
        recall = (i + 1) / num_gt
        next_recall = recall if last else (i + 2) / num_gt
        if not last and next_recall - target < target - recall:
            continue        # the next score's recall is nearer the target
        chosen.append(score)
        target += 1.0 / (num_sample_points - 1)
    return np.array(chosen, dtype=np.float64)


def interpolated_average_precision(recall, precision, recall_positions) -> float:
    """Mean over ``recall_positions`` of the largest precision at a recall >= the position (0 where
    no operating point reaches it), as a fraction. recall, precision: (P,) in any order."""
    recall, precision = np.asarray(recall, dtype=np.float64), np.asarray(precision, dtype=np.float64)
    reached = recall[None, :] >= np.asarray(recall_positions)[:, None] - 1e-9
    return float(np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0).mean())


def sampled_average_precision(values_at_thresholds) -> tuple[float, float]:
    """(R40, R11) as fractions from the values (precision or orientation similarity) at the official
    thresholds, in threshold order: 41 slots, non-increasing from the right, R40 = mean of slots 1..40,
    R11 = mean of slots 0, 4, .., 40."""
    values = np.asarray(values_at_thresholds, dtype=np.float64)
    if len(values) > NUM_SAMPLE_POINTS:
        raise ValueError(f"{len(values)} thresholds; the official sampling has at most {NUM_SAMPLE_POINTS}")
    slots = np.zeros(NUM_SAMPLE_POINTS)
    slots[:len(values)] = np.maximum.accumulate(values[::-1])[::-1] if len(values) else values
    return float(slots[1:].mean()), float(slots[::4].mean())


class DetectionCurve:
    """The precision-recall curve of one class (and level) over a dataset, frame by frame, under IoU
    matching; :meth:`average_precision` turns it into AP with either sampling."""

    def __init__(self, iou_threshold: float, with_orientation: bool = False):
        self.iou_threshold = float(iou_threshold)
        self.with_orientation = with_orientation
        self._frames: list[tuple[np.ndarray, np.ndarray, int]] = []
        self._matched: list[np.ndarray] = []

    def add_frame(self, overlaps, scores, gt_flags, det_flags, in_dont_care=None, similarity=None) -> None:
        """One frame: overlaps (D, G), scores (D,), flags, in_dont_care and similarity as
        :func:`frame_operating_points` (similarity required when the curve is ``with_orientation``)."""
        if self.with_orientation and similarity is None:
            raise ValueError("this curve computes AOS: add_frame needs the (D, G) orientation similarity")
        self._frames.append(frame_operating_points(overlaps, scores, gt_flags, det_flags, self.iou_threshold,
                                                   in_dont_care, similarity if self.with_orientation else None))
        self._matched.append(matched_scores(overlaps, scores, gt_flags, det_flags, self.iou_threshold))

    @property
    def num_gt(self) -> int:
        return sum(fn for _, _, fn in self._frames)

    def operating_points(self) -> dict[str, np.ndarray]:
        """Dataset-wide ``levels`` (L,) descending distinct scores, and ``tp``, ``fp``, ``fn``,
        ``recall``, ``precision`` and (with orientation) ``orientation`` (L,) with every detection
        scoring >= the level."""
        total_gt, columns = self.num_gt, 4 if self.with_orientation else 3
        levels, deltas = [], []
        for frame_levels, stats, fn_alone in self._frames:
            if len(frame_levels):
                start = np.zeros(columns)
                start[2] = fn_alone
                levels.append(frame_levels)
                deltas.append(stats - np.vstack([start, stats[:-1]]))
        if not levels:
            empty = np.zeros(0)
            points = {key: empty for key in ("levels", "tp", "fp", "fn", "recall", "precision")}
            return dict(points, orientation=empty) if self.with_orientation else points
        levels, deltas = np.concatenate(levels), np.concatenate(deltas).astype(np.float64)
        order = np.argsort(-levels, kind="stable")
        offset = np.zeros(columns)
        offset[2] = total_gt
        levels, totals = levels[order], np.cumsum(deltas[order], axis=0) + offset
        last = np.append(levels[1:] != levels[:-1], True)          # the state once every tie is in
        levels, totals = levels[last], totals[last]
        tp, fp, fn = np.rint(totals[:, :3]).T
        counted, detected = tp + fn, tp + fp
        points = {"levels": levels, "tp": tp, "fp": fp, "fn": fn,
                  "recall": np.divide(tp, counted, out=np.zeros_like(tp), where=counted > 0),
                  "precision": np.divide(tp, detected, out=np.zeros_like(tp), where=detected > 0)}
        if self.with_orientation:
            points["orientation"] = np.divide(totals[:, 3], detected, out=np.zeros_like(tp), where=detected > 0)
        return points

    def average_precision(self, sampling: str = "official") -> dict:
        """{'r40', 'r11', and with orientation 'aos_r40', 'aos_r11'} as fractions, 'recall' with every
        detection, 'num_gt', and 'thresholds' (official) — the APs None when no GT counts."""
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")
        points, num_gt = self.operating_points(), self.num_gt
        keys = ("r40", "r11", "aos_r40", "aos_r11") if self.with_orientation else ("r40", "r11")
        result = {"num_gt": num_gt}
        if num_gt == 0:
            return dict(result, recall=None, **{key: None for key in keys})
        result["recall"] = float(points["recall"][-1]) if len(points["levels"]) else 0.0
        series = {"": points["precision"]}
        if self.with_orientation:
            series["aos_"] = points["orientation"]
        if sampling == "official":
            thresholds = official_thresholds(np.concatenate(self._matched), num_gt)
            index = np.searchsorted(-points["levels"], -thresholds)
            if len(thresholds) and not np.array_equal(points["levels"][index], thresholds):
                raise AssertionError("an official threshold is not a detection score of the curve")
            result["thresholds"] = len(thresholds)
            for prefix, values in series.items():
                result[prefix + "r40"], result[prefix + "r11"] = sampled_average_precision(values[index])
        else:
            for prefix, values in series.items():
                result[prefix + "r40"] = interpolated_average_precision(points["recall"], values, R40_RECALLS)
                result[prefix + "r11"] = interpolated_average_precision(points["recall"], values, R11_RECALLS)
        return result


# -------------------------------------------------------------------- centre-distance matching

def centre_distance_matches(frames, distance_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Greedy centre-distance matching of one class over a dataset (module docstring).

    frames: per frame ``(gt_centres (G, 2), det_centres (D, 2), det_scores (D,))``, BEV x, y in metres.
    Returns ``(scores (K,) in matching order, is_tp (K,) bool, number of GTs)``.
    """
    scores, frame_of, row_of, num_gt = [], [], [], 0
    for index, (gt_centres, det_centres, det_scores) in enumerate(frames):
        num_gt += len(gt_centres)
        scores.append(np.asarray(det_scores, dtype=np.float64).reshape(-1))
        frame_of.append(np.full(len(scores[-1]), index))
        row_of.append(np.arange(len(scores[-1])))
    scores = np.concatenate(scores) if scores else np.zeros(0)
    frame_of = np.concatenate(frame_of) if frame_of else np.zeros(0, dtype=np.int64)
    row_of = np.concatenate(row_of) if row_of else np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(len(scores)), scores))[::-1]    # decreasing score, the later one first
    taken = [np.zeros(len(gt_centres), dtype=bool) for gt_centres, _, _ in frames]
    is_tp = np.zeros(len(order), dtype=bool)
    for k, d in enumerate(order):
        gt_centres, det_centres, _ = frames[frame_of[d]]
        free = ~taken[frame_of[d]]
        if not free.any():
            continue
        distances = np.linalg.norm(np.asarray(gt_centres, np.float64)[:, :2]
                                   - np.asarray(det_centres, np.float64)[row_of[d], :2], axis=1)
        nearest = int(np.argmin(np.where(free, distances, np.inf)))   # the first on ties
        if distances[nearest] < distance_threshold:
            taken[frame_of[d]][nearest] = True
            is_tp[k] = True
    return scores[order], is_tp, num_gt


def check_ap_clipping(min_recall: float, min_precision: float) -> None:
    """A ValueError unless 0 <= min_recall <= 1 and 0 <= min_precision < 1 (the AP is rescaled by
    1 - min_precision)."""
    if not 0.0 <= min_precision < 1.0 or not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"need 0 <= min_precision < 1 and 0 <= min_recall <= 1, got {min_precision}, {min_recall}")


def centre_distance_average_precision(frames, distance_threshold: float, min_recall: float = 0.1,
                                      min_precision: float = 0.1, num_recalls: int = 101) -> float | None:
    """nuScenes AP of one class at one distance threshold (module docstring), a fraction; None when
    the class has no GT. frames as :func:`centre_distance_matches`."""
    check_ap_clipping(min_recall, min_precision)
    _, is_tp, num_gt = centre_distance_matches(frames, distance_threshold)
    if num_gt == 0:
        return None
    if not is_tp.any():
        return 0.0
    tp = np.cumsum(is_tp).astype(np.float64)
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / num_gt
    sampled = np.interp(np.linspace(0.0, 1.0, num_recalls), recall, precision, right=0.0)
    first = round((num_recalls - 1) * min_recall) + 1      # the min_recall point itself is left out
    kept = np.clip(sampled[first:] - min_precision, 0.0, None)
    return float(kept.mean()) / (1.0 - min_precision)
