"""The built-in example cloud: the ray caster's geometry checked against the scene it casts."""
import numpy as np

from datasets.example_scene import EXAMPLE_BOXES, example_cloud, ray_box_distances


def test_ray_box_distances_against_hand_computed_hits():
    boxes = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0]])
    directions = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                           [np.sqrt(0.5), np.sqrt(0.5), 0.0]])
    distances = ray_box_distances(directions, boxes)
    assert distances[0] == 9.0 and np.isinf(distances[1:]).all()
    inside = ray_box_distances(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0]]))
    assert inside[0] == 0.0  # the origin inside a box hits it at once


def test_example_cloud_lies_on_ground_or_boxes():
    cloud = example_cloud(seed=0, range_noise=0.0)
    assert cloud.dtype == np.float32 and cloud.shape[1] == 5
    assert 25_000 < len(cloud) < 32 * 1080
    xyz = cloud[:, :3].astype(np.float64)
    on_ground = np.abs(xyz[:, 2] + 1.8) < 1e-3
    low = EXAMPLE_BOXES[:, :3] - EXAMPLE_BOXES[:, 3:] / 2 - 1e-3
    high = EXAMPLE_BOXES[:, :3] + EXAMPLE_BOXES[:, 3:] / 2 + 1e-3
    on_box = ((xyz[:, None] >= low) & (xyz[:, None] <= high)).all(axis=2).any(axis=1)
    assert (on_ground | on_box).all()
    assert on_box.sum() > 500  # the boxes are seen
    assert set(np.unique(cloud[:, 4]).astype(int)) <= set(range(32))
    assert np.array_equal(example_cloud(seed=0), example_cloud(seed=0))
