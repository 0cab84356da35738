"""A small built-in LiDAR example: a spinning multi-beam sensor ray-cast against a ground
plane and a few boxes, so the pipeline can run with no dataset on disk."""
from __future__ import annotations

import numpy as np

# HDL-32E-like: 32 beams from -30.67 to +10.67 degrees, 1080 azimuth steps per turn.
BEAM_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)
AZIMUTH_STEPS = 1080

# (centre x, y, z, size dx, dy, dz) in the sensor frame, axis-aligned; z = box centre.
EXAMPLE_BOXES = np.array([
    [8.0, 2.0, -0.98, 4.5, 1.9, 1.6],     # a car ahead
    [-12.0, -4.0, -0.38, 10.0, 2.5, 2.8],  # a truck behind
    [5.0, -6.0, -0.93, 0.6, 0.6, 1.7],     # a pedestrian
    [0.0, 15.0, 0.7, 30.0, 0.5, 5.0],      # a wall
])


def ray_box_distances(directions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(R,) nearest hit distance of rays from the origin against axis-aligned boxes (inf: miss).

    Slab method, vectorised over rays x boxes.
    """
    if len(boxes) == 0:
        return np.full(len(directions), np.inf)
    low = boxes[:, :3] - boxes[:, 3:] / 2
    high = boxes[:, :3] + boxes[:, 3:] / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / directions[:, None, :]
        t1, t2 = low[None] * inverse, high[None] * inverse
    t_near = np.nanmax(np.minimum(t1, t2), axis=2)
    t_far = np.nanmin(np.maximum(t1, t2), axis=2)
    hit = (t_far >= t_near) & (t_far > 0)
    return np.where(hit, np.maximum(t_near, 0.0), np.inf).min(axis=1)


def example_cloud(seed: int = 0, sensor_height: float = 1.8, max_range: float = 70.0,
                  range_noise: float = 0.02) -> np.ndarray:
    """A (N, 5) float32 cloud ``[x, y, z, intensity, ring]`` in the sensor frame.

    Ground at z = -sensor_height, the boxes of ``EXAMPLE_BOXES``, Gaussian range noise and 5%
    random dropout; intensity falls with incidence angle. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(BEAM_ELEVATIONS_DEG)[:, None]
    azimuth = np.linspace(-np.pi, np.pi, AZIMUTH_STEPS, endpoint=False)[None, :]
    directions = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth),
                                              np.cos(elevation) * np.sin(azimuth),
                                              np.sin(elevation)), axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(len(BEAM_ELEVATIONS_DEG)), AZIMUTH_STEPS)
    with np.errstate(divide="ignore"):
        ground = np.where(directions[:, 2] < 0, -sensor_height / directions[:, 2], np.inf)
    box = ray_box_distances(directions, EXAMPLE_BOXES)
    distance = np.minimum(ground, box)
    keep = (distance < max_range) & (rng.random(len(distance)) > 0.05)
    distance = distance[keep] + rng.normal(0.0, range_noise, keep.sum())
    directions, ring, hit_ground = directions[keep], ring[keep], (ground <= box)[keep]
    points = directions * distance[:, None]
    incidence = np.where(hit_ground, np.abs(directions[:, 2]), 0.8)
    intensity = np.clip(incidence * 100 + rng.normal(0, 3, len(points)), 0, 255)
    return np.column_stack([points, intensity, ring]).astype(np.float32)
