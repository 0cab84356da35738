"""Reading LiDAR point files into (N, C) float32 arrays."""
from __future__ import annotations

import os
import re

import numpy as np

_WIDTH_IN_NAME = re.compile(r"_N(\d+)(?=[._])")


def point_file_layout(path: str) -> tuple[np.dtype, int]:
    """The (dtype, values per point) that :func:`read_points` assumes for ``path`` by its name.

    - ``*.pcd.bin``: nuScenes LIDAR_TOP, float32 x 5 (x, y, z, intensity, ring index).
    - a name holding ``float16`` and ``_N<k>``: a float16 stack of k values per point, e.g. the
      10-sweep ``sweeps10_float16_N5.bin`` (x, y, z, intensity, time lag).
    - any other ``*.bin``: KITTI velodyne, float32 x 4 (x, y, z, reflectance).
    """
    name = os.path.basename(path)
    dtype = np.dtype(np.float16 if "float16" in name else np.float32)
    width_match = _WIDTH_IN_NAME.search(name)
    if width_match:
        return dtype, int(width_match.group(1))
    if name.endswith(".pcd.bin"):
        return dtype, 5
    if name.endswith(".bin"):
        return dtype, 4
    raise ValueError(f"{path}: cannot tell the point layout from the name; pass dtype= and point_width=")


def read_points(path: str, point_width: int | None = None, dtype=None) -> np.ndarray:
    """Read a LiDAR point file as an (N, point_width) float32 array.

    Args:
        path: a raw ``.bin`` file (KITTI ``.bin``, nuScenes ``.pcd.bin``, float16 stacks; see
            :func:`point_file_layout` for the layout each name implies) or a ``.npy`` array of
            shape (N, C>=3).
        point_width: values per point, overriding the name-based guess (raw files only).
        dtype: stored value type, overriding the name-based guess (raw files only).
    Raises:
        ValueError: the file size is not a whole number of points (naming the file, its size
            and the point width), or a ``.npy`` array is not a 2-D float array with >= 3 columns.
        FileNotFoundError: no such file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"point file not found: {path}")
    if path.endswith(".npy"):
        points = np.load(path, allow_pickle=False)
        if points.ndim != 2 or points.shape[1] < 3 or not np.issubdtype(points.dtype, np.floating):
            raise ValueError(f"{path}: expected a 2-D float array (N, C>=3), got {points.dtype} {points.shape}")
        return points.astype(np.float32, copy=False)
    guessed_dtype, guessed_width = (None, None)
    if point_width is None or dtype is None:
        guessed_dtype, guessed_width = point_file_layout(path)
    dtype = np.dtype(dtype) if dtype is not None else guessed_dtype
    point_width = int(point_width) if point_width is not None else guessed_width
    if point_width < 3:
        raise ValueError(f"{path}: point_width must be >= 3 (x, y, z, ...), got {point_width}")
    size = os.path.getsize(path)
    point_bytes = point_width * dtype.itemsize
    if size % point_bytes:
        raise ValueError(f"{path}: size {size} bytes is not a whole number of points of "
                         f"{point_width} x {dtype.name} ({point_bytes} bytes each)")
    return np.fromfile(path, dtype=dtype).reshape(-1, point_width).astype(np.float32, copy=False)
