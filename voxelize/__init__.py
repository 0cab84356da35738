"""Points → voxels → hash-mapped sparse tensors."""
from voxelize.hash_map import CoordHashMap, pack_keys
from voxelize.sparse_tensor import SparseTensor
from voxelize.voxelizer import DroppedPoints, Voxelizer, Voxels

__all__ = ["CoordHashMap", "DroppedPoints", "SparseTensor", "Voxelizer", "Voxels", "pack_keys"]
