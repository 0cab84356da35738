"""Box conventions against real data: KITTI labels contain their LiDAR points; the nuScenes key
frame's boxes contain their annotated point counts."""
import json

import numpy as np
import pytest
from conftest import NUSCENES_KEYFRAME, REAL_DATA

from datasets import read_points
from datasets.boxes import points_in_box
from datasets.kitti_dataset import KittiDataset, read_labels


def test_every_kitti_box_contains_lidar_points(real_file):
    real_file("kitti/velodyne/000000.bin")
    dataset = KittiDataset(str(REAL_DATA / "kitti"), class_names=["Car", "Pedestrian", "Cyclist", "Van", "Truck",
                                                                  "Person_sitting", "Tram", "Misc"])
    assert dataset.ids == ["000000", "000001"]
    total = 0
    for index in range(len(dataset)):
        frame = dataset[index]
        assert frame["points"].shape[1] == 4
        for box in frame["gt_boxes"]:
            inside = int(points_in_box(frame["points"], box, margin=0.05).sum())
            assert inside > 0, (frame["meta"]["id"], box)
            total += 1
        assert np.all(frame["gt_boxes"][:, 3] >= frame["gt_boxes"][:, 4] * 0.3)
    assert total >= 2


def test_kitti_dont_care_rows_are_counted_not_boxes(tmp_path, real_file):
    real_file("kitti/velodyne/000000.bin")
    label = tmp_path / "label.txt"
    label.write_text("Car 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 46.70 -1.59\n"
                     "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10\n")
    boxes, names, dont_care = read_labels(str(label), np.eye(4))
    assert names == ["Car"] and dont_care == 1
    # In the camera frame itself: centre lifted by h/2 (y down), dx = length 3.64.
    np.testing.assert_allclose(boxes[0, :6], [-0.65, 1.71 - 1.65 / 2, 46.70, 3.64, 1.67, 1.65], rtol=1e-5)
    with pytest.raises(ValueError, match="expected 15 fields"):
        bad = tmp_path / "bad.txt"
        bad.write_text("Car 0 0\n")
        read_labels(str(bad), np.eye(4))


def test_nuscenes_keyframe_boxes_hold_their_point_counts(real_file):
    points = read_points(str(real_file(NUSCENES_KEYFRAME)))
    info = json.loads(real_file("nuscenes/keyframe_boxes.json").read_text())["data_list"][0]
    checked = 0
    for instance in info["instances"]:
        x, y, z, length, width, height, yaw = instance["bbox_3d"]
        expected = instance["num_lidar_pts"]
        box = np.array([x, y, z, length, width, height, yaw])  # dx = l along the heading, z = centre
        count = int(points_in_box(points, box).sum())
        assert abs(count - expected) <= max(3, 0.1 * expected), (instance, count)
        checked += expected > 0
    assert checked > 20
