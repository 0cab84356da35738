"""CenterPoint's head: class-group heatmaps and box regressions on the BEV map; its losses and decoding."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from detectors.center_targets import REGRESSION_CODE, BEVGrid
from detectors.config import Bounds, Length, PositiveFloat, PositiveInt, Probability
from detectors.nms import circle_nms, rotated_nms

NUSCENES_CLASS_GROUPS = [["car"], ["truck", "construction_vehicle"], ["bus", "trailer"], ["barrier"],
                         ["motorcycle", "bicycle"], ["pedestrian", "traffic_cone"]]
# Regression branches and their channels, in the order of the target code (REGRESSION_CODE).
BRANCHES = {"offset": 2, "height": 1, "log_dims": 3, "rotation": 2, "velocity": 2}
# How the head encodes a box's yaw θ:
# - 'sin_cos' (CenterPoint's): the rotation branch regresses (sin θ, cos θ). Where front and back look
#   alike, an L1 regression between θ and θ + π settles near their mean, a heading in between.
# - 'axis_direction': the rotation branch regresses the box's axis (sin 2θ, cos 2θ), the same for θ and
#   θ + π, and a 'direction' branch classifies which way along the axis the box faces (SECOND's direction
#   bins): two logits, "faces +x" (cos θ > 0) and "faces +y" (sin θ > 0). Decoding asks the one whose
#   axis component is larger, so a box heading along y is never decided by the coin flip of "faces +x".
HEADINGS = ("sin_cos", "axis_direction")
ROTATION = slice(REGRESSION_CODE.index("sin"), REGRESSION_CODE.index("cos") + 1)


def _branch(in_channels: int, head_channels: int, out_channels: int, bias_fill: float | None = None) -> nn.Sequential:
    final = nn.Conv2d(head_channels, out_channels, 3, padding=1, bias=True)
    if bias_fill is not None:
        nn.init.constant_(final.bias, bias_fill)
    return nn.Sequential(nn.Conv2d(in_channels, head_channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True), final)


class CenterHead(nn.Module):
    """A shared 3x3 conv, then per class group: heatmap (one channel per class, bias -2.19 so the
    initial sigmoid is ~0.1) and the branches offset (2), height (1), log-dims (3), rotation (2),
    velocity (2), and with ``heading='axis_direction'`` direction (2 logits; see HEADINGS).

    forward(bev (B, C, H, W)) → one dict per group: {'heatmap': (B, C_g, H, W), branch: (B, c, H, W)}.
    """

    def __init__(self, in_channels: int, class_groups=NUSCENES_CLASS_GROUPS, shared_channels: int = 64,
                 head_channels: int = 64, heatmap_bias: float = -2.19, heading: str = "sin_cos"):
        super().__init__()
        if heading not in HEADINGS:
            raise ValueError(f"heading must be one of {list(HEADINGS)}, got {heading!r}")
        self.class_groups = [list(group) for group in class_groups]
        self.shared = nn.Sequential(nn.Conv2d(in_channels, shared_channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(shared_channels), nn.ReLU(inplace=True))
        self.groups = nn.ModuleList()
        for names in self.class_groups:
            branches = {"heatmap": _branch(shared_channels, head_channels, len(names), heatmap_bias)}
            branches.update({name: _branch(shared_channels, head_channels, channels)
                             for name, channels in BRANCHES.items()})
            if heading == "axis_direction":
                branches["direction"] = _branch(shared_channels, head_channels, 2)
            self.groups.append(nn.ModuleDict(branches))

    def forward(self, bev: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        shared = self.shared(bev)
        return [{name: branch(shared) for name, branch in group.items()} for group in self.groups]


def regression_map(prediction: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 10, H, W): the branches concatenated in the order of the target code."""
    return torch.cat([prediction[name] for name in BRANCHES], dim=1)


def at_least_one(count: torch.Tensor) -> torch.Tensor:
    """The default loss divisor for ``count`` objects: the count, at least 1."""
    return count.clamp_min(1)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
               normaliser=at_least_one) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap, divided by the number of positives
    passed through ``normaliser`` (see :func:`center_loss`)."""
    prediction = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    negative_weight = torch.pow(1 - target, beta)
    positive_loss = torch.log(prediction) * torch.pow(1 - prediction, alpha) * positive
    negative_loss = torch.log(1 - prediction) * torch.pow(prediction, alpha) * negative_weight * (1 - positive)
    return -(positive_loss.sum() + negative_loss.sum()) / normaliser(positive.sum())


def axis_code(sin_cos: torch.Tensor) -> torch.Tensor:
    """(..., 2) (sin θ, cos θ) → (sin 2θ, cos 2θ): the regression target of the 'axis_direction' heading."""
    sin, cos = sin_cos.unbind(-1)
    return torch.stack([2 * sin * cos, cos * cos - sin * sin], -1)


def direction_loss(logits: torch.Tensor, sin_cos: torch.Tensor, mask: torch.Tensor, normaliser=at_least_one):
    """Binary cross-entropy of the (B, K, 2) direction logits against "faces +x" (cos θ > 0) and "faces +y"
    (sin θ > 0) of the (B, K, 2) (sin θ, cos θ) targets, each weighted by |cos θ| and |sin θ|: a box
    heading along y carries no "faces +x" answer, and decoding never asks it (see HEADINGS)."""
    sin, cos = sin_cos.float().unbind(-1)
    faces = torch.stack([cos > 0, sin > 0], -1).float()
    weight = torch.stack([cos.abs(), sin.abs()], -1) * mask.unsqueeze(-1).float()
    loss = F.binary_cross_entropy_with_logits(logits.float(), faces, weight=weight, reduction="sum")
    return loss / normaliser(mask.float().sum())


def yaw_from_axis(axis_sin_cos: torch.Tensor, direction_logits: torch.Tensor) -> torch.Tensor:
    """(K,) yaw in (-π, π] from the (K, 2) predicted axis (sin 2θ, cos 2θ) and (K, 2) direction logits."""
    axis = 0.5 * torch.atan2(axis_sin_cos[:, 0], axis_sin_cos[:, 1])  # in (-π/2, π/2]: cos ≥ 0
    along_y = axis.sin().abs() > axis.cos().abs()
    component = torch.where(along_y, axis.sin(), axis.cos())
    faces_positive = torch.where(along_y, direction_logits[:, 1], direction_logits[:, 0]) > 0
    flipped = torch.where(axis > 0, axis - math.pi, axis + math.pi)
    return torch.where((component >= 0) == faces_positive, axis, flipped)


def center_loss(predictions: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]],
                code_weights: dict[str, float], heatmap_weight: float = 1.0,
                regression_weight: float = 0.25, normaliser=at_least_one,
                direction_weight: float = 0.2) -> dict[str, torch.Tensor]:
    """Focal heatmap loss plus masked L1 regression, weighted per target component by name, plus the
    direction loss (weight ``direction_weight``) of a head with a direction branch, whose rotation
    branch regresses the axis code (:func:`axis_code`) of the targets' (sin θ, cos θ).

    targets: per group, batched: heatmap (B, C_g, H, W), indices (B, K), mask (B, K), boxes (B, K, 10).
    code_weights: a weight for each name of REGRESSION_CODE (missing names are an error).
    normaliser: maps an object count of this batch to the divisor of its loss (default: the count,
    at least 1). Under DDP: the global batch's count (at least 1) / the number of processes, so that
    each process's loss is its share of the global batch's loss and the averaged gradients equal
    one process's on the whole batch.
    """
    missing = set(REGRESSION_CODE) - set(code_weights)
    unknown = set(code_weights) - set(REGRESSION_CODE)
    if missing or unknown:
        raise ValueError(f"code_weights must name exactly {list(REGRESSION_CODE)}; missing {sorted(missing)}, "
                         f"unknown {sorted(unknown)}")
    weights = torch.tensor([code_weights[name] for name in REGRESSION_CODE])
    losses = {}
    total = 0.0
    for g, (prediction, target) in enumerate(zip(predictions, targets)):
        heatmap = focal_loss(prediction["heatmap"], target["heatmap"], normaliser=normaliser)
        regression = regression_map(prediction)
        batch, channels = regression.shape[:2]
        gathered = regression.flatten(2).gather(2, target["indices"][:, None, :].expand(-1, channels, -1))
        gathered = gathered.transpose(1, 2)  # (B, K, 10)
        mask = target["mask"].unsqueeze(-1).float()
        boxes = target["boxes"]
        if "direction" in prediction:
            sin_cos = boxes[..., ROTATION]
            boxes = torch.cat([boxes[..., :ROTATION.start], axis_code(sin_cos), boxes[..., ROTATION.stop:]], -1)
        l1 = (F.l1_loss(gathered.float() * mask, boxes * mask, reduction="none")
              * weights.to(gathered.device)).sum() / normaliser(mask.sum())
        losses[f"group{g}_heatmap"], losses[f"group{g}_regression"] = heatmap, l1
        total = total + heatmap_weight * heatmap + regression_weight * l1
        if "direction" in prediction:
            logits = prediction["direction"].flatten(2).gather(2, target["indices"][:, None, :].expand(-1, 2, -1))
            direction = direction_loss(logits.transpose(1, 2), sin_cos, target["mask"], normaliser)
            losses[f"group{g}_direction"] = direction
            total = total + direction_weight * direction
    losses["loss"] = total
    return losses


NMS_KINDS = ("circle", "rotated", "none")


@dataclass
class DecodeConfig:
    """Decoding and NMS settings (per group the same)."""
    top_k: PositiveInt = 500
    score_threshold: Probability = 0.1
    post_center_range: Annotated[list[float], Length(6)] = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)
    nms: Literal[NMS_KINDS] = "circle"
    # Metres per group: the square roots of CenterPoint's min_radius [4, 12, 10, 1, 0.85, 0.175], which its
    # circle NMS compares with squared distances.
    circle_radius: list[PositiveFloat] = field(default_factory=lambda: [2.0, 3.464, 3.162, 1.0, 0.922, 0.418])
    iou_threshold: Annotated[float, Bounds(0, 1, low_open=True)] = 0.2
    max_boxes: PositiveInt = 500              # per sample, over all groups

    def __post_init__(self):
        if self.nms not in NMS_KINDS:
            raise ValueError(f"nms must be one of {list(NMS_KINDS)}, got {self.nms!r}")
        low, high = self.post_center_range[:3], self.post_center_range[3:]
        if len(self.post_center_range) != 6 or not all(a < b for a, b in zip(low, high)):
            raise ValueError(f"post_center_range must be [x0, y0, z0, x1, y1, z1] with x0 < x1, y0 < y1, z0 < z1, "
                             f"got {list(self.post_center_range)}")


def decode(predictions: list[dict[str, torch.Tensor]], class_groups: list[list[str]], class_names: list[str],
           grid: BEVGrid, config: DecodeConfig = DecodeConfig()) -> list[dict[str, torch.Tensor]]:
    """Boxes per sample: {'boxes': (K, 9), 'scores': (K,), 'labels': (K,) into class_names}."""
    batch = predictions[0]["heatmap"].shape[0]
    height, width = grid.shape
    cell_x, cell_y = grid.cell_size
    x0, y0 = grid.point_cloud_range[0], grid.point_cloud_range[1]
    device = predictions[0]["heatmap"].device
    low = torch.tensor(config.post_center_range[:3], device=device)
    high = torch.tensor(config.post_center_range[3:], device=device)
    results = []
    for b in range(batch):
        boxes, scores, labels = [], [], []
        for g, (prediction, names) in enumerate(zip(predictions, class_groups)):
            heat = torch.sigmoid(prediction["heatmap"][b].float())  # (C_g, H, W)
            top = torch.topk(heat.flatten(), min(config.top_k, heat.numel()))
            keep = top.values > config.score_threshold
            flat = top.indices[keep]
            group_scores = top.values[keep]
            cls, cell = flat // (height * width), flat % (height * width)
            iy, ix = cell // width, cell % width
            code = regression_map({k: v[b:b + 1] for k, v in prediction.items()})[0].flatten(1)[:, cell].t().float()
            x = (ix + code[:, 0]) * cell_x + x0
            y = (iy + code[:, 1]) * cell_y + y0
            dims = code[:, 3:6].exp()
            if "direction" in prediction:
                yaw = yaw_from_axis(code[:, ROTATION], prediction["direction"][b].flatten(1)[:, cell].t().float())
            else:
                yaw = torch.atan2(code[:, 6], code[:, 7])
            group_boxes = torch.cat([x[:, None], y[:, None], code[:, 2:3], dims, yaw[:, None], code[:, 8:10]], 1)
            inside = ((group_boxes[:, :3] >= low) & (group_boxes[:, :3] <= high)).all(1)
            group_boxes, group_scores, cls = group_boxes[inside], group_scores[inside], cls[inside]
            if config.nms == "circle":
                kept = circle_nms(group_boxes, group_scores, config.circle_radius[g])
            elif config.nms == "rotated":
                kept = rotated_nms(group_boxes, group_scores, config.iou_threshold)
            elif config.nms == "none":
                kept = torch.argsort(group_scores, descending=True)
            else:
                raise ValueError(f"nms must be one of {list(NMS_KINDS)}, got {config.nms!r}")
            boxes.append(group_boxes[kept])
            scores.append(group_scores[kept])
            group_labels = torch.tensor([class_names.index(name) for name in names], dtype=torch.long, device=device)
            labels.append(group_labels[cls[kept]])
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        order = torch.argsort(scores, descending=True)[:config.max_boxes]
        results.append({"boxes": boxes[order], "scores": scores[order], "labels": labels[order]})
    return results


