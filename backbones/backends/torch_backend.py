"""The pure-PyTorch reference backend: the project's kernel maps, then gather → GEMM → scatter-add."""
from __future__ import annotations

import torch

from backbones.backends.base import SparseConvBackend
from backbones.sparse_conv_function import sparse_conv
from voxelize.sparse_tensor import SparseTensor


class TorchBackend(SparseConvBackend):
    name = "torch"

    def conv(self, module, x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None) -> SparseTensor:
        kernel_map = module.kernel_map(x)
        features = sparse_conv(x.features, weight, kernel_map)
        if bias is not None:
            features = features + bias.to(features.dtype)
        out = module.output_tensor(x, kernel_map.out_coords, kernel_map.out_spatial_shape, features,
                                   kernel_map.stride)
        out.kernel_map = kernel_map
        return out
