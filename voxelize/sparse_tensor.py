"""SparseTensor: features on active voxel sites, with coordinates hashed once."""
from __future__ import annotations

import torch

from optional_dependencies import require
from voxelize.hash_map import CoordHashMap, check_coords, pack_keys


class SparseTensor:
    """Features on the active sites of a batched 3D voxel grid.

    Args:
        features: (N, C) floating-point features, one row per active site.
        coords: (N, 4) int32 ``[b, z, y, x]`` of each row, unique, inside the grid.
        spatial_shape: grid size (D, H, W) in voxels along z, y, x.
        batch_size: number of samples B; ``b`` lies in ``[0, B)``. Samples may be empty.
        tensor_stride: how many input voxels one site spans along (z, y, x); grows with strided convs.
        kernel_map_cache: dict shared by every tensor derived from one input, mapping
            ``(indice_key, tensor_stride)`` to a kernel map, as spconv's ``indice_dict``:
            SubM layers at one resolution reuse one map, and an inverse conv finds the map of
            its paired regular conv. A new dict when omitted.
        check: validate dtypes, shapes, grid bounds and uniqueness (ValueError on failure).
            Producers that guarantee these (the voxelizer, conv layers) pass False.

    The coordinate hash map is built on first use (or by the uniqueness check) and shared
    with every tensor that has the same coordinates (``replace_features``).
    """

    def __init__(self, features: torch.Tensor, coords: torch.Tensor, spatial_shape, batch_size: int,
                 tensor_stride=(1, 1, 1), kernel_map_cache: dict | None = None, check: bool = True):
        self.features = features
        self.coords = coords
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.batch_size = int(batch_size)
        self.tensor_stride = tuple(int(s) for s in tensor_stride)
        self.kernel_map_cache = {} if kernel_map_cache is None else kernel_map_cache
        # The kernel map (backbones.kernel_map.KernelMap) of the conv that produced this tensor, when its
        # backend used one of the project's maps; the densification meter reads the pairs from it.
        self.kernel_map = None
        self._hash_map: CoordHashMap | None = None
        if check:
            self._validate()

    def _validate(self) -> None:
        f, c = self.features, self.coords
        if not isinstance(f, torch.Tensor) or f.dim() != 2:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"features must be a (N, C) tensor, got {got}")
        if not f.is_floating_point():
            raise ValueError(f"features must be floating point, got {f.dtype}")
        check_coords(c)
        if c.shape[0] != f.shape[0]:
            raise ValueError(f"features have {f.shape[0]} rows but coords have {c.shape[0]}")
        if c.device != f.device:
            raise ValueError(f"features on {f.device} but coords on {c.device}")
        if len(self.spatial_shape) != 3 or min(self.spatial_shape) < 1:
            raise ValueError(f"spatial_shape must be three positive ints (D, H, W), got {self.spatial_shape}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        hash_map = CoordHashMap(c, self.spatial_shape, self.batch_size)  # raises on out-of-grid rows
        if hash_map.duplicate_rows.numel():
            row = int(hash_map.duplicate_rows[0])
            raise ValueError(
                f"coords hold {hash_map.duplicate_rows.numel()} duplicate rows; first: row {row} "
                f"repeats row {int(hash_map.first_rows[row])}, [b, z, y, x] = {c[row].tolist()}")
        self._hash_map = hash_map

    # --- shape and identity -------------------------------------------------------------------
    @property
    def num_sites(self) -> int:
        return self.coords.shape[0]

    @property
    def num_channels(self) -> int:
        return self.features.shape[1]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def __repr__(self) -> str:
        return (f"SparseTensor(sites={self.num_sites}, channels={self.num_channels}, "
                f"spatial_shape={self.spatial_shape}, batch_size={self.batch_size}, "
                f"tensor_stride={self.tensor_stride}, device={self.device})")

    @property
    def hash_map(self) -> CoordHashMap:
        """The coordinate hash map, built on first access."""
        if self._hash_map is None:
            self._hash_map = CoordHashMap(self.coords, self.spatial_shape, self.batch_size)
        return self._hash_map

    def keys(self) -> torch.Tensor:
        """(N,) int64 linearised keys ``((b*D + z)*H + y)*W + x``: the canonical sort order of sites."""
        return pack_keys(self.coords, self.spatial_shape, self.batch_size)

    def sites_per_sample(self) -> torch.Tensor:
        """(B,) int64 number of active sites in each batch sample."""
        return torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size)

    # --- derived tensors ----------------------------------------------------------------------
    def replace_features(self, features: torch.Tensor) -> "SparseTensor":
        """The same sites (coords, hash map, kernel-map cache shared) with new (N, C') features."""
        if features.dim() != 2 or features.shape[0] != self.num_sites:
            raise ValueError(f"replacement features must be ({self.num_sites}, C), got {tuple(features.shape)}")
        out = SparseTensor(features, self.coords, self.spatial_shape, self.batch_size,
                           self.tensor_stride, self.kernel_map_cache, check=False)
        out._hash_map = self._hash_map
        return out

    def fresh_copy(self) -> "SparseTensor":
        """The same features and sites with an empty kernel-map cache: the start of a new lineage, so a
        second model run on it builds its own maps (its indice keys may mean other convs)."""
        return SparseTensor(self.features, self.coords, self.spatial_shape, self.batch_size, self.tensor_stride,
                            check=False)

    def dense(self, channels_first: bool = True) -> torch.Tensor:
        """The dense grid: (B, C, D, H, W) (or (B, D, H, W, C)), zero where no site is active."""
        depth, height, width = self.spatial_shape
        channels = self.num_channels
        grid = self.features.new_zeros((self.batch_size * depth * height * width, channels))
        grid.index_copy_(0, self.keys(), self.features)
        grid = grid.view(self.batch_size, depth, height, width, channels)
        return grid.permute(0, 4, 1, 2, 3).contiguous() if channels_first else grid

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> "SparseTensor":
        """Sites where any channel of a (B, C, D, H, W) tensor is non-zero, in canonical order."""
        if dense.dim() != 5:
            raise ValueError(f"dense input must be (B, C, D, H, W), got {tuple(dense.shape)}")
        channels_last = dense.permute(0, 2, 3, 4, 1)
        active = (channels_last != 0).any(dim=-1)
        coords = active.nonzero().to(torch.int32)
        features = channels_last[active]
        return cls(features, coords, dense.shape[2:], dense.shape[0], check=False)

    # --- spconv interoperability --------------------------------------------------------------
    def to_spconv(self):
        """A ``spconv.pytorch.SparseConvTensor`` over the same features and coordinates."""
        spconv = require("spconv.pytorch", "SparseTensor.to_spconv")
        return spconv.SparseConvTensor(self.features, self.coords, list(self.spatial_shape), self.batch_size)

    @classmethod
    def from_spconv(cls, tensor, check: bool = True) -> "SparseTensor":
        """Wrap a ``spconv.pytorch.SparseConvTensor`` (its kernel-map cache is not carried over)."""
        return cls(tensor.features, tensor.indices, tensor.spatial_shape, tensor.batch_size, check=check)

