"""How real the synthetic world looks to a LiDAR detector: the same statistics for synthetic frames and
the real nuScenes key frame (and its 10-sweep stack), the distance between them, bird's-eye plots, and
the sim-to-real score of a detector on the real key frame.

Statistics of a frame (points (N, >=4) [x, y, z, intensity, ...] in the LiDAR frame; boxes (M, >=7)):
- ``points``: points per frame (every stored point);
- ``z``, ``range``, ``intensity``: histograms (shares per bin, edges in :data:`BINS`); z and intensity
  over the returns beyond :data:`EGO_RADIUS` (horizontal), range over all points;
- ``ground_share``: share of those returns within 0.2 m of the ground plane, :data:`GROUND_Z` below the
  sensor (nuScenes' LIDAR_TOP is mounted 1.84 m above the road);
- ``points_per_object``: median points inside the boxes of cars and pedestrians per distance band
  (:data:`DISTANCE_BANDS`, horizontal distance from the sensor).
Distances: Wasserstein-1 between the histograms (metres; intensity units), |log2| of the ratio of points
per frame, the absolute difference of ground shares, the mean |log2| ratio of the per-band medians.
Synthetic statistics pool several key frames (one frame has too few objects for stable medians).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np

from datasets.base import count_points_in_boxes

GROUND_Z = -1.84
EGO_RADIUS = 3.0
BINS = {"z": np.arange(-3.0, 8.01, 0.25), "range": np.arange(0.0, 80.01, 2.0), "intensity": np.arange(0, 257, 4.0)}
DISTANCE_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 50.0))
OBJECT_CLASSES = ("car", "pedestrian")
REAL_KEYFRAME = "nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
REAL_SWEEPS = "nuscenes/sweeps10_float16_N5.bin"
REAL_BOXES = "nuscenes/keyframe_boxes.json"


@dataclass
class LabelledFrame:
    """A point cloud with its annotated boxes, in the LiDAR frame."""
    points: np.ndarray                          # (N, >=4) x, y, z, intensity, ...
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # (M, >=7)
    names: list = field(default_factory=list)   # M detection names


@dataclass
class CloudStatistics:
    frames: int
    points: float                               # mean points per frame
    histograms: dict                            # name → (bins,) shares summing to 1
    ground_share: float
    points_per_object: dict                     # class → [median or None per band]
    objects_per_band: dict                      # class → [count per band]
    percentiles: dict                           # name → (1, 50, 99) percentiles

    def to_json(self) -> dict:
        return {"frames": self.frames, "points": self.points, "ground_share": self.ground_share,
                "points_per_object": self.points_per_object, "objects_per_band": self.objects_per_band,
                "percentiles": self.percentiles, "histograms": {k: v.tolist() for k, v in self.histograms.items()}}


def cloud_statistics(frames: list[LabelledFrame]) -> CloudStatistics:
    """The statistics of the module docstring, pooled over ``frames``."""
    if not frames:
        raise ValueError("cloud_statistics needs at least one frame")
    values = {"z": [], "range": [], "intensity": []}
    counts = {name: [[] for _ in DISTANCE_BANDS] for name in OBJECT_CLASSES}
    total = 0
    for frame in frames:
        points = np.asarray(frame.points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(f"points must be (N, >=4) [x, y, z, intensity, ...], got shape {points.shape}")
        total += len(points)
        horizontal = np.hypot(points[:, 0], points[:, 1])
        returns = points[horizontal >= EGO_RADIUS]
        values["range"].append(np.linalg.norm(points[:, :3], axis=1))
        values["z"].append(returns[:, 2])
        values["intensity"].append(returns[:, 3])
        boxes = np.asarray(frame.boxes, dtype=np.float64)
        if len(boxes) != len(frame.names) or (len(boxes) and (boxes.ndim != 2 or boxes.shape[1] < 7)):
            raise ValueError(f"boxes must be (M, >=7) with M names, got shape {boxes.shape} and "
                             f"{len(frame.names)} names")
        for box, name, count in zip(boxes, frame.names, count_points_in_boxes(points, boxes)):
            if name not in counts:
                continue
            distance = math.hypot(box[0], box[1])
            for band, (low, high) in enumerate(DISTANCE_BANDS):
                if low <= distance < high:
                    counts[name][band].append(int(count))
    pooled = {name: np.concatenate(v) for name, v in values.items()}
    histograms = {}
    for name, edges in BINS.items():
        histogram, _ = np.histogram(np.clip(pooled[name], edges[0], edges[-1] - 1e-6), edges)
        histograms[name] = histogram / max(histogram.sum(), 1)
    ground = float(np.mean(np.abs(pooled["z"] - GROUND_Z) < 0.2)) if len(pooled["z"]) else 0.0
    return CloudStatistics(
        frames=len(frames), points=total / len(frames), histograms=histograms, ground_share=ground,
        points_per_object={name: [float(np.median(c)) if c else None for c in bands] for name, bands in counts.items()},
        objects_per_band={name: [len(c) for c in bands] for name, bands in counts.items()},
        percentiles={name: [float(v) for v in np.percentile(pooled[name], [1, 50, 99])] if len(pooled[name]) else []
                     for name in pooled})


def wasserstein_from_histograms(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """Earth mover's distance between two histograms on the same edges (in the unit of the edges)."""
    return float(np.sum(np.abs(np.cumsum(a) - np.cumsum(b)) * np.diff(edges)))


def statistics_distance(a: CloudStatistics, b: CloudStatistics) -> dict:
    """Per statistic, how far ``a`` lies from ``b`` (0 = identical; see the module docstring)."""
    distance = {"points": abs(math.log2(max(a.points, 1) / max(b.points, 1))),
                "ground_share": abs(a.ground_share - b.ground_share)}
    for name, edges in BINS.items():
        distance[name] = wasserstein_from_histograms(a.histograms[name], b.histograms[name], edges)
    for name in OBJECT_CLASSES:
        pairs = [(x, y) for x, y in zip(a.points_per_object[name], b.points_per_object[name])
                 if x is not None and y is not None]
        distance[f"points_per_{name}"] = float(np.mean([abs(math.log2((x + 1) / (y + 1))) for x, y in pairs])) \
            if pairs else None
    return distance


def real_keyframe(real_dir: str) -> tuple[LabelledFrame, np.ndarray]:
    """The real nuScenes key frame (points (N, 5) x, y, z, intensity, ring) with its boxes in detection
    classes, and each box's annotated ``num_lidar_pts``. Boxes of no detection class are left out."""
    from datasets.point_files import read_points

    path = os.path.join(real_dir, REAL_BOXES)
    with open(path) as f:
        info = json.load(f)
    categories = {index: name for name, index in info["metainfo"]["categories"].items()}
    boxes, names, counts = [], [], []
    for instance in info["data_list"][0]["instances"]:
        label = instance["bbox_label_3d"]
        if label not in categories:
            continue
        if len(instance["bbox_3d"]) < 7:
            raise ValueError(f"{path}: bbox_3d must hold [x, y, z, l, w, h, yaw], got {instance['bbox_3d']}")
        boxes.append(instance["bbox_3d"][:7])  # l along the heading = dx, z = centre
        names.append(categories[label])
        counts.append(instance["num_lidar_pts"])
    points = read_points(os.path.join(real_dir, REAL_KEYFRAME))
    return LabelledFrame(points, np.array(boxes, dtype=np.float64).reshape(-1, 7), names), np.array(counts)


def real_sweeps(real_dir: str) -> LabelledFrame:
    """The real 10-sweep stack (points (N, 5) x, y, z, intensity, time lag), without boxes: it comes from
    another nuScenes key frame than REAL_KEYFRAME (its own key sweep holds 34,752 points, and the two
    clouds lie a median 0.4 m apart), whose annotations are not at hand. Its earlier sweeps lack the points
    within 1 m of the sensor, as the usual nuScenes loaders drop them."""
    from datasets.point_files import read_points

    return LabelledFrame(read_points(os.path.join(real_dir, REAL_SWEEPS)))


def synthetic_keyframes(root: str, split: str, limit: int | None = None, version: str = "v1.0-synthetic",
                        num_sweeps: int = 1) -> list[LabelledFrame]:
    """Key frames of a synthetic (or any nuScenes-layout) database with their boxes, up to ``limit``."""
    from datasets.nuscenes_dataset import NuScenesDataset

    dataset = NuScenesDataset(root, version, split, num_sweeps=num_sweeps)
    frames = []
    for index in range(len(dataset) if limit is None else min(limit, len(dataset))):
        info = dataset.infos[index]
        frames.append(LabelledFrame(dataset.points(index), info.gt_boxes[:, :7].astype(np.float64),
                                    list(info.gt_names)))
    return frames


def realism_table(statistics: dict[str, CloudStatistics], reference: str) -> str:
    """A Markdown table: one column per source, then the distance of each other source to ``reference``."""
    labels = list(statistics)
    others = [label for label in labels if label != reference]
    distances = {label: statistics_distance(statistics[label], statistics[reference]) for label in others}
    header = "| statistic | " + " | ".join(labels) + " | " + " | ".join(f"distance {o} ↔ {reference}"
                                                                        for o in others) + " |"
    lines = [header, "|" + "---|" * (1 + len(labels) + len(others))]

    def row(title, cell, key):
        values = " | ".join(cell(statistics[label]) for label in labels)
        gaps = " | ".join("–" if distances[o][key] is None else f"{distances[o][key]:.3g}" for o in others)
        lines.append(f"| {title} | {values} | {gaps} |")

    row("points per frame", lambda s: f"{s.points:,.0f}", "points")
    for name, unit in (("z", "m"), ("range", "m"), ("intensity", "")):
        row(f"{name} 1/50/99 % {unit}".strip(), lambda s, n=name: "/".join(f"{v:.3g}" for v in s.percentiles[n]),
            name)
    row("share within 0.2 m of the ground", lambda s: f"{s.ground_share:.3f}", "ground_share")
    bands = ", ".join(f"{low:g}–{high:g}" for low, high in DISTANCE_BANDS)
    for name in OBJECT_CLASSES:
        row(f"points per {name} (median at {bands} m)",
            lambda s, n=name: " / ".join("–" if v is None else f"{v:.0f}" for v in s.points_per_object[n]),
            f"points_per_{name}")
    return "\n".join(lines)


def bird_eye_plots(frames: dict[str, LabelledFrame], path: str, extent: float = 50.0) -> str:
    """Side-by-side bird's-eye views (points coloured by height, boxes in red) written to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datasets.boxes import box_corners

    columns = min(len(frames), 2)
    rows = -(-len(frames) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 6.2 * rows), squeeze=False)
    for axis in axes.flat[len(frames):]:
        axis.set_visible(False)
    for axis, (title, frame) in zip(axes.flat, frames.items()):
        points = frame.points
        near = (np.abs(points[:, 0]) < extent) & (np.abs(points[:, 1]) < extent)
        axis.scatter(points[near, 0], points[near, 1], c=np.clip(points[near, 2], -2.5, 3.0), s=0.05, cmap="viridis",
                     rasterized=True)
        if len(frame.boxes):
            for corners in box_corners(np.asarray(frame.boxes)[:, :7]):
                ring = corners[[0, 1, 2, 3, 0], :2]
                axis.plot(ring[:, 0], ring[:, 1], color="red", linewidth=0.6)
        axis.set_xlim(-extent, extent)
        axis.set_ylim(-extent, extent)
        axis.set_aspect("equal")
        axis.set_title(f"{title}: {len(points):,} points")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def sim_to_real(detect, real_dir: str, max_distance: float = 50.0, min_points: int = 5,
                score_threshold: float = 0.2, match_distance: float = 2.0,
                other_thresholds: tuple = (0.3, 0.4, 0.5)) -> dict:
    """Score a detector on the real nuScenes key frame.

    ``detect(points)`` gets the key frame as (N, 5) float32 [x, y, z, intensity, time lag = 0] and returns
    (boxes (K, >=7) in the LiDAR frame, scores (K,), names K detection names). Per class: recall of the
    annotated objects within ``max_distance`` (horizontal, from the sensor) with at least ``min_points``
    LiDAR points, a detection of the same class with score >= ``score_threshold`` within
    ``match_distance`` (centre, bird's eye) counting as found (greedy by score, one object each);
    false positives: such detections within ``max_distance`` that match no annotated object of their
    class (objects with fewer points may absorb a detection without counting towards recall).
    ``by_score``: found, recall and false positives at ``score_threshold`` and at each of
    ``other_thresholds``, the same detections scored again: the operating points a user picks from.
    """
    frame, counts = real_keyframe(real_dir)
    points = np.column_stack([frame.points[:, :4], np.zeros(len(frame.points))]).astype(np.float32)
    boxes, scores, names = detect(points)
    boxes, scores = np.asarray(boxes, dtype=np.float64).reshape(len(scores), -1), np.asarray(scores)
    if len(names) != len(scores) or (len(boxes) and boxes.shape[1] < 7):
        raise ValueError(f"detect must return boxes (K, >=7), scores (K,) and K names; got {boxes.shape}, "
                         f"{scores.shape}, {len(names)} names")
    thresholds = sorted({score_threshold, *other_thresholds})
    if not all(0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"score thresholds must lie in [0, 1], got {thresholds}")
    counted = (np.hypot(frame.boxes[:, 0], frame.boxes[:, 1]) <= max_distance) & (counts >= min_points)
    scored = {t: _score_detections(frame, counted, boxes, scores, names, t, max_distance, match_distance)
              for t in thresholds}
    result = scored[score_threshold]
    result["by_score"] = [{"score_threshold": t, "found": at["found"], "recall": at["recall"],
                           "false_positives": at["false_positives"]} for t, at in scored.items()]
    result["settings"] = {"max_distance": max_distance, "min_points": min_points, "score_threshold": score_threshold,
                          "match_distance": match_distance}
    return result


def _score_detections(frame, counted: np.ndarray, boxes: np.ndarray, scores: np.ndarray, names: list,
                      score_threshold: float, max_distance: float, match_distance: float) -> dict:
    """:func:`sim_to_real`'s counts at one score threshold."""
    keep = (scores >= score_threshold) & (np.hypot(boxes[:, 0], boxes[:, 1]) <= max_distance)
    order = np.argsort(-scores[keep], kind="stable")
    det_boxes, det_names = boxes[keep][order], [names[i] for i in np.nonzero(keep)[0][order]]
    classes = sorted(set(frame.names) | set(det_names))
    per_class, false_positives = {}, {}
    taken = np.zeros(len(frame.boxes), bool)
    found = np.zeros(len(frame.boxes), bool)
    for box, name in zip(det_boxes, det_names):
        candidates = [i for i in range(len(frame.boxes)) if frame.names[i] == name and not taken[i]]
        if candidates:
            gaps = np.hypot(frame.boxes[candidates, 0] - box[0], frame.boxes[candidates, 1] - box[1])
            best = int(np.argmin(gaps))
            if gaps[best] <= match_distance:
                taken[candidates[best]] = True
                found[candidates[best]] = True
                continue
        false_positives[name] = false_positives.get(name, 0) + 1
    for name in classes:
        mine = np.array([n == name for n in frame.names], bool) & counted
        if mine.any():
            per_class[name] = {"objects": int(mine.sum()), "found": int((found & mine).sum()),
                               "recall": float((found & mine).sum() / mine.sum())}
    objects = int(counted.sum())
    return {"recall": float((found & counted).sum() / objects) if objects else None, "objects": objects,
            "found": int((found & counted).sum()), "per_class": per_class,
            "false_positives": int(sum(false_positives.values())), "false_positives_per_class": false_positives}


def realism_report(sources: dict[str, list[LabelledFrame]], reference: str, out_dir: str) -> dict:
    """Statistics of every source (label → frames), the distances to ``reference``, and the bird's-eye
    plots of each source's first frame: writes ``realism.md``, ``realism.json`` and ``bird_eye.png``
    under ``out_dir`` and returns the JSON content."""
    from atomic_files import write_atomically, write_json_atomically

    if reference not in sources:
        raise ValueError(f"reference {reference!r} is not one of the sources {list(sources)}")
    statistics = {label: cloud_statistics(frames) for label, frames in sources.items()}
    table = realism_table(statistics, reference)
    plot = bird_eye_plots({label: frames[0] for label, frames in sources.items()},
                          os.path.join(out_dir, "bird_eye.png"))
    report = {"reference": reference, "statistics": {k: v.to_json() for k, v in statistics.items()},
              "distances": {label: statistics_distance(statistics[label], statistics[reference])
                            for label in sources if label != reference},
              "table": table, "bird_eye": plot}
    write_atomically(os.path.join(out_dir, "realism.md"), (table + "\n").encode())
    write_json_atomically(os.path.join(out_dir, "realism.json"), report)
    return report
