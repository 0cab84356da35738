"""Bird's-eye-view geometry of boxes ``(x, y, z, dx, dy, dz, yaw, ...)``: corners and rotated IoU.

Pure torch, vectorised over all box pairs. The intersection of two convex quadrilaterals is the
convex polygon whose vertices are among: the 16 edge-edge crossings and the corners of each box
that lie inside the other. Those candidates are ordered by angle around their mean and the area
follows from the shoelace formula.
"""
from __future__ import annotations

import torch

_EPS = 1e-6


def bev_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4, 2) BEV corners, counter-clockwise, of boxes (N, >=7) with yaw about +z from +x."""
    x, y, dx, dy, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    half = torch.stack([torch.stack([dx, dy], 1), torch.stack([-dx, dy], 1), torch.stack([-dx, -dy], 1),
                        torch.stack([dx, -dy], 1)], dim=1) / 2  # (N, 4, 2) in the box frame
    cos, sin = torch.cos(yaw)[:, None], torch.sin(yaw)[:, None]
    rotated_x = half[..., 0] * cos - half[..., 1] * sin
    rotated_y = half[..., 0] * sin + half[..., 1] * cos
    return torch.stack([rotated_x + x[:, None], rotated_y + y[:, None]], dim=-1)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (M, N, P, 2) against boxes (N, >=7) broadcast on dim 1: (M, N, P) inside-or-on-border."""
    centre = boxes[None, :, None, :2]
    cos, sin = torch.cos(boxes[:, 6])[None, :, None], torch.sin(boxes[:, 6])[None, :, None]
    d = points - centre
    local_x = d[..., 0] * cos + d[..., 1] * sin
    local_y = -d[..., 0] * sin + d[..., 1] * cos
    return (local_x.abs() <= boxes[None, :, None, 3] / 2 + _EPS) & (local_y.abs() <= boxes[None, :, None, 4] / 2 + _EPS)


def bev_intersection_area(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(M, N) intersection areas of the BEV rectangles of boxes1 (M, >=7) and boxes2 (N, >=7)."""
    dtype = torch.float64  # the crossing tests are well conditioned in double precision
    b1, b2 = boxes1.to(dtype), boxes2.to(dtype)
    c1, c2 = bev_corners(b1), bev_corners(b2)
    m, n = c1.shape[0], c2.shape[0]
    if m == 0 or n == 0:
        return boxes1.new_zeros((m, n))
    p = c1[:, None, :, None, :]                                     # (M, 1, 4, 1, 2)
    r = (torch.roll(c1, -1, dims=1) - c1)[:, None, :, None, :]
    q = c2[None, :, None, :, :]                                     # (1, N, 1, 4, 2)
    s = (torch.roll(c2, -1, dims=1) - c2)[None, :, None, :, :]
    denominator = _cross(r, s)                                      # (M, N, 4, 4)
    safe = torch.where(denominator.abs() > _EPS, denominator, torch.ones_like(denominator))
    t = _cross(q - p, s) / safe
    u = _cross(q - p, r) / safe
    crossing_ok = (denominator.abs() > _EPS) & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
    crossings = (p + t[..., None] * r).reshape(m, n, 16, 2)
    corners1 = c1[:, None].expand(m, n, 4, 2)
    corners2 = c2[None].expand(m, n, 4, 2)
    points = torch.cat([crossings, corners1, corners2], dim=2)      # (M, N, 24, 2)
    valid = torch.cat([crossing_ok.reshape(m, n, 16), _inside(corners1, b2), _inside(corners2.transpose(0, 1),
                                                                                         b1).transpose(0, 1)], dim=2)
    count = valid.sum(-1, keepdim=True)
    centroid = (points * valid[..., None]).sum(2) / count.clamp_min(1)
    angle = torch.atan2(points[..., 1] - centroid[..., None, 1], points[..., 0] - centroid[..., None, 0])
    angle = torch.where(valid, angle, torch.full_like(angle, 10.0))  # invalid points sort last
    order = angle.argsort(dim=-1)
    ordered = torch.gather(points, 2, order[..., None].expand(-1, -1, -1, 2))
    ordered_valid = torch.gather(valid, 2, order)
    first = ordered[:, :, :1]
    ordered = torch.where(ordered_valid[..., None], ordered, first)  # invalid → the first vertex: zero area
    area = 0.5 * _cross(ordered, torch.roll(ordered, -1, dims=2)).sum(-1).abs()
    return torch.where(count[..., 0] >= 3, area, torch.zeros_like(area)).to(boxes1.dtype)


def bev_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(M, N) rotated BEV IoU of boxes1 (M, >=7) and boxes2 (N, >=7)."""
    intersection = bev_intersection_area(boxes1, boxes2)
    area1 = (boxes1[:, 3] * boxes1[:, 4])[:, None]
    area2 = (boxes2[:, 3] * boxes2[:, 4])[None, :]
    return intersection / (area1 + area2 - intersection).clamp_min(1e-9)
