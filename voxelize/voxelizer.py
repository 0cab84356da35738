"""Points → voxels with mean features, and a list of clouds → one batched SparseTensor."""
from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass

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


@dataclass
class Voxels:
    """One voxelized cloud.

    features: (V, C) float32, the mean of each voxel's kept points (all C input columns).
    coords: (V, 3) int32 ``[z, y, x]`` voxel indices, in order of first appearance in the cloud.
    num_points: (V,) int32 points averaged into each voxel.
    spatial_shape: the grid (D, H, W).
    dropped: counts of the dropped points by reason.
    point_voxel_ids: (N,) int64 voxel row of each input point, -1 where the point was dropped
        (computed on first access from the in-range points' voxel ids).
    """
    features: torch.Tensor
    coords: torch.Tensor
    num_points: torch.Tensor
    spatial_shape: tuple[int, int, int]
    dropped: DroppedPoints
    num_input_points: int
    in_range_points: torch.Tensor | None  # (M,) indices of the in-range points; None when all are
    in_range_voxel_ids: torch.Tensor      # (M,) their voxel row, -1 where dropped by a limit

    @functools.cached_property
    def point_voxel_ids(self) -> torch.Tensor:
        if self.in_range_points is None:
            return self.in_range_voxel_ids
        ids = self.in_range_voxel_ids.new_full((self.num_input_points,), -1)
        return ids.index_copy_(0, self.in_range_points, self.in_range_voxel_ids)

    def summary(self) -> dict:
        """Plain statistics: points in and dropped (by reason), voxels, grid occupancy, points per voxel."""
        depth, height, width = self.spatial_shape
        counts = self.num_points.float()
        return {
            "points": self.num_input_points,
            "dropped": dataclasses.asdict(self.dropped),
            "voxels": self.coords.shape[0],
            "spatial_shape": list(self.spatial_shape),
            "occupancy": self.coords.shape[0] / (depth * height * width),
            "points_per_voxel_mean": float(counts.mean()) if counts.numel() else 0.0,
            "points_per_voxel_max": int(counts.max()) if counts.numel() else 0,
        }


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
        warn_voxel_limit: warn (once per call, with the count) when ``max_voxels`` drops points, as
            for non-finite points; off for models, whose voxel limits are part of the published recipe.

    The grid is ``round((p1 - p0) / v)`` voxels per axis (float32, as spconv), exposed as
    ``spatial_shape = (D, H, W)`` in z, y, x. Memory is O(points), never O(grid).
    """

    def __init__(self, voxel_size, point_cloud_range, max_points_per_voxel: int | None = None,
                 max_voxels: int | None = None, mode: str = "hard", warn_voxel_limit: bool = False):
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
        self.warn_voxel_limit = warn_voxel_limit
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
        self._warn_voxel_limit(voxels.dropped.voxel_limit)
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
        self._warn_voxel_limit(sum(v.dropped.voxel_limit for v in per_cloud))
        coords = torch.cat([
            torch.cat([torch.full((v.coords.shape[0], 1), b, dtype=torch.int32, device=v.coords.device),
                       v.coords], dim=1)
            for b, v in enumerate(per_cloud)])
        features = torch.cat([v.features for v in per_cloud])
        tensor = SparseTensor(features, coords, self.spatial_shape, len(clouds), check=False)
        return tensor, [v.dropped for v in per_cloud]

    def _warn_voxel_limit(self, count: int) -> None:
        if count and self.warn_voxel_limit:
            warnings.warn(f"dropped {count} points whose voxels came after the first max_voxels={self.max_voxels} "
                          f"voxels of their cloud (counted in DroppedPoints.voxel_limit); raise max_voxels to keep "
                          f"them", RuntimeWarning, stacklevel=3)

    def _voxelize(self, points: torch.Tensor) -> Voxels:
        # Gathers and scatters use index_select / index_copy_ (3-4x faster than x[idx] on CPU). Large
        # fresh temporaries cost page faults on every call (glibc hands them back to the OS), so the
        # grid is computed in place, row by row in a (3, N) layout.
        device = points.device
        num_input = points.shape[0]
        dropped = DroppedPoints()
        low = torch.as_tensor(self.point_cloud_range[:3], device=device).unsqueeze(1)
        size = torch.as_tensor(self.voxel_size, device=device).unsqueeze(1)
        grid = points[:, :3].t().clone(memory_format=torch.contiguous_format)
        grid.sub_(low).div_(size).floor_()  # float32 arithmetic, as spconv's CPU path
        valid = grid[0] >= 0
        for axis, extent in enumerate(self.grid_size_xyz):
            if axis:
                valid &= grid[axis] >= 0
            valid &= grid[axis] < extent
        # Any NaN or inf makes the sum non-finite, so one reduction settles the common case.
        if not bool(torch.isfinite(points.sum())):
            finite = torch.isfinite(points).all(dim=1)
            dropped.nonfinite = num_input - int(finite.sum())
            valid &= finite
        kept_points = None
        num_valid = int(valid.sum())
        if num_valid < num_input:
            dropped.out_of_range = num_input - dropped.nonfinite - num_valid
            kept_points = valid.nonzero().squeeze(1)
            points, grid = points.index_select(0, kept_points), grid.index_select(1, kept_points)
        width, height, depth = self.grid_size_xyz
        # int32 keys sort 1.7x faster than int64; use them whenever the grid allows.
        keys = grid.to(torch.int32 if width * height * depth < 2**31 else torch.int64)
        keys = keys[2].mul_(height).add_(keys[1]).mul_(width).add_(keys[0])

        if self.mode == "hard":
            limits = (self.max_voxels, self.max_points_per_voxel)
        else:
            limits = (num_valid, num_valid)
        voxel_ids, num_points, first_point, points_in_voxels = _assign_voxels(keys, *limits)
        num_voxels = first_point.numel()
        dropped.voxel_limit = num_valid - int(points_in_voxels.sum())
        dropped.voxel_full = int((points_in_voxels - num_points).sum())

        # Summing channel by channel (a (C, N) source) is 2.4x faster than row-wise index_add_.
        sums = points.new_zeros((points.shape[1], num_voxels + 1)).index_add_(1, voxel_ids, points.t())
        features = sums[:, :num_voxels].div_(num_points.to(sums.dtype)).t().contiguous()
        coords = grid.index_select(1, first_point).flip(0).t().to(torch.int32)  # xyz → zyx
        voxel_ids.masked_fill_(voxel_ids == num_voxels, -1)
        return Voxels(features, coords, num_points.to(torch.int32), self.spatial_shape, dropped, num_input,
                      kept_points, voxel_ids)


def _assign_voxels(keys: torch.Tensor, max_voxels: int, max_points_per_voxel: int):
    """Group points by voxel key, as spconv's ``PointToVoxel`` does, without a dense grid.

    Args:
        keys: (N,) int32 or int64 voxel key of each point.
        max_voxels: keep the first this-many voxels in order of first appearance.
        max_points_per_voxel: keep the first this-many points of each voxel in point order.
    Returns:
        voxel_ids (N,) int64: each point's voxel, numbered in order of first appearance; V for
            points not assigned (beyond the voxel limit or the point limit);
        num_points (V,) int64: points assigned to each voxel;
        first_point (V,) int64: index of each voxel's first point;
        points_in_voxels (V,) int64: points falling in each voxel, before the point limit.
    """
    n = keys.numel()
    device = keys.device
    # A stable sort groups each voxel's points contiguously and keeps them in point order, so the
    # group start is the voxel's first point and the offset from it is the point's rank.
    sorted_keys, order = torch.sort(keys, stable=True)
    starts_group = torch.ones(n, dtype=torch.bool, device=device)
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=starts_group[1:])
    group_start = starts_group.nonzero().squeeze(1)
    group_size = torch.diff(group_start, append=group_start.new_full((1,), n))
    group_first = order.index_select(0, group_start)
    # Voxels are numbered by their first point: a running count over the first-point flags.
    is_first = torch.zeros(n, dtype=torch.bool, device=device)
    is_first.index_fill_(0, group_first, True)
    group_voxel = torch.cumsum(is_first, 0).sub_(1).index_select(0, group_first)
    first_point = is_first.nonzero().squeeze(1)
    num_voxels = min(first_point.numel(), max_voxels)

    group = torch.cumsum(starts_group, 0).sub_(1)
    rank = torch.arange(n, device=device).sub_(group_start.index_select(0, group))
    voxel_sorted = group_voxel.index_select(0, group)
    voxel_sorted.masked_fill_((voxel_sorted >= num_voxels) | (rank >= max_points_per_voxel), num_voxels)
    voxel_ids = torch.empty_like(voxel_sorted)
    voxel_ids.index_copy_(0, order, voxel_sorted)
    points_in_voxels = torch.empty_like(group_size)
    points_in_voxels.index_copy_(0, group_voxel, group_size)
    points_in_voxels = points_in_voxels[:num_voxels]
    num_points = points_in_voxels.clamp_max(max_points_per_voxel)
    return voxel_ids, num_points, first_point[:num_voxels], points_in_voxels


def _warn_nonfinite(count: int) -> None:
    if count:
        warnings.warn(f"dropped {count} points with NaN or inf coordinates or features "
                      f"(counted in DroppedPoints.nonfinite)", RuntimeWarning, stacklevel=3)
