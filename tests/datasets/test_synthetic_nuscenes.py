"""The synthetic world as a nuScenes database: the official devkit loads it, annotations agree with
the points, sweeps line up, and NuScenesDataset reads it in the project's box convention."""
import math

import numpy as np
import pytest
from conftest import levelled

from datasets.boxes import points_in_box
from datasets.nuscenes_dataset import NuScenesDataset
from datasets.nuscenes_writer import TRAIN_SPLIT, VAL_SPLIT, make_synthetic_database
from datasets.synthetic_world import KERB_HEIGHT


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = make_synthetic_database(str(root), scenes=3, seed=7, keyframes_per_scene=3)
    return str(root), summary


def test_devkit_loads_the_database(database):
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils.data_classes import LidarPointCloud
    from nuscenes.utils.splits import get_scenes_of_split

    root, summary = database
    nusc = NuScenes("v1.0-synthetic", root, verbose=False)
    assert len(nusc.scene) == 3 and len(nusc.sample) == summary.samples == 9
    assert len(nusc.sample_annotation) == summary.annotations > 30
    assert get_scenes_of_split(VAL_SPLIT, nusc) == ["synthetic-0002"]
    assert len(get_scenes_of_split(TRAIN_SPLIT, nusc)) == 2
    sample = nusc.sample[4]
    cloud = LidarPointCloud.from_file(nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"]))
    assert cloud.points.shape[0] == 4 and cloud.points.shape[1] > 10000
    multi, times = LidarPointCloud.from_file_multisweep(nusc, sample, "LIDAR_TOP", "LIDAR_TOP", nsweeps=10)
    assert multi.points.shape[1] > 5 * cloud.points.shape[1] and times.max() <= 0.5
    names = {nusc.get("category", i["category_token"])["name"] for i in nusc.instance}
    assert {"vehicle.car", "human.pedestrian.adult", "movable_object.trafficcone"} <= names


def test_num_lidar_pts_counts_the_key_frame_points_in_each_box(database):
    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=1, cache_dir=root)
    checked = 0
    for index in range(len(dataset)):
        frame = dataset[index]
        points, boxes = levelled(frame)  # as the writer counts: in the world, where boxes are upright
        for box, count in zip(boxes, frame["meta"]["num_lidar_pts"]):
            inner, outer = (int(points_in_box(points, box, margin=m).sum()) for m in (-0.005, 0.005))
            assert inner <= count <= outer
            checked += count > 0
    assert checked > 10


def test_sweeps_of_a_static_object_coincide(database):
    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=10, cache_dir=root)
    frame = dataset[len(dataset) - 1]  # the last key frame has 9 earlier sweeps
    points, lags = frame["points"], frame["points"][:, 4]
    assert len(np.unique(lags)) == 10
    boxes = frame["gt_boxes"]
    static = np.flatnonzero(np.hypot(boxes[:, 7], boxes[:, 8]) < 0.05)
    assert sum(points_in_box(points, boxes[i, :7].astype(np.float64)).sum() >= 20 for i in static) >= 3
    up = frame["meta"]["lidar_to_ego"][:3, :3].T @ [0.0, 0.0, 1.0]  # the ego's up in the (tilted) LiDAR frame
    assert up[2] < np.cos(0.002)  # the scene's sensor is tilted
    height = points[:, :3].astype(np.float64) @ up
    above_ground = height > -1.84 + 0.15
    in_boxes = [points_in_box(points, box[:7].astype(np.float64), margin=0.1) for box in boxes]
    for index in static:
        box = boxes[index]
        # Every sweep's returns from a static object fall on the object (2 cm range noise), none in a
        # 0.5 m shell around it, although the sensor moved between the sweeps; only the barriers of a row
        # touch their neighbours, whose returns stay in their own boxes.
        inside = in_boxes[index] & above_ground
        neighbours = np.any([mine for other, mine in enumerate(in_boxes) if other != index], axis=0)
        shell = points_in_box(points, np.concatenate([box[:3], box[3:6] + 1.0, box[6:7]]).astype(np.float64))
        shell &= ~neighbours
        if inside.sum() < 20:  # barely seen (far, hidden): a road user passing by outweighs it in the shell
            continue
        assert int((shell & above_ground & ~inside).sum()) <= 0.02 * int(inside.sum()) + 2
        assert len(np.unique(lags[inside])) >= 5
    # The ground of old sweeps lands on the key frame's road plane (1.84 m below the sensor, tilted with its
    # mount): every sweep puts about as many points as the key frame into a +-8 cm band around it, centred on it.
    # (The road is one of two ground levels: sidewalks stand KERB_HEIGHT higher and may hold more points.)
    near = np.hypot(points[:, 0], points[:, 1]) < 15
    road = near & (np.abs(height + 1.84) < 0.08)
    key_count = int((road & (lags == 0)).sum())
    assert key_count > 1000
    for lag in np.unique(lags):
        mine = road & (lags == lag)
        assert int(mine.sum()) > 0.7 * key_count, lag  # fewer as the sweep's sensor lies farther back
        assert abs(float(np.median(height[mine])) + 1.84) < 0.03, lag


def test_the_calibration_holds_the_tilted_mount(database):
    """Each scene's LIDAR_TOP calibration is its sensor's whole mount rotation (yaw, pitch and roll: the real
    key frame's, jittered), as a unit quaternion the devkit reads back to the same matrix."""
    from dataclasses import replace

    from nuscenes.nuscenes import NuScenes
    from pyquaternion import Quaternion

    from datasets.nuscenes_writer import quaternion_from_matrix
    from datasets.synthetic_sensor import HDL32E, mount_rotation
    from datasets.synthetic_world import MOUNT_JITTER, MOUNT_TILT

    root, _ = database
    nusc = NuScenes("v1.0-synthetic", root, verbose=False)
    tilts = []
    for calibration in nusc.calibrated_sensor:
        rotation = Quaternion(calibration["rotation"]).rotation_matrix
        # within the jitter of the real key frame's mount: the tilt of the sensor's axis and its direction
        real = mount_rotation(replace(HDL32E, mount_tilt=MOUNT_TILT))
        assert np.degrees(np.arccos(np.clip(rotation[:, 2] @ real[:, 2], -1, 1))) < np.degrees(MOUNT_JITTER) * 1.5
        assert abs(np.arctan2(rotation[1, 0], rotation[0, 0]) + np.pi / 2) < 0.01   # the nuScenes yaw of -90 deg
        tilts.append(np.arccos(rotation[2, 2]))
    assert len(set(np.round(tilts, 6))) == len(tilts) == 3
    rng = np.random.default_rng(0)
    for _ in range(200):  # any rotation, including half turns, round-trips through the devkit's Quaternion
        axis, angle = rng.normal(size=3), rng.choice([rng.uniform(-np.pi, np.pi), np.pi])
        matrix = Quaternion(axis=axis / np.linalg.norm(axis), angle=angle).rotation_matrix
        q = quaternion_from_matrix(matrix)
        assert abs(np.linalg.norm(q) - 1) < 1e-9 and q[0] >= 0
        np.testing.assert_allclose(Quaternion(q).rotation_matrix, matrix, atol=1e-9)


def test_boxes_are_in_the_lidar_frame_with_dx_along_the_heading(database):
    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=1, cache_dir=root)
    frame = dataset[0]
    boxes = frame["gt_boxes"]
    assert boxes.shape[1] == 9 and np.all(boxes[:, 3:6] > 0)
    cars = boxes[frame["gt_labels"] == dataset.class_names.index("car")]
    assert np.all(cars[:, 3] > cars[:, 4])  # cars are longer (dx) than wide (dy)
    # standing on the road (z = 0) or on a sidewalk (z = KERB_HEIGHT), 1.84 m below the sensor along the
    # ego's up (the LiDAR frame is tilted with its mount)
    up = frame["meta"]["lidar_to_ego"][:3, :3].T @ [0.0, 0.0, 1.0]
    bottom = boxes[:, :3].astype(np.float64) @ up - boxes[:, 5] / 2 + 1.84
    assert np.all(np.minimum(np.abs(bottom), np.abs(bottom - KERB_HEIGHT)) < 0.05)


def test_ground_truth_exported_as_predictions_scores_ap_one(database, tmp_path):
    from datasets.nuscenes_export import evaluate_nuscenes, lidar_boxes_to_results, write_results

    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=1, cache_dir=root)
    results = {}
    for index in range(len(dataset)):
        info = dataset.infos[index]
        keep = info.num_lidar_pts > 0
        results[info.token] = lidar_boxes_to_results(info.token, info.gt_boxes[keep], np.ones(int(keep.sum())),
                                                     [n for n, k in zip(info.gt_names, keep) if k],
                                                     info.lidar_to_ego, info.ego_to_global)
    write_results(str(tmp_path / "results.json"), results)
    metrics = evaluate_nuscenes(root, "v1.0-synthetic", VAL_SPLIT, str(tmp_path / "results.json"), str(tmp_path))
    from nuscenes.eval.common.config import config_factory

    # present as the devkit sees them: with points and within the class's evaluation range of the ego
    class_range = config_factory("detection_cvpr_2019").class_range
    present = set()
    for info in dataset.infos:
        ego_xy = (info.gt_boxes[:, :3] @ info.lidar_to_ego[:3, :3].T + info.lidar_to_ego[:3, 3])[:, :2]
        for name, count, distance in zip(info.gt_names, info.num_lidar_pts, np.hypot(*ego_xy.T)):
            if count > 0 and distance <= class_range[name]:
                present.add(name)
    assert {"car", "pedestrian"} <= present
    for name in present:
        assert metrics["mean_dist_aps"][name] == pytest.approx(1.0), name
    errors = metrics["label_tp_errors"]["car"]
    assert errors["trans_err"] < 1e-3 and errors["scale_err"] < 1e-3 and errors["orient_err"] < 1e-3
    assert errors["vel_err"] < 1e-3


def test_all_empty_predictions_are_handled(database, tmp_path):
    from datasets.nuscenes_export import evaluate_nuscenes, write_results

    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=1, cache_dir=root)
    write_results(str(tmp_path / "empty.json"), {info.token: [] for info in dataset.infos})
    metrics = evaluate_nuscenes(root, "v1.0-synthetic", VAL_SPLIT, str(tmp_path / "empty.json"), str(tmp_path))
    assert metrics["empty"] and metrics["mean_ap"] == 0.0 and metrics["mean_dist_aps"]["car"] == 0.0


def test_cars_at_10_to_30_m_get_as_many_points_as_real_nuscenes_cars(database, real_file):
    """Realism: the median points per car at 10-30 m within 0.5-2x of the real key frame's."""
    import json

    info = json.loads(real_file("nuscenes/keyframe_boxes.json").read_text())
    car = info["metainfo"]["categories"]["car"]
    real = [i["num_lidar_pts"] for i in info["data_list"][0]["instances"]
            if i["bbox_label_3d"] == car and 10 <= np.hypot(*i["bbox_3d"][:2]) <= 30]
    root, _ = database
    synthetic = []
    for split in (TRAIN_SPLIT, VAL_SPLIT):
        dataset = NuScenesDataset(root, "v1.0-synthetic", split, num_sweeps=1, cache_dir=root)
        for info_ in dataset.infos:
            for box, name, count in zip(info_.gt_boxes, info_.gt_names, info_.num_lidar_pts):
                if name == "car" and 10 <= np.hypot(box[0], box[1]) <= 30:
                    synthetic.append(count)
    assert real and len(synthetic) >= 10
    ratio = np.median(synthetic) / np.median(real)
    assert 0.5 <= ratio <= 2.0, (np.median(synthetic), real)


def test_settings_that_leave_no_training_scene_are_refused(tmp_path):
    for fraction in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="val_fraction"):
            make_synthetic_database(str(tmp_path / "db"), scenes=4, val_fraction=fraction)
    assert not (tmp_path / "db").exists()  # refused before anything is written


def test_earlier_sweeps_lose_their_points_near_their_sensor(database):
    """The nuScenes loaders' stacking (OpenPCDet, mmdetection3d): sweeps drop what lies within 1 m of their
    sensor in x and y (its placeholders of beams without a return); the key frame keeps everything."""
    from datasets.point_files import read_points

    root, _ = database
    kept = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=4, cache_dir=root, sweep_ego_radius=0)
    dropped = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=4, cache_dir=root)
    assert dropped.sweep_ego_radius == 1.0 and dropped.source_key != kept.source_key  # GT databases tell them apart
    assert dropped.infos_key == kept.infos_key and dropped.cache_path == kept.cache_path
    index = len(dropped) - 1
    all_points, points = kept.points(index), dropped.points(index)
    info = dropped.infos[index]
    key = read_points(f"{root}/{info.lidar_path}", point_width=5)
    expected = len(key)
    for path, _to_key, _lag in info.sweeps:
        sweep = read_points(f"{root}/{path}", point_width=5)
        near = (np.abs(sweep[:, 0]) < 1.0) & (np.abs(sweep[:, 1]) < 1.0)
        assert near.sum() > 100  # the placeholders of the sky beams, and the roof
        expected += int((~near).sum())
    assert len(info.sweeps) == 3 and len(points) == expected < len(all_points)
    assert np.array_equal(points[points[:, 4] == 0], all_points[all_points[:, 4] == 0])  # the key frame, whole
    assert (np.hypot(points[points[:, 4] == 0, 0], points[points[:, 4] == 0, 1]) < 0.5).sum() > 100
    with pytest.raises(ValueError, match="sweep_ego_radius must be finite metres >= 0, got -1"):
        NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, cache_dir=root, sweep_ego_radius=-1)


def test_a_scene_does_not_depend_on_the_scenes_before_it_or_the_sensor(tmp_path):
    """Scene i comes from the generator of [seed, i]: the same street and road users with one scene or
    two, and with another sensor scanning the scenes before it."""
    import json

    def annotations(root, scene):
        with open(f"{root}/v1.0-synthetic/sample_annotation.json") as f:
            rows = json.load(f)
        with open(f"{root}/v1.0-synthetic/sample.json") as f:
            samples = {row["token"] for row in json.load(f) if row["scene_token"] == scene}
        return sorted((tuple(round(v, 6) for v in row["translation"]), tuple(row["size"]))
                      for row in rows if row["sample_token"] in samples)

    def scene_token(root, index):
        with open(f"{root}/v1.0-synthetic/scene.json") as f:
            return next(row["token"] for row in json.load(f) if row["name"] == f"synthetic-{index:04d}")

    for name, scenes, lidar in [("one", 1, "hdl32e"), ("two", 2, "hdl32e"), ("two64", 2, "hdl64e")]:
        make_synthetic_database(str(tmp_path / name), scenes=scenes, seed=5, keyframes_per_scene=1, lidar=lidar)
    first = annotations(tmp_path / "one", scene_token(tmp_path / "one", 0))
    assert len(first) > 10 and first == annotations(tmp_path / "two", scene_token(tmp_path / "two", 0))
    second = annotations(tmp_path / "two", scene_token(tmp_path / "two", 1))
    assert second and second != first and second == annotations(tmp_path / "two64", scene_token(tmp_path / "two64", 1))


def test_a_database_says_what_generated_it_and_another_world_is_refused(tmp_path):
    """tools/demo.py reuses its database only if today's generator with its settings made it: a database of
    an older world version, other settings, or none recorded is refused with the differences named."""
    import json

    from datasets.nuscenes_writer import WORLD_FILE, WORLD_VERSION, require_world, world_settings

    root = str(tmp_path / "db")
    make_synthetic_database(root, scenes=1, seed=2, keyframes_per_scene=1)
    require_world(root, world_settings(1, seed=2, keyframes_per_scene=1))  # the same: accepted
    with pytest.raises(ValueError, match=r"db: a synthetic database of other settings \(scenes 1, expected 30; "
                                         r"seed 2, expected 0; keyframes_per_scene 1, expected 4\)"):
        require_world(root, world_settings(30))
    with pytest.raises(ValueError, match=r"other settings \(sweeps True, expected False\)"):
        require_world(root, world_settings(1, seed=2, keyframes_per_scene=1, sweeps=False))
    record = tmp_path / "db" / "v1.0-synthetic" / WORLD_FILE
    record.write_text(json.dumps({**json.loads(record.read_text()), "world_version": WORLD_VERSION - 1}))
    with pytest.raises(ValueError, match=f"world_version {WORLD_VERSION - 1}, expected {WORLD_VERSION}"):
        require_world(root, world_settings(1, seed=2, keyframes_per_scene=1))
    record.unlink()
    with pytest.raises(ValueError, match="without v1.0-synthetic/synthetic_world.json .* remove it"):
        require_world(root, world_settings(1, seed=2, keyframes_per_scene=1))


def test_a_ground_velocity_survives_the_tilted_mount_both_ways():
    """The loader keeps (vx, vy) of a velocity turned into the tilted LiDAR frame; the export turns it back
    onto the ground exactly (putting z = 0 back in the LiDAR frame was off by speed * (1 - cos tilt))."""
    from pyquaternion import Quaternion

    from datasets.nuscenes_export import lidar_boxes_to_results

    lidar_to_ego = np.eye(4)
    lidar_to_ego[:3, :3] = (Quaternion(axis=[0, 0, 1], angle=-math.pi / 2) * Quaternion(axis=[0, 1, 0], angle=0.0059)
                            * Quaternion(axis=[1, 0, 0], angle=-0.0242)).rotation_matrix
    lidar_to_ego[:3, 3] = [0.94, 0.0, 1.84]
    ego_to_global = np.eye(4)
    ego_to_global[:3, :3] = Quaternion(axis=[0, 0, 1], angle=0.8).rotation_matrix
    ego_to_global[:3, 3] = [400.0, 1100.0, 0.0]
    global_to_lidar = np.linalg.inv(ego_to_global @ lidar_to_ego)
    ground_velocities = np.array([[12.0, 0.0, 0.0], [-3.0, 8.0, 0.0], [0.0, -15.0, 0.0], [0.0, 0.0, 0.0]])
    boxes = []
    for v in ground_velocities:  # as NuScenesDataset builds its boxes
        in_lidar = global_to_lidar[:3, :3] @ v
        boxes.append([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3, in_lidar[0], in_lidar[1]])
    results = lidar_boxes_to_results("t", np.array(boxes), np.ones(4), ["car"] * 4, lidar_to_ego, ego_to_global)
    exported = np.array([r["velocity"] for r in results])
    np.testing.assert_allclose(exported, ground_velocities[:, :2], atol=1e-9)
    assert np.abs(np.linalg.norm(exported, axis=1) - np.linalg.norm(ground_velocities, axis=1)).max() < 1e-9


def test_scenes_generated_in_several_processes_give_the_same_database_byte_for_byte(tmp_path, monkeypatch):
    """The demo generates its world with one process per core: the files must not depend on how many."""
    import concurrent.futures
    import dataclasses
    import filecmp
    import os

    from datasets import nuscenes_writer

    pools = []

    class CountedPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, workers, **options):
            pools.append(workers)
            super().__init__(workers, **options)

    monkeypatch.setattr(nuscenes_writer.concurrent.futures, "ProcessPoolExecutor", CountedPool)

    def files(root):
        return sorted(os.path.relpath(os.path.join(folder, name), root)
                      for folder, _, names in os.walk(root) for name in names)

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    summary = make_synthetic_database(str(serial), scenes=3, seed=7, keyframes_per_scene=2)
    assert pools == []
    assert make_synthetic_database(str(parallel), scenes=3, seed=7, keyframes_per_scene=2, workers=2) == \
        dataclasses.replace(summary, root=str(parallel))
    assert pools == [2]  # the scenes were drawn in two processes
    assert len(files(serial)) > 40 and files(serial) == files(parallel)
    _, mismatched, errors = filecmp.cmpfiles(serial, parallel, files(serial), shallow=False)
    assert not mismatched and not errors
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        make_synthetic_database(str(tmp_path / "none"), scenes=1, workers=0)


def test_a_database_without_sweeps_holds_the_same_key_frames_and_refuses_more_sweeps(database, tmp_path):
    import dataclasses
    import filecmp
    import os

    from nuscenes.nuscenes import NuScenes

    with_sweeps, full = database
    key_only = str(tmp_path / "keys")
    summary = make_synthetic_database(key_only, scenes=3, seed=7, keyframes_per_scene=3, sweeps=False)
    assert summary == dataclasses.replace(full, root=key_only, sweeps=0) and full.sweeps == 3 * 2 * 9
    assert not os.path.exists(os.path.join(key_only, "sweeps"))
    keys = sorted(os.listdir(os.path.join(key_only, "samples", "LIDAR_TOP")))
    assert keys == sorted(os.listdir(os.path.join(with_sweeps, "samples", "LIDAR_TOP"))) and len(keys) == 9
    _, mismatched, errors = filecmp.cmpfiles(os.path.join(with_sweeps, "samples", "LIDAR_TOP"),
                                             os.path.join(key_only, "samples", "LIDAR_TOP"), keys, shallow=False)
    assert not mismatched and not errors  # the sensor noise of a key frame does not depend on the sweeps
    for table in ("sample", "sample_annotation", "instance"):
        assert filecmp.cmp(*(os.path.join(root, "v1.0-synthetic", f"{table}.json") for root in (with_sweeps, key_only)),
                           shallow=False), table
    nusc = NuScenes("v1.0-synthetic", key_only, verbose=False)
    assert len(nusc.sample_data) == 9 and all(row["is_key_frame"] for row in nusc.sample_data)
    one = [NuScenesDataset(root, "v1.0-synthetic", TRAIN_SPLIT, num_sweeps=1, cache_dir=str(tmp_path / "cache" / name))
           for name, root in (("full", with_sweeps), ("keys", key_only))]
    for a, b in zip(one[0].infos, one[1].infos):
        assert a.lidar_path == b.lidar_path and np.array_equal(a.gt_boxes, b.gt_boxes)  # velocities included
    with pytest.raises(ValueError, match=r"keys \(v1.0-synthetic, split synthetic_train\) holds LiDAR key frames "
                                         r"alone.*num_sweeps 3 needs them"):
        NuScenesDataset(key_only, "v1.0-synthetic", TRAIN_SPLIT, num_sweeps=3, cache_dir=str(tmp_path / "cache"))


def test_make_synthetic_no_sweeps_writes_key_frames_alone(tmp_path):
    """The tool's --no-sweeps: key frames, no sweeps folder, and a world file that says so."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "db"
    completed = subprocess.run([sys.executable, str(root / "tools" / "make_synthetic.py"), "--out", str(out),
                                "--scenes", "2", "--keyframes", "2", "--workers", "1", "--no-sweeps"], cwd=root,
                               env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "wrote 2 scenes, 4 key frames, 0 sweeps between them" in completed.stdout
    assert len(os.listdir(out / "samples" / "LIDAR_TOP")) == 4 and not (out / "sweeps").exists()
    assert json.loads((out / "v1.0-synthetic" / "synthetic_world.json").read_text())["sweeps"] is False


def test_a_root_that_cannot_be_a_folder_fails_before_any_scene_is_drawn(tmp_path, monkeypatch):
    import datasets.nuscenes_writer as writer

    monkeypatch.setattr(writer, "random_scene", lambda *args: pytest.fail("a scene was drawn for nothing"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="a_file"):
        make_synthetic_database(str(blocker / "synthetic"), scenes=2, workers=1)
    assert blocker.read_text() == "not a folder"
