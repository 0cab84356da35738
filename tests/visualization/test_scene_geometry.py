"""Box line sets and voxel cells against independent box maths."""
import math

import numpy as np
import pytest

from datasets.boxes import box_corners, points_in_box
from visualization.scene_geometry import LINES_PER_BOX, box_line_set, box_lines, voxel_cells, voxel_geometry

BOXES = np.array([[10.0, -4.0, -0.5, 4.5, 1.9, 1.6, 0.7, 1.0, 0.0],
                  [-3.0, 2.0, 0.2, 0.8, 0.6, 1.8, -2.9, 0.0, 0.0],
                  [0.0, 0.0, 0.0, 12.0, 2.9, 3.8, math.pi / 2, 0.0, 0.0]])


def rotation_matrix(yaw):
    return np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])


def test_corners_are_where_the_box_maths_puts_them():
    corners = box_corners(BOXES)
    assert corners.shape == (3, 8, 3)
    for box, box_corners_ in zip(BOXES, corners):
        # Independent: every sign combination of the half sizes, rotated and shifted.
        expected = {tuple(np.round(rotation_matrix(box[6]) @ (np.array(signs) * box[3:6] / 2) + box[:3], 9))
                    for signs in np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).T.reshape(-1, 3)}
        assert {tuple(np.round(c, 9)) for c in box_corners_} == expected
        assert points_in_box(box_corners_, box, margin=1e-9).all()
        centre = box[:3]
        assert not points_in_box(centre + 1.01 * (box_corners_ - centre), box).any()
    with pytest.raises(ValueError, match="shape"):
        box_corners(np.zeros((2, 5)))


def test_line_set_has_twelve_edges_and_a_heading_mark_per_box():
    vertices, lines = box_lines(BOXES)
    assert lines.shape == (3 * LINES_PER_BOX, 2) and LINES_PER_BOX == 13
    for index, box in enumerate(BOXES):
        own = lines[index * 13:(index + 1) * 13]
        segments = vertices[own[:, 1]] - vertices[own[:, 0]]
        lengths = np.linalg.norm(segments[:12], axis=1)
        # 4 edges each of length dx, dy, dz.
        assert sorted(np.round(lengths, 9)) == sorted(np.round(np.repeat(box[3:6], 4), 9))
        corners = box_corners(box[None])[0]
        assert {tuple(np.round(v, 9)) for v in vertices[own[:12].ravel()]} == {tuple(np.round(c, 9)) for c in corners}
        # The heading mark: from the top face's centre, dx/2 along the heading.
        start, mark = vertices[own[12, 0]], segments[12]
        np.testing.assert_allclose(start, box[:3] + [0, 0, box[5] / 2], atol=1e-9)
        np.testing.assert_allclose(mark, box[3] / 2 * np.array([math.cos(box[6]), math.sin(box[6]), 0]), atol=1e-9)
    line_set = box_line_set(BOXES, [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
    assert len(line_set.lines) == 39
    np.testing.assert_array_equal(np.asarray(line_set.colors)[13:26], np.tile([0, 1, 0], (13, 1)))


def test_voxel_cells_cover_the_input_voxels_of_a_strided_site():
    voxel_size, pc_range = [0.1, 0.1, 0.2], [-5.0, -4.0, -3.0, 5.0, 4.0, 1.0]
    centres, size = voxel_cells(np.array([[0, 3, 2, 7]]), (2, 4, 4), voxel_size, pc_range)
    np.testing.assert_allclose(size, [0.4, 0.4, 0.4])
    # x: input voxels 28..31 → metres -5 + 2.8 .. -5 + 3.2; y: 8..11; z: 6..7.
    np.testing.assert_allclose(centres[0], [-5 + 3.0, -4 + 1.0, -3 + 1.4])
    mesh = voxel_geometry(centres, size, np.array([[1.0, 0.5, 0.0]]))
    np.testing.assert_allclose(np.asarray(mesh.vertices).min(0), centres[0] - 0.2)
    np.testing.assert_allclose(np.asarray(mesh.vertices).max(0), centres[0] + 0.2)
    assert len(mesh.triangles) == 12
    triangles = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]          # (12, 3, 3)
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    outward = triangles.mean(axis=1) - centres[0]
    assert ((normals * outward).sum(axis=1) > 0).all()  # front faces outside: none culled from outside
    many = voxel_geometry(np.zeros((5, 3)), size, np.zeros((5, 3)), max_cubes=4)
    assert len(many.points) == 5  # above the limit: points at the centres
