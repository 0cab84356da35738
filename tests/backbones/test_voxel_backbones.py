"""The two 3D backbones: structure, strides, the regular (densifying) variant, training."""
import pytest
import torch
from sparse_inputs import random_sparse

from backbones import SparseConv3d, SubMConv3d, VoxelBackBone8x, VoxelResBackBone8x, build_backbone
from voxelize import SparseTensor

GRID = (40, 48, 48)  # the nuScenes height of 40 voxels, a small plane


def cloud(seed=0, channels=4):
    x = random_sparse(GRID, batch_size=2, num_sites=1500, channels=channels, seed=seed, dtype=torch.float32)
    return SparseTensor(x.features, x.coords, GRID, 2)


@pytest.mark.parametrize("cls", [VoxelBackBone8x, VoxelResBackBone8x])
def test_strides_shapes_and_channels(cls):
    model = cls(4).eval()
    out = model(cloud())
    assert [getattr(out, f"x_conv{i}").tensor_stride for i in range(1, 5)] == [(1, 1, 1), (2, 2, 2), (4, 4, 4),
                                                                            (8, 8, 8)]
    assert out.out.tensor_stride == (16, 8, 8)
    assert out.out.spatial_shape == (2, 6, 6)  # height 41 → 21 → 11 → 5 → 2, as OpenPCDet
    assert out.out.num_channels == 128
    widths = [getattr(out, f"x_conv{i}").num_channels for i in range(1, 5)]
    assert widths == ([16, 32, 64, 64] if cls is VoxelBackBone8x else [16, 32, 64, 128])
    assert out.x_conv1.coords is not None and out.x_conv1.num_sites == 1500  # SubM keeps the sites


def test_configurable_widths_and_no_conv_bias():
    model = build_backbone("VoxelResBackBone8x", in_channels=5, channels=(8, 16, 24, 32), out_channels=48)
    assert model(cloud(channels=5)).out.num_channels == 48
    convs = [m for m in model.modules() if isinstance(m, (SubMConv3d, SparseConv3d))]
    assert convs and all(m.bias is None for m in convs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    with pytest.raises(ValueError, match="unknown 3D backbone"):
        build_backbone("PointPillars", in_channels=4)


@pytest.mark.parametrize("cls", [VoxelBackBone8x, VoxelResBackBone8x])
def test_regular_variant_replaces_every_submanifold_conv_and_densifies(cls):
    torch.manual_seed(0)
    ssc = cls(4).eval()
    torch.manual_seed(0)
    regular = cls(4, conv_type="regular").eval()
    assert any(isinstance(m, SubMConv3d) for m in ssc.modules())
    assert not any(isinstance(m, SubMConv3d) for m in regular.modules())
    assert len(list(ssc.parameters())) == len(list(regular.parameters()))
    regular.load_state_dict(ssc.state_dict())  # the same weights fit both
    a, b = ssc(cloud()), regular(cloud())
    assert b.x_conv1.num_sites > a.x_conv1.num_sites
    keys_ssc, keys_regular = set(a.x_conv1.keys().tolist()), set(b.x_conv1.keys().tolist())
    assert keys_ssc < keys_regular  # regular convs only ever add sites
    with pytest.raises(ValueError, match="conv_type"):
        cls(4, conv_type="dense")


def test_training_step_reaches_every_parameter():
    model = VoxelResBackBone8x(4, channels=(8, 8, 16, 16), out_channels=16).train()
    out = model(cloud())
    out.out.features.square().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_empty_input_runs_through():
    model = VoxelResBackBone8x(4).eval()
    empty = SparseTensor(torch.zeros((0, 4)), torch.zeros((0, 4), dtype=torch.int32), GRID, 2)
    out = model(empty)
    assert out.out.num_sites == 0 and out.out.spatial_shape == (2, 6, 6)
