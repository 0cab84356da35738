"""The synthetic LiDAR models: beams where the spec puts them, and the HDL-64E option end to end."""
import numpy as np
import pytest
from conftest import levelled

from datasets.boxes import points_in_box
from datasets.nuscenes_dataset import NuScenesDataset
from datasets.nuscenes_writer import TRAIN_SPLIT, make_synthetic_database
from datasets.synthetic_world import HDL32E, HDL64E, random_scene, ray_cast


@pytest.mark.parametrize("lidar, beams, lowest, highest", [(HDL32E, 32, -30.67, 10.67), (HDL64E, 64, -24.9, 2.0)])
def test_returns_lie_on_the_beams_of_the_spec(lidar, beams, lowest, highest):
    scene = random_scene(np.random.default_rng(3), duration=1.0, lidar=lidar)
    sweep = ray_cast(scene, 0.0, np.random.default_rng(4))
    xyz, ring = sweep.points[:, :3].astype(np.float64), sweep.points[:, 4].astype(int)
    # Range noise moves a return along its ray, so its elevation stays the beam's.
    elevation = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    expected = np.asarray(lidar.elevations_deg)[ring]
    np.testing.assert_allclose(elevation, expected, atol=0.05)
    assert len(lidar.elevations_deg) == beams and min(lidar.elevations_deg) == lowest
    assert max(lidar.elevations_deg) == highest
    assert len(np.unique(ring)) > beams * 0.5  # most beams see something (the upward ones may miss)
    assert len(sweep.points) <= beams * lidar.azimuth_steps
    assert np.sqrt((xyz ** 2).sum(1)).max() <= lidar.max_range + 0.2


def test_hdl64e_database_is_denser_and_consistent(tmp_path):
    counts = {}
    for lidar in ("hdl32e", "hdl64e"):
        root = tmp_path / lidar
        make_synthetic_database(str(root), scenes=1, seed=11, keyframes_per_scene=1, lidar=lidar)
        dataset = NuScenesDataset(str(root), "v1.0-synthetic", TRAIN_SPLIT, num_sweeps=1)
        frame = dataset[0]
        points = frame["points"]
        counts[lidar] = len(points)
        # The annotations agree with the points of this sensor: num_lidar_pts = points in the box
        # (to one point: the files hold float32, the writer counted in float64, hits lie on faces).
        level_points, level_boxes = levelled(frame)  # counted in the world, where boxes are upright
        for box, count in zip(level_boxes, frame["meta"]["num_lidar_pts"]):
            inner, outer = (int(points_in_box(level_points, box, margin=m).sum()) for m in (-0.005, 0.005))
            assert inner <= count <= outer
    assert counts["hdl64e"] > 2.5 * counts["hdl32e"]  # 64 beams x 2048 steps vs 32 x 1080
