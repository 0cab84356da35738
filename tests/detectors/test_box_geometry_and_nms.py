"""Rotated BEV IoU against shapely polygons; NMS against a brute-force reference."""
import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from datasets.boxes import bev_corners, bev_iou
from detectors.nms import circle_nms, rotated_nms


def random_boxes(n, seed, spread=6.0):
    g = np.random.default_rng(seed)
    boxes = np.zeros((n, 7))
    boxes[:, :2] = g.uniform(-spread, spread, (n, 2))
    boxes[:, 3:5] = g.uniform(0.3, 5.0, (n, 2))
    boxes[:, 5] = 1.5
    boxes[:, 6] = g.uniform(-math.pi, math.pi, n)
    return torch.tensor(boxes)


def shapely_iou(a, b):
    pa, pb = (Polygon(bev_corners(t[None])[0].numpy()) for t in (a, b))
    inter = pa.intersection(pb).area
    return inter / (pa.area + pb.area - inter)


def test_corners_put_dx_along_the_heading():
    box = torch.tensor([[1.0, 2.0, 0.0, 4.0, 2.0, 1.5, math.pi / 2]])
    corners = bev_corners(box)[0]
    torch.testing.assert_close(corners, torch.tensor([[0.0, 4.0], [0.0, 0.0], [2.0, 0.0], [2.0, 4.0]]),
                               atol=1e-6, rtol=0)


def test_rotated_iou_matches_shapely():
    a, b = random_boxes(40, 0), random_boxes(35, 1)
    ious = bev_iou(a, b)
    expected = torch.tensor([[shapely_iou(x, y) for y in b] for x in a], dtype=torch.float64)
    torch.testing.assert_close(ious, expected, atol=1e-6, rtol=0)
    assert (expected > 0).sum() > 20  # the sample has real overlaps


@pytest.mark.parametrize("case, expected", [
    ("identical", 1.0), ("rotated 90 degrees square", 1.0), ("disjoint", 0.0), ("touching", 0.0),
    ("contained", 0.25), ("cross", 1 / 7),
])
def test_rotated_iou_special_cases(case, expected):
    base = torch.tensor([[0.0, 0, 0, 2, 2, 1, 0]])
    other = {
        "identical": base.clone(),
        "rotated 90 degrees square": torch.tensor([[0.0, 0, 0, 2, 2, 1, math.pi / 2]]),
        "disjoint": torch.tensor([[5.0, 0, 0, 2, 2, 1, 0.3]]),
        "touching": torch.tensor([[2.0, 0, 0, 2, 2, 1, 0]]),
        "contained": torch.tensor([[0.0, 0, 0, 1, 1, 1, 0]]),
        "cross": torch.tensor([[0.0, 0, 0, 4, 1, 1, 0]]),
    }[case]
    if case == "cross":
        base = torch.tensor([[0.0, 0, 0, 4, 1, 1, math.pi / 2]])
    assert float(bev_iou(base, other)[0, 0]) == pytest.approx(expected, abs=1e-6)


def brute_force_nms(boxes, scores, close):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(not close(boxes[i], boxes[j]) for j in kept):
            kept.append(i)
    return kept


def test_rotated_nms_matches_brute_force():
    boxes, scores = random_boxes(60, 2, spread=4.0), torch.rand(60, generator=torch.Generator().manual_seed(2))
    kept = rotated_nms(boxes, scores, 0.2).tolist()
    assert kept == brute_force_nms(boxes, scores, lambda a, b: shapely_iou(a, b) > 0.2)
    assert 5 < len(kept) < 60
    assert rotated_nms(boxes, scores, 0.2, max_keep=3).tolist() == kept[:3]


def test_circle_nms_matches_brute_force():
    boxes, scores = random_boxes(80, 3, spread=5.0), torch.rand(80, generator=torch.Generator().manual_seed(3))
    kept = circle_nms(boxes, scores, radius=1.5).tolist()
    assert kept == brute_force_nms(boxes, scores, lambda a, b: math.dist(a[:2].tolist(), b[:2].tolist()) < 1.5)
    assert circle_nms(boxes[:0], scores[:0], 1.0).numel() == 0
