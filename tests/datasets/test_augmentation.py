"""Augmentations move points, boxes and velocities together: a point inside a box stays inside."""
import math

import numpy as np
import pytest

from datasets.augmentation import Augmenter, flip, rotate, sample_rng, scale, tilt_sensor
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


def test_tilt_turns_the_ground_plane_and_keeps_points_with_their_boxes():
    points, boxes = scene()
    rng = np.random.default_rng(4)
    ground = np.column_stack([rng.uniform(-40, 40, (500, 2)), np.full(500, -1.84), np.zeros(500)])
    pitch, roll = 0.024, -0.006  # nuScenes' LIDAR_TOP of the real key frame, about
    tilted, moved = tilt_sensor(np.concatenate([ground, points]), boxes, pitch, roll)
    # the ground's normal turns by the tilt: a plane fitted to the tilted ground
    fit, *_ = np.linalg.lstsq(np.column_stack([tilted[:500, :2], np.ones(500)]), tilted[:500, 2], rcond=None)
    normal = np.array([-fit[0], -fit[1], 1.0]) / np.linalg.norm([-fit[0], -fit[1], 1.0])
    assert math.acos(normal[2]) == pytest.approx(math.acos(math.cos(pitch) * math.cos(roll)), rel=1e-6)
    assert fit[0] == pytest.approx(-math.tan(pitch), rel=1e-3)  # pitch about +y raises the ground behind (-x)
    # rigid: distances kept; boxes upright with their sizes, yaw and velocity; points stay with their box
    before = np.concatenate([ground, points])
    np.testing.assert_allclose(np.linalg.norm(tilted[:, :3], axis=1), np.linalg.norm(before[:, :3], axis=1))
    np.testing.assert_array_equal(moved[:, 3:], boxes[:, 3:])
    for box, new_box in zip(boxes, moved):
        inside = points_in_box(points[:, :3], box)
        margin = 0.5 * np.linalg.norm(box[3:6]) * math.hypot(pitch, roll)
        assert points_in_box(tilted[500:, :3], new_box, margin=margin)[inside].all()


def test_tilt_off_draws_nothing_and_on_stays_within_its_range():
    points, boxes = scene()
    plain = Augmenter()(points, boxes, sample_rng(1, 2, 3))
    off = Augmenter(tilt=0.0)(points, boxes, sample_rng(1, 2, 3))
    assert np.array_equal(plain[0], off[0]) and np.array_equal(plain[1], off[1])
    level = Augmenter(rotation=[0, 0], scaling=[1, 1], flip_x=0, flip_y=0, translation_std=[0, 0, 0])
    ground = np.column_stack([np.random.default_rng(0).uniform(-40, 40, (200, 2)), np.full(200, -1.84),
                              np.zeros(200)])
    angles = []
    for index in range(30):
        tilted, _ = Augmenter(**{**level.__dict__, "tilt": 0.03})(ground, np.zeros((0, 9)), sample_rng(0, 0, index))
        fit, *_ = np.linalg.lstsq(np.column_stack([tilted[:, :2], np.ones(len(tilted))]), tilted[:, 2], rcond=None)
        angles.append((math.atan(-fit[0]), math.atan(fit[1])))  # pitch, roll (small angles)
    angles = np.abs(np.array(angles))
    assert angles.max() <= 0.03 + 1e-4 and angles.max() > 0.02 and angles.min(0).max() < 0.01


def keeps_to_the_right(boxes):
    """For each box, whether the origin (the street's middle, for traffic around the ego) lies to its left."""
    heading = np.column_stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])])
    return heading[:, 0] * -boxes[:, 1] - heading[:, 1] * -boxes[:, 0] > 0


def test_a_half_turn_keeps_the_traffic_hand_where_a_flip_reverses_it():
    points, boxes = scene()
    still = dict(rotation=[0, 0], scaling=[1, 1], flip_x=0, flip_y=0, translation_std=[0, 0, 0])
    turned_points, turned = Augmenter(**still, half_turn=1.0)(points, boxes, sample_rng(0, 0, 0))
    np.testing.assert_allclose(turned_points[:, :2], -points[:, :2], atol=1e-4)
    np.testing.assert_allclose(turned[:, [0, 1, 7, 8]], -boxes[:, [0, 1, 7, 8]], atol=1e-4)
    np.testing.assert_allclose(np.cos(turned[:, 6] - boxes[:, 6]), -1, atol=1e-6)
    np.testing.assert_array_equal(turned[:, [2, 3, 4, 5]], boxes[:, [2, 3, 4, 5]].astype(np.float32))
    hand = keeps_to_the_right(boxes)
    turns, mirrors = set(), set()
    for index in range(40):
        rng = sample_rng(0, 0, index)
        turning = Augmenter(flip_x=0, flip_y=0, half_turn=0.5, translation_std=[0, 0, 0])
        turns.add(tuple(keeps_to_the_right(turning(points, boxes, rng)[1])))
        rng = sample_rng(0, 0, index)
        mirrors.add(tuple(keeps_to_the_right(Augmenter(translation_std=[0, 0, 0])(points, boxes, rng)[1])))
    assert turns == {tuple(hand)}                          # every draw keeps each box's side
    assert mirrors == {tuple(hand), tuple(~hand)}          # the flips swap it in some draws


def test_half_turn_off_draws_nothing():
    points, boxes = scene()
    plain = Augmenter()(points, boxes, sample_rng(1, 2, 3))
    off = Augmenter(half_turn=0.0)(points, boxes, sample_rng(1, 2, 3))
    assert np.array_equal(plain[0], off[0]) and np.array_equal(plain[1], off[1])
