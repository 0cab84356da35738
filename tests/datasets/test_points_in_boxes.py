"""points_in_boxes (points sorted by x once, each box testing only its reach) finds what points_in_box,
the plain test of every point against one box, finds: on random boxes, on points lying on faces, and on
the real key frame's annotated boxes."""
import json
import math

import numpy as np
import pytest
from conftest import NUSCENES_KEYFRAME

from datasets import read_points
from datasets.boxes import points_in_box, points_in_boxes


def assert_same_as_box_by_box(points, boxes, margin=0.0):
    found = points_in_boxes(points, boxes, margin)
    assert len(found) == len(boxes)
    for box, inside in zip(boxes, found):
        assert np.array_equal(inside, np.flatnonzero(points_in_box(points, box, margin))), box
    return found


def test_random_boxes_and_margins():
    rng = np.random.default_rng(0)
    points = rng.uniform(-20, 20, (20000, 4)).astype(np.float32)
    boxes = np.column_stack([rng.uniform(-22, 22, (60, 3)), rng.uniform(0.2, 12, (60, 3)),
                             rng.uniform(-math.pi, math.pi, 60), rng.normal(0, 3, (60, 2))]).astype(np.float32)
    for margin in (0.0, 0.25, -0.1):
        found = assert_same_as_box_by_box(points, boxes, margin)
        assert sum(len(f) for f in found) > 1000 and any(len(f) == 0 for f in found)
    assert points_in_boxes(points, np.zeros((0, 9), np.float32)) == [] == points_in_boxes(points, np.zeros(0))
    with pytest.raises(ValueError, match=r"boxes must be \(M, >=7\).*got shape \(9,\)"):
        points_in_boxes(points, boxes[0])  # one box, not a list of one
    assert [len(f) for f in points_in_boxes(np.zeros((0, 4), np.float32), boxes)] == [0] * len(boxes)


def test_points_on_the_faces_of_turned_boxes():
    """A 4 x 2 m box turned by a right angle reaches 1 m along x: points 0.1 mm within its faces and corners
    are inside, 1 mm beyond not, as points_in_box says; and the corners of a box turned by 45 degrees (its
    reach the half diagonal) are found."""
    inner = 1 - 1e-4
    edge = np.array([[inner, 2 * inner, 0.0], [-inner, -2 * inner, 0.5], [inner, 0.0, 0.0], [1.001, 0.0, 0.0]],
                    np.float32)
    turned = np.array([[0, 0, 0, 4, 2, 1, math.pi / 2]], np.float32)
    found = assert_same_as_box_by_box(edge, turned)
    assert list(found[0]) == [0, 1, 2]
    diagonal = np.array([[0, 0, 0, 2, 2, 1, math.pi / 4]], np.float32)
    corners = np.array([[math.sqrt(2) - 1e-5, 0, 0], [0, -math.sqrt(2) + 1e-5, 0]], np.float32)
    assert list(assert_same_as_box_by_box(corners, diagonal)[0]) == [0, 1]


def test_the_real_key_frame_boxes(real_file):
    points = read_points(str(real_file(NUSCENES_KEYFRAME)))
    info = json.loads(real_file("nuscenes/keyframe_boxes.json").read_text())["data_list"][0]
    boxes = np.array([instance["bbox_3d"] for instance in info["instances"]])
    found = assert_same_as_box_by_box(points, boxes)
    assert sum(len(f) > 0 for f in found) > 20
