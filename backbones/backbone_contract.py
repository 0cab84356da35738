"""What every sparse 3D backbone declares, so that the detector asks instead of restating it.

A backbone takes the voxelized SparseTensor at stride 1 on the voxelizer's grid (D, H, W) and returns a
:class:`BackboneOutput` whose ``out`` is the tensor the BEV stage reads. It declares ``in_channels``,
``out_channels``, and derives ``output_stride`` and ``output_shape(spatial_shape)`` by walking its own
sparse convolutions in the order they run (registration order; a backbone whose forward runs them
in another order overrides both). The contract test (tests/backbones/test_backbone_contract.py)
checks every registered backbone against a real forward.
"""
from __future__ import annotations

from dataclasses import dataclass

from backbones.kernel_map import conv_output_shape
from backbones.sparse_modules import SparseConvolution, SparseModule
from voxelize.sparse_tensor import SparseTensor


@dataclass
class BackboneOutput:
    """The final output and the multi-scale features (strides 1, 2, 4, 8 for the *8x backbones)."""
    out: SparseTensor
    x_conv1: SparseTensor | None = None
    x_conv2: SparseTensor | None = None
    x_conv3: SparseTensor | None = None
    x_conv4: SparseTensor | None = None


class SparseBackbone3D(SparseModule):
    """Base class of the sparse 3D backbones; subclasses set ``in_channels`` and ``out_channels`` and
    implement ``forward(x: SparseTensor) -> BackboneOutput``."""

    in_channels: int
    out_channels: int

    def padded_input_shape(self, spatial_shape) -> tuple[int, int, int]:
        """The grid the first conv sees for a voxelizer grid ``spatial_shape`` (a backbone may pad it)."""
        return tuple(int(n) for n in spatial_shape)

    def _walk(self, spatial_shape):
        """(output grid, output stride) after every sparse conv, in the order they run."""
        shape, stride = self.padded_input_shape(spatial_shape), (1, 1, 1)
        before = {}  # indice key → (grid, stride) at the input of the regular conv an inverse conv undoes
        for conv in self.modules():
            if not isinstance(conv, SparseConvolution) or conv.kind == "subm":
                continue
            if conv.kind == "regular":
                if conv.indice_key is not None:
                    before[conv.indice_key] = (shape, stride)
                shape = conv_output_shape(shape, conv.kernel_size, conv.stride, conv.padding, conv.dilation)
                stride = tuple(a * b for a, b in zip(stride, conv.stride))
            else:
                shape, stride = before[conv.indice_key]
        return shape, stride

    def output_shape(self, spatial_shape) -> tuple[int, int, int]:
        """(D, H, W) of ``forward(x).out`` for an input on the grid ``spatial_shape``."""
        return self._walk(spatial_shape)[0]

    @property
    def output_stride(self) -> tuple[int, int, int]:
        """(z, y, x) tensor stride of ``forward(x).out`` relative to the voxel grid."""
        return self._walk((1 << 20,) * 3)[1]
