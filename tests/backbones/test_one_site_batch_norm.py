"""A training batch whose layer holds one active site gets a clear error, not BatchNorm's; evaluation
of the same input, and a training batch of two sites, run."""
import pytest
import torch

from backbones.densification_meter import conv_type_variants
from backbones.voxel_backbones import build_backbone
from voxelize import SparseTensor


def tensor_of(sites: int) -> SparseTensor:
    coords = torch.tensor([[0, 20, 8 + i, 8] for i in range(sites)], dtype=torch.int32)
    return SparseTensor(torch.ones(sites, 4), coords, (40, 32, 32), batch_size=1)


def test_one_site_in_training_mode_is_a_clear_error():
    backbone = build_backbone("VoxelResBackBone8x", in_channels=4, channels=(4, 4, 4, 4), out_channels=4).train()
    with pytest.raises(ValueError, match="BatchNorm in training mode needs at least 2 active sites, this layer got 1"):
        backbone(tensor_of(1))
    backbone.eval()
    assert backbone(tensor_of(1)).out.num_sites >= 1
    backbone.train()
    backbone(tensor_of(2))  # two sites: batch statistics exist


@pytest.mark.parametrize("value", [1.5, 0, -3, 2.000001])
def test_prune_topk_is_a_fraction_below_one_or_a_whole_number(value):
    with pytest.raises(ValueError, match="prune_topk must be a fraction in \\(0, 1\\) or a whole number of sites"):
        conv_type_variants("VoxelBackBone8x", 4, prune_topk=value, channels=(4, 4, 4, 4), out_channels=4)


def test_prune_topk_as_count_and_as_fraction():
    k = conv_type_variants("VoxelBackBone8x", 4, prune_topk=3.0, channels=(4, 4, 4, 4), out_channels=4)
    fraction = conv_type_variants("VoxelBackBone8x", 4, prune_topk=0.25, channels=(4, 4, 4, 4), out_channels=4)
    assert list(k)[-1] == "regular + top-3 sites" and list(fraction)[-1] == "regular + top-0.25 sites"
    assert "k=3" in repr(k["regular + top-3 sites"]) and "fraction=0.25" in repr(fraction["regular + top-0.25 sites"])


@pytest.mark.parametrize("name, magic", [("plot.jpg", b"\xff\xd8\xff"), ("plot.svg", b"<?xml"), ("plot.pdf", b"%PDF"),
                                         ("plot.png", b"\x89PNG")])
def test_the_densification_plot_holds_the_format_its_name_says(tmp_path, name, magic):
    from backbones.densification_meter import compare_conv_types, plot_reports
    coords = torch.tensor([[0, 20, y, x] for y in range(4) for x in range(4)], dtype=torch.int32)
    reports = compare_conv_types("VoxelBackBone8x", SparseTensor(torch.ones(16, 4), coords, (40, 32, 32), 1),
                                 channels=(4, 4, 4, 4), out_channels=4)
    plot_reports(reports, str(tmp_path / name))
    assert (tmp_path / name).read_bytes()[:len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with pytest.raises(ValueError, match="cannot tell the plot format from the name"):
        plot_reports(reports, str(tmp_path / "plot.bmp"))
