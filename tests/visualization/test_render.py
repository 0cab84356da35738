"""Headless rendering (bird's-eye views by matplotlib, the chase camera by Open3D's OffscreenRenderer on
software Vulkan): what the pixels show."""
import os

import numpy as np
import open3d as o3d
import pytest
import torch
from conftest import run_tool_here
from matplotlib.image import imread

from visualization import compare_active_sites, layer_panels, render_png, scene_panel, show_window
from visualization.render import Panel, bev_pixels, render_panel_images
from visualization.scene_geometry import FACE_SHADES, SITE_ADDED, SITE_FROM_INPUT, class_color, voxel_geometry
from voxelize import Voxelizer

VOXELIZER = dict(voxel_size=[0.2, 0.2, 0.2], point_cloud_range=[-8.0, -8.0, -2.0, 8.0, 8.0, 2.0],
                 max_points_per_voxel=5, max_voxels=20000)


def street(seed=0, count=3000) -> np.ndarray:
    """A ground patch, a wall and a box-shaped object: x, y, z, intensity."""
    rng = np.random.default_rng(seed)
    ground = np.column_stack([rng.uniform(-7, 7, count), rng.uniform(-7, 7, count), np.full(count, -1.5)])
    third = count // 3
    wall = np.column_stack([rng.uniform(-7, 7, third), np.full(third, 6.0), rng.uniform(-1.5, 1.5, third)])
    car = np.column_stack([rng.uniform(1, 5, third), rng.uniform(-2, 0, third), rng.uniform(-1.5, 0, third)])
    xyz = np.concatenate([ground, wall, car])
    return np.column_stack([xyz, rng.uniform(0, 1, len(xyz))]).astype(np.float32)


def pixels_near(image: np.ndarray, color, shades=FACE_SHADES, tolerance=3) -> int:
    rgb = image[..., :3].astype(float) * (255.0 if image.dtype != np.uint8 else 1.0)
    return int(sum((np.abs(rgb - np.array(color) * shade * 255).max(-1) <= tolerance).sum() for shade in shades))


def test_headless_png_shows_densification_for_a_regular_layer_not_for_subm(tmp_path):
    tensor, _ = Voxelizer(**VOXELIZER).batch([street()])
    sites = compare_active_sites("VoxelResBackBone8x", tensor, ["conv1.0.conv1"], channels=(4, 4, 4, 4),
                                 out_channels=4)
    panels = layer_panels(sites, VOXELIZER["voxel_size"], VOXELIZER["point_cloud_range"])
    assert [p.title.split(" ·")[0] for p in panels] == ["conv1.0.conv1"] * 2
    path = render_png(panels, str(tmp_path / "layers.png"), size=(640, 300), columns=2)
    image = imread(path)
    assert image.shape[:2] == (300, 640)
    assert not [name for name in os.listdir(tmp_path) if name != "layers.png"]  # no temporary left behind
    ssc, regular = image[:, :320], image[:, 320:]
    assert pixels_near(ssc, SITE_FROM_INPUT) > 500
    assert pixels_near(ssc, SITE_ADDED) == 0
    assert pixels_near(regular, SITE_ADDED) > 500


@pytest.mark.parametrize("camera", ["bev", "chase"])
def test_projection_puts_labels_on_the_geometry(camera):
    centre = np.array([[3.0, -2.0, 0.5]])
    cube = voxel_geometry(centre, np.array([0.6, 0.6, 0.6]), np.array([[0.0, 0.8, 0.0]]))
    ground = voxel_geometry(np.array([[0.0, 0.0, -1.0]]), np.array([20.0, 20.0, 0.1]), np.array([[0.9, 0.9, 0.9]]))
    panel = Panel("cube", [ground, cube], labels=[(centre[0] + [0, 0, 0.3], "top")])
    images, labels = render_panel_images([panel], 320, 240, camera, extent=(-10, -10, 10, 10))
    (column, row, text), = labels[0]
    assert text == "top"
    pixel = images[0][int(row), int(column)]
    assert pixel[1] > 150 and pixel[0] < 60 and pixel[2] < 60  # the cube's green (a face shade of it)


def test_scene_panel_draws_boxes_in_class_colours_with_scores():
    points = street()
    gt = np.array([[3.0, -1.0, -0.75, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]])
    predicted = gt + [0.3, 0.1, 0, 0, 0, 0, 0.1, 0, 0]
    panel = scene_panel(points, gt, ["car"], predicted, ["pedestrian"], [0.87])
    images, labels = render_panel_images([panel], 400, 400, "bev")
    assert pixels_near(images[0], class_color("car"), shades=(1.0,)) > 50
    assert pixels_near(images[0], class_color("pedestrian"), shades=(0.55,)) > 50
    assert [text for _, _, text in labels[0]] == ["0.87"]
    with pytest.raises(ValueError, match="1 boxes but 2 class names"):
        scene_panel(points, gt, ["car", "bus"])


def test_bev_paints_the_highest_surface_in_its_exact_colour_whatever_the_panel_order():
    ground = voxel_geometry(np.array([[0.0, 0.0, -1.0]]), np.array([8.0, 8.0, 0.2]), np.array([[0.9, 0.9, 0.9]]))
    post = voxel_geometry(np.array([[2.0, 1.0, 0.0]]), np.array([1.0, 1.0, 2.0]), np.array([[0.0, 0.8, 0.0]]))
    low_points = o3d.geometry.PointCloud(o3d.utility.Vector3dVector([[-2.0, -2.0, -0.5], [2.0, 1.0, -0.5]]))
    low_points.paint_uniform_color((1.0, 0.0, 0.0))
    extent = (-5.0, -5.0, 5.0, 5.0)
    (image,), _ = render_panel_images([Panel("p", [post, low_points, ground])], 200, 200, "bev", extent)
    top = np.round(np.array([0.0, 0.8, 0.0]) * FACE_SHADES[0] * 255)
    column, row = bev_pixels(np.array([2.0, 1.0, 0.0]), extent, 200, 200).astype(int)
    assert np.abs(image[row, column] - top).max() <= 1                      # the post, not the point under it
    inside = np.abs(image.astype(float) - top).max(-1) <= 1
    rows, columns = np.nonzero(inside)
    # 1 m at 200 / (10 * 1.02) pixels per metre: about 19.6 pixels on each side, +x up, +y to the left
    assert 18 <= rows.ptp() + 1 <= 21 and 18 <= columns.ptp() + 1 <= 21
    assert abs(rows.mean() - row) <= 1 and abs(columns.mean() - column) <= 1
    column, row = bev_pixels(np.array([-2.0, -2.0, -0.5]), extent, 200, 200).astype(int)
    assert tuple(image[row, column]) == (255, 0, 0)                         # a point above the ground shows
    ground_colour = np.round(np.array([0.9, 0.9, 0.9]) * FACE_SHADES[0] * 255)
    assert np.abs(image[100, 100] - ground_colour).max() <= 1
    assert (image[:5, :5] == 255).all()                                     # background outside the ground


def test_bev_refuses_what_it_cannot_draw():
    with pytest.raises(TypeError, match="cannot draw AxisAlignedBoundingBox from above"):
        render_panel_images([Panel("p", [o3d.geometry.AxisAlignedBoundingBox([0, 0, 0], [1, 1, 1])])], 50, 50, "bev",
                            (-1, -1, 1, 1))
    with pytest.raises(ValueError, match="unknown camera 'side'"):
        render_panel_images([Panel("p", [])], 50, 50, "side", (-1, -1, 1, 1))


def test_window_needs_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="no display"):
        show_window([Panel("x")])


def test_visualize_tool_writes_the_png(tmp_path, monkeypatch):
    scan = tmp_path / "scan.npy"
    np.save(scan, street())
    out = tmp_path / "view.png"
    monkeypatch.delenv("DISPLAY", raising=False)
    result = run_tool_here("visualize", "--scan", scan, "--layers", "conv_input.0", "--view-range", -8, -8, 8, 8,
                           "--size", 600, 900, "--save", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert imread(out).shape[:2] == (900, 600)
    bad = run_tool_here("visualize", "--scan", scan, "--layers", "conv7", cwd=tmp_path)
    assert bad.returncode != 0 and "valid layer names" in bad.stderr
    names = run_tool_here("visualize", "--scan", scan, "--list-layers", cwd=tmp_path)
    assert names.returncode == 0 and names.stdout.split()[:2] == ["conv_input.0", "conv1.0.conv1"]


def test_footprint_shows_each_column_once_blue_when_it_covers_the_input():
    from visualization.active_sites import LayerSites
    from visualization.panels import layer_panel

    # Column (y=1, x=1): an input site at z=0 and a site added above it at z=1; column (1, 2): added only.
    sites = LayerSites("conv", "regular", torch.tensor([[0, 0, 1, 1]]), (1, 1, 1),
                       torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 2]]), (1, 1, 1))
    full = layer_panel(sites, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 4.0, 4.0, 4.0], "conv")
    assert len(full.geometries[0].triangles) == 3 * 12 and "3 sites, 67% added" in full.title
    above = layer_panel(sites, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 4.0, 4.0, 4.0], "conv", footprint=True)
    mesh = above.geometries[0]
    assert len(mesh.triangles) == 2 * 12 and "3 sites, 67% added" in above.title
    vertices, colors = np.asarray(mesh.vertices).reshape(2, 24, 3), np.asarray(mesh.vertex_colors).reshape(2, 24, 3)
    by_x = {round(v[:, 0].mean(), 3): (v[:, 2].max(), c.max(0) / max(c.max(), 1e-9)) for v, c in zip(vertices, colors)}
    top, color = by_x[1.5]
    assert top == 2.0 and np.allclose(color, np.array(SITE_FROM_INPUT) / max(SITE_FROM_INPUT))  # top site, blue
    assert np.allclose(by_x[2.5][1], np.array(SITE_ADDED) / max(SITE_ADDED))
