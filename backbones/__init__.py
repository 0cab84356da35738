"""Sparse conv layers on two backends, the sparse 3D backbones, the BEV stage and the densification meter."""
from backbones.backbone_contract import BackboneOutput, SparseBackbone3D
from backbones.backends import BACKENDS, available_backends, get_backend
from backbones.kernel_map import KernelMap, build_regular_map, build_submanifold_map
from backbones.sparse_conv_function import sparse_conv
from backbones.sparse_modules import (SparseConv3d, SparseConvolution, SparseInverseConv3d, SparseModule,
                                      SparseSequential, SubMConv3d, set_backend)
from backbones.voxel_backbones import BACKBONES, SparseBasicBlock, VoxelBackBone8x, VoxelResBackBone8x, build_backbone

__all__ = ["BACKBONES", "BACKENDS", "BackboneOutput", "KernelMap", "SparseBackbone3D", "SparseBasicBlock",
           "SparseConv3d", "SparseConvolution", "SparseInverseConv3d", "SparseModule", "SparseSequential",
           "SubMConv3d", "VoxelBackBone8x", "VoxelResBackBone8x", "available_backends", "build_backbone",
           "build_regular_map", "build_submanifold_map", "get_backend", "set_backend", "sparse_conv"]
