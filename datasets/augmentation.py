"""Global augmentations of a frame: points, boxes and velocities transformed together.

Boxes are (M, 9) ``x, y, z, dx, dy, dz, yaw, vx, vy`` in the LiDAR frame; points (N, C>=3).
Each function returns new arrays; ``Augmenter`` draws the parameters from a generator seeded
per (seed, epoch, sample), so an epoch's augmentations are the same after a resume.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def rotate(points: np.ndarray, boxes: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate about +z by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, -s], [s, c]], dtype=np.float64)
    points, boxes = points.copy(), boxes.copy()
    points[:, :2] = points[:, :2] @ rotation.T
    boxes[:, :2] = boxes[:, :2] @ rotation.T
    boxes[:, 7:9] = boxes[:, 7:9] @ rotation.T
    boxes[:, 6] = np.remainder(boxes[:, 6] + angle + math.pi, 2 * math.pi) - math.pi
    return points, boxes


def scale(points: np.ndarray, boxes: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale positions, sizes and velocities by ``factor``."""
    points, boxes = points.copy(), boxes.copy()
    points[:, :3] *= factor
    boxes[:, :6] *= factor
    boxes[:, 7:9] *= factor
    return points, boxes


def flip(points: np.ndarray, boxes: np.ndarray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Mirror across the x axis (``'x'``: y → −y) or the y axis (``'y'``: x → −x)."""
    points, boxes = points.copy(), boxes.copy()
    if axis == "x":
        points[:, 1] *= -1
        boxes[:, 1] *= -1
        boxes[:, 8] *= -1
        boxes[:, 6] = -boxes[:, 6]
    elif axis == "y":
        points[:, 0] *= -1
        boxes[:, 0] *= -1
        boxes[:, 7] *= -1
        boxes[:, 6] = np.remainder(math.pi - boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    else:
        raise ValueError(f"flip axis must be 'x' or 'y', got {axis!r}")
    return points, boxes


def tilt_sensor(points: np.ndarray, boxes: np.ndarray, pitch: float, roll: float) -> tuple[np.ndarray, np.ndarray]:
    """Tilt the sensor: rotate about +y by ``pitch`` and then about +x by ``roll`` (radians), points and box
    centres alike. Boxes stay upright (yaw, sizes and ground-plane velocity kept), as nuScenes' loaders keep
    only the yaw of boxes seen from its tilted LIDAR_TOP; a box then misses its own points by at most
    half its extent times the tilt's sine, a few centimetres at the angles meant here (a few degrees)."""
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    rotation = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    points, boxes = points.copy(), boxes.copy()
    points[:, :3] = points[:, :3] @ rotation.T
    boxes[:, :3] = boxes[:, :3] @ rotation.T
    return points, boxes


def translate(points: np.ndarray, boxes: np.ndarray, offset) -> tuple[np.ndarray, np.ndarray]:
    points, boxes = points.copy(), boxes.copy()
    points[:, :3] += offset
    boxes[:, :3] += offset
    return points, boxes


@dataclass
class Augmenter:
    """Random global flips (each axis with its probability), half turns, rotation, scaling and translation,
    and optionally a sensor tilt: pitch and roll each uniform in [-tilt, tilt] radians (0: off). A model
    trained on a level sensor misses objects on a real, tilted one: nuScenes' LIDAR_TOP is tilted
    ~1.4 degrees, which drops the road 1.2 m over 50 m (docs/synthetic_world.md).

    A flip mirrors the scene, and a mirror image of right-hand traffic is left-hand traffic: which side
    of the street a vehicle keeps to no longer tells where it faces. ``half_turn`` (the probability of
    turning the scene by pi, which is both flips at once) varies headings as much as the two flips do
    while it keeps the traffic's hand; use it instead of the flips on data of one hand."""
    rotation: list = field(default_factory=lambda: [-math.pi / 4, math.pi / 4])  # radians
    scaling: list = field(default_factory=lambda: [0.95, 1.05])
    flip_x: float = 0.5
    flip_y: float = 0.5
    translation_std: list = field(default_factory=lambda: [0.5, 0.5, 0.5])   # metres
    tilt: float = 0.0                                                        # radians
    half_turn: float = 0.0                                                   # probability

    def __call__(self, points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator):
        points = points.astype(np.float64)
        boxes = boxes.astype(np.float64).reshape(-1, 9)
        if self.tilt:  # drawn only when on, so that configs without it augment exactly as before
            points, boxes = tilt_sensor(points, boxes, *rng.uniform(-self.tilt, self.tilt, 2))
        if rng.random() < self.flip_x:
            points, boxes = flip(points, boxes, "x")
        if rng.random() < self.flip_y:
            points, boxes = flip(points, boxes, "y")
        turn = math.pi if self.half_turn and rng.random() < self.half_turn else 0.0  # drawn only when on, as tilt
        points, boxes = rotate(points, boxes, turn + rng.uniform(*self.rotation))
        points, boxes = scale(points, boxes, rng.uniform(*self.scaling))
        points, boxes = translate(points, boxes, rng.normal(0.0, self.translation_std, 3))
        return points.astype(np.float32), boxes.astype(np.float32)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's augmentation in one epoch."""
    return np.random.default_rng([seed, epoch, index])
