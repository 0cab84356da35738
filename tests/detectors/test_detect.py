"""tools/detect.py and detectors.inference on the real KITTI and nuScenes scans: the JSON equals
``CenterPoint.from_checkpoint(...).predict`` on the model's features built here independently from
the raw bytes; PCD reads as the same cloud in .bin; bad input fails in one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import KITTI_SCANS, NUSCENES_KEYFRAME, NUSCENES_SWEEPS, run_tool_here, skip_if_extra_missing

from datasets import read_points
from detectors.centerpoint import CenterPoint
from detectors.config import to_dict
from detectors.experiment import load_centerpoint_config
from detectors.inference import (
    ModelInput,
    detect_points,
    intensity_scale_of,
    load_detector,
    model_input,
    model_points,
    output_paths,
)
from detectors.training import rng_states, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
TOOL = ROOT / "tools" / "detect.py"
NARROW = ["model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8",
          "model.head.shared_channels=8", "model.head.head_channels=8", "model.decode.score_threshold=0.12"]
SMALL_NUSCENES = [*NARROW, "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[8, 8]",
                  "model.bev.upsample_filters=[8, 8]"]
SMALL_KITTI = [*NARROW, "model.bev.layer_nums=[1]", "model.bev.num_filters=[8]", "model.bev.upsample_filters=[8]"]
NUSCENES_FEATURES = ModelInput(("x", "y", "z", "intensity", "time_lag"), 255.0, "test")


def write_run(folder: Path, config_name: str, overrides=(), seed: int = 0) -> Path:
    """A run folder as training writes it (config.yaml, checkpoint.pt with optimizer-free state and
    the RNG states), with seeded random weights, scaled so that the scores spread (some above 0.12)."""
    config = load_centerpoint_config(str(CONFIGS / config_name), list(overrides))
    torch.manual_seed(seed)
    model = CenterPoint(config.model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:  # default init shrinks the signal layer by layer: all scores ~0.1
                parameter.mul_(2.0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    save_checkpoint(str(folder / "checkpoint.pt"), {"model": model.state_dict(), "epoch": 1, "step_in_epoch": 0,
                                                    "steps": 3, "rng": rng_states()})
    return folder


@pytest.fixture(scope="module")
def nuscenes_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run_nuscenes"), "centerpoint_synthetic_cpu.yaml", SMALL_NUSCENES)


@pytest.fixture(scope="module")
def kitti_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run_kitti"), "centerpoint_kitti_cpu.yaml", SMALL_KITTI)


def run_tool(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def call_tool(*args) -> tuple[int, str]:
    """tools/detect.py as its command line runs it (one-line errors, exit code 2), in this process
    (fast): (exit code, stderr)."""
    completed = run_tool_here("detect", *args)
    return completed.returncode, completed.stderr


def kitti_as_nuscenes_features(path) -> np.ndarray:
    """KITTI float32 x 4 (reflectance 0..1) → x, y, z, intensity 0..255, time lag 0, from the bytes."""
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    return np.column_stack([raw[:, :3], raw[:, 3] * np.float32(255), np.zeros(len(raw), np.float32)])


def keyframe_as_nuscenes_features(path) -> np.ndarray:
    """nuScenes .pcd.bin float32 x 5 (x, y, z, intensity, ring) → x, y, z, intensity, time lag 0."""
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    return np.column_stack([raw[:, :4], np.zeros(len(raw), np.float32)])


def assert_record_matches(record: dict, detections: dict, class_names) -> None:
    boxes = np.array(record["boxes"], dtype=np.float64).reshape(-1, 9)
    assert record["num_detections"] == len(boxes) == len(record["scores"]) == len(record["labels"])
    # float32 boxes of two processes: a few ulps apart where the threads sum in another order (1 ulp at 50 m: 4e-6)
    np.testing.assert_allclose(boxes, detections["boxes"].double().numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(record["scores"], detections["scores"].double().numpy(), rtol=0, atol=1e-7)
    assert record["labels"] == [class_names[int(label)] for label in detections["labels"]]


def test_cli_on_real_kitti_and_nuscenes_scans_writes_json_equal_to_predict(nuscenes_run, real_file, tmp_path):
    kitti, keyframe = real_file(KITTI_SCANS[0]), real_file(NUSCENES_KEYFRAME)
    out = tmp_path / "out"
    result = run_tool(nuscenes_run / "config.yaml", nuscenes_run / "checkpoint.pt", kitti, keyframe, "--out", out,
                      "--rescale-intensity")
    assert result.returncode == 0, result.stderr
    model = CenterPoint.from_checkpoint(str(nuscenes_run / "checkpoint.pt"))   # config.yaml beside it
    names = model.config.head.class_names
    for path, features, columns in ((kitti, kitti_as_nuscenes_features(kitti), 4),
                                    (keyframe, keyframe_as_nuscenes_features(keyframe), 5)):
        record = json.loads((out / (path.name + ".json")).read_text())
        assert record["box_fields"] == ["x", "y", "z", "dx", "dy", "dz", "yaw", "vx", "vy"]
        assert record["points"]["points_read"] == os.path.getsize(path) // (4 * columns)
        assert record["points"]["taken_from"]["time_lag"] == "filled 0 (one sweep)"
        assert record["checkpoint"] == str(nuscenes_run / "checkpoint.pt")
        assert record["score_threshold"] == 0.12 and min(record["scores"]) >= 0.12
        assert record["test_augmentation"] == "half_turn"  # the synthetic config's views
        assert set(record["timing_s"]) == {"read", "predict", "total"}
        detections = model.predict([features])[0]
        assert len(detections["scores"]) > 0
        assert_record_matches(record, detections, names)
    kitti_record = json.loads((out / (kitti.name + ".json")).read_text())
    assert kitti_record["points"]["intensity"]["rescaled_by"] == 255.0
    keyframe_record = json.loads((out / (keyframe.name + ".json")).read_text())
    assert keyframe_record["points"]["file_columns"][4] == "ring"  # present in the file, not fed to the model
    assert keyframe_record["points"]["intensity"]["rescaled_by"] == 1.0


def test_kitti_model_reads_kitti_scans_as_they_are_and_refuses_0_255_intensities(kitti_run, real_file, tmp_path):
    kitti, keyframe = real_file(KITTI_SCANS[1]), real_file(NUSCENES_KEYFRAME)
    code, error = call_tool(kitti_run / "config.yaml", kitti_run / "checkpoint.pt", kitti, "--out", tmp_path)
    assert code == 0, error
    record = json.loads((tmp_path / (kitti.name + ".json")).read_text())
    model = load_detector(str(kitti_run / "checkpoint.pt"), str(kitti_run / "config.yaml"))
    assert_record_matches(record, model.predict([np.fromfile(kitti, dtype=np.float32).reshape(-1, 4)])[0],
                          model.config.head.class_names)
    code, error = call_tool(kitti_run / "config.yaml", kitti_run / "checkpoint.pt", keyframe, "--out", tmp_path)
    assert code == 2 and error.count("\n") == 1
    assert "0..255" in error and "0..1" in error and "--rescale-intensity" in error and keyframe.name in error


@pytest.mark.slow  # software rendering
def test_png_shows_the_scene_with_the_detections_above_a_score(kitti_run, real_file, tmp_path):
    kitti = real_file(KITTI_SCANS[0])
    args = [kitti_run / "config.yaml", kitti_run / "checkpoint.pt", kitti, "--out", tmp_path]
    code, error = call_tool(*args)
    assert code == 0, error
    # Draw three boxes: software rendering is slow.
    third = json.loads((tmp_path / "000000.bin.json").read_text())["scores"][2]
    code, error = call_tool(*args, "--png", "--png-min-score", str(third), "--overwrite")
    skip_if_extra_missing(error)
    assert code == 0, error
    from matplotlib.image import imread
    image = imread(tmp_path / "000000.bin.png")
    assert image.shape[:2] == (1200, 1200) and image[..., :3].std() > 0.01  # not a blank canvas


def test_sweeps_stack_gives_its_time_lag_column_and_pcd_bin_leaves_out_the_ring(real_file):
    sweeps = real_file(NUSCENES_SWEEPS)
    points, mapping = model_points(str(sweeps), NUSCENES_FEATURES)
    raw = np.fromfile(sweeps, dtype=np.float16).reshape(-1, 5).astype(np.float32)
    np.testing.assert_array_equal(points, raw)
    assert mapping.taken_from["time_lag"] != "filled 0 (one sweep)" and mapping.intensity["rescaled_by"] == 1.0
    keyframe = real_file(NUSCENES_KEYFRAME)
    points, mapping = model_points(str(keyframe), NUSCENES_FEATURES)
    np.testing.assert_array_equal(points, keyframe_as_nuscenes_features(keyframe))


def test_pcd_file_gives_the_same_detections_as_the_same_cloud_as_bin(nuscenes_run, real_file, tmp_path):
    pypcd4 = pytest.importorskip("pypcd4")
    kitti = real_file(KITTI_SCANS[0])
    cloud = np.fromfile(kitti, dtype=np.float32).reshape(-1, 4)
    pcd = tmp_path / "000000.pcd"
    pypcd4.PointCloud.from_xyzi_points(cloud).save(str(pcd))
    try:
        read_points(str(pcd))
    except ValueError as error:
        pytest.skip(f"datasets.read_points cannot read PCD yet: {error}")
    args = (nuscenes_run / "config.yaml", nuscenes_run / "checkpoint.pt", "--out", tmp_path / "out",
            "--rescale-intensity")
    code, error = call_tool(args[0], args[1], kitti, pcd, *args[2:])
    assert code == 0, error
    from_bin = json.loads((tmp_path / "out" / "000000.bin.json").read_text())
    from_pcd = json.loads((tmp_path / "out" / "000000.pcd.json").read_text())
    assert from_pcd["num_detections"] == from_bin["num_detections"] > 0
    for key in ("boxes", "scores", "labels"):
        assert from_pcd[key] == from_bin[key]
    assert from_pcd["points"]["taken_from"] == from_bin["points"]["taken_from"]


def test_errors_are_one_clear_line(nuscenes_run, real_file, tmp_path):
    kitti = real_file(KITTI_SCANS[0])
    config, checkpoint = nuscenes_run / "config.yaml", nuscenes_run / "checkpoint.pt"

    code, error = call_tool(config, checkpoint, tmp_path / "missing.bin", "--out", tmp_path)
    assert code == 2 and error.count("\n") == 1 and "not found" in error and "missing.bin" in error

    three_columns = tmp_path / "xyz.npy"
    np.save(three_columns, np.fromfile(kitti, dtype=np.float32).reshape(-1, 4)[:, :3])
    code, error = call_tool(config, checkpoint, three_columns, "--out", tmp_path)
    assert code == 2 and error.count("\n") == 1
    assert "xyz.npy" in error and "5 features (x, y, z, intensity, time_lag" in error and "3 columns (x, y, z" in error

    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path, "--rescale-intensity")
    assert code == 0, error
    written = (tmp_path / "000000.bin.json").read_text()
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path, "--rescale-intensity")
    assert code == 2 and error.count("\n") == 1 and "exists" in error and "--overwrite" in error
    assert (tmp_path / "000000.bin.json").read_text() == written
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path, "--rescale-intensity",
                            "--overwrite", "--score-threshold", "0.9")
    assert code == 0, error
    assert json.loads((tmp_path / "000000.bin.json").read_text())["score_threshold"] == 0.9

    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "o", "model.bev.num_filters=[8, 16]")
    assert code == 2 and error.count("\n") == 1 and "do not fit" in error

    # Same shapes, other label order: the boxes would be named wrongly without a word.
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "o", "--rescale-intensity",
                            "model.head.class_names=[truck, car, construction_vehicle, bus, trailer, barrier, "
                            "motorcycle, bicycle, pedestrian, traffic_cone]")
    assert code == 2 and error.count("\n") == 1 and "model.head.class_names" in error and "trained with" in error

    code, error = call_tool(config, config, kitti, "--out", tmp_path / "o")
    assert code == 2 and error.count("\n") == 1 and "not a PyTorch checkpoint" in error


def test_calibration_turns_the_scores_and_is_refused_for_another_checkpoint(nuscenes_run, real_file, tmp_path):
    from detectors.score_calibration import ClassCalibration, ScoreCalibration, file_sha256, model_key

    kitti = real_file(KITTI_SCANS[0])
    config, checkpoint = nuscenes_run / "config.yaml", nuscenes_run / "checkpoint.pt"
    model = CenterPoint.from_checkpoint(str(checkpoint)).config
    calibration = ScoreCalibration({name: ClassCalibration(2.0 + i / 10, -1.0 + i / 5, 1, 0)
                                    for i, name in enumerate(model.head.class_names)}, file_sha256(str(checkpoint)),
                                   model_key(model), {})
    calibration.save(str(tmp_path / "calibration.json"))
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "raw", "--rescale-intensity")
    assert code == 0, error
    raw = json.loads((tmp_path / "raw" / "000000.bin.json").read_text())
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "calibrated", "--rescale-intensity",
                            "--calibration", tmp_path / "calibration.json")
    assert code == 0, error
    record = json.loads((tmp_path / "calibrated" / "000000.bin.json").read_text())
    assert record["raw_scores"] == raw["scores"] and record["boxes"] == raw["boxes"] and len(raw["scores"]) > 0
    assert record["scores"] == pytest.approx(list(calibration.apply(raw["scores"], raw["labels"])))
    assert record["score_calibration"] == str(tmp_path / "calibration.json")

    # --score-threshold then keeps the detections whose calibrated score reaches it
    threshold = float(np.median(record["scores"]))
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "kept", "--rescale-intensity",
                            "--calibration", tmp_path / "calibration.json", "--score-threshold", threshold)
    assert code == 0, error
    kept = json.loads((tmp_path / "kept" / "000000.bin.json").read_text())
    assert kept["scores"] == [s for s in record["scores"] if s >= threshold]
    assert 0 < kept["num_detections"] < len(raw["scores"])
    assert kept["calibrated_score_threshold"] == threshold and kept["score_threshold"] == raw["score_threshold"]

    other = tmp_path / "other.pt"      # the same run one step on: other weights
    state = torch.load(checkpoint, weights_only=True)
    state["model"] = {name: value + 1e-3 if value.is_floating_point() else value
                      for name, value in state["model"].items()}
    torch.save(state, other)
    code, error = call_tool(config, other, kitti, "--out", tmp_path / "o", "--calibration",
                            tmp_path / "calibration.json")
    assert code == 2 and error.count("\n") == 1 and "fitted for another checkpoint" in error
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "o", "--calibration", tmp_path / "nope.json")
    assert code == 2 and error.count("\n") == 1 and "nope.json" in error
    # another NMS than the calibration was fitted with: other detections, and the maps would not hold
    code, error = call_tool(config, checkpoint, kitti, "--out", tmp_path / "o", "--calibration",
                            tmp_path / "calibration.json", "model.decode.nms=rotated")
    assert code == 2 and error.count("\n") == 1 and "fitted with another model config" in error
    assert not (tmp_path / "o").exists()


def test_realism_tool_scores_the_real_key_frame_with_raw_and_calibrated_scores(nuscenes_run, real_file, tmp_path):
    from datasets.nuscenes_writer import make_synthetic_database
    from datasets.realism import sim_to_real
    from detectors.inference import detections_with_names
    from detectors.score_calibration import ClassCalibration, ScoreCalibration, file_sha256, model_key

    real = real_file(NUSCENES_KEYFRAME).parents[1]
    checkpoint = nuscenes_run / "checkpoint.pt"
    model = CenterPoint.from_checkpoint(str(checkpoint))
    calibration = ScoreCalibration({name: ClassCalibration(1.0, 4.0, 1, 0) for name in model.config.head.class_names},
                                   file_sha256(str(checkpoint)), model_key(model.config), {})
    calibration.save(str(tmp_path / "calibration.json"))
    database = tmp_path / "synthetic"
    make_synthetic_database(str(database), scenes=2, seed=0, keyframes_per_scene=1, sweeps=False)
    arguments = ["--database", database, "--real-data", real, "--frames", 1, "--out", tmp_path / "out"]
    completed = run_tool_here("realism", *arguments, "--calibration", tmp_path / "calibration.json")
    assert completed.returncode == 2 and "give its --checkpoint too" in completed.stderr
    completed = run_tool_here("realism", *arguments, "--checkpoint", checkpoint,
                              "--calibration", tmp_path / "calibration.json")
    assert completed.returncode == 0, completed.stderr[-2000:]
    raw = json.loads((tmp_path / "out" / "sim_to_real.json").read_text())
    calibrated = json.loads((tmp_path / "out" / "sim_to_real_calibrated.json").read_text())
    assert raw == sim_to_real(lambda points: detections_with_names(model, points), str(real))
    assert calibrated == sim_to_real(lambda points: detections_with_names(model, points, calibration), str(real))
    # an offset of 4 lifts the small model's scores (0.12 and up) above 0.88: more detections reach 0.2
    assert calibrated["false_positives"] + calibrated["found"] > raw["false_positives"] + raw["found"]


def test_npy_columns_are_positional_and_can_be_named(tmp_path):
    rng = np.random.default_rng(0)
    cloud = np.column_stack([rng.uniform(-20, 20, (50, 3)), rng.uniform(0, 255, 50), rng.integers(0, 32, 50),
                             rng.uniform(0, 0.4, 50)]).astype(np.float32)
    path = tmp_path / "cloud.npy"
    np.save(path, cloud[:, [0, 1, 2, 3, 5]])
    points, mapping = model_points(str(path), NUSCENES_FEATURES)
    np.testing.assert_array_equal(points, cloud[:, [0, 1, 2, 3, 5]])
    np.save(path, cloud)  # x, y, z, intensity, ring, time lag: six columns, the fifth is no time lag
    with pytest.raises(ValueError, match="no column for 'time_lag'|6 columns"):
        model_points(str(path), ModelInput(("x", "y", "z", "intensity", "time_lag"), 255.0, "test"))
    points, mapping = model_points(str(path), NUSCENES_FEATURES, columns=["x", "y", "z", "intensity", "ring",
                                                                          "time_lag"])
    np.testing.assert_array_equal(points, cloud[:, [0, 1, 2, 3, 5]])
    assert mapping.taken_from["time_lag"] == "time_lag"
    with pytest.raises(ValueError, match="names 2 columns"):
        model_points(str(path), NUSCENES_FEATURES, columns=["x", "y"])


def test_non_finite_points_are_dropped_and_counted(tmp_path):
    cloud = np.tile(np.array([[1.0, 2.0, 0.5, 100.0, 0.0]], np.float32), (6, 1))
    cloud[1, 0], cloud[4, 3] = np.nan, np.inf
    path = tmp_path / "cloud.npy"
    np.save(path, cloud)
    points, mapping = model_points(str(path), NUSCENES_FEATURES)
    assert mapping.points_read == 6 and mapping.nonfinite_dropped == 2 and len(points) == 4


def test_intensity_scale_is_read_off_the_largest_value():
    assert intensity_scale_of(np.array([0.0, 0.3, 0.99], np.float32)) == 1.0
    assert intensity_scale_of(np.array([0.0, 3.0, 255.0], np.float32)) == 255.0
    assert intensity_scale_of(np.array([0.0, 300.0, np.nan], np.float32)) == 65535.0
    assert intensity_scale_of(np.zeros(4, np.float32)) is None


def test_from_checkpoint_takes_the_checkpoint_config_or_the_run_folder_s(nuscenes_run, tmp_path):
    state = torch.load(nuscenes_run / "checkpoint.pt", weights_only=True)
    config = load_centerpoint_config(str(nuscenes_run / "config.yaml"))
    with_config = tmp_path / "with_config.pt"
    torch.save({"model": state["model"], "config": to_dict(config)}, with_config)
    model = CenterPoint.from_checkpoint(str(with_config))   # no config.yaml beside it: the 'config' entry
    assert model.config.head.head_channels == 8 and not model.training
    assert model.point_features.features == ("x", "y", "z", "intensity", "time_lag")
    bare = tmp_path / "bare.pt"
    torch.save(state["model"], bare)
    with pytest.raises(ValueError, match="no config"):
        CenterPoint.from_checkpoint(str(bare))
    assert CenterPoint.from_checkpoint(str(bare), str(nuscenes_run / "config.yaml")).config.head.head_channels == 8
    torch.save({"model": state["model"], "hook": Path("/")}, tmp_path / "object.pt")
    with pytest.raises(ValueError, match="PosixPath"):  # refused by weights_only loading: no code runs
        CenterPoint.from_checkpoint(str(tmp_path / "object.pt"), str(nuscenes_run / "config.yaml"))


def test_outputs_are_planned_before_any_work(tmp_path):
    first, second = tmp_path / "a" / "scan.bin", tmp_path / "b" / "scan.bin"
    for path in (first, second):
        path.parent.mkdir()
        np.zeros((4, 4), np.float32).tofile(path)
    with pytest.raises(ValueError, match="would both write"):
        output_paths([str(first), str(second)], str(tmp_path / "out"))
    plans = output_paths([str(first)], str(tmp_path / "out"), suffixes=(".json", ".png"))
    assert plans == [{".json": str(tmp_path / "out" / "scan.bin.json"), ".png": str(tmp_path / "out" / "scan.bin.png")}]
    # A picture of an earlier run's detections is not left beside new JSON written without --png.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scan.bin.png").write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match=r"scan\.bin\.png exists; pass --overwrite"):
        output_paths([str(first)], str(tmp_path / "out"), stale_suffixes=(".png",))
    with pytest.raises(ValueError, match="would both write"):  # a refused plan removes nothing
        output_paths([str(first), str(second)], str(tmp_path / "out"), overwrite=True, stale_suffixes=(".png",))
    assert (tmp_path / "out" / "scan.bin.png").exists()
    plans = output_paths([str(first)], str(tmp_path / "out"), overwrite=True, stale_suffixes=(".png",))
    assert plans == [{".json": str(tmp_path / "out" / "scan.bin.json")}]
    assert not (tmp_path / "out" / "scan.bin.png").exists()


def test_model_features_come_from_the_dataset_type(tmp_path):
    nuscenes = load_centerpoint_config(str(CONFIGS / "centerpoint_synthetic_cpu.yaml"))
    assert model_input(nuscenes) == ModelInput(("x", "y", "z", "intensity", "time_lag"), 255.0,
                                               "dataset.type 'nuscenes'")
    kitti = load_centerpoint_config(str(CONFIGS / "centerpoint_kitti_cpu.yaml"))
    assert model_input(kitti).features == ("x", "y", "z", "reflectance") and model_input(kitti).intensity_scale == 1
    custom = load_centerpoint_config(str(CONFIGS / "centerpoint_synthetic_cpu.yaml"), [
        "dataset={type: custom, root: data, point_features: [x, y, z, intensity, elongation]}"])
    features = model_input(custom)
    assert features.features == ("x", "y", "z", "intensity", "elongation") and features.intensity_scale is None
    cloud = np.array([[1.0, 2.0, 0.5, 0.7, 3.0], [4.0, 5.0, 0.1, 0.2, 1.0]], np.float32)
    np.save(tmp_path / "frame.npy", cloud)
    points, mapping = model_points(str(tmp_path / "frame.npy"), features)
    np.testing.assert_array_equal(points, cloud)
    assert mapping.intensity["checked"] is False  # a custom type's intensity range is unknown: said, not guessed


def test_detect_points_counts_the_points_the_voxelizer_dropped_and_equals_predict(nuscenes_run, real_file):
    keyframe = keyframe_as_nuscenes_features(real_file(NUSCENES_KEYFRAME))
    far = np.array([[1000.0, 0.0, 0.0, 10.0, 0.0], [0.0, -1000.0, 0.0, 10.0, 0.0], [0.0, 0.0, 500.0, 10.0, 0.0]],
                   dtype=np.float32)
    cloud = np.concatenate([keyframe, far])
    model = load_detector(str(nuscenes_run / "checkpoint.pt"))
    point_cloud_range = np.array(model.config.geometry.point_cloud_range)
    low, high = point_cloud_range[:3], point_cloud_range[3:]
    outside = int((~((cloud[:, :3] >= low) & (cloud[:, :3] < high)).all(axis=1)).sum())  # the oracle: numpy
    assert outside >= len(far)
    detections = detect_points(model, cloud)
    assert detections["dropped"].out_of_range == outside
    assert len(detections["scores"]) > 0
    expected = model.predict([cloud])[0]
    torch.testing.assert_close(detections["boxes"], expected["boxes"], rtol=0, atol=0)
    torch.testing.assert_close(detections["scores"], expected["scores"], rtol=0, atol=0)
