"""Configs refuse what cannot work, at load time, with the field, the value and what would be valid.

Each bad input below was accepted (or crashed deep inside torch / yaml / a module constructor, or was
silently wrong) before the load-time checks; the geometry checker is compared with real forward passes.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from backbones.bev import SECONDFPN, height_compression
from backbones.voxel_backbones import build_backbone
from detectors.center_head import CenterHead, DecodeConfig, decode
from detectors.center_targets import BEVGrid
from detectors.centerpoint import CenterPoint, model_shapes
from detectors.config import ConfigError, apply_overrides, read_yaml_with_bases, to_dict
from detectors.experiment import load_centerpoint_config
from voxelize.voxelizer import Voxelizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYNTHETIC = str(CONFIGS / "centerpoint_synthetic_cpu.yaml")
TINY = ["model.backbone_3d.channels=[4, 4, 8, 8]", "model.backbone_3d.out_channels=8", "model.bev.layer_nums=[1, 1]",
        "model.bev.num_filters=[8, 8]", "model.bev.upsample_filters=[8, 8]", "model.head.shared_channels=8",
        "model.head.head_channels=8"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_published_config_loads(path):
    config = load_centerpoint_config(str(path))
    shapes = model_shapes(config.model)
    vx, vy, _ = config.model.geometry.voxel_size
    x0, y0, _, x1, y1, _ = config.model.geometry.point_cloud_range
    # The decoder's grid (the *8x backbone's stride through the first BEV level and its upsampling) is
    # the head's map, cell for cell.
    bev = config.model.bev
    grid = BEVGrid((x0, y0, 0, x1, y1, 0), (vx, vy, 1), 8 * bev.layer_strides[0] // bev.upsample_strides[0])
    assert shapes.bev == grid.shape
    assert shapes.out_size_factor * vx * grid.shape[1] == pytest.approx(x1 - x0, abs=1e-9)


def test_the_long_demo_config_is_the_demo_config_trained_three_times_as_long():
    from detectors.run_folder import config_differences

    demo, long = (to_dict(load_centerpoint_config(str(CONFIGS / name)))
                  for name in ("centerpoint_synthetic_cpu.yaml", "centerpoint_synthetic_cpu_long.yaml"))
    assert config_differences(demo, long, ignored=()) == ["train.epochs: run 30, requested 90"]


def refused(overrides, path=SYNTHETIC) -> str:
    with pytest.raises(ConfigError) as caught:
        load_centerpoint_config(path, overrides)
    message = str(caught.value)
    assert "\n" not in message  # one line
    return message


# --- geometry --------------------------------------------------------------------------------------------------

def test_quarter_metre_voxels_over_51_2_metres_are_refused_with_the_nearest_valid_values():
    # Before: accepted; the head's map was 52 cells, the decoder's grid 51, boxes landed at wrong places, exit 0.
    message = refused(["model.geometry.voxel_size=[0.25, 0.25, 0.2]"])
    assert "voxel_size[0] = 0.25" in message and "409.6 voxels, not a whole number" in message
    assert "voxel_size[0] 0.2 or 0.256 over this range" in message
    assert "point_cloud_range x [-50, 50] or [-52, 52] at this voxel size" in message


def test_50_metres_at_0_2_is_refused_with_the_nearest_valid_values():
    # Before: accepted; the first forward crashed in bev.py with a tensor-size mismatch (63 vs 64).
    message = refused(["model.geometry.point_cloud_range=[-50, -50, -3, 50, 50, 5]"])
    assert "500 voxels" in message and "a multiple of 16 voxels" in message
    assert "point_cloud_range x [-49.6, 49.6] or [-51.2, 51.2]" in message
    assert "voxel_size[0] 0.125 or 0.25" in message


@pytest.mark.parametrize("suggestion", [
    ["model.geometry.voxel_size=[0.256, 0.256, 0.2]"],
    ["model.geometry.point_cloud_range=[-52, -52, -3, 52, 52, 5]", "model.geometry.voxel_size=[0.25, 0.25, 0.2]"],
    ["model.geometry.point_cloud_range=[-49.6, -49.6, -3, 49.6, 49.6, 5]"],
    ["model.geometry.point_cloud_range=[-50, -50, -3, 50, 50, 5]", "model.geometry.voxel_size=[0.125, 0.125, 0.2]"],
])
def test_the_suggested_values_load(suggestion):
    assert load_centerpoint_config(SYNTHETIC, suggestion).model.geometry.voxel_size[0] > 0


def test_a_z_extent_the_backbone_cannot_downsample_is_refused():
    # Before: accepted; building the model failed in kernel_map.py ("leaves no output on a grid of (1, 1, ...)").
    message = refused(["model.geometry.point_cloud_range=[-51.2, -51.2, -3, 51.2, 51.2, -2.6]"])
    assert "voxel_size[2] = 0.2" in message and "too few for the 3D backbone's downsampling in z" in message
    assert "at least 24 voxels" in message


def test_a_non_whole_z_grid_is_refused():
    message = refused(["model.geometry.voxel_size=[0.2, 0.2, 0.15]"])
    assert "53.3333 voxels, not a whole number" in message and "voxel_size[2] 0.125 or 0.16" in message


def oracle_fits(voxels_xy: int, voxels_z: int, layer_strides=(1, 2), upsample_strides=(1, 2)) -> bool:
    """Run the real networks on a cloud filling a (z, y, x) grid; the geometry works when the forward runs
    and the head's map is the decoder's grid with whole cells (the decoder's own formula)."""
    voxelizer = Voxelizer([1.0, 1.0, 1.0], [0, 0, 0, voxels_xy, voxels_xy, voxels_z], 1, 100000)
    grid = np.stack(np.meshgrid(np.arange(0, voxels_xy, 3), np.arange(0, voxels_xy, 3), np.arange(voxels_z)), -1)
    points = np.concatenate([grid.reshape(-1, 3) + 0.5, np.ones((grid.size // 3, 1))], 1).astype(np.float32)
    tensor, _ = voxelizer.batch([points])
    backbone = build_backbone("VoxelBackBone8x", in_channels=4, channels=[2, 2, 2, 2], out_channels=2).eval()
    try:
        with torch.no_grad():
            bev = height_compression(backbone(tensor).out)
            fpn = SECONDFPN(bev.shape[1], [0, 0], list(layer_strides), [2, 2], list(upsample_strides), [2, 2]).eval()
            heatmap = CenterHead(4, [["a"]], 2, 2).eval()(fpn(bev))[0]["heatmap"]
    except (ValueError, RuntimeError):
        return False
    factor = 8 * layer_strides[0]
    decoder = BEVGrid((0, 0, 0, voxels_xy, voxels_xy, voxels_z), (1, 1, 1), factor)
    return voxels_xy % factor == 0 and tuple(heatmap.shape[-2:]) == decoder.shape


@pytest.mark.parametrize("voxels", [40, 41, 44, 47, 48, 56, 60, 63, 64])
def test_the_xy_check_agrees_with_a_forward_pass(voxels):
    overrides = [f"model.geometry.point_cloud_range=[0, 0, 0, {voxels}, {voxels}, 40]",
                 "model.geometry.voxel_size=[1, 1, 1]", "model.backbone_3d.type=VoxelBackBone8x",
                 "model.num_point_features=4", *TINY, "model.test_augmentation=none"]
    expected = oracle_fits(voxels, 40)
    if expected:
        load_centerpoint_config(SYNTHETIC, overrides)
    else:
        refused(overrides)


@pytest.mark.parametrize("voxels", [20, 23, 24, 25])
def test_the_z_check_agrees_with_a_forward_pass(voxels):
    overrides = [f"model.geometry.point_cloud_range=[0, 0, 0, 32, 32, {voxels}]",
                 "model.geometry.voxel_size=[1, 1, 1]", "model.backbone_3d.type=VoxelBackBone8x",
                 "model.num_point_features=4", *TINY, "model.test_augmentation=none"]
    if oracle_fits(32, voxels):
        load_centerpoint_config(SYNTHETIC, overrides)
    else:
        refused(overrides)


def test_bev_strides_other_than_the_default_derive_the_head_grid():
    config = load_centerpoint_config(SYNTHETIC, [*TINY, "model.bev.layer_strides=[2, 2]"])
    model = CenterPoint(config.model)
    heatmap = model.eval()([np.zeros((0, 5), np.float32)])[0]["heatmap"]
    assert tuple(heatmap.shape[-2:]) == model.grid.shape == (32, 32) and model.grid.out_size_factor == 16


# --- closed sets, typed options, ranges --------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, error", [
    # before: silently no NMS at all
    (["model.decode.nms=rotate"], r"model.decode.nms must be one of \['circle', 'rotated', 'none'\], got 'rotate' "
                                  r"\(did you mean 'rotated'\?\)"),
    # before: accepted at load, ValueError when the model was built
    (["model.backbone_3d.conv_type=sbm"], r"model.backbone_3d.conv_type must be one of \['subm', 'regular'\]"),
    (["model.backbone_3d.backend=spcov"], r"model.backbone_3d.backend must be one of \['torch', 'spconv'\]"),
    (["model.backbone_3d.type=VoxelResBackbone8x"],
     r"model.backbone_3d.type must be one of \['VoxelBackBone8x', 'VoxelResBackBone8x'\]"),
    (["dataset.type=nuscene"], r"dataset.type must be one of \['nuscenes', 'kitti', 'custom'\], got 'nuscene' "
                               r"\(did you mean 'nuscenes'\?\)"),
    # site_pruning: before an untyped dict, unpacked into SiteTopK(**...) when the model was built
    (["model.backbone_3d.site_pruning={kk: 3}"], r"unknown key model.backbone_3d.site_pruning.kk; valid keys of "
                                                 r"model.backbone_3d.site_pruning: \['fraction', 'k'\]"),
    (["model.backbone_3d.site_pruning={k: 2.7}"], r"model.backbone_3d.site_pruning.k: expected int, got 2.7"),  # was 2
    (["model.backbone_3d.site_pruning={fraction: 1.5}"], r"site_pruning.fraction: must be in \(0, 1\], got 1.5"),
    (["model.backbone_3d.site_pruning={k: 3, fraction: 0.5}"], r"site_pruning needs exactly one of k and fraction"),
    (["model.backbone_3d.site_pruning=[1]"], r"model.backbone_3d.site_pruning: expected a mapping"),
    (["model.backbone_3d.activation_topk=0"], r"model.backbone_3d.activation_topk: must be >= 1, got 0"),
    ([*TINY, "model.backbone_3d.activation_topk=100"], r"activation_topk = 100 exceeds the narrowest layer"),
    (["model.backbone_3d.channels=[8, 16, 32]"],
     r"model.backbone_3d: channels must list 4 widths .* got \[8, 16, 32\]"),
    (["model.backbone_3d.channels=[0, 16, 32, 32]"], r"model.backbone_3d.channels\[0\]: must be >= 1, got 0"),
    (["model.backbone_3d.out_channels=-1"], r"model.backbone_3d.out_channels: must be >= 1, got -1"),
    # the BEV network: before, crashes in the first forward, or a 1x1 conv in place of an upsampling
    (["model.bev.layer_nums=[2]"], r"model.bev: .* need one entry per level"),
    (["model.bev.upsample_strides=[1, 0]"], r"model.bev.upsample_strides\[1\]: must be >= 1, got 0"),
    (["model.bev.upsample_strides=[1, 4]"], r"model.bev: layer_strides \[1, 2\] with upsample_strides \[1, 4\]"),
    (["model.bev.layer_strides=[0, 2]"], r"model.bev.layer_strides\[0\]: must be >= 1, got 0"),
    # geometry fields themselves
    (["model.geometry.voxel_size=[0.2, 0.2]"], r"model.geometry.voxel_size: needs exactly 3 entries, got 2"),
    (["model.geometry.voxel_size=[-0.2, 0.2, 0.2]"], r"model.geometry.voxel_size\[0\]: must be > 0, got -0.2"),
    (["model.geometry.point_cloud_range=[51.2, -51.2, -3, -51.2, 51.2, 5]"],
     r"model.geometry.point_cloud_range: x1 \(-51.2\) must exceed x0 \(51.2\)"),
    # head: before, silently a class never detected, detected twice, or an empty head
    (["model.head.class_names=[]", "model.head.class_groups=[]"], r"model.head.class_names: needs at least 1 entry"),
    (["model.head.class_groups=[]"], r"model.head.class_groups: needs at least 1 entry"),
    (["model.head.class_groups=[[car], []]"], r"model.head.class_groups\[1\]: needs at least 1 entry"),
    ([*TINY, "model.head.class_groups=[[car]]"], r"class_groups leaves \['truck', .*\] of class_names in no group"),
    (["model.head.class_groups=[[car], [car, truck]]"], r"class_groups names \['car'\] in more than one place"),
    (["model.head.class_names=[car, car, truck]", "model.head.class_groups=[[car], [truck]]"],
     r"model.head.class_names must be distinct non-empty names"),
    (["model.head.code_weights={offset_x: 1, offset_y: 1, z: 1, log_dx: 1, log_dy: 1, log_dz: 1, sin: 1, cos: 1, "
      "vx: 1}"], r"model.head.code_weights must name exactly .*; missing \['vy'\], unknown \[\]"),
    (["model.head.code_weights.vx=-1"], r"model.head.code_weights.vx: must be >= 0, got -1.0"),
    (["model.head.min_overlap=2"], r"model.head.min_overlap: must be in \(0, 1\), got 2.0"),
    (["model.head.heading=quaternion"],
     r"model.head.heading must be one of \[.sin_cos., .axis_direction.\], got .quaternion."),
    (["model.head.direction_weight=1.0"], r"model.head.direction_weight = 1.0 has no effect with heading 'sin_cos'"),
    (["model.head.min_radius=-1"], r"model.head.min_radius: must be >= 0, got -1"),
    (["model.head.max_objects=0"], r"model.head.max_objects: must be >= 1, got 0"),
    (["model.head.heatmap_weight=.nan"], r"model.head.heatmap_weight: expected a finite number, got nan"),
    (["model.num_point_features=2"], r"model.num_point_features: must be >= 3, got 2"),
    (["model.voxelizer.max_points_per_voxel=0"], r"model.voxelizer.max_points_per_voxel: must be >= 1, got 0"),
    # decode: before, accepted (a score threshold of 1.5 keeps nothing; a 3-number range broadcasts wrongly)
    (["model.decode.top_k=0"], r"model.decode.top_k: must be >= 1, got 0"),
    (["model.decode.score_threshold=1.5"], r"model.decode.score_threshold: must be in \[0, 1\], got 1.5"),
    (["model.decode.post_center_range=[1, 2, 3]"], r"model.decode.post_center_range: needs exactly 6 entries"),
    (["model.decode.post_center_range=[61, 61, 10, -61, -61, -10]"], r"model.decode: post_center_range must be"),
    (["model.decode.circle_radius=[a, b, c, d, e, f]"], r"model.decode.circle_radius\[0\]: expected float, got 'a'"),
    (["model.decode.circle_radius=[1.0]"], r"model.decode.circle_radius needs a radius for each of the 6 class groups"),
    (["model.decode.iou_threshold=0"], r"model.decode.iou_threshold: must be in \(0, 1\], got 0.0"),
    (["model.decode.max_boxes=0"], r"model.decode.max_boxes: must be >= 1, got 0"),
    # optimizer and training: before, accepted (a negative learning rate trains backwards)
    (["optimizer.lr=-0.1"], r"optimizer.lr: must be > 0, got -0.1"),
    (["optimizer.pct_start=1.5"], r"optimizer.pct_start: must be in \(0, 1\), got 1.5"),
    (["optimizer.weight_decay=-1"], r"optimizer.weight_decay: must be >= 0, got -1.0"),
    (["optimizer.div_factor=0"], r"optimizer.div_factor: must be > 0, got 0.0"),
    (["train.epochs=0"], r"train.epochs: must be >= 1, got 0"),
    (["train.batch_size=0"], r"train.batch_size: must be >= 1, got 0"),
    (["train.log_every=0"], r"train.log_every: must be >= 1, got 0"),
    (["train.seed=-1"], r"train.seed: must be >= 0, got -1"),
    (["train.num_workers=-1"], r"train.num_workers: must be >= 0, got -1"),
    (["train.augmentation.flip_x=2"], r"train.augmentation.flip_x is a probability in \[0, 1\], got 2"),
    (["train.augmentation.half_turn=-0.5"], r"train.augmentation.half_turn is a probability in \[0, 1\], got -0.5"),
    (["train.augmentation.rotation=[1, -1]"], r"train.augmentation.rotation is \[low, high\] .* low <= high"),
    (["train.augmentation.scaling=[a, b]"], r"train.augmentation.scaling must be 2 finite numbers"),
    (["train.augmentation.scaling=[-1, 1]"], r"train.augmentation.scaling is \[low, high\] with 0 < low <= high"),
    (["train.augmentation.tilt=5"], r"train.augmentation.tilt is the largest sensor pitch/roll in radians, .* got 5"),
    (["train.augmentation.tilt=-0.01"], r"train.augmentation.tilt is the largest .* got -0.01"),
    (["train.augmentation.translation_std=[0.2, 0.2]"], r"train.augmentation.translation_std must be 3 finite numbers"),
    (["train.gt_sampling.sample_groups={tram: 2}"], r"train.gt_sampling.sample_groups names \['tram'\], not in "
                                                    r"model.head.class_names"),
    (["train.gt_sampling.sample_groups={car: -2}"], r"train.gt_sampling.sample_groups.car: must be >= 0, got -2"),
    (["dataset.num_sweeps=0"], r"dataset.num_sweeps: must be >= 1, got 0"),
    (["dataset.sweep_ego_radius=-0.5"], r"dataset.sweep_ego_radius: metres in \[0, 10\], got -0.5"),
    (["dataset.sweep_ego_radius=true"], r"dataset.sweep_ego_radius: expected float, got True"),
    (["dataset.root=2024"], r"dataset.root: expected str, got 2024 \(quote it to make it a string\)"),
    (["dataset.root=''"], r"dataset.root must not be empty"),
])
def test_bad_values_are_load_errors(overrides, error):
    assert re.search(error, refused(overrides))


def test_decode_refuses_an_unknown_nms_from_python_too():
    with pytest.raises(ValueError, match="nms must be one of"):
        DecodeConfig(nms="rotate")
    config = DecodeConfig()
    config.nms = "rotate"  # changed after construction: decode refuses instead of skipping NMS
    prediction = {"heatmap": torch.full((1, 1, 4, 4), 5.0), "offset": torch.zeros(1, 2, 4, 4),
                  "height": torch.zeros(1, 1, 4, 4), "log_dims": torch.zeros(1, 3, 4, 4),
                  "rotation": torch.zeros(1, 2, 4, 4), "velocity": torch.zeros(1, 2, 4, 4)}
    with pytest.raises(ValueError, match="nms must be one of"):
        decode([prediction], [["car"]], ["car"], BEVGrid((0, 0, -1, 4, 4, 1), (0.5, 0.5, 2), 2), config)


def test_site_pruning_reaches_the_backbone():
    config = load_centerpoint_config(SYNTHETIC, [*TINY, "model.backbone_3d.site_pruning={fraction: 0.5}"])
    pruned = [m for m in CenterPoint(config.model).backbone_3d.modules() if type(m).__name__ == "SiteTopK"]
    assert pruned and all(m.fraction == 0.5 and m.k is None for m in pruned)


# --- YAML files, _base_, overrides -------------------------------------------------------------------------------

def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, error", [
    # before: yaml's ParserError / ScannerError traceback
    ("a: [1, 2\nb: 3\n", r"bad.yaml:2:2: invalid YAML: expected ',' or '\]'"),
    ("model:\n\tgeometry: 1\n", r"bad.yaml:2:1: invalid YAML: found character '\\t'"),
    # before: accepted, the second mapping silently replaced the first
    ("optimizer:\n  lr: 0.1\noptimizer:\n  weight_decay: 0.0\n",
     r"bad.yaml:3:1: invalid YAML: duplicate key 'optimizer' \(first at line 1\)"),
    ("optimizer:\n  lr: 0.1\n  lr: 0.2\n", r"bad.yaml:3:3: invalid YAML: duplicate key 'lr' \(first at line 2\)"),
    # before: TypeError tracebacks from os.path.join / iteration
    ("model: {}\n_base_: 5\n", r"bad.yaml:2: _base_ must be a file name or a list of file names, got 5"),
    ("_base_: [5]\n", r"bad.yaml:1: _base_ must be a file name or a list of file names, got \[5\]"),
    ("_base_:\n", r"bad.yaml:1: _base_ must be a file name or a list of file names, got None"),
    ("_base_: {a: b}\n", r"bad.yaml:1: _base_ must be a file name or a list of file names"),
    # before: "config file not found" without saying which file named it
    ("\n_base_: nowhere.yaml\n", r"bad.yaml:2: _base_ names 'nowhere.yaml', which is not a file"),
    ("_base_: .\n", r"bad.yaml:1: _base_ names '.', which is not a file"),
    # before: yaml's ConstructorError traceback
    ("a: !!python/object/apply:os.system [echo]\n", r"bad.yaml:1:4: invalid YAML: could not determine a constructor"),
    ("\x00\x01", r"bad.yaml: invalid YAML: unacceptable character #x0000"),
])
def test_yaml_problems_are_one_line_errors_with_file_and_line(tmp_path, text, error):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError, match=error) as caught:
        read_yaml_with_bases(path)
    assert "\n" not in str(caught.value)


def test_base_cycles_name_the_file_and_line(tmp_path):
    first = write(tmp_path, "a.yaml", "_base_: b.yaml\n")
    write(tmp_path, "b.yaml", "x: 1\n_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml:2: _base_ 'a.yaml' forms a cycle: .*a.yaml -> .*b.yaml -> .*a.yaml"):
        read_yaml_with_bases(first)


def test_yaml_anchors_merges_and_exponent_floats_read_as_meant(tmp_path):
    path = write(tmp_path, "ok.yaml", "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\nlr: 1e-3\nbig: 5E+2\n"
                                      "name: 1e3x\n")
    data = read_yaml_with_bases(path)
    assert data["derived"] == {"x": 1, "y": 3}  # an explicit key over a merged one is no duplicate
    assert data["lr"] == 0.001 and data["big"] == 500.0 and data["name"] == "1e3x"
    # before: 'expected float, got '1e-3'' (YAML 1.1 reads it as a string)
    assert load_centerpoint_config(SYNTHETIC, ["optimizer.lr=1e-3"]).optimizer.lr == 0.001


@pytest.mark.parametrize("override, error", [
    ("model.decode.nms=[circle", r"override 'model.decode.nms=\[circle':1:8: invalid YAML"),  # before: ParserError
    ("=3", r"override '=3': empty key name"),                        # before: "unknown key ;"
    ("model..nms=3", r"override 'model..nms=3': empty key name"),
    ("model.geometry.voxel_size.x=1", r"model.geometry.voxel_size is \[0.2, 0.2, 0.2\], not a mapping"),
    ("model.decode.nms.kind=1", r"model.decode.nms is 'circle', not a mapping"),
    ("model.decode={a: 1, a: 2}", r"invalid YAML: duplicate key 'a'"),
    ("modle.decode.nms=none", r"unknown key modle; valid keys: .* \(did you mean modle -> 'model'\?\)"),
    ("model.decode={1: 2, a: 3}", r"unknown keys model.decode.1, model.decode.a"),  # before: TypeError in sorted()
])
def test_bad_overrides_are_clear_errors(override, error):
    with pytest.raises(ConfigError, match=error):
        load_centerpoint_config(SYNTHETIC, [override])


def test_an_override_creates_a_section_that_is_null():
    data = apply_overrides({"dataset": None}, ["dataset.root=x"])
    assert data == {"dataset": {"root": "x"}}


def test_a_resolved_config_written_by_a_run_loads_back_the_same(tmp_path):
    config = load_centerpoint_config(SYNTHETIC, ["model.backbone_3d.site_pruning={k: 100}", "dataset.root=data"])
    path = write(tmp_path, "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    assert load_centerpoint_config(path) == config
