"""Configs (inheritance, overrides, strict keys) and the assembled CenterPoint."""
from pathlib import Path

import numpy as np
import pytest
import torch

from detectors.centerpoint import CenterPoint
from detectors.config import ConfigError
from detectors.experiment import load_centerpoint_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_published_configs_load_with_derived_geometry():
    config = load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"))
    fine = load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel0075.yaml"))
    assert fine.model.geometry.voxel_size == [0.075, 0.075, 0.2]
    assert fine.model.head.class_names == config.model.head.class_names  # inherited
    assert fine.model.voxelizer.max_points_per_voxel == 10 and fine.model.voxelizer.max_voxels_test == 160000
    model = CenterPoint(config.model)
    assert model.voxelizers["test"].spatial_shape == (40, 1024, 1024)
    assert model.grid.shape == (128, 128)
    assert model.bev_backbone.blocks[0][0].in_channels == 256  # 128 channels x height 2
    assert CenterPoint(fine.model).grid.shape == (180, 180)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_overrides_and_errors(tmp_path):
    base = str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml")
    config = load_centerpoint_config(base, ["model.backbone_3d.backend=spconv", "model.decode.score_threshold=0.3"])
    assert config.model.backbone_3d.backend == "spconv" and config.model.decode.score_threshold == 0.3
    with pytest.raises(ConfigError, match=r"unknown key model.backbone_3d.chanels; valid keys of model.backbone_3d: "
                                          r"\['activation_penalty', 'activation_topk', 'backend', 'channels'"):
        load_centerpoint_config(base, ["model.backbone_3d.chanels=[1,2,3,4]"])
    with pytest.raises(ConfigError, match="model.voxelizer.max_points_per_voxel: expected int, got 'ten'"):
        load_centerpoint_config(base, ["model.voxelizer.max_points_per_voxel=ten"])
    child = write(tmp_path, "child.yaml", f"_base_: {base}\nmodel:\n  num_point_features: 4\n")
    assert load_centerpoint_config(child).model.num_point_features == 4
    missing = write(tmp_path, "missing.yaml", "model:\n  geometry:\n    voxel_size: [0.1, 0.1, 0.2]\n")
    with pytest.raises(ConfigError, match="missing key model.geometry.point_cloud_range"):
        load_centerpoint_config(missing)
    loop = write(tmp_path, "loop.yaml", "_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_centerpoint_config(loop)
    with pytest.raises(ConfigError, match="not of the form"):
        load_centerpoint_config(base, ["model.head"])


def small_model():
    config = load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"), [
        "model.geometry.point_cloud_range=[-12.8, -12.8, -5.0, 12.8, 12.8, 3.0]",
        "model.geometry.voxel_size=[0.2, 0.2, 0.2]", "model.num_point_features=4",
        "model.backbone_3d.channels=[4, 8, 8, 16]", "model.backbone_3d.out_channels=16",
        "model.bev.layer_nums=[1, 1]", "model.bev.num_filters=[16, 16]", "model.bev.upsample_filters=[16, 16]",
        "model.head.shared_channels=8", "model.head.head_channels=8"])
    return CenterPoint(config.model)


def test_small_centerpoint_trains_one_step_and_predicts():
    torch.manual_seed(0)
    model = small_model()
    rng = np.random.default_rng(0)
    clouds = [np.concatenate([rng.uniform(-12, 12, (3000, 2)), rng.uniform(-2, 1, (3000, 1)),
                              rng.uniform(0, 1, (3000, 1))], 1).astype(np.float32) for _ in range(2)]
    boxes = np.array([[2.0, 3.0, -1.0, 4.5, 1.9, 1.6, 0.4, 1.0, 0.0]], dtype=np.float32)
    targets = [model.targets(boxes, np.array([0])) for _ in clouds]
    batched = [{k: torch.stack([t[g][k] for t in targets]) for k in targets[0][g]} for g in range(6)]
    predictions = model.train()(clouds)
    assert predictions[0]["heatmap"].shape == (2, 1, *model.grid.shape)
    losses = model.loss(predictions, batched)
    losses["loss"].backward()
    assert all(p.grad is not None for p in model.head.parameters())
    results = model.eval().predict(clouds)
    assert len(results) == 2 and all(len(r["boxes"]) <= 500 and r["boxes"].shape[1] == 9 for r in results)


def test_class_groups_must_use_known_names():
    with pytest.raises(ValueError, match="'tram'"):  # now at load time, before any model is built
        load_centerpoint_config(str(CONFIGS / "centerpoint_nuscenes_voxel01.yaml"),
                                ["model.head.class_groups=[[car], [tram]]"])


def test_a_backbone_that_breaks_its_declared_grid_stops_the_forward():
    """The BEV network and the decoder's grid are built for the backbone's declared output_shape; a
    backbone whose forward gives another grid (here conv4 no longer halves y and x) is refused instead
    of decoding boxes on a grid twice as fine as the decoder's."""
    model = small_model().eval()
    conv4_down = model.backbone_3d.conv4[0][0]
    conv4_down.stride, conv4_down.padding = (2, 1, 1), (0, 1, 1)
    cloud = torch.tensor(np.random.default_rng(0).uniform([-12, -12, -4, 0], [12, 12, 2, 1], (2000, 4)),
                         dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"declares \(2, 16, 16\)"):
        model.predict([cloud])
