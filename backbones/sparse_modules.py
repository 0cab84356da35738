"""Sparse conv modules on two interchangeable backends, and a Sequential that carries SparseTensors.

One weight layout for every backend: ``[C_out, kD, kH, kW, C_in]`` (spconv 2.x), so a state_dict
saved under one backend loads into another. The backend is a per-module name, looked up in the table
of :mod:`backbones.backends` at each forward, and set for a whole model with :func:`set_backend`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from backbones.backends import get_backend
from backbones.cross_process_batch_norm import CrossProcessBatchNorm
from backbones.kernel_map import KernelMap, build_regular_map, build_submanifold_map, triple
from voxelize.sparse_tensor import SparseTensor


class SparseModule(nn.Module):
    """Marker base: a module that takes and returns SparseTensors (others see only features)."""


class SparseConvolution(SparseModule):
    """Base of the three sparse convs. ``kind`` is 'subm', 'regular' or 'inverse'.

    Args:
        in_channels, out_channels: feature widths.
        kernel_size, stride, padding, dilation: ints or (z, y, x) triples, as ``nn.Conv3d``.
        bias: add a learnt bias per output channel.
        indice_key: name under which the kernel map is cached on the input's lineage: SubM layers
            with the same key at the same resolution share one map; an inverse conv finds its
            paired regular conv's map by it. None: no sharing.
        backend: a name in :data:`backbones.backends.BACKENDS` ('torch', the pure-PyTorch reference, or 'spconv').
    """
    kind = ""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=0, dilation=1,
                 bias: bool = True, indice_key: str | None = None, backend: str = "torch"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = triple(kernel_size, "kernel_size")
        self.stride = triple(stride, "stride")
        self.padding = triple(padding, "padding")
        self.dilation = triple(dilation, "dilation")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"invalid conv geometry: kernel {self.kernel_size}, stride {self.stride}, "
                             f"padding {self.padding}, dilation {self.dilation}")
        self.indice_key = indice_key
        self.weight = nn.Parameter(torch.empty(self.out_channels, *self.kernel_size, self.in_channels))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.backend = get_backend(backend).name
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ±1/sqrt(fan_in), as ``nn.Conv3d``'s default initialisation."""
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}, "
                f"indice_key={self.indice_key!r}, backend={self.backend!r}")

    def forward(self, x: SparseTensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> SparseTensor:
        """``weight``/``bias`` replace the module's own for this call (e.g. with a BatchNorm folded in)."""
        if x.num_channels != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects {self.in_channels} input channels, got {x.num_channels}")
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        return get_backend(self.backend).conv(self, x, weight, bias)

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        """The kernel map of this layer for input ``x``, from the lineage's cache when possible."""
        raise NotImplementedError

    def output_tensor(self, x: SparseTensor, coords, spatial_shape, features, stride) -> SparseTensor:
        """The output SparseTensor over ``coords`` (the same object as x.coords for SubM); ``stride``
        is the conv's (for an inverse conv, its paired conv's), which scales the tensor stride."""
        if coords is x.coords:
            return x.replace_features(features)
        if self.kind == "inverse":
            tensor_stride = tuple(t // s for t, s in zip(x.tensor_stride, stride))
        else:
            tensor_stride = tuple(t * s for t, s in zip(x.tensor_stride, stride))
        return SparseTensor(features, coords, spatial_shape, x.batch_size, tensor_stride,
                            x.kernel_map_cache, check=False)


class SubMConv3d(SparseConvolution):
    """Submanifold sparse conv: outputs only at the active input sites (no densification).

    ``stride`` must be 1; ``padding`` is ignored (the map is centred, as in spconv).
    """
    kind = "subm"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stride != (1, 1, 1):
            raise ValueError(f"SubMConv3d needs stride 1, got {self.stride}")

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        if self.indice_key is None:
            return build_submanifold_map(x, self.kernel_size, self.dilation)
        key = ("subm", self.indice_key, x.tensor_stride)
        cached = x.kernel_map_cache.get(key)
        if cached is not None and cached.in_coords is x.coords:
            if (cached.kernel_size, cached.dilation) != (self.kernel_size, self.dilation):
                raise ValueError(f"SubM layers sharing indice_key {self.indice_key!r} need the same kernel and "
                                 f"dilation: cached {cached.kernel_size}/{cached.dilation}, this layer "
                                 f"{self.kernel_size}/{self.dilation}")
            return cached
        kernel_map = build_submanifold_map(x, self.kernel_size, self.dilation)
        x.kernel_map_cache[key] = kernel_map
        return kernel_map


class SparseConv3d(SparseConvolution):
    """Regular sparse conv: outputs at every site that sees an active input (densifies),
    in canonical order (ascending linearised key). Its map is kept under ``indice_key`` for
    a paired :class:`SparseInverseConv3d`."""
    kind = "regular"

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        key = ("regular", self.indice_key)
        cached = x.kernel_map_cache.get(key) if self.indice_key is not None else None
        geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        if cached is not None and cached.in_coords is x.coords and \
                (cached.kernel_size, cached.stride, cached.padding, cached.dilation) == geometry:
            return cached  # the same input seen again (e.g. a second forward)
        kernel_map = build_regular_map(x, *geometry)
        if self.indice_key is not None:
            x.kernel_map_cache[key] = kernel_map
        return kernel_map


class SparseInverseConv3d(SparseConvolution):
    """Inverse of the regular conv registered under ``indice_key``: restores its input sites.

    Kernel size must equal the paired conv's; stride, padding and dilation are taken from it.
    """
    kind = "inverse"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, indice_key: str, bias: bool = True,
                 backend: str = "torch"):
        if not indice_key:
            raise ValueError("SparseInverseConv3d needs the indice_key of its paired SparseConv3d")
        super().__init__(in_channels, out_channels, kernel_size, bias=bias, indice_key=indice_key, backend=backend)

    def paired_map(self, x: SparseTensor) -> KernelMap:
        paired = x.kernel_map_cache.get(("regular", self.indice_key))
        if paired is None:
            raise ValueError(f"no regular conv with indice_key {self.indice_key!r} ran on this input's lineage")
        if paired.kernel_size != self.kernel_size:
            raise ValueError(f"inverse conv {self.indice_key!r}: kernel {self.kernel_size} differs from the paired "
                             f"conv's {paired.kernel_size}")
        if paired.num_out != x.num_sites or paired.out_spatial_shape != x.spatial_shape:
            raise ValueError(f"inverse conv {self.indice_key!r}: input has {x.num_sites} sites on "
                             f"{x.spatial_shape}, the paired conv produced {paired.num_out} on "
                             f"{paired.out_spatial_shape}")
        return paired

    def kernel_map(self, x: SparseTensor) -> KernelMap:
        return self.paired_map(x).transposed()


class SparseSequential(nn.Sequential, SparseModule):
    """A Sequential over SparseTensors: sparse modules get the tensor, any other module (e.g.
    ``nn.BatchNorm1d``, ``nn.ReLU``) is applied to its (N, C) features, as in spconv."""

    def forward(self, x):
        modules = list(self)
        i = 0
        while i < len(modules):
            module = modules[i]
            following = modules[i + 1] if i + 1 < len(modules) else None
            if isinstance(module, SparseConvolution) and isinstance(following, nn.modules.batchnorm._BatchNorm):
                x = conv_bn(module, following, x)
                i += 2
                continue
            x = module(x) if isinstance(module, SparseModule) or not isinstance(x, SparseTensor) \
                else on_features(module, x)
            i += 1
        return x


def conv_bn(conv: SparseConvolution, bn: nn.modules.batchnorm._BatchNorm, x: SparseTensor) -> SparseTensor:
    """bn(conv(x)); in eval mode the BatchNorm is folded into the conv's weight and bias (one pass less)."""
    if bn.training or not bn.track_running_stats:
        return on_features(bn, conv(x))
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return conv(x, weight=conv.weight * scale.view(-1, 1, 1, 1, 1), bias=shift)


def on_features(module: nn.Module, x: SparseTensor) -> SparseTensor:
    """``module`` applied to the (N, C) features of ``x`` (BatchNorm is skipped when N = 0: batch
    statistics of nothing are undefined, and the features stay empty either way; a cross-process
    BatchNorm still runs, so that its process joins the others' all-reduce). A BatchNorm in training
    mode refuses a single site: its batch variance would be undefined (one value per channel)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CrossProcessBatchNorm):
        if x.num_sites == 0:
            return x
        if x.num_sites == 1 and module.training:
            raise ValueError(f"BatchNorm in training mode needs at least 2 active sites, this layer got 1 (spatial "
                             f"shape {tuple(x.spatial_shape)}, batch of {x.batch_size}): the batch's point clouds hold "
                             f"almost no points inside point_cloud_range; train on larger batches or drop such frames")
    return x.replace_features(module(x.features))


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every sparse conv in ``model`` to ``backend`` (a name in BACKENDS); returns model."""
    get_backend(backend)
    for module in model.modules():
        if isinstance(module, SparseConvolution):
            module.backend = backend
    return model
