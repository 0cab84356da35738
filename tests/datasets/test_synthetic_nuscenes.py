"""The synthetic world as a nuScenes database: the official devkit loads it, annotations agree with
the points, sweeps line up, and NuScenesDataset reads it in the project's box convention."""
import numpy as np
import pytest

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
        for box, count in zip(frame["gt_boxes"], frame["meta"]["num_lidar_pts"]):
            inside = points_in_box(frame["points"], box[:7].astype(np.float64), margin=0.0)
            assert abs(int(inside.sum()) - int(count)) <= 1  # float32 files vs float64 counting at faces
            checked += count > 0
    assert checked > 10


def test_sweeps_of_a_static_object_coincide(database):
    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=10, cache_dir=root)
    frame = dataset[len(dataset) - 1]  # the last key frame has 9 earlier sweeps
    points, lags = frame["points"], frame["points"][:, 4]
    assert len(np.unique(lags)) == 10
    static = [b for b, v in zip(frame["gt_boxes"], np.hypot(frame["gt_boxes"][:, 7], frame["gt_boxes"][:, 8]))
              if v < 0.05]
    assert static
    above_ground = points[:, 2] > -1.84 + 0.15
    for box in static:
        # Every sweep's returns from a static object fall on the object (2 cm range noise), none in a
        # 0.5 m shell around it, although the sensor moved between the sweeps.
        inside = points_in_box(points, box[:7].astype(np.float64), margin=0.1) & above_ground
        shell = points_in_box(points, np.concatenate([box[:3], box[3:6] + 1.0, box[6:7]]).astype(np.float64))
        assert int((shell & above_ground & ~inside).sum()) <= 0.02 * max(int(inside.sum()), 1) + 2
        lags_inside = np.unique(lags[inside])
        assert len(lags_inside) >= 5 or inside.sum() < 20
    # The ground of old sweeps lands on the key frame's road plane (z = -1.84 in the LiDAR frame): every
    # sweep puts as many points as the key frame into a +-8 cm band around it, centred on it. (The road
    # is one of two ground levels: sidewalks stand KERB_HEIGHT higher and may hold more of the points.)
    near = np.hypot(points[:, 0], points[:, 1]) < 15
    road = near & (np.abs(points[:, 2] + 1.84) < 0.08)
    key_count = int((road & (lags == 0)).sum())
    assert key_count > 1000
    for lag in np.unique(lags):
        mine = road & (lags == lag)
        assert int(mine.sum()) > 0.8 * key_count, lag
        assert abs(float(np.median(points[mine, 2])) + 1.84) < 0.03, lag


def test_boxes_are_in_the_lidar_frame_with_dx_along_the_heading(database):
    root, _ = database
    dataset = NuScenesDataset(root, "v1.0-synthetic", VAL_SPLIT, num_sweeps=1, cache_dir=root)
    frame = dataset[0]
    boxes = frame["gt_boxes"]
    assert boxes.shape[1] == 9 and np.all(boxes[:, 3:6] > 0)
    cars = boxes[frame["gt_labels"] == dataset.class_names.index("car")]
    assert np.all(cars[:, 3] > cars[:, 4])  # cars are longer (dx) than wide (dy)
    # standing on the road (z = 0) or on a sidewalk (z = KERB_HEIGHT), 1.84 m below the sensor
    bottom = boxes[:, 2] - boxes[:, 5] / 2 + 1.84
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
