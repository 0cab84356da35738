"""Sparse conv layers on two backends, the 3D sparse backbones, and (later) BEV and the meter."""
from backbones.kernel_map import KernelMap, build_regular_map, build_submanifold_map
from backbones.sparse_conv_function import sparse_conv
from backbones.sparse_modules import (BACKENDS, SparseConv3d, SparseConvolution, SparseInverseConv3d, SparseModule,
                                      SparseSequential, SubMConv3d, set_backend)
from backbones.voxel_backbones import (BackboneOutput, SparseBasicBlock, VoxelBackBone8x, VoxelResBackBone8x,
                                       build_backbone)

__all__ = ["BACKENDS", "BackboneOutput", "KernelMap", "SparseBasicBlock", "SparseConv3d", "SparseConvolution",
           "SparseInverseConv3d", "SparseModule", "SparseSequential", "SubMConv3d", "VoxelBackBone8x",
           "VoxelResBackBone8x", "build_backbone", "build_regular_map", "build_submanifold_map", "set_backend",
           "sparse_conv"]
