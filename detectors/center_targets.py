"""CenterPoint training targets, built in the data pipeline (not in the model's forward).

For each class group: a Gaussian heatmap per class on the head's BEV grid, and for up to
``max_objects`` boxes the flat index of their centre cell, a mask, and the regression target
``[dx_cell, dy_cell, z, log dx, log dy, log dz, sin yaw, cos yaw, vx, vy]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

REGRESSION_CODE = ("offset_x", "offset_y", "z", "log_dx", "log_dy", "log_dz", "sin", "cos", "vx", "vy")


@dataclass(frozen=True)
class BEVGrid:
    """The head's output grid: derived from the voxel geometry and the backbone's stride."""
    point_cloud_range: tuple   # x0, y0, z0, x1, y1, z1
    voxel_size: tuple          # vx, vy, vz
    out_size_factor: int       # BEV cells per voxel along x and y (8 for the *8x backbones)

    @property
    def cell_size(self) -> tuple[float, float]:
        return self.voxel_size[0] * self.out_size_factor, self.voxel_size[1] * self.out_size_factor

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = cells along y, x."""
        width = round((self.point_cloud_range[3] - self.point_cloud_range[0]) / self.cell_size[0])
        height = round((self.point_cloud_range[4] - self.point_cloud_range[1]) / self.cell_size[1])
        return height, width


def gaussian_radius(dx_cells: float, dy_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius: the largest corner shift keeping IoU >= min_overlap, in cells."""
    height, width = dy_cells, dx_cells
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, centre: tuple[int, int], radius: int) -> None:
    """Max-splat a Gaussian of sigma (2r+1)/6 at centre (x, y) into heatmap (H, W), in place."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    gaussian = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    gaussian[gaussian < np.finfo(gaussian.dtype).eps * gaussian.max()] = 0
    x, y = centre
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = gaussian[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


def build_targets(gt_boxes: np.ndarray, gt_labels: np.ndarray, class_groups: list[list[str]],
                  class_names: list[str], grid: BEVGrid, min_overlap: float = 0.1, min_radius: int = 2,
                  max_objects: int = 500) -> list[dict[str, torch.Tensor]]:
    """Targets of one sample.

    Args:
        gt_boxes: (M, 9) ``x, y, z, dx, dy, dz, yaw, vx, vy`` in the LiDAR frame (z = box centre).
        gt_labels: (M,) indices into ``class_names``.
        class_groups: names per head group, e.g. [['car'], ['truck', 'construction_vehicle'], ...].
    Returns per group: heatmap (C_g, H, W), indices (max_objects,) flat cell index y * W + x,
    mask (max_objects,) bool, boxes (max_objects, 10) regression targets (see REGRESSION_CODE).
    Boxes whose centre falls outside the grid are skipped; past ``max_objects`` per group too.
    """
    height, width = grid.shape
    x0, y0 = grid.point_cloud_range[0], grid.point_cloud_range[1]
    cell_x, cell_y = grid.cell_size
    targets = []
    for names in class_groups:
        heatmap = np.zeros((len(names), height, width), dtype=np.float32)
        indices = np.zeros(max_objects, dtype=np.int64)
        mask = np.zeros(max_objects, dtype=bool)
        regression = np.zeros((max_objects, len(REGRESSION_CODE)), dtype=np.float32)
        count = 0
        for box, label in zip(gt_boxes, gt_labels):
            name = class_names[int(label)]
            if name not in names or count == max_objects:
                continue
            cx, cy = (box[0] - x0) / cell_x, (box[1] - y0) / cell_y  # continuous cell coordinates
            ix, iy = int(math.floor(cx)), int(math.floor(cy))
            if not (0 <= ix < width and 0 <= iy < height) or box[3] <= 0 or box[4] <= 0:
                continue
            radius = max(min_radius, int(gaussian_radius(box[3] / cell_x, box[4] / cell_y, min_overlap)))
            draw_gaussian(heatmap[names.index(name)], (ix, iy), radius)
            indices[count] = iy * width + ix
            mask[count] = True
            regression[count] = [cx - ix, cy - iy, box[2], math.log(box[3]), math.log(box[4]), math.log(box[5]),
                                 math.sin(box[6]), math.cos(box[6]), box[7], box[8]]
            count += 1
        targets.append({"heatmap": torch.from_numpy(heatmap), "indices": torch.from_numpy(indices),
                        "mask": torch.from_numpy(mask), "boxes": torch.from_numpy(regression)})
    return targets
