"""dataset.type custom: the OpenPCDet-style layout read with clear errors, the evaluator built from
the config's thresholds, and training + evaluation end to end on the synthetic world in that layout."""
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.custom_type import CustomConfig, CustomDataset, custom_evaluator
from datasets.dataset_types import build_dataset, build_evaluator
from datasets.layout_writers import write_custom_frames
from datasets.nuscenes_dataset import DETECTION_CLASSES
from datasets.nuscenes_type import NuScenesConfig
from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database
from detectors.evaluation import evaluate
from detectors.experiment import load_centerpoint_config
from detectors.training import train

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "centerpoint_synthetic_cpu.yaml")


def write_frame(root: Path, name: str, points: np.ndarray, lines: list[str], split: str = "train") -> None:
    for folder in ("points", "labels", "ImageSets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    np.save(root / "points" / f"{name}.npy", points)
    (root / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    listing = root / "ImageSets" / f"{split}.txt"
    listing.write_text((listing.read_text() if listing.exists() else "") + name + "\n")


def test_frames_read_from_the_layout(tmp_path):
    points = np.array([[10.0, 0.0, 0.0, 0.5], [10.5, 0.2, 0.1, 0.4], [30.0, 5.0, 0.0, 0.1]], dtype=np.float32)
    write_frame(tmp_path, "a", points, ["10.0 0.0 0.0 4.0 2.0 1.5 0.3 car", "30 5 0 0.5 0.5 1.8 0 sign"])
    points.tofile(tmp_path / "points" / "b.bin")
    (tmp_path / "labels" / "b.txt").write_text("")
    (tmp_path / "ImageSets" / "train.txt").write_text("a\nb\n")
    dataset = CustomDataset(CustomConfig(root=str(tmp_path), ignore_classes=["sign"]), "train", ["car", "pedestrian"])
    frame = dataset[0]
    np.testing.assert_array_equal(frame["points"], points)
    np.testing.assert_allclose(frame["gt_boxes"], [[10.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.3, 0.0, 0.0]])
    assert frame["gt_labels"].tolist() == [0] and frame["num_points_in_gt"].tolist() == [2]
    assert frame["meta"] == {"name": "a", "ignored_boxes": 1}
    assert dataset[1]["gt_boxes"].shape == (0, 9) and dataset[1]["points"].shape == (3, 4)
    assert dataset.label_sets() == [{"car"}, set()]


def test_bad_layouts_get_errors_naming_the_file(tmp_path):
    points = np.zeros((4, 4), dtype=np.float32)
    write_frame(tmp_path, "a", points, ["1 2 3 4 2 1.5 0 truck"])
    with pytest.raises(ValueError, match=r"labels/a.txt: classes \['truck'\] are neither detected"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car"])[0]
    (tmp_path / "labels" / "a.txt").write_text("1 2 3 4 2 1.5 car\n")
    with pytest.raises(ValueError, match=r"labels/a.txt:1: expected 8 fields"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car"])[0]
    (tmp_path / "labels" / "a.txt").write_text("1 2 3 4 -2 1.5 0 car\n")
    with pytest.raises(ValueError, match=r"labels/a.txt:1: need finite values and positive dx, dy, dz"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car"])[0]
    (tmp_path / "labels" / "a.txt").write_text("1 2 3 4 2 1.5 0 car\n")
    with pytest.raises(ValueError, match=r"points/a.npy: 4 values per point, dataset.point_features names 5"):
        CustomDataset(CustomConfig(root=str(tmp_path), point_features=["x", "y", "z", "i", "t"]), "train", ["car"])[0]
    with pytest.raises(FileNotFoundError, match=r"ImageSets/val.txt not found"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "val", ["car"])
    (tmp_path / "ImageSets" / "train.txt").write_text("a\nmissing\n")
    with pytest.raises(FileNotFoundError, match=r"names frame 'missing', which has no points/missing.npy or .bin"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car"])


def test_the_evaluator_takes_the_configs_thresholds(tmp_path):
    config = CustomConfig(root="unused", iou_thresholds={"car": 0.7}, distance_thresholds=[0.5, 2.0])
    evaluator = custom_evaluator(config, "val", ["car", "pedestrian"])
    gt = np.array([[10, 0, 0, 4, 2, 1.5, 0, 0, 0], [5, 5, 0, 0.7, 0.7, 1.8, 0, 0, 0]], dtype=np.float32)
    moved = gt + np.array([0.6, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.float32)   # 0.6 m off: BEV IoU 0.74 car, 0.07
    evaluator.add_frame("a", {"gt_boxes": gt, "gt_labels": np.array([0, 1])})
    evaluator.process("a", moved, np.array([0.9, 0.8]), np.array([0, 1]))
    metrics = evaluator.evaluate(str(tmp_path))
    assert metrics["iou_thresholds"] == {"car": 0.7, "pedestrian": 0.5}
    assert metrics["ap"]["car"]["bev"] == 1.0 and metrics["ap"]["pedestrian"]["bev"] == 0.0
    assert metrics["distance_ap"]["car"] == pytest.approx({"0.5": 0.0, "2.0": 1.0})
    assert (tmp_path / "metrics_custom.json").is_file()
    with pytest.raises(ValueError, match=r"dataset.iou_thresholds names \['truck'\]"):
        custom_evaluator(CustomConfig(root="x", iou_thresholds={"truck": 0.5}), "val", ["car"])


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_and_evaluate_on_the_synthetic_world_in_the_custom_layout(tmp_path, one_thread):
    database = str(tmp_path / "synthetic")
    make_synthetic_database(database, scenes=1, seed=8, keyframes_per_scene=2, sweeps=False)
    source = build_dataset(NuScenesConfig(root=database, version="v1.0-synthetic", num_sweeps=1), TRAIN_SPLIT,
                           DETECTION_CLASSES)
    custom = tmp_path / "custom"
    names = write_custom_frames(source, str(custom), "train")
    (custom / "ImageSets" / "val.txt").write_text("".join(f"{name}\n" for name in names))
    others = [name for name in DETECTION_CLASSES if name not in ("car", "pedestrian")]
    config = load_centerpoint_config(CONFIG, [
        f"dataset={{type: custom, root: {custom}, ignore_classes: {others}}}", "model.num_point_features=4",
        "model.head.class_names=[car, pedestrian]", "model.head.class_groups=[[car], [pedestrian]]",
        "model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8", "model.bev.layer_nums=[1, 1]",
        "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]", "model.head.shared_channels=8",
        "model.head.head_channels=8", "train.batch_size=2", "train.processes=1", "train.cbgs=true",
        f"train.gt_sampling={{database: {tmp_path / 'gt.npz'}, sample_groups: {{car: 2, pedestrian: 2}}}}"])
    result = train(config, str(tmp_path / "run"), max_steps=3, progress=False)
    assert result["steps"] == 3 and np.isfinite(result["last_loss"])
    metrics = evaluate(config, result["checkpoint"], str(tmp_path / "eval"))
    assert metrics["num_frames"] == 2 and (tmp_path / "eval" / "metrics_custom.json").is_file()
    assert metrics["num_gt"]["car"] > 0
    for metric in ("bev", "3d", "distance"):
        assert 0.0 <= metrics["mean_ap"][metric] <= 1.0
    # The same frames with their GT as detections score AP 1.
    frames = build_dataset(config.dataset, "val", config.model.head.class_names)
    evaluator = build_evaluator(config.dataset, "val", config.model.head.class_names)
    for index in range(len(frames)):
        frame = frames[index]
        evaluator.add_frame(index, frame)
        evaluator.process(index, frame["gt_boxes"], np.ones(len(frame["gt_boxes"])), frame["gt_labels"])
    perfect = evaluator.evaluate(str(tmp_path / "perfect"))
    assert perfect["mean_ap"] == pytest.approx({"bev": 1.0, "3d": 1.0, "distance": 1.0})


def test_a_second_conversion_into_the_same_folder_is_refused(tmp_path):
    """Converting another split into a folder from index 0 again would replace the first split's frames
    while ImageSets/train.txt still lists them: train and val sharing frames, silently."""
    source = tmp_path / "source"
    points = np.array([[10.0, 0.0, 0.0, 0.5], [10.5, 0.2, 0.1, 0.4], [30.0, 5.0, 0.0, 0.1]], dtype=np.float32)
    write_frame(source, "a", points, ["10.0 0.0 0.0 4.0 2.0 1.5 0.3 car"])
    write_frame(source, "b", points[::-1].copy(), [], split="val")
    out = tmp_path / "out"
    train_frames = CustomDataset(CustomConfig(root=str(source)), "train", ["car"])
    assert write_custom_frames(train_frames, str(out), "train") == ["000000"]
    written = (out / "points" / "000000.npy").read_bytes()
    val_frames = CustomDataset(CustomConfig(root=str(source)), "val", ["car"])
    with pytest.raises(FileExistsError, match="000000"):
        write_custom_frames(val_frames, str(out), "val")
    assert (out / "points" / "000000.npy").read_bytes() == written
    assert not (out / "ImageSets" / "val.txt").exists()
    with pytest.raises(FileExistsError, match="train.txt"):           # the same split again
        write_custom_frames(train_frames, str(out), "train", first_index=1)
    assert write_custom_frames(val_frames, str(out), "val", first_index=1) == ["000001"]


def test_an_edited_label_file_rebuilds_the_gt_database(tmp_path):
    """The custom type's GT database is keyed by its point and label files (DetectionDataset.source_files)."""
    from datasets.gt_sampling import ensure_gt_database, load_gt_database

    points = np.array([[10.0, 0.0, 0.0, 0.5], [10.5, 0.2, 0.1, 0.4], [9.6, -0.3, 0.2, 0.3]], dtype=np.float32)
    write_frame(tmp_path, "a", points, ["10.0 0.0 0.0 4.0 2.0 1.5 0.3 car"])
    database = str(tmp_path / "gt.npz")
    frames = CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car", "pedestrian"])
    assert ensure_gt_database(frames, database, min_points=1) == "built"
    assert ensure_gt_database(frames, database, min_points=1) == "current"
    (tmp_path / "labels" / "a.txt").write_text("10.0 0.0 0.0 4.0 2.0 1.5 0.3 pedestrian\n")
    frames = CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car", "pedestrian"])
    with pytest.warns(UserWarning, match="rebuilding"):
        assert ensure_gt_database(frames, database, min_points=1) == "rebuilt"
    assert [obj.name for obj in load_gt_database(database)] == ["pedestrian"]


def test_a_float64_bin_is_refused_not_read_as_twice_the_points(tmp_path):
    """float64 x 4 is a whole number of float32 x 4 points too: garbage that no size check catches."""
    points = np.random.default_rng(1).uniform([-40, -40, -2, 0], [40, 40, 2, 1], size=(200, 4))
    write_frame(tmp_path, "a", points.astype(np.float32), [])
    (tmp_path / "points" / "a.npy").unlink()
    points.astype(np.float64).tofile(tmp_path / "points" / "a.bin")
    dataset = CustomDataset(CustomConfig(root=str(tmp_path)), "train", ["car"])
    with pytest.raises(ValueError, match=r"points/a.bin: read as float32 x 4 .* implausible"):
        dataset[0]
    points.astype(np.float32).tofile(tmp_path / "points" / "a.bin")
    np.testing.assert_array_equal(dataset[0]["points"], points.astype(np.float32))


def test_an_empty_or_repeating_custom_split_is_an_error(tmp_path):
    points = np.array([[10.0, 0.0, 0.0, 0.5], [10.5, 0.2, 0.1, 0.4]], dtype=np.float32)
    write_frame(tmp_path, "a", points, [])
    (tmp_path / "ImageSets" / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"ImageSets/val.txt is empty"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "val", ["car"])
    (tmp_path / "ImageSets" / "val.txt").write_text("a\na\n")
    with pytest.raises(ValueError, match=r"ImageSets/val.txt lists frame\(s\) a more than once"):
        CustomDataset(CustomConfig(root=str(tmp_path)), "val", ["car"])


def test_converting_frames_without_the_named_columns_says_which(tmp_path):
    points = np.array([[10.0, 0.0, 0.0, 0.5], [10.5, 0.2, 0.1, 0.4]], dtype=np.float32)
    write_frame(tmp_path / "source", "a", points, [])
    frames = CustomDataset(CustomConfig(root=str(tmp_path / "source"), point_features=["x", "y", "z", "reflectance"]),
                           "train", ["car"])
    with pytest.raises(ValueError, match=r"no point column intensity \(they have x, y, z, reflectance\)"):
        write_custom_frames(frames, str(tmp_path / "out"), "train")
    assert write_custom_frames(frames, str(tmp_path / "out"), "train", ("x", "y", "z", "reflectance")) == ["000000"]
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "points" / "000000.npy"), points)
