"""The SECOND (VoxelBackBone8x) and CenterPoint (VoxelResBackBone8x) sparse 3D backbones.

Both take the voxelized SparseTensor at stride 1 and return the stride-8 tensor, with the
multi-scale outputs x_conv1..x_conv4 on the side. ``conv_type='regular'`` builds the same
network with every SubM conv replaced by a stride-1 regular conv of the same kernel and
padding 1: the densifying counterpart, for comparing SSC against regular sparse convolution.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from backbones.activation_sparsity import KWinnersTakeAll, SiteTopK
from backbones.backbone_contract import BackboneOutput, SparseBackbone3D
from backbones.sparse_modules import (
    SparseConv3d,
    SparseModule,
    SparseSequential,
    SubMConv3d,
    conv_bn,
    on_features,
    set_backend,
)
from voxelize.sparse_tensor import SparseTensor

CONV_TYPES = ("subm", "regular")


@dataclass(frozen=True)
class BlockOptions:
    """How the blocks of a backbone are built.

    conv_type: 'subm', or 'regular' (every SubM → a stride-1 regular conv).
    site_pruning: None, or SiteTopK arguments ({'k': int} or {'fraction': float}) applied after every
        block whose last conv is regular (each sample keeps its highest-magnitude sites).
    activation_topk: None for ReLU, or k for k-winners-take-all over each site's channels.
    """
    conv_type: str = "subm"
    site_pruning: dict | None = None
    activation_topk: int | None = None

    def __post_init__(self):
        if self.conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be one of {list(CONV_TYPES)}, got {self.conv_type!r}")
        if self.site_pruning is not None:
            SiteTopK(**self.site_pruning)  # validates the arguments
        if self.activation_topk is not None:
            KWinnersTakeAll(self.activation_topk)

    def activation(self) -> nn.Module:
        return nn.ReLU(inplace=True) if self.activation_topk is None else KWinnersTakeAll(self.activation_topk)

    def pruning(self) -> list[nn.Module]:
        return [] if self.site_pruning is None else [SiteTopK(**self.site_pruning)]


def batch_norm(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def same_conv(in_channels: int, out_channels: int, options: BlockOptions, indice_key: str | None):
    """A 3x3x3 stride-1 conv without bias: SubM, or its regular (densifying) counterpart."""
    if options.conv_type == "subm":
        return SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False, indice_key=indice_key)
    # Regular convs change the site set at every layer, so there is no map to share.
    return SparseConv3d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)


def conv_block(in_channels: int, out_channels: int, options: BlockOptions, indice_key: str | None = None,
               stride=1, padding=1, kernel_size=3) -> SparseSequential:
    """conv → BatchNorm → activation (→ site pruning after a regular conv); a strided block is
    always a regular conv (it downsamples)."""
    if stride == 1 and kernel_size == 3 and padding == 1:
        conv = same_conv(in_channels, out_channels, options, indice_key)
    else:
        conv = SparseConv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False,
                            indice_key=indice_key)
    pruning = options.pruning() if isinstance(conv, SparseConv3d) else []
    return SparseSequential(conv, batch_norm(out_channels), options.activation(), *pruning)


def add_features(x: SparseTensor, residual: SparseTensor) -> SparseTensor:
    """x + residual, where residual's sites are a subset of x's (equal for SubM)."""
    if residual.coords is x.coords:
        return x.replace_features(x.features + residual.features)
    rows = x.hash_map.query(residual.coords)
    if bool((rows < 0).any()):
        raise ValueError("residual has sites that the block output lacks")
    return x.replace_features(x.features.index_add(0, rows, residual.features))


class SparseBasicBlock(SparseModule):
    """Residual block of two 3x3x3 convs: act(bn2(conv2(act(bn1(conv1(x))))) + x), then site
    pruning when the convs are regular and pruning is asked for (after the addition, which needs
    every input site in the output)."""

    def __init__(self, channels: int, options: BlockOptions = BlockOptions(), indice_key: str | None = None):
        super().__init__()
        self.conv1 = same_conv(channels, channels, options, indice_key)
        self.bn1 = batch_norm(channels)
        self.conv2 = same_conv(channels, channels, options, indice_key)
        self.bn2 = batch_norm(channels)
        self.act1, self.act2 = options.activation(), options.activation()
        self.pruning = SparseSequential(*(options.pruning() if options.conv_type == "regular" else []))

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = on_features(self.act1, conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv2, self.bn2, out)
        return self.pruning(on_features(self.act2, add_features(out, x)))


class VoxelBackBone8xBase(SparseBackbone3D):
    """The stem, the four stages built by ``build_stages`` and the (2, 1, 1)-strided output conv shared by
    the *8x backbones; the input grid gains one z layer, as in OpenPCDet."""

    def __init__(self, in_channels: int, channels, out_channels: int, conv_type: str, backend: str,
                 site_pruning: dict | None, activation_topk: int | None):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels must list 4 widths (conv1..conv4), got {list(channels)}")
        self.in_channels, self.channels, self.out_channels = in_channels, tuple(channels), out_channels
        self.options = options = BlockOptions(conv_type, site_pruning, activation_topk)
        self.conv_input = conv_block(in_channels, channels[0], options, "subm1")
        self.build_stages(channels, options)
        self.conv_out = conv_block(channels[3], out_channels, options, "spconv_down2", stride=(2, 1, 1),
                                   padding=0, kernel_size=(3, 1, 1))
        set_backend(self, backend)

    @property
    def conv_type(self) -> str:
        return self.options.conv_type

    def build_stages(self, channels, options: BlockOptions):
        raise NotImplementedError

    def padded_input_shape(self, spatial_shape) -> tuple[int, int, int]:
        # As OpenPCDet: one extra z layer, so a 40-voxel height falls 41 → 21 → 11 → 5 → 2.
        depth, height, width = (int(n) for n in spatial_shape)
        return depth + 1, height, width

    def forward(self, x: SparseTensor) -> BackboneOutput:
        """``x``: the voxelized tensor at stride 1 on the voxelizer's grid (D, H, W)."""
        if x.num_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.num_channels}")
        x = SparseTensor(x.features, x.coords, self.padded_input_shape(x.spatial_shape), x.batch_size,
                         x.tensor_stride, check=False)
        x_conv1 = self.conv1(self.conv_input(x))
        x_conv2 = self.conv2(x_conv1)
        x_conv3 = self.conv3(x_conv2)
        x_conv4 = self.conv4(x_conv3)
        return BackboneOutput(self.conv_out(x_conv4), x_conv1, x_conv2, x_conv3, x_conv4)


class VoxelBackBone8x(VoxelBackBone8xBase):
    """SECOND's backbone (as OpenPCDet's VoxelBackBone8x): plain SubM blocks, widths 16/32/64/64 → 128.

    Args:
        in_channels: voxel feature width (4 for KITTI x, y, z, r; 5 with nuScenes' time lag).
        channels: widths of conv1..conv4; out_channels: width of the stride-8 output.
        conv_type, site_pruning, activation_topk: see :class:`BlockOptions`.
        backend: 'torch' or 'spconv'.
    """

    def __init__(self, in_channels: int, channels=(16, 32, 64, 64), out_channels: int = 128,
                 conv_type: str = "subm", backend: str = "torch", site_pruning: dict | None = None,
                 activation_topk: int | None = None):
        super().__init__(in_channels, channels, out_channels, conv_type, backend, site_pruning, activation_topk)

    def build_stages(self, channels, options):
        c1, c2, c3, c4 = channels
        self.conv1 = SparseSequential(conv_block(c1, c1, options, "subm1"))
        self.conv2 = SparseSequential(conv_block(c1, c2, options, "spconv2", stride=2),
                                      conv_block(c2, c2, options, "subm2"), conv_block(c2, c2, options, "subm2"))
        self.conv3 = SparseSequential(conv_block(c2, c3, options, "spconv3", stride=2),
                                      conv_block(c3, c3, options, "subm3"), conv_block(c3, c3, options, "subm3"))
        self.conv4 = SparseSequential(conv_block(c3, c4, options, "spconv4", stride=2, padding=(0, 1, 1)),
                                      conv_block(c4, c4, options, "subm4"), conv_block(c4, c4, options, "subm4"))


class VoxelResBackBone8x(VoxelBackBone8xBase):
    """CenterPoint's nuScenes backbone (as OpenPCDet's VoxelResBackBone8x): two residual SubM
    blocks per stage, widths 16/32/64/128 → 128. Arguments as :class:`VoxelBackBone8x`."""

    def __init__(self, in_channels: int, channels=(16, 32, 64, 128), out_channels: int = 128,
                 conv_type: str = "subm", backend: str = "torch", site_pruning: dict | None = None,
                 activation_topk: int | None = None):
        super().__init__(in_channels, channels, out_channels, conv_type, backend, site_pruning, activation_topk)

    def build_stages(self, channels, options):
        c1, c2, c3, c4 = channels

        def stage(c_in, c_out, key, **down):
            first = conv_block(c_in, c_out, options, f"spconv{key}", stride=2, **down)
            return [first, SparseBasicBlock(c_out, options, f"subm{key}"), SparseBasicBlock(c_out, options, f"subm{key}")]

        self.conv1 = SparseSequential(SparseBasicBlock(c1, options, "subm1"), SparseBasicBlock(c1, options, "subm1"))
        self.conv2 = SparseSequential(*stage(c1, c2, 2))
        self.conv3 = SparseSequential(*stage(c2, c3, 3))
        self.conv4 = SparseSequential(*stage(c3, c4, 4, padding=(0, 1, 1)))


BACKBONES = {"VoxelBackBone8x": VoxelBackBone8x, "VoxelResBackBone8x": VoxelResBackBone8x}


def build_backbone(type: str, **kwargs) -> SparseBackbone3D:
    """A 3D backbone by class name, e.g. ``build_backbone('VoxelResBackBone8x', in_channels=5)``."""
    if type not in BACKBONES:
        raise ValueError(f"unknown 3D backbone {type!r}; valid: {sorted(BACKBONES)}")
    return BACKBONES[type](**kwargs)


def backbone_weights(state: dict) -> dict:
    """A backbone state_dict from a loaded checkpoint (``detectors.checkpoints.load_checkpoint``): a
    backbone state_dict itself, or a detector checkpoint {'model': ...} whose backbone keys start
    with 'backbone_3d.'."""
    state = state.get("model", state)
    prefix = "backbone_3d."
    if any(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    return state
