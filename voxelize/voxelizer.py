"""Points → voxels with mean features, and a list of clouds → one batched SparseTensor."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from voxelize.sparse_tensor import SparseTensor


@dataclass
class DroppedPoints:
    """How many input points did not reach a voxel, and why."""
    nonfinite: int = 0        # a NaN or inf in any column
    out_of_range: int = 0     # outside point_cloud_range
    voxel_full: int = 0       # hard mode: beyond max_points_per_voxel in their voxel
    voxel_limit: int = 0      # hard mode: their voxel came after the first max_voxels voxels

    @property
    def total(self) -> int:
        return self.nonfinite + self.out_of_range + self.voxel_full + self.voxel_limit

    def __add__(self, other: "DroppedPoints") -> "DroppedPoints":
        return DroppedPoints(self.nonfinite + other.nonfinite, self.out_of_range + other.out_of_range,
                             self.voxel_full + other.voxel_full, self.voxel_limit + other.voxel_limit)


@dataclass
class Voxels:
    """One voxelized cloud.

    features: (V, C) float32, the mean of each voxel's kept points (all C input columns).
    coords: (V, 3) int32 ``[z, y, x]`` voxel indices, in order of first appearance in the cloud.
    num_points: (V,) int32 points averaged into each voxel.
    point_voxel_ids: (N,) int64 voxel row of each input point, -1 where the point was dropped.
    dropped: counts of the dropped points by reason.
    """
    features: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    point_voxel_ids: torch.Tensor
    dropped: DroppedPoints = field(default_factory=DroppedPoints)


def as_point_tensor(points) -> torch.Tensor:
    """Check a point cloud (N, C>=3) of floats (numpy or torch) and return it as float32 torch."""
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"points must be a numpy array or torch tensor, got {type(points).__name__}")
    if points.dim() != 2:
        raise ValueError(f"points must have rank 2 (N, C>=3), got shape {tuple(points.shape)}")
    if points.shape[1] < 3:
        raise ValueError(f"points need at least 3 columns (x, y, z, ...), got {points.shape[1]}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point (float16/32/64), got {points.dtype}")
    return points.float()


class Voxelizer:
    """Quantise point clouds onto a voxel grid.

    Args:
        voxel_size: ``[vx, vy, vz]`` in metres.
        point_cloud_range: ``[x0, y0, z0, x1, y1, z1]`` in metres; a point is kept when
            ``0 <= floor((p - p0) / v) < grid`` on every axis, as spconv computes it (float32).
        max_points_per_voxel: hard mode: keep the first this-many points of each voxel, in point order.
        max_voxels: hard mode: keep the first this-many voxels, in order of first appearance.
        mode: ``'hard'`` (the limits above; the same choice as spconv's ``PointToVoxel``, so the two
            agree exactly) or ``'dynamic'`` (every in-range point kept; no limits may be given).

    The grid is ``round((p1 - p0) / v)`` voxels per axis (float32, as spconv), exposed as
    ``spatial_shape = (D, H, W)`` in z, y, x. Memory is O(points), never O(grid).
    """

    def __init__(self, voxel_size, point_cloud_range, max_points_per_voxel: int | None = None,
                 max_voxels: int | None = None, mode: str = "hard"):
        voxel_size = np.asarray(voxel_size, dtype=np.float32)
        pc_range = np.asarray(point_cloud_range, dtype=np.float32)
        if voxel_size.shape != (3,) or not (voxel_size > 0).all():
            raise ValueError(f"voxel_size must be three positive numbers [vx, vy, vz], got {list(voxel_size)}")
        if pc_range.shape != (6,) or not (pc_range[3:] > pc_range[:3]).all():
            raise ValueError(f"point_cloud_range must be [x0, y0, z0, x1, y1, z1] with x1>x0 etc., "
                             f"got {list(pc_range)}")
        if mode == "hard":
            for name, value in (("max_points_per_voxel", max_points_per_voxel), ("max_voxels", max_voxels)):
                if not isinstance(value, (int, np.integer)) or value < 1:
                    raise ValueError(f"mode='hard' needs a positive int {name}, got {value!r}")
        elif mode == "dynamic":
            if max_points_per_voxel is not None or max_voxels is not None:
                raise ValueError("mode='dynamic' keeps every point: max_points_per_voxel and max_voxels "
                                 f"must be None, got {max_points_per_voxel!r} and {max_voxels!r}")
        else:
            raise ValueError(f"mode must be 'hard' or 'dynamic', got {mode!r}")
        self.voxel_size = voxel_size
        self.point_cloud_range = pc_range
        self.max_points_per_voxel = max_points_per_voxel
        self.max_voxels = max_voxels
        self.mode = mode
        extent = (pc_range[3:] - pc_range[:3]) / voxel_size  # float32, as spconv
        self.grid_size_xyz = tuple(int(np.floor(e + np.float32(0.5))) for e in extent)  # std::round
        self.spatial_shape = self.grid_size_xyz[::-1]

    def __repr__(self) -> str:
        return (f"Voxelizer(voxel_size={self.voxel_size.tolist()}, point_cloud_range="
                f"{self.point_cloud_range.tolist()}, max_points_per_voxel={self.max_points_per_voxel}, "
                f"max_voxels={self.max_voxels}, mode={self.mode!r}, spatial_shape={self.spatial_shape})")

    def __call__(self, points) -> Voxels:
        """Voxelize one cloud (N, C>=3) ``[x, y, z, ...]``; warns once if non-finite points were dropped."""
        voxels = self._voxelize(as_point_tensor(points))
        _warn_nonfinite(voxels.dropped.nonfinite)
        return voxels

    def batch(self, clouds) -> tuple[SparseTensor, list[DroppedPoints]]:
        """Voxelize a list of clouds into one SparseTensor (sample i gets batch index i).

        Returns the tensor (coords ``[b, z, y, x]``, features the voxel means) and each cloud's
        dropped-point counts. Empty clouds give empty samples.
        """
        clouds = [as_point_tensor(c) for c in clouds]
        if not clouds:
            raise ValueError("batch() needs at least one point cloud, got an empty list")
        widths = {c.shape[1] for c in clouds}
        if len(widths) > 1:
            raise ValueError(f"all clouds of a batch need the same number of columns, got {sorted(widths)}")
        per_cloud = [self._voxelize(c) for c in clouds]
        _warn_nonfinite(sum(v.dropped.nonfinite for v in per_cloud))
        coords = torch.cat([
            torch.cat([torch.full((v.coords.shape[0], 1), b, dtype=torch.int32, device=v.coords.device),
                       v.coords], dim=1)
            for b, v in enumerate(per_cloud)])
        features = torch.cat([v.features for v in per_cloud])
        tensor = SparseTensor(features, coords, self.spatial_shape, len(clouds), check=False)
        return tensor, [v.dropped for v in per_cloud]

    def _voxelize(self, points: torch.Tensor) -> Voxels:
        device = points.device
        num_input = points.shape[0]
        dropped = DroppedPoints()
        point_ids = torch.arange(num_input, device=device)

        finite = torch.isfinite(points).all(dim=1)
        if not bool(finite.all()):
            dropped.nonfinite = int((~finite).sum())
            points, point_ids = points[finite], point_ids[finite]

        low = torch.as_tensor(self.point_cloud_range[:3], device=device)
        size = torch.as_tensor(self.voxel_size, device=device)
        grid = torch.floor((points[:, :3] - low) / size)  # float32 arithmetic, as spconv's CPU path
        upper = torch.as_tensor(self.grid_size_xyz, dtype=grid.dtype, device=device)
        inside = ((grid >= 0) & (grid < upper)).all(dim=1)
        if not bool(inside.all()):
            dropped.out_of_range = int((~inside).sum())
            points, point_ids, grid = points[inside], point_ids[inside], grid[inside]
        grid = grid.long()
        width, height = self.grid_size_xyz[0], self.grid_size_xyz[1]
        keys = (grid[:, 2] * height + grid[:, 1]) * width + grid[:, 0]

        voxel_ids, first_point = _ids_by_first_appearance(keys)
        num_voxels = first_point.numel()
        if self.mode == "hard":
            keep = voxel_ids < self.max_voxels
            dropped.voxel_limit = int(keep.numel() - keep.sum())
            keep = _first_points_per_voxel(voxel_ids, keep, self.max_points_per_voxel, num_voxels)
            dropped.voxel_full = num_input - dropped.nonfinite - dropped.out_of_range \
                - dropped.voxel_limit - int(keep.sum())
            num_voxels = min(num_voxels, self.max_voxels)
            first_point = first_point[:num_voxels]
            if dropped.voxel_limit or dropped.voxel_full:
                points, point_ids, voxel_ids = points[keep], point_ids[keep], voxel_ids[keep]

        num_points = torch.bincount(voxel_ids, minlength=num_voxels)
        sums = points.new_zeros((num_voxels, points.shape[1])).index_add_(0, voxel_ids, points)
        features = sums / num_points.unsqueeze(1).clamp_min(1).to(sums.dtype)
        coords = grid[first_point].flip(1).to(torch.int32)  # xyz → zyx
        point_voxel_ids = torch.full((num_input,), -1, dtype=torch.int64, device=device)
        point_voxel_ids[point_ids] = voxel_ids
        return Voxels(features, coords, num_points.to(torch.int32), point_voxel_ids, dropped)


def _ids_by_first_appearance(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Number distinct keys 0..U-1 in order of first appearance.

    Returns (N,) the id of each element and (U,) the index of each id's first element.
    """
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    n = keys.numel()
    first = torch.full((unique.numel(),), n, dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(n, device=keys.device), reduce="amin")
    first_sorted, order = torch.sort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=keys.device)
    return rank[inverse], first_sorted


def _first_points_per_voxel(voxel_ids: torch.Tensor, candidates: torch.Tensor, limit: int,
                            num_voxels: int) -> torch.Tensor:
    """(N,) bool: the candidates among the first ``limit`` candidates of their voxel, in point order.

    Only voxels with more than ``limit`` candidates need the stable sort, which keeps the common
    case cheap.
    """
    counts = torch.bincount(voxel_ids[candidates], minlength=num_voxels)
    crowded = (candidates & (counts[voxel_ids] > limit)).nonzero().squeeze(1)
    if not crowded.numel():
        return candidates
    sorted_ids, order = torch.sort(voxel_ids[crowded], stable=True)
    rank = torch.arange(order.numel(), device=voxel_ids.device) - torch.searchsorted(sorted_ids, sorted_ids)
    keep = candidates.clone()
    keep[crowded[order]] = rank < limit
    return keep


def _warn_nonfinite(count: int) -> None:
    if count:
        warnings.warn(f"dropped {count} points with NaN or inf coordinates or features "
                      f"(counted in DroppedPoints.nonfinite)", RuntimeWarning, stacklevel=3)
