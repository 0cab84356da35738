"""Open3D geometry for LiDAR scenes: point clouds, boxes with a heading mark, active voxels.

The arrays behind each geometry come from plain numpy functions (``box_lines``, ``voxel_cells``)
so their maths is testable without rendering. Boxes follow the project convention
``(x, y, z, dx, dy, dz, yaw, ...)``, z the box centre, dx along the heading.
"""
from __future__ import annotations

import colorsys
import zlib

import numpy as np

from datasets.boxes import BOX_EDGES, box_corners
from optional_dependencies import require

o3d = require("open3d", "the Open3D views")

LINES_PER_BOX = len(BOX_EDGES) + 1  # the edges and a heading mark

# Distinct colours for the nuScenes detection classes and KITTI's; other names get a stable hue.
CLASS_COLORS = {
    "car": (0.12, 0.47, 0.71), "truck": (1.00, 0.50, 0.05), "construction_vehicle": (0.55, 0.34, 0.29),
    "bus": (0.58, 0.40, 0.74), "trailer": (0.74, 0.74, 0.13), "barrier": (0.50, 0.50, 0.50),
    "motorcycle": (0.89, 0.47, 0.76), "bicycle": (0.09, 0.75, 0.81), "pedestrian": (0.84, 0.15, 0.16),
    "traffic_cone": (1.00, 0.73, 0.47),
    "Car": (0.12, 0.47, 0.71), "Van": (0.68, 0.78, 0.91), "Truck": (1.00, 0.50, 0.05),
    "Pedestrian": (0.84, 0.15, 0.16), "Person_sitting": (1.00, 0.60, 0.59), "Cyclist": (0.09, 0.75, 0.81),
    "Tram": (0.58, 0.40, 0.74), "Misc": (0.50, 0.50, 0.50),
}

# Voxel colours by origin; the shades of cube faces keep neighbouring cubes readable without lights.
SITE_FROM_INPUT = (0.27, 0.51, 0.71)
SITE_ADDED = (0.95, 0.45, 0.05)
FACE_SHADES = (1.0, 0.8, 0.65)  # faces normal to z, x, y


def class_color(name: str) -> tuple[float, float, float]:
    """The colour of a class name (a stable hue from the name when it is not a known class)."""
    if name in CLASS_COLORS:
        return CLASS_COLORS[name]
    return colorsys.hsv_to_rgb((zlib.crc32(name.encode()) % 360) / 360.0, 0.8, 0.85)


def box_lines(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (N*10, 3) and line index pairs (N*13, 2) of N boxes: per box its 8 corners, the 12
    edges, and a heading mark from the top face's centre to the middle of its front edge (+dx side)."""
    corners = box_corners(boxes)                                              # (N, 8, 3)
    top_centre = corners[:, 4:].mean(axis=1)
    front_middle = (corners[:, 4] + corners[:, 7]) / 2
    vertices = np.concatenate([corners, top_centre[:, None], front_middle[:, None]], axis=1)  # (N, 10, 3)
    per_box = np.concatenate([BOX_EDGES, [[8, 9]]])
    lines = per_box[None] + 10 * np.arange(len(corners))[:, None, None]
    return vertices.reshape(-1, 3), lines.reshape(-1, 2)


def box_line_set(boxes: np.ndarray, colors) -> o3d.geometry.LineSet:
    """A LineSet of :func:`box_lines`, one (r, g, b) per box (or one for all)."""
    vertices, lines = box_lines(boxes)
    colors = np.broadcast_to(np.asarray(colors, dtype=np.float64).reshape(-1, 3), (len(vertices) // 10, 3))
    line_set = o3d.geometry.LineSet(o3d.utility.Vector3dVector(vertices), o3d.utility.Vector2iVector(lines))
    line_set.colors = o3d.utility.Vector3dVector(np.repeat(colors, LINES_PER_BOX, axis=0))
    return line_set


def point_cloud(points: np.ndarray, color=None) -> o3d.geometry.PointCloud:
    """Points (N, >=3); one colour, or grey shades by intensity (column 3, 0..255 or 0..1) if there is one."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points[:, :3], dtype=np.float64)))
    if color is not None:
        cloud.paint_uniform_color(color)
    elif points.shape[1] > 3 and len(points):
        intensity = np.asarray(points[:, 3], dtype=np.float64)
        scale = 255.0 if intensity.max() > 1.0 else 1.0
        grey = 0.55 - 0.45 * np.clip(intensity / scale, 0, 1) ** 0.5   # brighter returns darker on white
        cloud.colors = o3d.utility.Vector3dVector(np.repeat(grey[:, None], 3, axis=1))
    else:
        cloud.paint_uniform_color((0.45, 0.45, 0.45))
    return cloud


def voxel_cells(coords: np.ndarray, tensor_stride, voxel_size, point_cloud_range) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 3) and size (3,) in metres, x-y-z, of sites ``coords`` (N, 4) [b, z, y, x] at
    ``tensor_stride`` (z, y, x): site c covers input voxels c*s .. c*s + s - 1 on each axis."""
    stride_xyz = np.asarray(tensor_stride, dtype=np.float64)[::-1]
    size = stride_xyz * np.asarray(voxel_size, dtype=np.float64)
    xyz = np.asarray(coords, dtype=np.float64)[:, [3, 2, 1]]
    return np.asarray(point_cloud_range[:3], dtype=np.float64) + (xyz + 0.5) * size, size


def voxel_geometry(centres: np.ndarray, size: np.ndarray, colors: np.ndarray, max_cubes: int = 200_000):
    """Cubes (a TriangleMesh, faces shaded by direction) at ``centres`` with edge ``size`` (3,) and
    per-voxel ``colors`` (N, 3); a PointCloud of the centres when there are more than ``max_cubes``."""
    if len(centres) > max_cubes:
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centres))
        cloud.colors = o3d.utility.Vector3dVector(colors)
        return cloud
    # 6 faces x 4 own vertices per cube, so that each face carries its own shade.
    face_corners = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (-0.5, 0.5):
            quad = np.zeros((4, 3))
            quad[:, axis] = side
            quad[:, [u, v]] = [[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]
            if np.cross(quad[1] - quad[0], quad[2] - quad[0])[axis] * side < 0:
                quad = quad[::-1]  # counter-clockwise seen from outside: the front face
            face_corners.append(quad)
    face_corners = np.stack(face_corners)                                     # (6, 4, 3)
    vertices = centres[:, None, None] + face_corners[None] * size             # (N, 6, 4, 3)
    quads = np.arange(24).reshape(6, 4)
    triangles = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    triangles = triangles[None] + 24 * np.arange(len(centres))[:, None, None]
    shades = np.array([FACE_SHADES[1]] * 2 + [FACE_SHADES[2]] * 2 + [FACE_SHADES[0]] * 2)  # x, y, z faces
    vertex_colors = colors[:, None, None, :] * shades[None, :, None, None]   # (N, 6, 1, 3)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.reshape(-1, 3)),
                                     o3d.utility.Vector3iVector(triangles.reshape(-1, 3)))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.broadcast_to(vertex_colors, vertices.shape).reshape(-1, 3))
    return mesh
