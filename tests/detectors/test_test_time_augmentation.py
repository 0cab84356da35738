"""Test-time augmentation: averaging a cloud's mirrored views makes the detector equivariant to those
mirrors (the oracle: the same model on the mirrored cloud, its boxes mirrored back), which no single view
is; configs and checkpoints that cannot use the views are refused."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_detect import SMALL_NUSCENES, write_run

from detectors.centerpoint import CenterPoint
from detectors.config import ConfigError
from detectors.experiment import load_centerpoint_config
from detectors.inference import detect_points, load_detector
from detectors.run_folder import config_differences
from detectors.score_calibration import (
    ClassCalibration,
    ScoreCalibration,
    file_sha256,
    load_score_calibration,
    model_key,
)
from detectors.test_time_augmentation import averaged_headings

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMALL = ["model.geometry.point_cloud_range=[-12.8, -12.8, -5.0, 12.8, 12.8, 3.0]",
         "model.geometry.voxel_size=[0.2, 0.2, 0.2]", "model.num_point_features=4",
         "model.backbone_3d.channels=[4, 8, 8, 16]", "model.backbone_3d.out_channels=16",
         "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[16, 16]", "model.bev.upsample_filters=[16, 16]",
         "model.head.shared_channels=8", "model.head.head_channels=8", "model.decode.score_threshold=0.05",
         "model.decode.top_k=40", "train.augmentation={}"]  # flips and turns: every view seen in training


def random_model(kind: str, heading: str = "sin_cos") -> CenterPoint:
    config = load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"),
                                     [*SMALL, f"model.test_augmentation={kind}", f"model.head.heading={heading}"])
    torch.manual_seed(0)
    model = CenterPoint(config.model)
    with torch.no_grad():
        for parameter in model.parameters():  # spread the scores and the regressions beyond the init's
            if parameter.dim() >= 2:
                parameter.mul_(2.0)
    return model.eval()


def cloud() -> np.ndarray:
    """Points near voxel centres (never on a voxel face, where a mirrored coordinate could round into the
    neighbouring voxel): the mirrored cloud fills the mirrored voxels."""
    rng = np.random.default_rng(3)
    centres = (rng.integers(-60, 60, (4000, 2)) + 0.5) * 0.2
    xy = centres + rng.uniform(-0.06, 0.06, centres.shape)
    return np.column_stack([xy, rng.uniform(-2, 1, 4000), rng.uniform(0, 1, 4000)]).astype(np.float32)


def mirrored(points: np.ndarray, sx: int, sy: int) -> np.ndarray:
    out = points.copy()
    out[:, 0] *= sx
    out[:, 1] *= sy
    return out


def mirrored_boxes(boxes: torch.Tensor, sx: int, sy: int) -> torch.Tensor:
    """Boxes (K, 9) of a cloud mirrored by (sx, sy), in the cloud's own frame: yaw from (cos, sin)."""
    out = boxes.clone().double()
    out[:, 0] *= sx
    out[:, 1] *= sy
    out[:, 6] = torch.atan2(sy * torch.sin(out[:, 6]), sx * torch.cos(out[:, 6]))
    out[:, 7] *= sx
    out[:, 8] *= sy
    return out


def same_detections(a: dict, b: dict, yaw_period: float = 2 * math.pi) -> bool:
    if len(a["scores"]) != len(b["scores"]) or not torch.equal(a["labels"], b["labels"]):
        return False
    gap = a["boxes"][:, 6].double() - b["boxes"][:, 6]
    yaw_gap = torch.remainder(gap + yaw_period / 2, yaw_period) - yaw_period / 2
    not_yaw = [0, 1, 2, 3, 4, 5, 7, 8]
    return (torch.allclose(a["scores"].double(), b["scores"].double(), atol=1e-5)
            and torch.allclose(a["boxes"][:, not_yaw].double(), b["boxes"][:, not_yaw].double(), atol=1e-4)
            and bool((yaw_gap.abs() < 1e-4).all()))


@pytest.mark.parametrize("kind, mirrors, heading", [
    ("half_turn", [(-1, -1)], "sin_cos"),
    ("half_turn", [(-1, -1)], "axis_direction"),
    ("double_flip", [(-1, 1), (1, -1), (-1, -1)], "sin_cos"),
    ("double_flip", [(-1, 1), (1, -1), (-1, -1)], "axis_direction"),
])
def test_averaged_views_detect_the_same_boxes_in_a_mirrored_cloud(kind, mirrors, heading):
    """Every box, score and class of the mirrored cloud, mirrored back, is that of the cloud itself: the
    views' maps were mirrored back and their offsets, headings and velocities turned back. A (sin, cos)
    heading faces the way the cloud given reads it, so there the axis is compared (the yaw modulo π)."""
    model, points = random_model(kind, heading), cloud()
    (detections,) = model.predict([points])
    assert len(detections["scores"]) >= 20
    period = math.pi if heading == "sin_cos" else 2 * math.pi
    for sx, sy in mirrors:
        (of_mirror,) = model.predict([mirrored(points, sx, sy)])
        back = {**of_mirror, "boxes": mirrored_boxes(of_mirror["boxes"], sx, sy)}
        assert same_detections(detections, back, period), (sx, sy)


def test_views_that_read_an_axis_both_ways_face_the_way_the_cloud_reads_it():
    """Two views reading the same axis facing opposite ways do not cancel out: the second is turned to face
    the first's way, however long its vector, and views that agree are averaged."""
    def heading(*angles_and_lengths):
        return [torch.tensor([length * math.sin(angle), length * math.cos(angle)]).view(2, 1, 1)
                for angle, length in angles_and_lengths]

    def yaw(maps):
        return math.atan2(maps[0, 0, 0], maps[1, 0, 0])

    assert yaw(averaged_headings(heading((0.3, 1.0), (0.3 + math.pi, 2.0)))) == pytest.approx(0.3)
    assert yaw(averaged_headings(heading((0.3 + math.pi, 0.5), (0.3, 1.0)))) == pytest.approx(0.3 - math.pi)
    assert yaw(averaged_headings(heading((0.2, 1.0), (0.4, 1.0)))) == pytest.approx(0.3)
    assert yaw(averaged_headings(heading((0.2, 1.0), (0.4 + math.pi, 1.0), (0.3, 1.0)))) == pytest.approx(0.3)


def test_a_single_view_is_not_equivariant():
    """The oracle above can fail: without the averaged views this model's boxes move when the cloud turns."""
    model, points = random_model("none"), cloud()
    (detections,) = model.predict([points])
    (of_turned,) = model.predict([mirrored(points, -1, -1)])
    assert not same_detections(detections, {**of_turned, "boxes": mirrored_boxes(of_turned["boxes"], -1, -1)})


def test_views_batch_as_clouds_and_report_the_cloud_own_dropped_points():
    """Two clouds predicted together give each its own detections, and detect_points reports the voxelizer's
    counts of the cloud itself, not of all its views."""
    model, points = random_model("half_turn"), cloud()
    other = mirrored(points, 1, -1)[::2].copy()
    together = model.predict([points, other])
    alone = [model.predict([points])[0], model.predict([other])[0]]
    assert all(same_detections(a, b) for a, b in zip(together, alone))
    far = np.concatenate([points, [[40.0, 0.0, 0.0, 0.0]]]).astype(np.float32)
    found = detect_points(model, far)
    assert found["dropped"].out_of_range == 1 and same_detections(found, alone[0])


def test_a_grid_not_symmetric_about_the_sensor_is_refused():
    with pytest.raises(ConfigError, match=r"model.test_augmentation = half_turn mirrors the grid about the sensor, "
                                          r"which needs a range symmetric in x and y .*\[0.0, -40.0"):
        load_centerpoint_config(str(CONFIGS / "centerpoint_kitti_cpu.yaml"), ["model.test_augmentation=half_turn"])
    assert load_centerpoint_config(str(CONFIGS / "centerpoint_kitti_cpu.yaml")).model.test_augmentation == "none"


def test_views_the_training_never_saw_are_refused(tmp_path):
    """The demo config turns half the frames and never flips: half turns load, mirror images do not, and a
    model trained without any augmentation sees neither. A config that asks for views its own training
    will not show is refused when it loads, before any training."""
    run = write_run(tmp_path / "run", "centerpoint_synthetic_cpu.yaml", SMALL_NUSCENES)
    checkpoint = str(run / "checkpoint.pt")
    config = str(CONFIGS / "centerpoint_synthetic_cpu.yaml")
    assert load_detector(checkpoint).config.test_augmentation == "half_turn"  # the demo config's
    assert load_detector(checkpoint, config, overrides=[*SMALL_NUSCENES, "model.test_augmentation=none"])
    with pytest.raises(ValueError, match=r"model.test_augmentation: double_flip averages mirror images, but the "
                                         r"model was trained without flips .*config.yaml\); or set "
                                         r"model.test_augmentation: none"):
        load_detector(checkpoint, config, overrides=[*SMALL_NUSCENES, "model.test_augmentation=double_flip",
                                                     "train.augmentation.flip_x=0.5"])
    still = write_run(tmp_path / "still", "centerpoint_synthetic_cpu.yaml",
                      [*SMALL_NUSCENES, "train.augmentation=null", "model.test_augmentation=none"])
    with pytest.raises(ValueError, match="half_turn averages views of the cloud that the model never saw: it was "
                                         "trained without augmentation"):
        load_detector(str(still / "checkpoint.pt"), config, overrides=SMALL_NUSCENES)
    with pytest.raises(ConfigError, match="model.test_augmentation: half_turn averages views of the cloud that the "
                                          "model never saw: it was trained without augmentation; or set "
                                          "model.test_augmentation: none"):
        load_centerpoint_config(config, ["train.augmentation=null"])
    flipped = write_run(tmp_path / "flipped", "centerpoint_synthetic_cpu.yaml",
                        [*SMALL_NUSCENES, "train.augmentation.flip_x=0.5", "train.augmentation.flip_y=0.5",
                         "train.augmentation.half_turn=0.0", "model.test_augmentation=double_flip"])
    assert load_detector(str(flipped / "checkpoint.pt")).config.test_augmentation == "double_flip"


def test_test_augmentation_is_an_inference_setting_that_keys_a_calibration(tmp_path):
    """A training run may resume with other views (they do not change the weights); a score calibration,
    fitted on the scores of some views, is refused for others. A file fitted before the setting existed
    holds the scores of the cloud alone."""
    half, none = (load_centerpoint_config(str(CONFIGS / "centerpoint_synthetic_cpu.yaml"),
                                          [f"model.test_augmentation={kind}"]).model for kind in ("half_turn", "none"))
    assert config_differences({"model": model_key(half)}, {"model": model_key(none)}) == []
    assert config_differences({"model": model_key(half)}, {"model": model_key(none)}, ignored=()) == [
        "model.test_augmentation: run 'half_turn', requested 'none'"]
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights")
    path = str(tmp_path / "calibration.json")
    classes = {name: ClassCalibration(1.0, 0.0, 10, 5) for name in none.head.class_names}
    ScoreCalibration(classes, file_sha256(str(checkpoint)), model_key(none), {}).save(path)
    data = json.loads(Path(path).read_text())
    del data["model_config"]["test_augmentation"]
    Path(path).write_text(json.dumps(data))
    assert load_score_calibration(path, str(checkpoint), none).classes == classes
    with pytest.raises(ValueError, match=r"fitted with another model config \(model.test_augmentation: fitted "
                                         r"'none', requested 'half_turn'\)"):
        load_score_calibration(path, str(checkpoint), half)
