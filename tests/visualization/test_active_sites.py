"""Which output sites a layer added, against Python-set oracles."""
import pytest
import torch

from backbones.sparse_modules import SparseConv3d, SparseInverseConv3d, SubMConv3d
from backbones.voxel_backbones import build_backbone
from visualization.active_sites import LayerSites, capture_active_sites, compare_active_sites, sparse_layer_names
from voxelize import SparseTensor


def random_cloud(spatial_shape=(12, 20, 20), sites=80, batch_size=2, channels=4, seed=0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    volume = torch.tensor(spatial_shape).prod().item()
    keys = torch.randperm(batch_size * volume, generator=g)[:sites]
    d, h, w = spatial_shape
    coords = torch.stack([keys // volume, keys // (h * w) % d, keys // w % h, keys % w], 1).int()
    return SparseTensor(torch.randn(sites, channels, generator=g), coords, spatial_shape, batch_size)


def as_set(coords):
    return {tuple(row) for row in coords.tolist()}


def test_subm_adds_nothing_and_a_stride_one_regular_conv_adds_the_dilation():
    x = random_cloud()
    subm, regular = SubMConv3d(4, 4, 3, padding=1), SparseConv3d(4, 4, 3, padding=1)
    for conv in (subm, regular):
        out = conv(x)
        sites = LayerSites("c", conv.kind, x.coords, (1, 1, 1), out.coords, out.tensor_stride)
        from_input = sites.from_input()
        kept = as_set(out.coords[from_input])
        assert kept == as_set(x.coords)  # exactly the input sites are "from input"
        if conv is subm:
            assert from_input.all()
        else:
            assert (~from_input).sum() == out.num_sites - x.num_sites > 0


def test_strided_and_inverse_layers_map_sites_to_the_cells_they_cover():
    x = random_cloud()
    down = SparseConv3d(4, 4, 3, stride=2, padding=1, indice_key="down")
    coarse = down(x)
    sites = LayerSites("down", "regular", x.coords, (1, 1, 1), coarse.coords, coarse.tensor_stride)
    parents = {(b, z // 2, y // 2, xx // 2) for b, z, y, xx in x.coords.tolist()}
    assert as_set(coarse.coords[sites.from_input()]) == parents
    assert as_set(coarse.coords[~sites.from_input()]) == as_set(coarse.coords) - parents

    # The inverse conv restores the fine sites: each one's coarse cell is active.
    up = SparseInverseConv3d(4, 4, 3, indice_key="down")
    fine = up(coarse)
    sites = LayerSites("up", "inverse", coarse.coords, coarse.tensor_stride, fine.coords, fine.tensor_stride)
    assert sites.from_input().all()
    # A coarse input with one site: only the fine sites inside that cell count as covered.
    one = LayerSites("up", "inverse", torch.tensor([[0, 1, 1, 1]]), (2, 2, 2),
                     torch.tensor([[0, 2, 2, 2], [0, 3, 3, 3], [0, 4, 2, 2], [1, 2, 2, 2]]), (1, 1, 1))
    assert one.from_input().tolist() == [True, True, False, False]


def test_capture_matches_the_forward_and_names_are_checked():
    backbone = build_backbone("VoxelBackBone8x", in_channels=4, channels=(4, 4, 4, 4), out_channels=4,
                              conv_type="regular").eval()
    x = random_cloud()
    names = ["conv_input.0", "conv2.0.0"]
    captured = capture_active_sites(backbone, x, names)
    assert list(captured) == names
    first = captured["conv_input.0"]
    assert torch.equal(first.input_coords, x.coords)
    # The backbone pads the depth by one (as OpenPCDet); the first conv sees that grid.
    d, h, w = x.spatial_shape
    padded = SparseTensor(x.features, x.coords, (d + 1, h, w), x.batch_size)
    assert as_set(first.output_coords) == as_set(backbone.conv_input[0](padded).coords)
    assert captured["conv2.0.0"].output_stride == (2, 2, 2) and captured["conv2.0.0"].input_stride == (1, 1, 1)
    with pytest.raises(ValueError, match="conv1.0.0"):  # the message lists the valid names
        capture_active_sites(backbone, x, ["conv9"])
    assert "conv_out.0" in sparse_layer_names(backbone)


def test_variants_share_layer_names_and_differ_in_growth():
    x = random_cloud()
    sites = compare_active_sites("VoxelResBackBone8x", x, ["conv1.0.conv1"], channels=(4, 4, 4, 4), out_channels=4)
    ssc, regular = sites["ssc"]["conv1.0.conv1"], sites["regular"]["conv1.0.conv1"]
    assert ssc.kind == "subm" and ssc.from_input().all()
    assert regular.kind == "regular" and not regular.from_input().all()
    with pytest.raises(ValueError, match="valid"):
        compare_active_sites("VoxelResBackBone8x", x, ["conv1.0.conv1"], variants=("dense",))
