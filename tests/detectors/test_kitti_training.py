"""KITTI training end to end: the synthetic world (HDL-64E) written in the KITTI layout with a
plausible camera, trained with configs/centerpoint_kitti_cpu.yaml through train(), scored by the
KITTI evaluator. A small model memorises its training frame: Car moderate 3D AP >= 90."""
import shutil
from pathlib import Path

import pytest

from datasets.dataset_types import build_dataset
from datasets.layout_writers import write_kitti_frames
from datasets.nuscenes_dataset import DETECTION_CLASSES
from datasets.nuscenes_type import NuScenesConfig
from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database
from detectors.centerpoint import load_centerpoint_config
from detectors.training import evaluate, train

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_kitti_cpu.yaml")
# The official protocol samples at most one score threshold per counted GT: with fewer than 40
# GTs it cannot reach AP 100 even for perfect detections. The evaluation split lists the training
# frame this many times (identical files), so its cars count >= 40 times.
COPIES = 20


@pytest.mark.slow
def test_a_small_model_memorises_a_kitti_frame(tmp_path):
    database = str(tmp_path / "synthetic64")
    make_synthetic_database(database, scenes=1, seed=8, keyframes_per_scene=1, lidar="hdl64e")
    source = build_dataset(NuScenesConfig(root=database, version="v1.0-synthetic", num_sweeps=1), TRAIN_SPLIT,
                           DETECTION_CLASSES)
    kitti = tmp_path / "kitti"
    write_kitti_frames(source, str(kitti), "train")
    for copy in range(1, COPIES):
        for folder, suffix in (("velodyne", "bin"), ("label_2", "txt"), ("calib", "txt")):
            shutil.copy(kitti / folder / f"000000.{suffix}", kitti / folder / f"{copy:06d}.{suffix}")
    (kitti / "ImageSets" / "val.txt").write_text("".join(f"{copy:06d}\n" for copy in range(COPIES)))

    config = load_centerpoint_config(CONFIG, [
        f"dataset.root={kitti}", "train.augmentation=null", "train.gt_sampling=null", "train.batch_size=1",
        "train.epochs=200", "train.log_every=50", "train.precise_bn_batches=1", "optimizer.lr=0.01"])
    result = train(config, str(tmp_path / "run"), progress=False)
    assert result["steps"] == 200
    metrics = evaluate(config, result["checkpoint"], str(tmp_path / "eval"))
    assert metrics["num_frames"] == COPIES
    assert metrics["num_gt"]["Car"]["moderate"] >= 40
    assert metrics["ap"]["Car"]["3d"]["moderate"] >= 90.0, metrics["ap"]
    assert metrics["ap"]["Car"]["bev"]["moderate"] >= 90.0, metrics["ap"]
