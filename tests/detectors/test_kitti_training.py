"""KITTI training end to end: the synthetic world (HDL-64E) written in the KITTI layout with a
plausible camera, trained with configs/centerpoint_kitti_cpu.yaml through train(), scored by the
KITTI evaluator (official sampling). A small model memorises its training frame: Car moderate 3D AP >= 90
(measured: 97.5, the most 40 GTs can score)."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from datasets.dataset_types import build_dataset
from datasets.gt_sampling import load_gt_database
from datasets.kitti_dataset import read_label_rows
from datasets.kitti_type import KittiConfig, in_camera_view
from datasets.layout_writers import write_kitti_frames
from datasets.nuscenes_dataset import DETECTION_CLASSES
from datasets.nuscenes_type import NuScenesConfig
from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config
from detectors.training import train

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_kitti_cpu.yaml")
# The official protocol samples at most one score threshold per counted GT: n < 40 perfectly found
# GTs score at most 2.5 (n - 1). The evaluation split lists the training frame this many times
# (identical files), so its 2 moderate cars count 40 times (at most 97.5).
COPIES = 20


def synthetic_kitti(tmp_path, scenes=1, keyframes=1, seed=8) -> Path:
    """The synthetic world (HDL-64E) written as a KITTI object folder with ImageSets/train.txt."""
    database = str(tmp_path / "synthetic64")
    make_synthetic_database(database, scenes=scenes, seed=seed, keyframes_per_scene=keyframes, lidar="hdl64e",
                            sweeps=False)
    source = build_dataset(NuScenesConfig(root=database, version="v1.0-synthetic", num_sweeps=1), TRAIN_SPLIT,
                           DETECTION_CLASSES)
    write_kitti_frames(source, str(tmp_path / "kitti"), "train")
    return tmp_path / "kitti"


def test_kitti_frames_from_the_synthetic_world_read_back_and_train_with_gt_sampling(tmp_path):
    kitti = synthetic_kitti(tmp_path, keyframes=2)
    rows = read_label_rows(str(kitti / "label_2" / "000000.txt"))
    heights = [row["bbox_2d"][3] - row["bbox_2d"][1] for row in rows if row["name"] == "Car"]
    assert min(heights) < 40 < max(heights)               # easy and harder cars: real 2D heights
    assert len({row["occluded"] for row in rows}) > 1 and 0 in {row["occluded"] for row in rows}
    # Read back through the KITTI camera-frame conversion: the source's cars, turned to KITTI's axes
    # (x forward = the source's y, y left = minus the source's x), to the labels' 2 decimals.
    database = str(tmp_path / "synthetic64")
    source = build_dataset(NuScenesConfig(root=database, version="v1.0-synthetic", num_sweeps=1), TRAIN_SPLIT,
                           DETECTION_CLASSES)[0]
    expected = source["gt_boxes"][source["gt_labels"] == DETECTION_CLASSES.index("car"), :7].astype(np.float64)
    expected[:, :2] = np.column_stack([expected[:, 1], -expected[:, 0]])
    expected[:, 6] -= np.pi / 2
    read = build_dataset(KittiConfig(root=str(kitti), fov_crop=False), "train", ["Car"])[0]["gt_boxes"]
    assert 0 < len(read) < len(expected)                   # cars outside the camera's view are not labelled
    for box in read:
        match = expected[np.argmin(np.linalg.norm(expected[:, :2] - box[:2], axis=1))]
        np.testing.assert_allclose(box[:6], match[:6], atol=0.011)
        assert abs(np.remainder(box[6] - match[6] + np.pi, 2 * np.pi) - np.pi) < 0.011
    frames = build_dataset(KittiConfig(root=str(kitti)), "train", ["Car", "Pedestrian", "Cyclist"])
    frame = frames[0]
    assert frame["meta"]["points_outside_view"] > len(frame["points"])    # a 360-degree scan, one camera
    assert frame["points"][:, 0].min() > 0
    assert in_camera_view(frame["points"], frame["meta"]["calibration"], frame["meta"]["image_size"]).all()
    with pytest.raises(ValueError, match="turns nuScenes LIDAR_TOP frames"):   # other axes would be silently wrong
        write_kitti_frames(frames, str(tmp_path / "again"), "train")

    database = tmp_path / "gt_database.npz"
    config = load_centerpoint_config(CONFIG, [f"dataset.root={kitti}", f"train.gt_sampling.database={database}",
                                              "train.gt_sampling.sample_groups={Car: 15, Pedestrian: 10}",
                                              "train.cbgs=true"])
    assert config.train.augmentation is not None
    result = train(config, str(tmp_path / "run"), max_steps=2, progress=False)
    assert result["steps"] == 2 and np.isfinite(result["last_loss"])
    assert {"Car", "Pedestrian"} <= {obj.name for obj in load_gt_database(str(database))}


@pytest.mark.slow
def test_a_small_model_memorises_a_kitti_frame(tmp_path):
    kitti = synthetic_kitti(tmp_path)
    for copy in range(1, COPIES):
        for folder, suffix in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt")):
            shutil.copy(kitti / folder / f"000000.{suffix}", kitti / folder / f"{copy:06d}.{suffix}")
    (kitti / "ImageSets" / "val.txt").write_text("".join(f"{copy:06d}\n" for copy in range(COPIES)))

    config = load_centerpoint_config(CONFIG, [
        f"dataset.root={kitti}", "train.augmentation=null", "train.gt_sampling=null", "train.batch_size=1",
        "train.epochs=120", "train.log_every=50", "train.precise_bn_batches=1", "optimizer.lr=0.01"])
    result = train(config, str(tmp_path / "run"), progress=False)
    assert result["steps"] == 120
    metrics = evaluate(config, result["checkpoint"], str(tmp_path / "eval"))
    assert metrics["num_frames"] == COPIES and metrics["sampling"] == "official"
    assert metrics["num_gt"]["Car"]["moderate"] >= 40
    assert metrics["ap"]["Car"]["3d"]["moderate"] >= 90.0, metrics["ap"]
    assert metrics["ap"]["Car"]["bev"]["moderate"] >= 90.0, metrics["ap"]
