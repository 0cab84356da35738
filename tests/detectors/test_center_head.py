"""CenterPoint head: targets → predictions → decode returns the boxes; the losses behave."""
import math

import numpy as np
import pytest
import torch

from detectors.center_head import NUSCENES_CLASS_GROUPS, CenterHead, DecodeConfig, center_loss, decode, focal_loss
from detectors.center_targets import REGRESSION_CODE, BEVGrid, build_targets, draw_gaussian, gaussian_radius

CLASSES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
           "pedestrian", "traffic_cone"]
GRID = BEVGrid((-51.2, -51.2, -5.0, 51.2, 51.2, 3.0), (0.1, 0.1, 0.2), 8)


def gt():
    boxes = np.array([[10.3, -4.7, -0.9, 4.6, 1.9, 1.7, 0.3, 5.0, -1.0],
                      [-20.1, 15.2, -0.5, 10.5, 2.9, 3.4, -2.8, 0.0, 0.0],
                      [3.05, 7.77, -1.0, 0.7, 0.6, 1.8, 1.5, 1.2, 0.4],
                      [30.0, -30.0, -0.8, 4.2, 1.8, 1.5, math.pi - 0.01, -3.0, 2.0],
                      [80.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0]], dtype=np.float32)  # the last is outside
    labels = np.array([0, 1, 8, 0, 0])
    return boxes, labels


def perfect_predictions(targets):
    """Head outputs that encode the targets exactly: a sharp peak per object, the code at its cell."""
    height, width = GRID.shape
    predictions = []
    for target in targets:
        heatmap = torch.where(target["heatmap"] == 1, 20.0, -20.0)[None]
        code = torch.zeros(1, len(REGRESSION_CODE), height * width)
        for index, box in zip(target["indices"][target["mask"]], target["boxes"][target["mask"]]):
            code[0, :, index] = box
        code = code.view(1, -1, height, width)
        predictions.append({"heatmap": heatmap, "offset": code[:, 0:2], "height": code[:, 2:3],
                            "log_dims": code[:, 3:6], "rotation": code[:, 6:8], "velocity": code[:, 8:10]})
    return predictions


def test_encode_then_decode_returns_the_boxes():
    boxes, labels = gt()
    targets = build_targets(boxes, labels, NUSCENES_CLASS_GROUPS, CLASSES, GRID)
    assert sum(int(t["mask"].sum()) for t in targets) == 4  # the box outside the grid is skipped
    decoded = decode(perfect_predictions(targets), NUSCENES_CLASS_GROUPS, CLASSES, GRID,
                     DecodeConfig(score_threshold=0.5, nms="none"))[0]
    assert len(decoded["boxes"]) == 4
    for box, label in zip(boxes[:4], labels[:4]):
        match = (decoded["boxes"][:, :2] - torch.tensor(box[:2])).norm(dim=1).argmin()
        out = decoded["boxes"][match]
        assert int(decoded["labels"][match]) == label
        assert float((out[:2] - torch.tensor(box[:2])).abs().max()) <= 0.8  # within the centre's cell
        torch.testing.assert_close(out[:2], torch.tensor(box[:2]), atol=1e-4, rtol=0)  # the offset restores it
        torch.testing.assert_close(out[2:6], torch.tensor(box[2:6]), atol=1e-4, rtol=1e-5)
        yaw_error = math.remainder(float(out[6]) - float(box[6]), 2 * math.pi)
        assert abs(yaw_error) <= 1e-4
        torch.testing.assert_close(out[7:9], torch.tensor(box[7:9]), atol=1e-4, rtol=0)


def test_heatmap_peaks_and_radius():
    boxes, labels = gt()
    targets = build_targets(boxes, labels, NUSCENES_CLASS_GROUPS, CLASSES, GRID)
    car = targets[0]["heatmap"][0]
    assert int((car == 1).sum()) == 2  # one peak per car inside the grid
    height, width = GRID.shape
    index = int(targets[0]["indices"][0])
    assert car[index // width, index % width] == 1
    assert gaussian_radius(0.5, 0.5) < 2  # small objects get the minimum radius of 2 cells
    heatmap = np.zeros((9, 9), dtype=np.float32)
    draw_gaussian(heatmap, (0, 0), 2)  # at a corner: clipped, no error
    assert heatmap[0, 0] == 1 and heatmap[2, 2] > 0 and heatmap[3, 3] == 0


def test_losses_are_small_for_perfect_predictions_and_weights_are_named():
    boxes, labels = gt()
    targets = build_targets(boxes, labels, NUSCENES_CLASS_GROUPS, CLASSES, GRID)
    batched = [{k: v[None] for k, v in t.items()} for t in targets]
    weights = dict.fromkeys(REGRESSION_CODE, 1.0) | {"vx": 0.2, "vy": 0.2}
    perfect = center_loss(perfect_predictions(targets), batched, weights)
    assert all(float(perfect[f"group{g}_regression"]) < 1e-6 for g in range(6))
    head = CenterHead(512, NUSCENES_CLASS_GROUPS)
    with torch.no_grad():
        untrained = center_loss(head(torch.zeros(1, 512, *GRID.shape)), batched, weights)
    assert float(untrained["loss"]) > float(perfect["loss"]) + 1
    with pytest.raises(ValueError, match="missing"):
        center_loss(perfect_predictions(targets), batched, {"z": 1.0})
    assert float(focal_loss(torch.full((1, 1, 4, 4), -2.19), torch.zeros(1, 1, 4, 4))) > 0


def test_head_shapes_and_initial_heatmap_bias():
    head = CenterHead(64, NUSCENES_CLASS_GROUPS, shared_channels=16, head_channels=16).eval()
    out = head(torch.randn(2, 64, 20, 24))
    assert len(out) == 6 and out[1]["heatmap"].shape == (2, 2, 20, 24)
    assert out[0]["log_dims"].shape == (2, 3, 20, 24) and out[0]["velocity"].shape == (2, 2, 20, 24)
    assert all(float(group["heatmap"][-1].bias.detach().mean()) == pytest.approx(-2.19) for group in head.groups)
