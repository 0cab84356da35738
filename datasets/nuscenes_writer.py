"""Writing synthetic scenes as a genuine nuScenes database that the official devkit loads.

Layout (facts in ../shared/nuscenes-format.md): ``<root>/<version>/`` holds the 13 tables and
``splits.json``; key frames go to ``samples/LIDAR_TOP/`` and sweeps to ``sweeps/LIDAR_TOP/`` as
float32 x 5 ``.pcd.bin`` files in the sensor frame; a map row points at an (empty) PNG.
Key frames at 2 Hz, sweeps at 20 Hz; a sweep belongs to the next key frame's sample.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
from dataclasses import dataclass

import numpy as np

from atomic_files import write_atomically
from datasets.base import count_points_in_boxes
from datasets.synthetic_sensor import mount_rotation
from datasets.synthetic_world import CLASSES, Scene, random_scene, ray_cast

SWEEP_HZ, KEYFRAME_EVERY = 20, 10        # 20 Hz sweeps, every 10th a key frame (2 Hz)
TRAIN_SPLIT, VAL_SPLIT = "synthetic_train", "synthetic_val"  # custom names: predefined ones are ignored
SYNTHETIC_VERSION = "v1.0-synthetic"
ATTRIBUTES = ["vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
              "pedestrian.sitting_lying_down", "cycle.with_rider", "cycle.without_rider"]
VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]
ANNOTATION_RANGE = 60.0  # metres from the ego; farther objects are not annotated


def token(*parts) -> str:
    """A deterministic 32-hex token from its parts."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def quaternion_z(yaw: float) -> list[float]:
    """[w, x, y, z] of a rotation about +z."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def quaternion_from_matrix(rotation: np.ndarray) -> list[float]:
    """[w, x, y, z] (w >= 0) of a (3, 3) rotation matrix, from its largest diagonal term (stable at any angle)."""
    m = np.asarray(rotation, dtype=float)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4]
    return [float(v) for v in (q if q[0] >= 0 else [-v for v in q])]


@dataclass
class DatabaseSummary:
    root: str
    version: str
    scenes: int
    samples: int
    sweeps: int          # LiDAR frames between the key frames (key frames not counted)
    annotations: int


class NuScenesWriter:
    """Accumulates the rows of the 13 tables while scenes are added, then writes them."""

    def __init__(self, root: str, version: str = SYNTHETIC_VERSION):
        self.root, self.version = root, version
        self.tables = {name: [] for name in ("category", "attribute", "visibility", "instance", "sensor",
                                             "calibrated_sensor", "ego_pose", "log", "scene", "sample",
                                             "sample_data", "sample_annotation", "map")}
        self.splits = {TRAIN_SPLIT: [], VAL_SPLIT: []}
        for name, (category, *_rest) in CLASSES.items():
            self.tables["category"].append({"token": token("category", category), "name": category,
                                            "description": f"synthetic {name}"})
        for name in ATTRIBUTES:
            self.tables["attribute"].append({"token": token("attribute", name), "name": name, "description": ""})
        for level_token, level in VISIBILITY:
            self.tables["visibility"].append({"token": level_token, "level": level, "description": ""})
        self.sensor_token = token("sensor", "LIDAR_TOP")
        self.tables["sensor"].append({"token": self.sensor_token, "channel": "LIDAR_TOP", "modality": "lidar"})
        self.sweep_count = 0

    def add_scene(self, scene: Scene, index: int, split: str, rng: np.random.Generator, start_us: int,
                  sweeps: bool = True) -> None:
        """Add ``scene``'s LiDAR frames (every sweep at 20 Hz, or with ``sweeps`` False the 2 Hz key frames
        alone), samples and annotations. Each frame draws its sensor noise from its own child of ``rng``, so a
        key frame is the same with or without the sweeps between key frames."""
        name = f"synthetic-{index:04d}"
        log_token, scene_token = token("log", name), token("scene", name)
        calibration = token("calibrated_sensor", name)
        lidar = scene.lidar
        self.tables["calibrated_sensor"].append({
            "token": calibration, "sensor_token": self.sensor_token, "translation": list(lidar.mount),
            "rotation": quaternion_from_matrix(mount_rotation(lidar)), "camera_intrinsic": []})
        self.tables["log"].append({"token": log_token, "logfile": name, "vehicle": "synthetic-ego",
                                   "date_captured": "2026-11-23", "location": "synthetic-city"})
        self.splits[split].append(name)
        num_frames = int(round(scene.duration * SWEEP_HZ)) + 1
        frame_rngs = rng.spawn(num_frames)
        keyframes = list(range(0, num_frames, KEYFRAME_EVERY))
        sample_tokens = [token("sample", name, k) for k in keyframes]
        annotations: dict[int, list[dict]] = {i: [] for i in range(len(scene.objects))}
        previous_data = ""
        for step in range(num_frames):
            is_key = step % KEYFRAME_EVERY == 0
            if not (is_key or sweeps):
                continue
            t = step / SWEEP_HZ
            timestamp = start_us + int(round(t * 1e6))
            sweep = ray_cast(scene, t, frame_rngs[step])
            sample_index = min(-(-step // KEYFRAME_EVERY), len(keyframes) - 1)
            folder = "samples" if is_key else "sweeps"
            filename = f"{folder}/LIDAR_TOP/{name}__LIDAR_TOP__{timestamp}.pcd.bin"
            write_atomically(os.path.join(self.root, filename), sweep.points.tobytes())
            position, ego_yaw = scene.ego_pose(t)
            ego_token = token("ego_pose", name, step)
            self.tables["ego_pose"].append({"token": ego_token, "timestamp": timestamp,
                                            "translation": [float(position[0]), float(position[1]), 0.0],
                                            "rotation": quaternion_z(ego_yaw)})
            data_token = token("sample_data", name, step)
            self.tables["sample_data"].append({
                "token": data_token, "sample_token": sample_tokens[sample_index], "ego_pose_token": ego_token,
                "calibrated_sensor_token": calibration, "timestamp": timestamp, "fileformat": "pcd",
                "is_key_frame": is_key, "height": 0, "width": 0, "filename": filename, "prev": previous_data,
                "next": ""})
            if previous_data:
                self.tables["sample_data"][-2]["next"] = data_token
            previous_data = data_token
            self.sweep_count += int(not is_key)
            if is_key:
                self._add_sample(scene, name, scene_token, sample_tokens, sample_index, timestamp, sweep, t,
                                 annotations)
        self._link_annotations(scene, name, annotations)
        self.tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(keyframes),
                                     "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                                     "name": name, "description": "synthetic street"})

    def _add_sample(self, scene, name, scene_token, sample_tokens, index, timestamp, sweep, t, annotations):
        self.tables["sample"].append({
            "token": sample_tokens[index], "timestamp": timestamp, "scene_token": scene_token,
            "prev": sample_tokens[index - 1] if index else "",
            "next": sample_tokens[index + 1] if index + 1 < len(sample_tokens) else ""})
        points_global = sweep.points[:, :3] @ sweep.rotation.T + sweep.origin
        ego_position, _ = scene.ego_pose(t)
        annotated = [i for i, (obj, box) in enumerate(zip(scene.objects, sweep.boxes))
                     if obj.annotated and np.linalg.norm(box[:2] - ego_position) <= ANNOTATION_RANGE]
        for i, count in zip(annotated, count_points_in_boxes(points_global, sweep.boxes[annotated]).tolist()):
            obj, box = scene.objects[i], sweep.boxes[i]
            category, _size, _speeds, moving, static, _reflectivity = CLASSES[obj.name]
            attribute = moving if np.linalg.norm(obj.velocity) > 0.2 else static
            annotations[i].append({
                "token": token("annotation", name, i, index), "sample_token": sample_tokens[index],
                "instance_token": token("instance", name, i),
                "visibility_token": "4" if count >= 20 else ("3" if count >= 5 else "1"),
                "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                "translation": [float(v) for v in box[:3]],
                "size": [float(box[4]), float(box[3]), float(box[5])],  # w (dy), l (dx), h
                "rotation": quaternion_z(float(box[6])), "prev": "", "next": "",
                "num_lidar_pts": count, "num_radar_pts": 0})

    def _link_annotations(self, scene, name, annotations):
        for i, rows in annotations.items():
            if not rows:
                continue
            for previous, current in zip(rows, rows[1:]):
                previous["next"], current["prev"] = current["token"], previous["token"]
            self.tables["sample_annotation"].extend(rows)
            category = CLASSES[scene.objects[i].name][0]
            self.tables["instance"].append({"token": token("instance", name, i),
                                            "category_token": token("category", category),
                                            "nbr_annotations": len(rows), "first_annotation_token": rows[0]["token"],
                                            "last_annotation_token": rows[-1]["token"]})

    def finish(self) -> DatabaseSummary:
        """Write the map file, the tables and splits.json (each atomically)."""
        map_file = "maps/synthetic-city.png"
        write_atomically(os.path.join(self.root, map_file), b"")
        self.tables["map"] = [{"token": token("map", "synthetic-city"), "category": "semantic_prior",
                               "filename": map_file, "log_tokens": [row["token"] for row in self.tables["log"]]}]
        folder = os.path.join(self.root, self.version)
        for name, rows in self.tables.items():
            write_atomically(os.path.join(folder, f"{name}.json"), json.dumps(rows, indent=0).encode())
        write_atomically(os.path.join(folder, "splits.json"), json.dumps(self.splits, indent=1).encode())
        return DatabaseSummary(self.root, self.version, len(self.tables["scene"]), len(self.tables["sample"]),
                               self.sweep_count, len(self.tables["sample_annotation"]))


# Bump when the same settings generate another world (2: one generator per scene, the sensor's tilted mount;
# 3: unbroken barrier rows at most road works, bins, benches, post boxes, planters, bollards and hydrants;
# 4: about nuScenes' share of trucks, one for every 5 cars; 5: trailers in the lanes towed by a tractor,
# railings along some kerbs; 6: sidewalks and kerbstones of varied brightness; 7: low walls in front of
# set-back houses and along parks; 8: each LiDAR frame draws its sensor noise from its own generator, so
# that key frames are the same with or without the sweeps between them).
WORLD_VERSION = 8
WORLD_FILE = "synthetic_world.json"  # beside the tables: what generated the database


def world_settings(scenes: int, seed: int = 0, keyframes_per_scene: int = 4, val_fraction: float = 0.25,
                   lidar: str = "hdl32e", sweeps: bool = True) -> dict:
    """Everything a synthetic database's content depends on, as :func:`make_synthetic_database` records it."""
    return {"world_version": WORLD_VERSION, "scenes": scenes, "seed": seed, "keyframes_per_scene": keyframes_per_scene,
            "val_fraction": val_fraction, "lidar": lidar, "sweeps": sweeps}


def require_world(root: str, settings: dict, version: str = SYNTHETIC_VERSION) -> None:
    """Refuse a database at ``root`` that these ``settings`` would not generate (another world, or one made
    before databases recorded their settings): reusing it would train and score on another world silently."""
    path = os.path.join(root, version, WORLD_FILE)
    try:
        with open(path) as f:
            found = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{root}: a synthetic database without {version}/{WORLD_FILE} (made by an older "
                         f"sparsevox, another world than today's); remove it to generate it again") from None
    differ = [f"{key} {found.get(key)!r}, expected {value!r}" for key, value in settings.items()
              if found.get(key) != value]
    if differ:
        raise ValueError(f"{root}: a synthetic database of other settings ({'; '.join(differ)}); remove it to "
                         f"generate it again")


def require_synthetic_reader(dataset, source: str) -> None:
    """Refuse a config's ``dataset`` section (None, or a dataset config) that does not read a synthetic
    database as :func:`make_synthetic_database` writes it: a nuScenes database of this version and these
    splits. ``source`` names the config in the message."""
    expected = {"type": "nuscenes", "version": SYNTHETIC_VERSION, "train_split": TRAIN_SPLIT, "val_split": VAL_SPLIT}
    found = {key: getattr(dataset, key, None) for key in expected}
    wrong = [f"dataset.{key} {found[key]!r}, the world's {value!r}" for key, value in expected.items()
             if found[key] != value]
    if wrong:
        raise ValueError(f"{source} does not read the synthetic world, a nuScenes database ({'; '.join(wrong)}); "
                         f"give a config whose dataset section reads it, as configs/centerpoint_synthetic_cpu.yaml's "
                         f"does")


def make_synthetic_database(root: str, scenes: int, seed: int = 0, keyframes_per_scene: int = 4,
                            val_fraction: float = 0.25, lidar: str = "hdl32e", version: str = SYNTHETIC_VERSION,
                            progress=None, workers: int | None = 1, sweeps: bool = True) -> DatabaseSummary:
    """Generate ``scenes`` random scenes and write them as a nuScenes database under ``root``.

    The last ``val_fraction`` of the scenes (at least one, when there are two or more) form the
    ``synthetic_val`` split, the rest ``synthetic_train``. ``progress`` wraps the scene range
    (e.g. ``tqdm``). Deterministic for a given seed; scene ``i`` is drawn from the generator of ``[seed, i]``,
    so it is the same scene whatever the number of scenes or the sensor. ``workers`` processes draw and
    ray-cast the scenes side by side (None: one per CPU core this process may use); the database is byte for
    byte the same for any number of them. ``sweeps`` False writes the 2 Hz key frames alone, without the 20 Hz
    sweeps between them: the same key frames in a third of the time, for models of ``dataset.num_sweeps: 1``
    (the loader refuses more sweeps from such a database).
    """
    from datasets.synthetic_world import LIDARS

    if scenes < 1 or keyframes_per_scene < 1:
        raise ValueError(f"need scenes >= 1 and keyframes_per_scene >= 1, got {scenes} and {keyframes_per_scene}")
    if lidar not in LIDARS:
        raise ValueError(f"unknown lidar {lidar!r}; valid: {sorted(LIDARS)}")
    if not 0.0 <= val_fraction < 1.0:  # at 1 or above every scene would be validation, none left to train on
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    # an unwritable root (a file in the way, no permission) fails now, not after the scenes are drawn
    os.makedirs(os.path.join(root, version), exist_ok=True)
    writer = NuScenesWriter(root, version)
    num_val = max(1, round(scenes * val_fraction)) if scenes > 1 else 0
    duration = (keyframes_per_scene - 1) * KEYFRAME_EVERY / SWEEP_HZ
    jobs = [(root, version, index, seed, VAL_SPLIT if index >= scenes - num_val else TRAIN_SPLIT, duration, lidar,
             sweeps) for index in range(scenes)]
    indices = range(scenes) if progress is None else progress(range(scenes))
    with _scene_runner(min(workers, scenes)) as run:
        for _, (split, name, rows, sweeps_written) in zip(indices, run(_write_scene, jobs)):
            # merged in scene order: the tables one writer would hold after adding the scenes in turn
            for table, added in rows.items():
                writer.tables[table].extend(added)
            writer.splits[split].append(name)
            writer.sweep_count += sweeps_written
    # before the tables: a database whose sample.json exists always says what generated it
    settings = world_settings(scenes, seed, keyframes_per_scene, val_fraction, lidar, sweeps)
    write_atomically(os.path.join(root, version, WORLD_FILE), json.dumps(settings).encode())
    return writer.finish()


def _write_scene(root, version, index, seed, split, duration, lidar, sweeps) -> tuple[str, str, dict, int]:
    """Draw scene ``index`` and write its point files; returns its split, name, table rows and sweep count."""
    from datasets.synthetic_world import LIDARS

    # one generator per scene: a scene's street and road users do not depend on how many random draws
    # the sensor spent on the scenes before it (a sensor change would reshuffle every later scene)
    rng = np.random.default_rng([seed, index])
    scene = random_scene(rng, duration, LIDARS[lidar])
    writer = NuScenesWriter(root, version)
    before = {table: len(rows) for table, rows in writer.tables.items()}  # the rows every writer starts with
    writer.add_scene(scene, index, split, rng, start_us=1_700_000_000_000_000 + index * 100_000_000, sweeps=sweeps)
    added = {table: rows[before[table]:] for table, rows in writer.tables.items()}
    return split, writer.splits[split][-1], added, writer.sweep_count


@contextlib.contextmanager
def _scene_runner(workers: int):
    """``run(function, jobs)``: the results in the jobs' order, from this process or from ``workers`` new ones
    (spawned: the caller may hold threads that a forked child would inherit half-locked)."""
    if workers <= 1:
        yield lambda function, jobs: (function(*job) for job in jobs)
        return
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield lambda function, jobs: pool.map(function, *zip(*jobs))
