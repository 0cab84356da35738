"""The dataset contract, checked over every entry of the table of dataset types: frame shapes and
dtypes, the box convention against the points (every box with points contains them; an elongated
box turned by 90 degrees holds fewer), label sets, and the evaluator's
contract (metrics dict and files)."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA

from datasets.base import check_frame
from datasets.boxes import points_in_box
from datasets.custom_type import CustomConfig
from datasets.dataset_types import DATASET_TYPES, build_dataset, build_evaluator, format_metrics
from datasets.kitti_type import KittiConfig
from datasets.layout_writers import write_custom_frames
from datasets.nuscenes_dataset import DETECTION_CLASSES
from datasets.nuscenes_type import NuScenesConfig
from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database

KITTI_LABELLED = ["Car", "Pedestrian", "Cyclist", "Van", "Truck", "Person_sitting", "Tram", "Misc"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("contract") / "synthetic")
    make_synthetic_database(root, scenes=1, seed=4, keyframes_per_scene=2)
    return root


def nuscenes_source(synthetic, tmp_path):
    config = NuScenesConfig(root=synthetic, version="v1.0-synthetic", num_sweeps=2, train_split=TRAIN_SPLIT)
    return config, TRAIN_SPLIT, DETECTION_CLASSES


def kitti_source(synthetic, tmp_path):
    """The real KITTI frames, seen through a folder of links with an ImageSets file (nothing copied)."""
    if not (REAL_DATA / "kitti" / "velodyne" / "000000.bin").is_file():
        pytest.skip(f"real data not available: {REAL_DATA / 'kitti'}")
    root = tmp_path / "kitti"
    (root / "ImageSets").mkdir(parents=True)
    for folder in ("velodyne", "label_2", "calib"):
        os.symlink(REAL_DATA / "kitti" / folder, root / folder)
    (root / "ImageSets" / "val.txt").write_text("000000\n000001\n")
    return KittiConfig(root=str(root)), "val", KITTI_LABELLED


def custom_source(synthetic, tmp_path):
    """The synthetic frames written into the custom layout by the layout writer."""
    frames = build_dataset(NuScenesConfig(root=synthetic, version="v1.0-synthetic", num_sweeps=1),
                           TRAIN_SPLIT, DETECTION_CLASSES)
    write_custom_frames(frames, str(tmp_path / "custom"), "train")
    config = CustomConfig(root=str(tmp_path / "custom"), ignore_classes=["barrier", "traffic_cone"])
    return config, "train", [name for name in DETECTION_CLASSES if name not in config.ignore_classes]


SOURCES = {"nuscenes": nuscenes_source, "kitti": kitti_source, "custom": custom_source}


def test_every_registered_type_is_checked_here():
    assert set(SOURCES) == set(DATASET_TYPES)


def turned_box_holds_fewer(points: np.ndarray, box: np.ndarray) -> bool:
    """The same box turned by 90 degrees about its centre holds fewer of the points: a wrong heading
    convention (a yaw off by 90 degrees, dx and dy swapped) fails this for elongated boxes. Only the box
    above its lowest 0.3 m counts: a sensor mounted with a tilt sees the road rise across a box, and the
    turned box's longer reach across that slope would count road returns. Points within 3 m of the sensor
    do not count: a long vehicle beside the ego, turned, would reach over the ego's roof returns and the
    placeholders of beams without a return."""
    points = points[np.hypot(points[:, 0], points[:, 1]) > 3.0]
    above = box.copy()
    above[2] += 0.15
    above[5] -= 0.3
    turned = above.copy()
    turned[6] += np.pi / 2
    return points_in_box(points, turned).sum() < points_in_box(points, above).sum()


def mount_tilt(frame: dict) -> float:
    """The angle between the LiDAR's z axis and the ego's up, where the frame says how the LiDAR is mounted
    (nuScenes); 0 for the types that give points in a level frame."""
    lidar_to_ego = frame.get("meta", {}).get("lidar_to_ego")
    return 0.0 if lidar_to_ego is None else math.acos(min(1.0, float(np.asarray(lidar_to_ego)[2, 2])))


@pytest.mark.parametrize("type_name", sorted(SOURCES))
def test_frames_keep_the_contract(type_name, synthetic, tmp_path):
    config, split, class_names = SOURCES[type_name](synthetic, tmp_path)
    dataset = build_dataset(config, split, class_names)
    assert len(dataset) >= 2 and dataset.class_names == list(class_names)
    assert dataset.point_features[:3] == ("x", "y", "z")
    label_sets = dataset.label_sets()
    assert len(label_sets) == len(dataset)
    boxes_with_points = headings_checked = 0
    for index in range(len(dataset)):
        frame = dataset[index]
        check_frame(frame, class_names, dataset.num_point_features, where=f"{type_name}[{index}]")
        assert frame["points"].dtype == np.float32 and frame["points"].shape[1] == dataset.num_point_features
        assert label_sets[index] == {class_names[label] for label in frame["gt_labels"]}
        tilt = mount_tilt(frame)
        for box, count in zip(frame["gt_boxes"], frame["num_points_in_gt"]):
            # boxes stand upright in the LiDAR frame, counts were taken upright on the ground
            inside = points_in_box(frame["points"], box, margin=0.05 + 0.5 * np.linalg.norm(box[3:6]) * math.sin(tilt))
            assert inside.sum() >= count, (type_name, index, box, count)
            if count > 0:
                boxes_with_points += 1
                assert inside.any()
            if count >= 20 and box[3] >= 1.5 * box[4]:
                assert turned_box_holds_fewer(frame["points"], box), (type_name, index, box)
                headings_checked += 1
    assert boxes_with_points >= 2
    assert headings_checked >= 1


@pytest.mark.parametrize("type_name", sorted(SOURCES))
def test_evaluators_take_frames_and_write_their_metrics(type_name, synthetic, tmp_path):
    config, split, class_names = SOURCES[type_name](synthetic, tmp_path)
    dataset = build_dataset(config, split, class_names)
    evaluator = build_evaluator(config, split, class_names)
    for index in range(len(dataset)):
        frame = dataset[index]
        evaluator.add_frame(str(index), frame)
        if index == 0:  # a frame where the detector found nothing, as predict returns it
            import torch
            evaluator.process("0", torch.zeros((0, 9)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
            continue
        evaluator.process(str(index), frame["gt_boxes"], np.ones(len(frame["gt_boxes"])), frame["gt_labels"])
    out = tmp_path / "eval"
    metrics = evaluator.evaluate(str(out))
    assert isinstance(metrics, dict) and metrics
    assert any(name.startswith("metrics") and name.endswith(".json") for name in os.listdir(out))
    assert format_metrics(config, metrics).strip()


def test_config_loading_checks_each_types_options():
    from detectors.config import ConfigError
    from detectors.experiment import load_centerpoint_config

    config = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")
    with pytest.raises(ConfigError, match=r"unknown keys dataset.num_sweeps, dataset.version; valid keys of dataset"):
        load_centerpoint_config(config, ["dataset.type=kitti"])
    with pytest.raises(ConfigError, match=r"dataset.num_sweeps: must be >= 1, got 0"):
        load_centerpoint_config(config, ["dataset.num_sweeps=0"])
    with pytest.raises(ConfigError, match=r"dataset.point_features must start with x, y, z"):
        load_centerpoint_config(config, ["dataset={type: custom, root: x, point_features: [y, x, z]}"])
    kitti = load_centerpoint_config(config, ["dataset={type: kitti, root: x, fov_crop: false}"])
    assert isinstance(kitti.dataset, KittiConfig) and not kitti.dataset.fov_crop
