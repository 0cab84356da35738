"""The panels users ask for: a scene with its boxes, and a layer's active voxels by origin."""
from __future__ import annotations

import numpy as np

from visualization.active_sites import LayerSites
from visualization.render import Panel, check_extent
from visualization.scene_geometry import (
    SITE_ADDED,
    SITE_FROM_INPUT,
    box_line_set,
    class_color,
    point_cloud,
    voxel_cells,
    voxel_geometry,
)

PREDICTION_SHADE = 0.55  # predictions are drawn in a darker tone of their class colour


def _inside(xy: np.ndarray, extent) -> np.ndarray:
    if extent is None:
        return np.ones(len(xy), dtype=bool)
    x0, y0, x1, y1 = check_extent(extent)
    return (xy[:, 0] >= x0) & (xy[:, 0] <= x1) & (xy[:, 1] >= y0) & (xy[:, 1] <= y1)


def scene_panel(points: np.ndarray, gt_boxes=None, gt_names=(), pred_boxes=None, pred_names=(), pred_scores=None,
                title: str = "scene", extent=None) -> Panel:
    """Points (grey by intensity), GT boxes in their class colour and predicted boxes in a darker tone
    of theirs, each with a heading mark; predicted scores as labels. ``extent`` (x0, y0, x1, y1) crops."""
    points = points[_inside(points[:, :2], extent)]
    panel = Panel(title, [point_cloud(points)])
    for boxes, names, shade in ((gt_boxes, gt_names, 1.0), (pred_boxes, pred_names, PREDICTION_SHADE)):
        if boxes is None or len(boxes) == 0:
            continue
        boxes = np.asarray(boxes, dtype=np.float64)
        if len(names) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(names)} class names")
        colors = np.array([class_color(name) for name in names]) * shade
        panel.geometries.append(box_line_set(boxes, colors))
    if pred_scores is not None and pred_boxes is not None and len(pred_boxes):
        tops = np.asarray(pred_boxes, dtype=np.float64)[:, :3].copy()
        tops[:, 2] += np.asarray(pred_boxes, dtype=np.float64)[:, 5] / 2
        panel.labels = [(top, f"{score:.2f}") for top, score in zip(tops, pred_scores)]
    return panel


def layer_panel(sites: LayerSites, voxel_size, point_cloud_range, title: str, extent=None,
                max_cubes: int = 200_000, footprint: bool = False) -> Panel:
    """A layer's output sites as voxel cubes (or centre points above ``max_cubes``): blue where the site
    covers an input site, orange where densification added it. The counts go in the title; ``extent``
    (x0, y0, x1, y1) crops the drawing, not the counts.

    ``footprint`` (for views from above, where a column's top cube hides the ones below it, and
    densification also grows sites up and down): one cube per (sample, y, x) column at its top
    site, blue when any site of the column covers an input site."""
    coords = sites.output_coords.numpy()
    from_input = sites.from_input().numpy()
    added, total = int((~from_input).sum()), len(from_input)
    if footprint and total:
        columns, inverse = np.unique(coords[:, [0, 2, 3]], axis=0, return_inverse=True)
        top = np.full(len(columns), np.iinfo(np.int64).min)
        np.maximum.at(top, inverse, coords[:, 1])
        covered = np.zeros(len(columns), dtype=bool)
        np.logical_or.at(covered, inverse, from_input)
        coords, from_input = np.column_stack([columns[:, 0], top, columns[:, 1], columns[:, 2]]), covered
    centres, size = voxel_cells(coords, sites.output_stride, voxel_size, point_cloud_range)
    keep = _inside(centres[:, :2], extent)
    colors = np.where(from_input[keep, None], SITE_FROM_INPUT, SITE_ADDED)
    geometry = voxel_geometry(centres[keep], size, colors, max_cubes)
    return Panel(f"{title}\n{total:,} sites, {added / max(total, 1):.0%} added by densification (orange)", [geometry])


def layer_panels(sites_by_variant: dict[str, dict[str, LayerSites]], voxel_size, point_cloud_range, extent=None,
                 max_cubes: int = 200_000, footprint: bool = False) -> list[Panel]:
    """One :func:`layer_panel` per (layer, variant), a layer's variants next to each other."""
    variants = list(sites_by_variant)
    names = list(sites_by_variant[variants[0]])
    return [layer_panel(sites_by_variant[variant][name], voxel_size, point_cloud_range,
                        f"{name} · {variant} network ({sites_by_variant[variant][name].kind} conv)", extent, max_cubes,
                        footprint)
            for name in names for variant in variants]
