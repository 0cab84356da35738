"""Showing panels of Open3D geometry: an interactive window, or a headless multi-panel PNG.

A :class:`Panel` is a titled list of geometries with optional text labels at 3D positions (e.g.
scores). ``render_png`` draws each panel from one shared camera, then tiles them into one PNG with
the titles and labels written by matplotlib. ``show_window`` puts the panels side by side in one
interactive Open3D window.

Cameras: 'bev' looks straight down (orthographic, +x up the image, +y to the left) and is drawn by
matplotlib: the upward-facing triangles and the points, painted from low to high. 'chase' looks
forward along +x at the drawn region from behind and above it (perspective; with the default
extent, which is centred on the sensor, that is a view over the sensor's shoulder) and is drawn by
Open3D's OffscreenRenderer (software Vulkan on a machine without a GPU or display).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from atomic_files import format_from_name, write_figure_atomically
from optional_dependencies import require

o3d = require("open3d", "the Open3D views")
rendering = require("open3d.visualization.rendering", "the Open3D views")

CAMERAS = ("bev", "chase")
IMAGE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}  # file extension -> matplotlib format
BACKGROUND = (1.0, 1.0, 1.0)
LINE_WIDTH_PIXELS = 2.5  # box edges, about this wide in a bird's-eye view
POINT_SIZE_PIXELS = 2.0
SQUARE_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


@dataclass
class Panel:
    title: str
    geometries: list = field(default_factory=list)
    labels: list[tuple[np.ndarray, str]] = field(default_factory=list)   # (xyz, text)


def check_extent(extent) -> tuple[float, float, float, float] | None:
    """``extent`` (x0, y0, x1, y1) in metres as floats, or None; ValueError unless x0 < x1 and y0 < y1 (finite)."""
    if extent is None:
        return None
    values = tuple(float(v) for v in extent)
    if len(values) != 4 or not all(math.isfinite(v) for v in values) or not (values[0] < values[2]
                                                                            and values[1] < values[3]):
        raise ValueError(f"view range must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1 (metres), got {list(extent)}")
    return values


def image_format(path: str) -> str:
    """The matplotlib format of an image file name ('png' or 'jpeg'); ValueError for any other extension."""
    return format_from_name(path, IMAGE_FORMATS, "image")


def display_available() -> bool:
    """Whether an interactive window can open (an X11 or Wayland display is set)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def scene_extent(panels: list[Panel]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) covering every geometry of every panel."""
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    for panel in filter(None, panels):
        for geometry in panel.geometries:
            if geometry.is_empty():
                continue
            box = geometry.get_axis_aligned_bounding_box()
            low, high = np.minimum(low, box.min_bound), np.maximum(high, box.max_bound)
    if not np.isfinite(low).all():
        return (-1.0, -1.0, 1.0, 1.0)
    return (low[0], low[1], high[0], high[1])


def line_prisms(line_set: o3d.geometry.LineSet, width: float) -> o3d.geometry.TriangleMesh:
    """The segments of ``line_set`` as square prisms ``width`` metres thick, in the lines' colours.

    Software Vulkan draws lines one pixel wide and drops some of them; prisms render reliably."""
    points, lines = np.asarray(line_set.points), np.asarray(line_set.lines)
    start, end = points[lines[:, 0]], points[lines[:, 1]]
    direction = end - start
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    helper = np.where(np.abs(direction[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = np.cross(direction, u)
    ring = np.stack([u + v, -u + v, -u - v, u - v], axis=1) * width / 2               # (L, 4, 3)
    vertices = np.concatenate([start[:, None] + ring, end[:, None] + ring], axis=1)   # (L, 8, 3)
    sides = np.array([[i, (i + 1) % 4, 4 + (i + 1) % 4, 4 + i] for i in range(4)])
    triangles = np.concatenate([sides[:, [0, 1, 2]], sides[:, [0, 2, 3]]])
    triangles = np.concatenate([triangles, triangles[:, ::-1]])  # both windings: seen from any side
    triangles = triangles[None] + 8 * np.arange(len(lines))[:, None, None]
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices.reshape(-1, 3)),
                                     o3d.utility.Vector3iVector(triangles.reshape(-1, 3)))
    colors = np.asarray(line_set.colors) if line_set.has_colors() else np.zeros((len(lines), 3))
    mesh.vertex_colors = o3d.utility.Vector3dVector(np.repeat(colors, 8, axis=0))
    return mesh


def _unlit() -> rendering.MaterialRecord:
    material = rendering.MaterialRecord()
    material.shader, material.point_size = "defaultUnlit", POINT_SIZE_PIXELS
    return material


def _bev_half_spans(extent, width: int, height: int) -> tuple[float, float]:
    """(half width, half height) in metres of the bird's-eye view of ``extent``: both spans fit, pixels square."""
    x0, y0, x1, y1 = extent
    half_up = max((x1 - x0) / 2, (y1 - y0) / 2 * height / width) * 1.02
    return half_up * width / height, half_up


def bev_pixels(xyz: np.ndarray, extent, width: int, height: int) -> np.ndarray:
    """(..., 2) pixel (column, row) of world points (..., 3) in the bird's-eye view: +x up, +y to the left."""
    x0, y0, x1, y1 = extent
    half_right, half_up = _bev_half_spans(extent, width, height)
    return np.stack([(half_right - (xyz[..., 1] - (y0 + y1) / 2)) / (2 * half_right) * width,
                     (half_up - (xyz[..., 0] - (x0 + x1) / 2)) / (2 * half_up) * height], axis=-1)


def _set_chase_camera(camera, extent, width: int, height: int) -> None:
    x0, y0, x1, y1 = extent
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2, 0.0])
    span = max(x1 - x0, y1 - y0, 1e-3)
    camera.set_projection(50.0, width / height, 0.1, 10 * span, rendering.Camera.FovType.Vertical)
    camera.look_at(centre + [0.15 * span, 0.0, 0.0], centre + [-0.45 * span, 0.0, 0.3 * span], [0.0, 0.0, 1.0])


def project(camera, xyz: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 2) pixel (column, row) of world points (N, 3) seen by an Open3D rendering camera; NaN behind it."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    clip = (np.asarray(camera.get_projection_matrix()) @ np.asarray(camera.get_view_matrix())
            @ np.column_stack([xyz, np.ones(len(xyz))]).T).T
    pixels = np.full((len(xyz), 2), np.nan)
    visible = clip[:, 3] > 0
    ndc = clip[visible, :2] / clip[visible, 3:4]
    pixels[visible] = np.column_stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height])
    return pixels


def _labels_inside(panel: Panel, pixels: np.ndarray, width: int, height: int) -> list[tuple[float, float, str]]:
    return [(c, r, text) for (c, r), (_, text) in zip(pixels, panel.labels)
            if np.isfinite(c) and 0 <= c < width and 0 <= r < height]


def _label_positions(panel: Panel) -> np.ndarray:
    return np.array([xyz for xyz, _ in panel.labels], dtype=np.float64).reshape(-1, 3)


def _colors(colors, count: int) -> np.ndarray:
    """Per-vertex colours (count, 3); black where a geometry has none."""
    return np.asarray(colors) if len(colors) else np.zeros((count, 3))


def _draw_from_above(panel: Panel, width: int, height: int, extent, line_width: float) -> np.ndarray:
    """The panel seen from straight above, (H, W, 3) uint8: the upward-facing triangles of its meshes
    (and of its lines as prisms) and its points as POINT_SIZE_PIXELS squares, painted from the lowest
    to the highest, in their exact colours. Software Vulkan took from 0.2 s to minutes, at random, for
    the same demo panel (docs/visualization.md); this takes a fraction of a second."""
    triangles, colors, heights = [], [], []
    for geometry in panel.geometries:
        if isinstance(geometry, o3d.geometry.LineSet):
            geometry = line_prisms(geometry, line_width)
        if geometry.is_empty():
            continue
        if isinstance(geometry, o3d.geometry.TriangleMesh):
            faces = np.asarray(geometry.triangles)
            corners = np.asarray(geometry.vertices)[faces]                                  # (M, 3, 3)
            facing_up = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])[:, 2] > 0
            triangles.append(bev_pixels(corners[facing_up], extent, width, height))
            colors.append(_colors(geometry.vertex_colors, len(geometry.vertices))[faces[facing_up, 0]])
            heights.append(corners[facing_up, :, 2].mean(axis=1))
        elif isinstance(geometry, o3d.geometry.PointCloud):
            points = np.asarray(geometry.points)
            square = bev_pixels(points, extent, width, height)[:, None] + POINT_SIZE_PIXELS / 2 * SQUARE_CORNERS
            point_colors = _colors(geometry.colors, len(points))
            triangles += [square[:, [0, 1, 2]], square[:, [0, 2, 3]]]
            colors += [point_colors, point_colors]
            heights += [points[:, 2], points[:, 2]]
        else:
            raise TypeError(f"cannot draw {type(geometry).__name__} from above: only meshes, line sets and "
                            "point clouds")
    figure_module = require("matplotlib.figure", "rendering PNGs")
    figure = figure_module.Figure(figsize=(width / 100, height / 100), dpi=100, facecolor=BACKGROUND)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_axis_off()
    if triangles:
        order = np.argsort(np.concatenate(heights), kind="stable")
        axes.add_collection(require("matplotlib.collections", "rendering PNGs").PolyCollection(
            np.concatenate(triangles)[order], facecolors=np.clip(np.concatenate(colors)[order], 0, 1),
            edgecolors="none", linewidths=0, antialiased=False))
    canvas = require("matplotlib.backends.backend_agg", "rendering PNGs").FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_panel_images(panels: list[Panel], width: int, height: int, camera: str = "bev", extent=None):
    """(images (H, W, 3) uint8, label pixels [(column, row, text)] per panel), all from one camera:
    'bev' drawn from above by matplotlib, 'chase' by Open3D's OffscreenRenderer."""
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; valid: {list(CAMERAS)}")
    extent = scene_extent(panels) if extent is None else check_extent(extent)
    line_width = LINE_WIDTH_PIXELS * max(extent[2] - extent[0], extent[3] - extent[1]) / min(width, height)
    if camera == "bev":
        images = [None if panel is None else _draw_from_above(panel, width, height, extent, line_width)
                  for panel in panels]
        labels = [[] if panel is None else
                  _labels_inside(panel, bev_pixels(_label_positions(panel), extent, width, height), width, height)
                  for panel in panels]
        return images, labels
    renderer = rendering.OffscreenRenderer(width, height)
    renderer.scene.view.set_post_processing(False)  # exact colours: no tone mapping
    renderer.scene.set_background([*BACKGROUND, 1.0])
    _set_chase_camera(renderer.scene.camera, extent, width, height)
    material = _unlit()
    images, labels = [], []
    for panel in panels:
        if panel is None:
            images.append(None)
            labels.append([])
            continue
        renderer.scene.clear_geometry()
        for index, geometry in enumerate(panel.geometries):
            if isinstance(geometry, o3d.geometry.LineSet):
                geometry = line_prisms(geometry, line_width)
            if not geometry.is_empty():
                renderer.scene.add_geometry(f"geometry{index}", geometry, material)
        images.append(np.asarray(renderer.render_to_image()).copy())
        labels.append(_labels_inside(panel, project(renderer.scene.camera, _label_positions(panel), width, height),
                                     width, height))
    return images, labels


def render_png(panels: list[Panel], path: str, size=(1600, 900), camera: str = "bev", columns: int | None = None,
               extent=None) -> str:
    """Render ``panels`` headless into one image of exactly ``size`` (width, height) pixels, tiled in
    ``columns`` (default: all in one row up to 3, then a grid); a ``None`` panel leaves its cell empty.
    The format follows the name: ``.png``, or ``.jpg`` / ``.jpeg``; any other is refused before
    rendering. Written atomically; returns ``path``."""
    figure_module = require("matplotlib.figure", "rendering PNGs")

    encoding = image_format(path)
    if not any(panels):
        raise ValueError("nothing to render: no panels")
    check_extent(extent)
    width, height = int(size[0]), int(size[1])
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    columns = columns or min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    cell_width, cell_height = width // columns, height // rows
    if cell_width < 16 or cell_height < 16:
        raise ValueError(f"image size {width}x{height} is too small for {len(panels)} panels in {columns} columns")
    images, labels = render_panel_images(panels, cell_width, cell_height, camera, extent)

    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for index, image in enumerate(images):
        if image is None:
            continue
        row, column = divmod(index, columns)
        canvas[row * cell_height:(row + 1) * cell_height, column * cell_width:(column + 1) * cell_width] = image
    dpi = 100
    # A Figure of its own, not pyplot's: the library never switches the process's matplotlib backend.
    figure = figure_module.Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    figure.figimage(canvas, 0, 0, origin="upper")
    for index, panel in enumerate(panels):
        if panel is None:
            continue
        row, column = divmod(index, columns)
        left, top = column * cell_width, row * cell_height
        figure.text((left + 6) / width, 1 - (top + 6) / height, panel.title, va="top", ha="left", fontsize=9,
                    bbox=dict(facecolor="white", alpha=0.8, edgecolor="none", pad=2))
        for x, y, text in labels[index]:
            figure.text((left + x) / width, 1 - (top + y) / height, text, fontsize=7, ha="center", va="bottom")
    write_figure_atomically(figure, path, encoding, dpi)
    return path


def show_window(panels: list[Panel], columns: int | None = None, title: str = "sparsevox") -> None:
    """One interactive Open3D window with the panels side by side (bird's-eye layout: columns along -y,
    rows along -x). The panel order and titles are printed, since the window has no text."""
    if not display_available():
        raise RuntimeError("no display (DISPLAY / WAYLAND_DISPLAY unset): render a PNG instead (--save out.png)")
    x0, y0, x1, y1 = scene_extent(panels)
    columns = columns or min(len(panels), 3)
    geometries = []
    for index, panel in enumerate(panels):
        if panel is None:
            continue
        row, column = divmod(index, columns)
        shift = np.array([-row * (x1 - x0) * 1.1, -column * (y1 - y0) * 1.1, 0.0])
        print(f"panel {index + 1} (row {row + 1}, column {column + 1}): {panel.title}")
        for geometry in panel.geometries:
            geometries.append(type(geometry)(geometry).translate(shift))
    o3d.visualization.draw_geometries(geometries, window_name=title)
