"""Ground-truth sampling (copy-paste of objects with their points) and class-balanced resampling.

The database holds, for every annotated object of the training split with enough points, its
box (LiDAR frame of its own frame) and its points relative to the box centre. Sampling pastes
objects at their recorded positions into another frame, rejecting any whose bounding circle meets
an existing or already pasted box (a conservative collision check), and removes the frame's own
points inside the pasted boxes. CBGS repeats frames so every class appears in about as many
samples as the most frequent one would in a balanced set (CBGS, Zhu et al. 2019).
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import numpy as np

from datasets.atomic_files import write_atomically
from datasets.boxes import points_in_box


@dataclass
class SampledObject:
    name: str
    box: np.ndarray        # (9,) in the LiDAR frame of its source frame
    points: np.ndarray     # (K, C) relative to the box centre (x, y, z shifted)


def build_gt_database(frames, path: str, min_points: int = 5) -> dict[str, int]:
    """Collect every object with >= min_points points from ``frames`` (a dataset yielding
    'points', 'gt_boxes', 'gt_labels'); write them to ``path``; return counts per class."""
    objects: list[SampledObject] = []
    for index in range(len(frames)):
        frame = frames[index]
        for box, label in zip(frame["gt_boxes"], frame["gt_labels"]):
            inside = points_in_box(frame["points"], box)
            if inside.sum() < min_points:
                continue
            points = frame["points"][inside].copy()
            points[:, :3] -= box[:3]
            objects.append(SampledObject(frames.class_names[int(label)], box.copy(), points))
    write_atomically(path, pickle.dumps(objects))
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj.name] = counts.get(obj.name, 0) + 1
    return counts


class GTSampler:
    """Paste up to ``sample_groups[name]`` database objects of each class into a frame."""

    def __init__(self, database_path: str, sample_groups: dict[str, int], class_names: list[str]):
        with open(database_path, "rb") as f:
            objects: list[SampledObject] = pickle.load(f)
        unknown = set(sample_groups) - set(class_names)
        if unknown:
            raise ValueError(f"sample_groups names {sorted(unknown)}, not among the classes {class_names}")
        self.by_class = {name: [o for o in objects if o.name == name] for name in sample_groups}
        self.sample_groups, self.class_names = dict(sample_groups), list(class_names)

    def __call__(self, points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        """(points, boxes, labels) with the pasted objects; the frame's points inside them removed."""
        circles = [(b[0], b[1], math.hypot(b[3], b[4]) / 2) for b in boxes]
        pasted = []
        for name, count in self.sample_groups.items():
            pool = self.by_class[name]
            if not pool or count <= 0:
                continue
            for choice in rng.choice(len(pool), size=min(count, len(pool)), replace=False):
                obj = pool[int(choice)]
                x, y, radius = obj.box[0], obj.box[1], math.hypot(obj.box[3], obj.box[4]) / 2
                if any(math.hypot(x - cx, y - cy) < radius + cr for cx, cy, cr in circles):
                    continue  # would collide
                circles.append((x, y, radius))
                pasted.append(obj)
        if not pasted:
            return points, boxes, labels
        keep = np.ones(len(points), dtype=bool)
        for obj in pasted:
            keep &= ~points_in_box(points, obj.box)
        new_points = [points[keep]]
        for obj in pasted:
            moved = obj.points.copy()
            moved[:, :3] += obj.box[:3]
            new_points.append(moved[:, :points.shape[1]])
        new_boxes = np.concatenate([boxes, np.stack([o.box for o in pasted])]).astype(boxes.dtype)
        new_labels = np.concatenate([labels, [self.class_names.index(o.name) for o in pasted]]).astype(labels.dtype)
        return np.concatenate(new_points).astype(points.dtype), new_boxes, new_labels


def cbgs_indices(label_sets: list[set[str]], class_names: list[str], seed: int = 0) -> list[int]:
    """Frame indices resampled class-balanced: for each class, frames containing it are drawn (with
    replacement) so that each class contributes ~N/C frames, N the number of frames, C the classes
    present. ``label_sets[i]`` is the set of class names in frame i."""
    rng = np.random.default_rng(seed)
    present = [name for name in class_names if any(name in labels for labels in label_sets)]
    if not present:
        return list(range(len(label_sets)))
    per_class = len(label_sets) / len(present)
    indices: list[int] = []
    for name in present:
        frames = [i for i, labels in enumerate(label_sets) if name in labels]
        indices.extend(int(i) for i in rng.choice(frames, size=int(round(per_class)), replace=True))
    return sorted(indices)
