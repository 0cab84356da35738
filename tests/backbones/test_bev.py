"""Height compression and the SECOND-FPN BEV network."""
import pytest
import torch
from sparse_inputs import random_sparse

from backbones.bev import SECONDFPN, height_compression


def test_height_compression_folds_height_into_channels():
    x = random_sparse((2, 6, 7), batch_size=2, num_sites=30, channels=3, seed=0, dtype=torch.float32)
    bev = height_compression(x)
    assert bev.shape == (2, 3 * 2, 6, 7)
    for (b, z, y, xx), features in zip(x.coords.tolist(), x.features):
        for c in range(3):
            assert bev[b, c * 2 + z, y, xx] == features[c]  # channel c at height z → c * D + z
    assert int((bev != 0).sum()) == int((x.features != 0).sum())


def test_second_fpn_shapes_and_channels():
    net = SECONDFPN(256, layer_nums=(5, 5), layer_strides=(1, 2), num_filters=(128, 256),
                    upsample_strides=(1, 2), upsample_filters=(256, 256)).eval()
    out = net(torch.randn(2, 256, 32, 40))
    assert out.shape == (2, 512, 32, 40) and net.out_channels == 512
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 2 * 6 + 2 and all(m.eps == 1e-3 and m.momentum == 0.01 for m in norms)
    with pytest.raises(ValueError, match="one entry per level"):
        SECONDFPN(8, layer_nums=(1,), layer_strides=(1, 2))
