"""From the stride-8 sparse tensor to a bird's-eye-view map, and the 2D BEV network (SECOND-FPN)."""
from __future__ import annotations

import torch
from torch import nn

from voxelize.sparse_tensor import SparseTensor


def height_compression(x: SparseTensor) -> torch.Tensor:
    """Densify a sparse tensor and fold its height into channels: (B, C * D, H, W).

    Channel ``c * D + d`` holds channel c at height d, as OpenPCDet's HeightCompression
    (``dense().view(B, C * D, H, W)``), so BEV weights carry over.
    """
    dense = x.dense()  # (B, C, D, H, W)
    batch, channels, depth, height, width = dense.shape
    return dense.view(batch, channels * depth, height, width)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True)]


def conv2d_output_shape(layers: nn.Module, shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W) after the Conv2d / ConvTranspose2d layers of ``layers`` in order (other layers keep the
    size), by the formulas of torch's docs. ValueError when a conv leaves no output."""
    height, width = shape
    for layer in layers.modules():
        if isinstance(layer, nn.ConvTranspose2d):
            height, width = ((n - 1) * s - 2 * p + d * (k - 1) + o + 1 for n, s, p, d, k, o in
                             zip((height, width), layer.stride, layer.padding, layer.dilation, layer.kernel_size,
                                 layer.output_padding))
        elif isinstance(layer, nn.Conv2d):
            height, width = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, s, p, d, k in
                             zip((height, width), layer.stride, layer.padding, layer.dilation, layer.kernel_size))
        if min(height, width) < 1:
            raise ValueError(f"{layer} leaves no output on a map of {tuple(shape)}")
    return height, width


class SECONDFPN(nn.Module):
    """SECOND's 2D backbone with an FPN-style neck (OpenPCDet BaseBEVBackbone).

    Each level: a strided 3x3 conv then ``layer_nums[i]`` 3x3 convs (BatchNorm eps 1e-3, momentum
    0.01, ReLU); each level's output is brought back to the first level's resolution by a transposed
    conv (or a 1x1 conv at stride 1) to ``upsample_filters[i]`` channels; the levels are concatenated.

    Args:
        in_channels: channels of the BEV input (C * D of the height compression).
        layer_nums, layer_strides, num_filters: per level, e.g. [5, 5], [1, 2], [128, 256].
        upsample_strides, upsample_filters: per level, e.g. [1, 2], [256, 256].
    Output: (B, sum(upsample_filters), H / layer_strides[0], W / layer_strides[0]).
    """

    def __init__(self, in_channels: int, layer_nums=(5, 5), layer_strides=(1, 2), num_filters=(128, 256),
                 upsample_strides=(1, 2), upsample_filters=(256, 256)):
        super().__init__()
        lengths = [len(layer_nums), len(layer_strides), len(num_filters), len(upsample_strides), len(upsample_filters)]
        if len(set(lengths)) != 1:
            raise ValueError("layer_nums, layer_strides, num_filters, upsample_strides and upsample_filters need "
                             f"one entry per level; got lengths {lengths}")
        self.layer_strides, self.upsample_strides = list(layer_strides), list(upsample_strides)
        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        channels = in_channels
        for count, stride, filters, up_stride, up_filters in zip(layer_nums, layer_strides, num_filters,
                                                                 upsample_strides, upsample_filters):
            layers = _conv_bn_relu(channels, filters, stride)
            for _ in range(count):
                layers += _conv_bn_relu(filters, filters)
            self.blocks.append(nn.Sequential(*layers))
            up = nn.ConvTranspose2d(filters, up_filters, up_stride, stride=up_stride, bias=False) if up_stride > 1 \
                else nn.Conv2d(filters, up_filters, 1, bias=False)
            self.deblocks.append(nn.Sequential(up, nn.BatchNorm2d(up_filters, eps=1e-3, momentum=0.01),
                                               nn.ReLU(inplace=True)))
            channels = filters
        self.out_channels = sum(upsample_filters)

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of forward's output for a BEV input of (H, W); ValueError when the levels do not
        come back to one size (their concatenation would fail) or a level has no output left."""
        sizes = []
        shape = (height, width)
        for block, deblock in zip(self.blocks, self.deblocks):
            shape = conv2d_output_shape(block, shape)
            sizes.append(conv2d_output_shape(deblock, shape))
        if len(set(sizes)) > 1:
            raise ValueError(f"a BEV input of {height} x {width} gives level outputs {sizes} (layer_strides "
                             f"{self.layer_strides}, upsample_strides {self.upsample_strides}): they must agree")
        return sizes[0]

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        ups = []
        x = bev
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1)
