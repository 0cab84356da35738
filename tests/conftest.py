"""Shared test fixtures: the real scans beside the checkout (tests skip when they are absent)."""
import os
from pathlib import Path

import pytest

REAL_DATA = Path(os.environ.get("SPARSEVOX_REAL_DATA",
                                Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))

KITTI_SCANS = ["kitti/velodyne/000000.bin", "kitti/velodyne/000001.bin"]
NUSCENES_KEYFRAME = "nuscenes/n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin"
NUSCENES_SWEEPS = "nuscenes/sweeps10_float16_N5.bin"


@pytest.fixture
def real_file():
    """Returns a function: relative path under ../shared/data/real → Path, skipping when absent."""
    def find(relative: str) -> Path:
        path = REAL_DATA / relative
        if not path.is_file():
            pytest.skip(f"real data not available: {path}")
        return path
    return find
