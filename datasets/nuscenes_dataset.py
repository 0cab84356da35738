"""nuScenes through the official devkit: key frame + sweeps in the key frame's LiDAR frame, and the
ground-truth boxes in the project's box convention. Serves real nuScenes and the synthetic world.

A frame is ``{'points': (N, 5) float32 [x, y, z, intensity, time lag s], 'gt_boxes': (M, 9)
[x, y, z, dx, dy, dz, yaw, vx, vy] in the LiDAR frame (z = box centre, dx along the heading),
'gt_labels': (M,) indices into class_names, 'meta': {...}}``. nuScenes' ``wlh`` is converted here.

Infos (paths, transforms, boxes) are built once and cached in an ``.npz``
(:mod:`datasets.derived_files`) keyed by the version, split, sweeps, class names, the devkit's
version (its splits and category mapping), a format version and the size and modification time of
every table: a changed class list, a regenerated or edited database gets fresh infos. Split names
are checked (the devkit's predefined splits and ``<version>/splits.json``): an unknown or empty
split is an error listing the splits this database has.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np

from datasets.derived_files import (
    NotADerivedFile,
    cache_folder,
    files_fingerprint,
    files_summary,
    key_digest,
    read_derived_file,
    write_derived_file,
)
from datasets.point_files import read_points
from optional_dependencies import require

DETECTION_CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
                     "pedestrian", "traffic_cone"]
NUSCENES_TABLES = ["attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
                   "sample_annotation", "sample_data", "scene", "sensor", "visibility"]
INFOS_FORMAT = 2   # 1 was the pickled list of SampleInfo; bump when the stored arrays change meaning


def transform_matrix(translation, rotation_wxyz) -> np.ndarray:
    """4x4 homogeneous transform from a translation and a [w, x, y, z] quaternion."""
    from pyquaternion import Quaternion

    matrix = np.eye(4)
    matrix[:3, :3] = Quaternion(rotation_wxyz).rotation_matrix
    matrix[:3, 3] = translation
    return matrix


@dataclass
class SampleInfo:
    token: str
    timestamp: int
    lidar_path: str
    lidar_to_ego: np.ndarray       # 4x4 of the key frame
    ego_to_global: np.ndarray      # 4x4 of the key frame
    sweeps: list                   # [(path, 4x4 sweep sensor → key frame sensor, time lag s)], newest first
    gt_boxes: np.ndarray           # (M, 9) LiDAR frame
    gt_names: list
    num_lidar_pts: np.ndarray      # (M,)


def check_nuscenes_root(root: str, version: str) -> str:
    """``<root>/<version>`` when it holds the 13 nuScenes tables; else one clear error."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    folder = os.path.join(root, version)
    if not os.path.isdir(folder):
        versions = sorted(name for name in os.listdir(root) if os.path.isfile(os.path.join(root, name, "sample.json")))
        if versions:
            hint = f"; it holds version(s) {', '.join(versions)} (set dataset.version)"
        elif os.path.isdir(os.path.join(root, "velodyne")):
            hint = "; it looks like a KITTI object folder (velodyne/): set dataset.type kitti"
        else:
            hint = ""
        raise ValueError(f"{root} is not a nuScenes database of version {version!r}: no {folder} folder{hint}")
    missing = [table for table in NUSCENES_TABLES if not os.path.isfile(os.path.join(folder, f"{table}.json"))]
    if missing:
        raise ValueError(f"{folder} is not a complete nuScenes database: missing table(s) "
                         f"{', '.join(t + '.json' for t in missing)}")
    maps = _read_json(os.path.join(folder, "map.json"))
    absent = [row.get("filename") for row in maps if not os.path.isfile(os.path.join(root, row.get("filename", "")))]
    if absent:   # the devkit loads every map mask and asserts otherwise
        raise ValueError(f"{root}: map file(s) {', '.join(map(str, absent[:3]))} named in {version}/map.json are "
                         f"missing (copy the maps/ folder with the tables)")
    return folder


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def custom_splits(root: str, version: str) -> dict[str, list[str]]:
    """The splits of ``<root>/<version>/splits.json`` ({} when absent), checked to be lists of scene names."""
    path = os.path.join(root, version, "splits.json")
    if not os.path.isfile(path):
        return {}
    splits = _read_json(path)
    if not isinstance(splits, dict) or not all(isinstance(names, list) and all(isinstance(n, str) for n in names)
                                               for names in splits.values()):
        raise ValueError(f"{path}: expected a JSON object mapping split names to lists of scene names")
    return splits


def split_scene_names(root: str, version: str, split: str) -> list[str]:
    """Names of the scenes of ``split`` present in the database, as the devkit resolves them: its
    predefined splits first, then ``splits.json``.

    Raises:
        ValueError: the split is unknown, holds no scene of this database, or (splits.json) names
            scenes the database lacks; the message lists the splits that do have scenes here.
    """
    require("nuscenes", "nuScenes splits")
    from nuscenes.utils.splits import create_splits_scenes

    present = {row["name"] for row in _read_json(os.path.join(root, version, "scene.json"))}
    predefined, custom = create_splits_scenes(), custom_splits(root, version)
    every = {**custom, **predefined}   # the devkit's order: a predefined name shadows a custom one
    available = sorted(name for name, scenes in every.items() if present.intersection(scenes))
    if split not in every:
        raise ValueError(f"unknown split {split!r} for {root}/{version}; splits with scenes here: "
                         f"{', '.join(available) or 'none'}")
    if split not in predefined:
        absent = [name for name in custom[split] if name not in present]
        if absent:
            raise ValueError(f"split {split!r} of {root}/{version}/splits.json names {len(absent)} scene(s) the "
                             f"database lacks: {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    selected = [name for name in every[split] if name in present]
    if not selected:
        shadowed = f" (splits.json's {split!r} is shadowed by the devkit's predefined split of that name: rename it)" \
            if split in predefined and split in custom else ""
        raise ValueError(f"split {split!r} has no scenes in {root}/{version}{shadowed}; splits with scenes here: "
                         f"{', '.join(available) or 'none'}")
    return selected


def check_class_names(class_names) -> list[str]:
    """``class_names`` as a list, each a nuScenes detection class, no repeats."""
    if isinstance(class_names, str):
        raise ValueError(f"class_names must be a list of names, got the string {class_names!r}")
    names = list(class_names)
    unknown = [name for name in names if name not in DETECTION_CLASSES]
    if not names or unknown:
        raise ValueError(f"class_names {names}: {'empty' if not names else f'{unknown} not nuScenes detection classes'}"
                         f"; valid: {DETECTION_CLASSES}")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names {names} repeats a name")
    return names


def _devkit_version() -> str:
    """The devkit defines the predefined splits and the category → class mapping the infos use."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nuscenes-devkit")
    except PackageNotFoundError:
        return "unknown"


class NuScenesDataset:
    """Frames of one split of a nuScenes-layout database.

    Args:
        root: the dataroot (holding ``<version>/``, ``samples/``, ``sweeps/``).
        version: e.g. 'v1.0-mini', 'v1.0-trainval', 'v1.0-synthetic'.
        split: a predefined split ('mini_val', 'train', ...) or one from ``<version>/splits.json``.
        num_sweeps: key frame plus up to num_sweeps - 1 earlier sweeps (fewer at a scene's start).
        class_names: detection classes kept; boxes of other categories are dropped.
        cache_dir: where the info cache lives (default: ``root`` when writable, else the user cache
            folder, see :func:`datasets.derived_files.cache_folder`).
        sweep_ego_radius: the earlier sweeps lose their points within this many metres of their sensor
            in x and y (the ego's roof and the placeholders of beams without a return, which would pile
            up at the key frame's origin as the ego moves), as OpenPCDet's and mmdetection3d's loaders
            do; the key frame keeps all. 0 keeps every point.
    Raises:
        ValueError: ``root`` is not a nuScenes database of ``version``, the split is unknown or
            empty, a class name is not a nuScenes detection class.
    """

    def __init__(self, root: str, version: str, split: str, num_sweeps: int = 10, class_names=DETECTION_CLASSES,
                 cache_dir: str | None = None, sweep_ego_radius: float = 1.0):
        if isinstance(num_sweeps, bool) or not isinstance(num_sweeps, (int, np.integer)) or num_sweeps < 1:
            raise ValueError(f"num_sweeps must be a whole number >= 1, got {num_sweeps!r}")
        self.root, self.version, self.split, self.num_sweeps = root, version, split, int(num_sweeps)
        self.class_names = check_class_names(class_names)
        if not 0 <= sweep_ego_radius < math.inf:
            raise ValueError(f"sweep_ego_radius must be finite metres >= 0, got {sweep_ego_radius!r}")
        self.sweep_ego_radius = float(sweep_ego_radius)
        folder = check_nuscenes_root(root, version)
        tables = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
        identity = {"kind": "nuscenes_infos", "format": INFOS_FORMAT, "root": os.path.realpath(root),
                    "version": version, "split": split, "num_sweeps": self.num_sweeps,
                    "class_names": self.class_names, "devkit": _devkit_version()}
        self.infos_key = {**identity, "tables": files_fingerprint(os.path.join(folder, t) for t in tables)}
        # files derived from the points (the GT database) depend on the radius too; the infos do not
        self.source_key = {**self.infos_key, "sweep_ego_radius": self.sweep_ego_radius}
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{version}_{split}_{self.num_sweeps}")
        self.cache_path = os.path.join(cache_folder(root, cache_dir),
                                       f".sparsevox_infos_{safe}_{key_digest(identity)}.npz")
        self.infos = self._cached_infos()
        if self.infos is None:
            self.infos = self._build_infos(split_scene_names(root, version, split))
            if not self.infos:
                raise ValueError(f"split {split!r} of {root}/{version} has scenes but no samples")
            try:
                write_derived_file(self.cache_path, self.infos_key, infos_to_arrays(self.infos))
            except OSError as error:   # a cache that cannot be written costs time, not correctness
                warnings.warn(f"could not write the info cache {self.cache_path}: {error}", stacklevel=2)
        self._check_point_files()

    def point_file_paths(self) -> list[str]:
        """Every point file the frames read (key frames and sweeps), relative to the root, sorted."""
        return sorted({info.lidar_path for info in self.infos} | {p for info in self.infos for p, _, _ in info.sweeps})

    def _check_point_files(self) -> None:
        """A partial download (the metadata without every blob) fails here, not hours into training."""
        paths = self.point_file_paths()
        missing = [path for path in paths if not os.path.isfile(os.path.join(self.root, path))]
        if missing:
            raise FileNotFoundError(f"{self.root}: {len(missing)} of the {len(paths)} point files split {self.split!r} "
                                    f"reads are missing (first: {missing[0]}); a partial download?")

    def _cached_infos(self):
        """The cached infos when the cache file's key matches this dataset's, else None."""
        try:
            key, arrays = read_derived_file(self.cache_path)
        except (FileNotFoundError, NotADerivedFile):
            return None
        if key != json.loads(json.dumps(self.infos_key)):
            return None
        try:
            return infos_from_arrays(arrays)
        except (KeyError, ValueError, IndexError):
            return None

    def point_files_fingerprint(self) -> dict:
        """Count, total size and a digest of the size and modification time of every point file the
        frames read (key frames and sweeps), for files derived from the points (the GT database)."""
        return files_summary(self.point_file_paths(), self.root)

    def __len__(self) -> int:
        return len(self.infos)

    def _build_infos(self, scene_names: list[str]) -> list[SampleInfo]:
        require("nuscenes", "reading nuScenes databases")
        from nuscenes.eval.detection.utils import category_to_detection_name
        from nuscenes.nuscenes import NuScenes
        from pyquaternion import Quaternion

        try:
            nusc = NuScenes(self.version, self.root, verbose=False)
        except json.JSONDecodeError:
            folder = os.path.join(self.root, self.version)
            for table in NUSCENES_TABLES:   # the devkit's error does not name the table; find it
                _read_json(os.path.join(folder, f"{table}.json"))
            raise
        scene_names = set(scene_names)
        infos, between_key_frames = [], False
        for sample in nusc.sample:
            if nusc.get("scene", sample["scene_token"])["name"] not in scene_names:
                continue
            lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", lidar["ego_pose_token"])
            lidar_to_ego = transform_matrix(calibration["translation"], calibration["rotation"])
            ego_to_global = transform_matrix(pose["translation"], pose["rotation"])
            global_to_lidar = np.linalg.inv(ego_to_global @ lidar_to_ego)
            sweeps, previous = [], lidar["prev"]
            while previous and len(sweeps) < self.num_sweeps - 1:
                sweep = nusc.get("sample_data", previous)
                sweep_calibration = nusc.get("calibrated_sensor", sweep["calibrated_sensor_token"])
                sweep_pose = nusc.get("ego_pose", sweep["ego_pose_token"])
                to_global = transform_matrix(sweep_pose["translation"], sweep_pose["rotation"]) @ \
                    transform_matrix(sweep_calibration["translation"], sweep_calibration["rotation"])
                sweeps.append((sweep["filename"], global_to_lidar @ to_global,
                               (lidar["timestamp"] - sweep["timestamp"]) / 1e6))
                previous = sweep["prev"]
            boxes, names, counts = [], [], []
            lidar_rotation = Quaternion(matrix=global_to_lidar[:3, :3], atol=1e-6)
            for annotation_token in sample["anns"]:
                annotation = nusc.get("sample_annotation", annotation_token)
                name = category_to_detection_name(annotation["category_name"])
                if name not in self.class_names:
                    continue
                centre = global_to_lidar @ np.array([*annotation["translation"], 1.0])
                orientation = lidar_rotation * Quaternion(annotation["rotation"])
                yaw = math.atan2(orientation.rotation_matrix[1, 0], orientation.rotation_matrix[0, 0])
                velocity = nusc.box_velocity(annotation_token)
                velocity = np.nan_to_num(velocity, nan=0.0)
                velocity = global_to_lidar[:3, :3] @ velocity
                width, length, height = annotation["size"]
                boxes.append([*centre[:3], length, width, height, yaw, velocity[0], velocity[1]])
                names.append(name)
                counts.append(annotation["num_lidar_pts"] + annotation["num_radar_pts"])
            infos.append(SampleInfo(sample["token"], sample["timestamp"], lidar["filename"], lidar_to_ego,
                                    ego_to_global, sweeps, np.array(boxes, dtype=np.float32).reshape(-1, 9),
                                    names, np.array(counts, dtype=np.int64)))
            between_key_frames |= bool(lidar["prev"]) and not nusc.get("sample_data", lidar["prev"])["is_key_frame"]
        if self.num_sweeps > 1 and infos and not between_key_frames:
            # the chain would hand over the earlier key frames as sweeps, 0.5 s apart instead of 0.05
            raise ValueError(f"{self.root} ({self.version}, split {self.split}) holds LiDAR key frames alone, no "
                             f"sweeps between them (a synthetic database made with --no-sweeps?); num_sweeps "
                             f"{self.num_sweeps} needs them: set dataset.num_sweeps 1 or use a database with sweeps")
        return infos

    def points(self, index: int) -> np.ndarray:
        """(N, 5) key frame + sweeps in the key frame's LiDAR frame: x, y, z, intensity, time lag; the sweeps
        without their points within ``sweep_ego_radius`` of their sensor."""
        info = self.infos[index]
        key = read_points(os.path.join(self.root, info.lidar_path), point_width=5, dtype=np.float32)
        clouds = [np.column_stack([key[:, :4], np.zeros(len(key), dtype=np.float32)])]
        for path, to_key, lag in info.sweeps:
            sweep = read_points(os.path.join(self.root, path), point_width=5, dtype=np.float32)
            if self.sweep_ego_radius:
                sweep = sweep[(np.abs(sweep[:, 0]) >= self.sweep_ego_radius) |
                              (np.abs(sweep[:, 1]) >= self.sweep_ego_radius)]
            xyz = sweep[:, :3] @ to_key[:3, :3].T.astype(np.float32) + to_key[:3, 3].astype(np.float32)
            clouds.append(np.column_stack([xyz, sweep[:, 3], np.full(len(sweep), lag, dtype=np.float32)]))
        return np.concatenate(clouds).astype(np.float32)

    def __getitem__(self, index: int) -> dict:
        info = self.infos[index]
        labels = np.array([self.class_names.index(name) for name in info.gt_names], dtype=np.int64)
        return {"points": self.points(index), "gt_boxes": info.gt_boxes.copy(), "gt_labels": labels,
                "meta": {"token": info.token, "num_lidar_pts": info.num_lidar_pts,
                         "lidar_to_ego": info.lidar_to_ego, "ego_to_global": info.ego_to_global}}


def infos_to_arrays(infos: list[SampleInfo]) -> dict[str, np.ndarray]:
    """Plain arrays (numbers and fixed-width strings) holding ``infos``; see :func:`infos_from_arrays`."""
    sweeps = [sweep for info in infos for sweep in info.sweeps]
    return {
        "token": np.array([info.token for info in infos], dtype=str),
        "timestamp": np.array([info.timestamp for info in infos], dtype=np.int64),
        "lidar_path": np.array([info.lidar_path for info in infos], dtype=str),
        "lidar_to_ego": np.array([info.lidar_to_ego for info in infos], dtype=np.float64).reshape(-1, 4, 4),
        "ego_to_global": np.array([info.ego_to_global for info in infos], dtype=np.float64).reshape(-1, 4, 4),
        "sweep_counts": np.array([len(info.sweeps) for info in infos], dtype=np.int64),
        "sweep_path": np.array([path for path, _, _ in sweeps], dtype=str),
        "sweep_to_key": np.array([to_key for _, to_key, _ in sweeps], dtype=np.float64).reshape(-1, 4, 4),
        "sweep_lag": np.array([lag for _, _, lag in sweeps], dtype=np.float64),
        "box_counts": np.array([len(info.gt_boxes) for info in infos], dtype=np.int64),
        "gt_boxes": np.concatenate([info.gt_boxes for info in infos]).astype(np.float32).reshape(-1, 9)
        if infos else np.zeros((0, 9), np.float32),
        "gt_names": np.array([name for info in infos for name in info.gt_names], dtype=str),
        "num_lidar_pts": np.concatenate([info.num_lidar_pts for info in infos]).astype(np.int64)
        if infos else np.zeros(0, np.int64),
    }


def infos_from_arrays(arrays: dict[str, np.ndarray]) -> list[SampleInfo]:
    """The :class:`SampleInfo` list that :func:`infos_to_arrays` stored."""
    sweep_ends, box_ends = np.cumsum(arrays["sweep_counts"]), np.cumsum(arrays["box_counts"])
    if (sweep_ends[-1:] != len(arrays["sweep_path"])).any() or (box_ends[-1:] != len(arrays["gt_boxes"])).any():
        raise ValueError("info arrays disagree in length")
    infos = []
    for index in range(len(arrays["token"])):
        sweeps = range(sweep_ends[index] - arrays["sweep_counts"][index], sweep_ends[index])
        boxes = slice(box_ends[index] - arrays["box_counts"][index], box_ends[index])
        infos.append(SampleInfo(
            str(arrays["token"][index]), int(arrays["timestamp"][index]), str(arrays["lidar_path"][index]),
            arrays["lidar_to_ego"][index], arrays["ego_to_global"][index],
            [(str(arrays["sweep_path"][i]), arrays["sweep_to_key"][i], float(arrays["sweep_lag"][i])) for i in sweeps],
            arrays["gt_boxes"][boxes], [str(name) for name in arrays["gt_names"][boxes]],
            arrays["num_lidar_pts"][boxes]))
    return infos
