"""Ground-truth sampling (copy-paste of objects with their points) and class-balanced resampling.

The database holds, for every annotated object of the training split with enough points, its
box (LiDAR frame of its own frame) and its points relative to the box centre. Sampling pastes
objects at their recorded positions into another frame, rejecting any whose bounding circle meets
an existing or already pasted box (a conservative collision check), and removes the frame's own
points inside the pasted boxes. CBGS repeats frames so every class appears in about as many
samples as the most frequent one would in a balanced set (CBGS, Zhu et al. 2019).

The database is an ``.npz`` of plain arrays (:mod:`datasets.derived_files`) keyed by what it was
built from: the dataset's own key (version, split, sweeps, class names, table fingerprint), the
size and modification time of every point file read, ``min_points`` and a format version.
:func:`ensure_gt_database` rebuilds it when any of these changed.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from datasets.boxes import points_in_boxes
from datasets.derived_files import NotADerivedFile, key_differences, read_derived_file, write_derived_file

GT_DATABASE_FORMAT = 2   # 1 was a pickled list of SampledObject


@dataclass
class SampledObject:
    name: str
    box: np.ndarray        # (9,) in the LiDAR frame of its source frame
    points: np.ndarray     # (K, C) relative to the box centre (x, y, z shifted)


def gt_database_key(frames, min_points: int) -> dict:
    """Everything a GT database built from ``frames`` depends on. ``frames.source_key`` (a dict) and
    ``frames.point_files_fingerprint()`` are used when the dataset has them (:class:`NuScenesDataset`
    does); a dataset without them gets a key that cannot notice its source changing."""
    fingerprint = getattr(frames, "point_files_fingerprint", None)
    return {"kind": "gt_database", "format": GT_DATABASE_FORMAT, "min_points": int(min_points),
            "class_names": list(frames.class_names), "dataset": getattr(frames, "source_key", None),
            "point_files": fingerprint() if fingerprint is not None else None}


def _check_database_path(path: str) -> None:
    if not path.endswith(".npz"):
        raise ValueError(f"GT database path {path} must end in .npz (the database is an npz archive; older "
                         f"versions wrote a pickle, which is no longer read)")


def build_gt_database(frames, path: str, min_points: int = 5) -> dict[str, int]:
    """Collect every object with >= min_points points from ``frames`` (a dataset yielding
    'points', 'gt_boxes', 'gt_labels'); write them to ``path`` (.npz); return counts per class."""
    _check_database_path(path)
    names, boxes, counts, clouds = [], [], [], []
    for index in range(len(frames)):
        frame = frames[index]
        for box, label, inside in zip(frame["gt_boxes"], frame["gt_labels"],
                                      points_in_boxes(frame["points"], frame["gt_boxes"])):
            if len(inside) < min_points:
                continue
            points = frame["points"][inside].astype(np.float32)
            points[:, :3] -= box[:3]
            names.append(frames.class_names[int(label)])
            boxes.append(np.asarray(box, dtype=np.float32))
            counts.append(len(points))
            clouds.append(points)
    width = clouds[0].shape[1] if clouds else 0
    write_derived_file(path, gt_database_key(frames, min_points), {
        "names": np.array(names, dtype=str), "boxes": np.array(boxes, dtype=np.float32).reshape(-1, 9),
        "point_counts": np.array(counts, dtype=np.int64),
        "points": np.concatenate(clouds) if clouds else np.zeros((0, width), np.float32)})
    per_class: dict[str, int] = {}
    for name in names:
        per_class[name] = per_class.get(name, 0) + 1
    return per_class


def ensure_gt_database(frames, path: str, min_points: int = 5) -> str:
    """Build the GT database at ``path`` unless the one there was built from exactly these frames
    (:func:`gt_database_key`). Returns 'current', 'built' or 'rebuilt'.

    Raises:
        ValueError: ``path`` does not end in .npz, or holds a file that is not a GT database (never
            overwritten: delete it or choose another path).
    """
    _check_database_path(path)
    expected = gt_database_key(frames, min_points)
    try:
        stored, _ = read_derived_file(path)
    except FileNotFoundError:
        build_gt_database(frames, path, min_points)
        return "built"
    except NotADerivedFile as error:
        raise ValueError(f"{error}; not overwriting it: delete it or choose another GT database path") from None
    if stored.get("kind") != "gt_database":
        raise ValueError(f"{path} is a sparsevox {stored.get('kind')!r} file, not a GT database; not overwriting it")
    changed = key_differences(stored, expected)
    if not changed:
        return "current"
    warnings.warn(f"GT database {path} was built from other data ({', '.join(changed)} changed): rebuilding it",
                  stacklevel=2)
    build_gt_database(frames, path, min_points)
    return "rebuilt"


def load_gt_database(path: str, expected_key: dict | None = None) -> list[SampledObject]:
    """The objects of a database written by :func:`build_gt_database`; with ``expected_key``, an
    error when the database was built from other data (see :func:`ensure_gt_database`)."""
    _check_database_path(path)
    try:
        key, arrays = read_derived_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"GT database not found: {path}") from None
    except NotADerivedFile as error:
        raise ValueError(str(error)) from None
    if key.get("kind") != "gt_database" or key.get("format") != GT_DATABASE_FORMAT:
        raise ValueError(f"{path}: not a GT database of format {GT_DATABASE_FORMAT} (kind {key.get('kind')!r}, "
                         f"format {key.get('format')!r}); rebuild it")
    if expected_key is not None:
        changed = key_differences(key, expected_key)
        if changed:
            raise ValueError(f"GT database {path} is stale: built with other {', '.join(changed)}; rebuild it "
                             f"(ensure_gt_database)")
    ends = np.cumsum(arrays["point_counts"])
    if len(arrays["names"]) != len(arrays["boxes"]) or (ends[-1:] != len(arrays["points"])).any():
        raise ValueError(f"{path}: its arrays disagree in length (a damaged file); delete it to rebuild")
    return [SampledObject(str(name), box, arrays["points"][end - count:end])
            for name, box, count, end in zip(arrays["names"], arrays["boxes"], arrays["point_counts"], ends)]


class GTSampler:
    """Paste up to ``sample_groups[name]`` database objects of each class into a frame.

    ``expected_key``: :func:`gt_database_key` of the training frames, to refuse a stale database."""

    def __init__(self, database_path: str, sample_groups: dict[str, int], class_names: list[str],
                 expected_key: dict | None = None):
        objects = load_gt_database(database_path, expected_key)
        unknown = set(sample_groups) - set(class_names)
        if unknown:
            raise ValueError(f"sample_groups names {sorted(unknown)}, not among the classes {class_names}")
        self.by_class = {name: [o for o in objects if o.name == name] for name in sample_groups}
        absent = [name for name, pool in self.by_class.items() if not pool and sample_groups[name] > 0]
        if absent:
            warnings.warn(f"GT database {database_path} holds no {', '.join(absent)} objects: none will be pasted",
                          stacklevel=2)
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
        for inside in points_in_boxes(points, np.stack([obj.box for obj in pasted])):
            keep[inside] = False
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
    present, and at least one (fewer frames than classes must not round a class away, or every class).
    ``label_sets[i]`` is the set of class names in frame i."""
    rng = np.random.default_rng(seed)
    present = [name for name in class_names if any(name in labels for labels in label_sets)]
    if not present:
        return list(range(len(label_sets)))
    per_class = len(label_sets) / len(present)
    indices: list[int] = []
    for name in present:
        frames = [i for i, labels in enumerate(label_sets) if name in labels]
        indices.extend(int(i) for i in rng.choice(frames, size=max(1, round(per_class)), replace=True))
    return sorted(indices)
