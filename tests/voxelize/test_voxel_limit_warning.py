"""A preset voxelizer that drops points at its voxel limit says so once, with the count (as for
non-finite points); a model's voxelizer keeps its published limits quietly."""
import warnings

import numpy as np
import pytest
from conftest import KITTI_SCANS

from datasets import read_points
from voxelize import Voxelizer
from voxelize.presets import preset_voxelizer

SMALL = dict(voxel_size=[0.5, 0.5, 0.5], point_cloud_range=[-4.0, -4.0, -2.0, 4.0, 4.0, 2.0])


def cloud(n=2000, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(-3.9, 3.9, (n, 2)), rng.uniform(-1.9, 1.9, n),
                            rng.uniform(0, 1, n)]).astype(np.float32)


def limit_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "max_voxels" in str(w.message)]


def test_a_voxel_limit_drop_warns_once_per_call_with_the_count():
    voxelizer = Voxelizer(**SMALL, max_points_per_voxel=100, max_voxels=50, warn_voxel_limit=True)
    points = cloud()
    voxels_of_point = {tuple(v) for v in np.floor((points[:, :3] - [-4, -4, -2]) / 0.5).astype(int)}
    assert len(voxels_of_point) > 50  # an independent count: more occupied voxels than the limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        voxels = voxelizer(points)
        tensor, dropped = voxelizer.batch([points, points[:10]])
    assert voxels.dropped.voxel_limit > 0 and voxels.features.shape[0] == 50
    messages = limit_warnings(caught)
    assert messages == [f"dropped {voxels.dropped.voxel_limit} points whose voxels came after the first "
                        f"max_voxels=50 voxels of their cloud (counted in DroppedPoints.voxel_limit); raise "
                        f"max_voxels to keep them",
                        f"dropped {dropped[0].voxel_limit + dropped[1].voxel_limit} points whose voxels came after "
                        f"the first max_voxels=50 voxels of their cloud (counted in DroppedPoints.voxel_limit); "
                        f"raise max_voxels to keep them"]


def test_no_warning_without_a_drop_or_for_a_model_voxelizer():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Voxelizer(**SMALL, max_points_per_voxel=100, max_voxels=50)(cloud())          # a model's: quiet
        Voxelizer(**SMALL, max_points_per_voxel=100, max_voxels=10_000, warn_voxel_limit=True)(cloud())  # no drop
    assert limit_warnings(caught) == []


@pytest.mark.parametrize("relative", KITTI_SCANS[:1])
def test_the_kitti_preset_warns_on_a_real_scan_that_exceeds_its_limit(real_file, relative):
    points = read_points(str(real_file(relative)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        voxels = preset_voxelizer("kitti")(points)
    assert voxels.dropped.voxel_limit > 0  # 40000 voxels of 5 cm do not hold a whole HDL-64E scan
    assert limit_warnings(caught) == [limit_warnings(caught)[0]] and \
        limit_warnings(caught)[0].startswith(f"dropped {voxels.dropped.voxel_limit} points")
