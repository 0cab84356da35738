"""The torch backend against dense ``F.conv3d`` / ``F.conv_transpose3d`` (the oracle): forward at the
active output sites, the output site set itself, and both gradients, over kernel x stride x padding x
dilation."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from sparse_inputs import random_sparse

from backbones import SparseConv3d, SparseInverseConv3d, SubMConv3d

SHAPE = (7, 8, 9)
KERNELS = [1, 2, 3, (3, 1, 1)]
STRIDES = [1, 2, (2, 1, 1)]
PADDINGS = [0, 1, (0, 1, 1)]
DILATIONS = [1, 2]


def dense_input(x):
    """(B, C, D, H, W) built differentiably from x.features."""
    depth, height, width = x.spatial_shape
    flat = x.features.new_zeros((x.batch_size * depth * height * width, x.num_channels))
    flat = flat.index_add(0, x.keys(), x.features)
    return flat.view(x.batch_size, depth, height, width, x.num_channels).permute(0, 4, 1, 2, 3)


def at_sites(dense, coords):
    """Rows of a (B, C, D, H, W) tensor at coords [b, z, y, x]."""
    b, z, y, x = coords.long().unbind(1)
    return dense[b, :, z, y, x]


def check_against_dense(x, layer, dense_conv, expected_sites):
    """Compare layer(x) with dense_conv(dense x, weight): sites (keys, any order), values, and the input
    and weight gradients."""
    x.features.requires_grad_(True)
    out = layer(x)
    assert torch.equal(torch.sort(out.keys()).values, torch.sort(expected_sites).values), \
        "output sites differ from the oracle's"
    weight = layer.weight.detach().clone().requires_grad_(True)
    features = x.features.detach().clone().requires_grad_(True)
    x_dense = dense_input(type(x)(features, x.coords, x.spatial_shape, x.batch_size))
    reference = at_sites(dense_conv(x_dense, weight.permute(0, 4, 1, 2, 3)), out.coords)
    torch.testing.assert_close(out.features, reference, rtol=1e-5, atol=1e-9)
    upstream = torch.randn_like(out.features)
    (out.features * upstream).sum().backward()
    (reference * upstream).sum().backward()
    torch.testing.assert_close(x.features.grad, features.grad, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-9)


def reachable_sites(x, kernel, stride, padding, dilation):
    """Keys of every output site of the dense conv that sees at least one active input."""
    occupancy = (x.dense().abs().sum(1, keepdim=True) > 0).double()
    ones = torch.ones((1, 1, *kernel), dtype=torch.float64)
    seen = F.conv3d(occupancy, ones, stride=stride, padding=padding, dilation=dilation)[:, 0] > 0
    b, z, y, x_ = seen.nonzero().unbind(1)
    _, depth, height, width = seen.shape
    return ((b * depth + z) * height + y) * width + x_


def triple(v):
    return (v,) * 3 if isinstance(v, int) else v


@pytest.mark.parametrize("kernel, stride, padding, dilation",
                         list(itertools.product(KERNELS, STRIDES, PADDINGS, DILATIONS)))
def test_regular_conv_matches_dense(kernel, stride, padding, dilation):
    seed = hash((triple(kernel), triple(stride), triple(padding), dilation)) % 1000
    x = random_sparse(SHAPE, num_sites=70, seed=seed)
    torch.manual_seed(seed)
    layer = SparseConv3d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation, bias=False).double()
    k, s, p = triple(kernel), triple(stride), triple(padding)
    expected = reachable_sites(x, k, s, p, dilation)
    check_against_dense(x, layer, lambda d, w: F.conv3d(d, w, stride=s, padding=p, dilation=dilation), expected)
    out_keys = layer(x).keys()
    assert torch.equal(out_keys, torch.sort(out_keys).values), "outputs not in canonical order"


@pytest.mark.parametrize("kernel, dilation", list(itertools.product([1, 2, 3, (3, 1, 1), (1, 3, 3)], DILATIONS)))
def test_submanifold_conv_matches_dense_at_input_sites(kernel, dilation):
    x = random_sparse(SHAPE, num_sites=90, seed=3)
    torch.manual_seed(0)
    layer = SubMConv3d(3, 4, kernel, dilation=dilation, bias=False).double()
    padding = tuple(k // 2 * dilation for k in triple(kernel))
    check_against_dense(x, layer, lambda d, w: F.conv3d(d, w, padding=padding, dilation=dilation), x.keys())
    assert layer(x).coords is x.coords


@pytest.mark.parametrize("kernel, stride, padding, dilation",
                         list(itertools.product([2, 3, (3, 1, 1)], STRIDES, [0, 1], DILATIONS)))
def test_inverse_conv_matches_conv_transpose(kernel, stride, padding, dilation):
    x = random_sparse(SHAPE, num_sites=70, seed=5)
    torch.manual_seed(1)
    down = SparseConv3d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation, bias=False,
                        indice_key="down").double()
    up = SparseInverseConv3d(4, 2, kernel, indice_key="down", bias=False).double()
    y = down(x)
    y = y.replace_features(y.features.detach())
    k, s = triple(kernel), triple(stride)
    # conv_transpose3d's output_padding restores the input grid exactly.
    out_pad = tuple(n - ((o - 1) * st - 2 * padding + dilation * (kk - 1) + 1)
                    for n, o, st, kk in zip(SHAPE, y.spatial_shape, s, k))
    assert all(0 <= op < max(st, dilation) for op, st in zip(out_pad, s))

    check_against_dense(y, up, lambda d, w: F.conv_transpose3d(d, w.transpose(0, 1), stride=s, padding=padding,
                                                                dilation=dilation, output_padding=out_pad), x.keys())
    out = up(y)
    assert torch.equal(out.coords, x.coords) and out.spatial_shape == SHAPE
