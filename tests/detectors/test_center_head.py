"""CenterPoint head: targets → predictions → decode returns the boxes; the losses behave."""
import math

import numpy as np
import pytest
import torch

from detectors.center_head import (
    NUSCENES_CLASS_GROUPS,
    CenterHead,
    DecodeConfig,
    axis_code,
    center_loss,
    decode,
    direction_loss,
    focal_loss,
    yaw_from_axis,
)
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


def perfect_predictions(targets, heading="sin_cos"):
    """Head outputs that encode the targets exactly: a sharp peak per object, the code at its cell (for
    the 'axis_direction' heading: the axis code and confident direction logits)."""
    height, width = GRID.shape
    predictions = []
    for target in targets:
        heatmap = torch.where(target["heatmap"] == 1, 20.0, -20.0)[None]
        code = torch.zeros(1, len(REGRESSION_CODE), height * width)
        for index, box in zip(target["indices"][target["mask"]], target["boxes"][target["mask"]]):
            code[0, :, index] = box
        code = code.view(1, -1, height, width)
        prediction = {"heatmap": heatmap, "offset": code[:, 0:2], "height": code[:, 2:3],
                      "log_dims": code[:, 3:6], "rotation": code[:, 6:8], "velocity": code[:, 8:10]}
        if heading == "axis_direction":
            sin_cos = code[:, 6:8].permute(0, 2, 3, 1)
            prediction["rotation"] = axis_code(sin_cos).permute(0, 3, 1, 2)
            faces = torch.stack([sin_cos[..., 1] > 0, sin_cos[..., 0] > 0], 1)
            prediction["direction"] = torch.where(faces, 20.0, -20.0)
        predictions.append(prediction)
    return predictions


HEADINGS = ["sin_cos", "axis_direction"]


@pytest.mark.parametrize("heading", HEADINGS)
def test_encode_then_decode_returns_the_boxes(heading):
    boxes, labels = gt()
    targets = build_targets(boxes, labels, NUSCENES_CLASS_GROUPS, CLASSES, GRID)
    assert sum(int(t["mask"].sum()) for t in targets) == 4  # the box outside the grid is skipped
    decoded = decode(perfect_predictions(targets, heading), NUSCENES_CLASS_GROUPS, CLASSES, GRID,
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


@pytest.mark.parametrize("heading", HEADINGS)
def test_losses_are_small_for_perfect_predictions_and_weights_are_named(heading):
    boxes, labels = gt()
    targets = build_targets(boxes, labels, NUSCENES_CLASS_GROUPS, CLASSES, GRID)
    batched = [{k: v[None] for k, v in t.items()} for t in targets]
    weights = dict.fromkeys(REGRESSION_CODE, 1.0) | {"vx": 0.2, "vy": 0.2}
    perfect = center_loss(perfect_predictions(targets, heading), batched, weights)
    assert all(float(perfect[f"group{g}_regression"]) < 1e-6 for g in range(6))
    directions = [float(value) for key, value in perfect.items() if key.endswith("_direction")]
    assert len(directions) == (6 if heading == "axis_direction" else 0) and max(directions, default=0) < 1e-6
    if heading == "axis_direction":  # the sin/cos code of the targets is a wrong axis code
        sin_cos = perfect_predictions(targets)
        for prediction in sin_cos:
            prediction["direction"] = torch.zeros_like(prediction["rotation"])
        assert float(center_loss(sin_cos, batched, weights)["group0_regression"]) > 0.1
    head = CenterHead(512, NUSCENES_CLASS_GROUPS, heading=heading)
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


def test_head_with_a_direction_branch():
    head = CenterHead(64, [["car"]], shared_channels=8, head_channels=8, heading="axis_direction")
    assert head(torch.randn(1, 64, 5, 6))[0]["direction"].shape == (1, 2, 5, 6)
    assert "direction" not in CenterHead(64, [["car"]], 8, 8)(torch.randn(1, 64, 5, 6))[0]
    with pytest.raises(ValueError, match="heading must be one of"):
        CenterHead(64, [["car"]], heading="quaternion")


def _faces(yaw: torch.Tensor) -> torch.Tensor:
    """Confident direction logits of the true yaw: "faces +x", "faces +y"."""
    return torch.where(torch.stack([yaw.cos() > 0, yaw.sin() > 0], 1), 20.0, -20.0)


def test_axis_and_direction_give_back_any_yaw():
    yaw = torch.linspace(-math.pi, math.pi, 721, dtype=torch.float64)[1:]  # includes 0, ±π/2, π
    sin_cos = torch.stack([yaw.sin(), yaw.cos()], 1)
    decoded = yaw_from_axis(axis_code(sin_cos), _faces(yaw))
    error = torch.remainder(decoded - yaw + math.pi, 2 * math.pi) - math.pi
    assert float(error.abs().max()) < 1e-9
    assert float(decoded.min()) > -math.pi - 1e-12 and float(decoded.max()) <= math.pi + 1e-12


def test_an_axis_error_across_x_or_y_does_not_flip_the_heading():
    """A box heading almost along y, whose predicted axis lies on the other side of the y axis (or one
    heading almost along x, across the x axis): the decoded yaw stays within the axis error, never π off,
    since each case asks the classifier whose answer does not change there."""
    for true, predicted_axis in ((math.pi / 2 - 0.01, math.pi / 2 + 0.02), (-math.pi / 2 + 0.01, -math.pi / 2 - 0.02),
                                 (0.01, -0.02), (math.pi - 0.01, math.pi + 0.02)):
        true_yaw = torch.tensor([true], dtype=torch.float64)
        axis = axis_code(torch.tensor([[math.sin(predicted_axis), math.cos(predicted_axis)]], dtype=torch.float64))
        decoded = float(yaw_from_axis(axis, _faces(true_yaw)))
        assert abs(math.remainder(decoded - true, 2 * math.pi)) < 0.031, (true, predicted_axis, decoded)


def test_direction_loss_weighs_each_answer_by_its_axis_component():
    heading_y = torch.tensor([[[1.0, 0.0]]])  # (sin, cos) of yaw π/2: "faces +x" has no answer
    mask = torch.ones(1, 1, dtype=torch.bool)
    confident_y = torch.tensor([[[0.0, 20.0]]])
    assert float(direction_loss(confident_y, heading_y, mask)) < 1e-6
    assert float(direction_loss(confident_y + torch.tensor([-30.0, 0.0]), heading_y, mask)) < 1e-6
    diagonal = torch.tensor([[[math.sin(-3 * math.pi / 4), math.cos(-3 * math.pi / 4)]]])  # faces -x, -y
    undecided = torch.zeros(1, 1, 2)
    expected = 2 * math.sqrt(0.5) * math.log(2)  # two answers at weight √½, each BCE(0) = ln 2
    assert float(direction_loss(undecided, diagonal, mask)) == pytest.approx(expected, rel=1e-6)
    assert float(direction_loss(undecided, diagonal, torch.zeros(1, 1, dtype=torch.bool))) == 0
