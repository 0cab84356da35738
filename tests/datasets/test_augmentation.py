"""Augmentations move points, boxes and velocities together: a point inside a box stays inside."""
import math

import numpy as np
import pytest

from datasets.augmentation import Augmenter, flip, rotate, sample_rng, scale
from datasets.boxes import points_in_box, rotation_z


def scene(seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.column_stack([rng.uniform(-20, 20, (6, 2)), rng.uniform(-1, 1, 6), rng.uniform(1, 5, (6, 3)),
                             rng.uniform(-math.pi, math.pi, 6), rng.uniform(-5, 5, (6, 2))])
    inside = []
    for box in boxes:  # points inside each box, in its own frame, then placed
        local = rng.uniform(-0.45, 0.45, (50, 3)) * box[3:6]
        inside.append(local @ rotation_z(box[6]).T + box[:3])
    points = np.concatenate([np.concatenate(inside), rng.uniform(-30, 30, (300, 3))])
    return np.column_stack([points, rng.uniform(0, 1, len(points))]), boxes


@pytest.mark.parametrize("transform", [
    lambda p, b: rotate(p, b, 0.7), lambda p, b: scale(p, b, 1.1), lambda p, b: flip(p, b, "x"),
    lambda p, b: flip(p, b, "y"), lambda p, b: Augmenter()(p, b, sample_rng(0, 3, 7)),
])
def test_points_stay_in_their_boxes(transform):
    points, boxes = scene()
    before = [points_in_box(points, box) for box in boxes]
    new_points, new_boxes = transform(points, boxes)
    for box, mask in zip(new_boxes, before):
        assert mask.sum() >= 50
        assert np.array_equal(points_in_box(new_points, box, margin=1e-4), mask)
    assert np.all(np.abs(new_boxes[:, 6]) <= math.pi + 1e-6)


def test_velocity_follows_the_motion():
    _, boxes = scene()
    _, rotated = rotate(np.zeros((0, 4)), boxes, math.pi / 2)
    np.testing.assert_allclose(rotated[:, 7:9], np.column_stack([-boxes[:, 8], boxes[:, 7]]), atol=1e-9)
    _, mirrored = flip(np.zeros((0, 4)), boxes, "x")
    np.testing.assert_allclose(mirrored[:, 7:9], boxes[:, 7:9] * [1, -1])
    # The heading of a mirrored box points along its mirrored velocity direction when they agreed.
    aligned = boxes.copy()
    aligned[:, 7:9] = np.column_stack([np.cos(aligned[:, 6]), np.sin(aligned[:, 6])])
    for axis in ("x", "y"):
        _, out = flip(np.zeros((0, 4)), aligned, axis)
        np.testing.assert_allclose(np.column_stack([np.cos(out[:, 6]), np.sin(out[:, 6])]), out[:, 7:9], atol=1e-9)


def test_augmentation_is_reproducible_per_sample_and_epoch():
    points, boxes = scene()
    a = Augmenter()(points, boxes, sample_rng(1, 2, 3))
    b = Augmenter()(points, boxes, sample_rng(1, 2, 3))
    c = Augmenter()(points, boxes, sample_rng(1, 3, 3))
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
