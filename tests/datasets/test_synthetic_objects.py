"""The synthetic world's part models: ray hits lie on the parts' surfaces, annotated boxes are the tight boxes
of all parts, and the shapes carry what a detector needs (front unlike back, glass that returns little,
legs apart in a walking pose)."""
import math

import numpy as np
import pytest

from datasets.boxes import points_in_box, rotation_z
from datasets.synthetic_objects import PART_MODELS, car, pedestrian, tight_size, tractor
from datasets.synthetic_sensor import BOX, MATERIAL_IDS, Ground, LidarSpec, Primitives, beam_directions, part, scan

# A noiseless, lossless sensor: every ray that meets something returns exactly there.
EXACT = LidarSpec(tuple(np.linspace(-30.0, 10.0, 64).round(3)), azimuth_steps=2048, range_noise=0.0, dropout=0.0,
                  weak_range=1e6, keeps_no_returns=False)
SENSOR = np.array([0.0, 0.0, 1.84])
MODELS = {**PART_MODELS, "tractor": tractor}  # a semi-trailer's tractor is annotated a truck


def surface_distance(points: np.ndarray, parts: Primitives) -> np.ndarray:
    """(N,) distance of each point to the nearest part surface, computed per part from its own equation
    (a box's faces, an ellipsoid's quadric) — not by the ray caster's slab or quadratic solutions."""
    best = np.full(len(points), np.inf)
    for centre, rotation, half, shape in zip(parts.centre, parts.rotation, parts.half, parts.shape):
        local = (points - centre) @ rotation
        if shape == BOX:
            outside = np.maximum(np.abs(local) - half, 0)
            inside_gap = (half - np.abs(local)).min(1)
            distance = np.where((outside > 0).any(1), np.linalg.norm(outside, axis=1), inside_gap)
        else:
            # |x/h| = 1 on the surface; the gap scaled by the smallest half axis bounds the distance
            distance = np.abs(np.linalg.norm(local / half, axis=1) - 1) * half.min()
        best = np.minimum(best, distance)
    return best


def scan_object(parts: Primitives, distance: float, yaw: float, seed: int = 0):
    """Scan the parts placed ``distance`` m ahead of the sensor with heading ``yaw``: global points
    above the road and the parts in the global frame."""
    placed = parts.moved(np.array([distance, 0.0, 0.0]), rotation_z(yaw))
    points = scan(placed, Ground(), SENSOR, np.eye(3), EXACT, np.random.default_rng(seed))
    xyz = points[:, :3].astype(np.float64) + SENSOR
    return xyz[xyz[:, 2] > 1e-3], placed, points


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ray_hits_lie_on_part_surfaces_and_inside_the_tight_box(name):
    rng = np.random.default_rng(5)
    parts = MODELS[name](rng)
    size = np.array(tight_size(parts))
    for yaw in (0.3, 2.0, -2.5):
        hits, placed, _ = scan_object(parts, 7.0, yaw)
        assert len(hits) > 30, name
        # float32 output: ~1e-6 relative, at 7-8 m a few micrometres
        assert surface_distance(hits, placed).max() < 2e-4, name
        box = np.array([7.0, 0.0, size[2] / 2, *size, yaw])
        assert points_in_box(hits, box, margin=1e-4).all(), name


@pytest.mark.parametrize("name", sorted(MODELS))
def test_annotated_box_is_the_tight_box_of_all_parts(name):
    """Oracle: the extremes of every part sampled on its surface (corners of boxes, dense points on
    ellipsoids), in the object frame; the box's faces each touch a part."""
    parts = MODELS[name](np.random.default_rng(2))
    samples = []
    for centre, rotation, half, shape in zip(parts.centre, parts.rotation, parts.half, parts.shape):
        if shape == BOX:
            unit = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
        else:
            unit = np.random.default_rng(0).normal(size=(20000, 3))
            unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        samples.append((unit * half) @ rotation.T + centre)
    samples = np.concatenate(samples)
    low, high = samples.min(0), samples.max(0)
    np.testing.assert_allclose(tight_size(parts), high - low, atol=2e-3)
    # centred: x and y symmetric about 0, standing on z = 0
    np.testing.assert_allclose([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]], 0.0, atol=2e-3)


def test_a_car_shows_its_front_unlike_its_back():
    """Seen from ahead, a car returns its headlamps; from behind, its brighter red reflectors; the cabin
    sits behind the middle (long hood), so the roof's points lie mostly in the rear half."""
    parts = car(np.random.default_rng(1))
    size = tight_size(parts)
    intensities = {}
    for view, yaw in (("front", math.pi), ("back", 0.0)):  # yaw pi: the car faces the sensor
        _, _, points = scan_object(parts, 6.0, yaw)
        above = points[points[:, 2] > -1.84 + 0.05]
        intensities[view] = np.percentile(above[:, 3], 99)
    assert intensities["back"] > intensities["front"] * 1.2
    roof = parts.centre[:, 2] > size[2] - 0.1
    assert parts.centre[roof, 0].mean() < -0.05


def test_glass_returns_few_points():
    """A pane of car glass in front of a wall: most rays pass it and hit the wall behind."""
    pane = part((6.0, 0.0, 1.5), (0.01, 2.0, 0.5), "car_glass")
    wall = part((8.0, 0.0, 1.5), (0.1, 6.0, 1.5), "facade")
    points = scan(Primitives.concatenate([pane, wall]), Ground(), SENSOR, np.eye(3), EXACT, np.random.default_rng(0))
    x = points[:, 0]
    ahead = x > 1.0
    # where each ray crosses the pane's plane x = 6 (sensor frame, 1.84 m up): inside the pane or not
    y6 = 6.0 * points[:, 1] / np.where(ahead, x, 1.0)
    z6 = 6.0 * points[:, 2] / np.where(ahead, x, 1.0)
    through_pane = ahead & (np.abs(y6) < 1.9) & (z6 > -0.8) & (z6 < 0.1)
    on_glass = through_pane & (x < 7.0)
    assert through_pane.sum() > 100
    assert 0.05 < on_glass.sum() / through_pane.sum() < 0.3   # the material's 0.15
    assert MATERIAL_IDS["car_glass"] != MATERIAL_IDS["paint"]


def test_pedestrians_walk_with_legs_apart_and_a_head_on_top():
    for seed in range(5):
        parts = pedestrian(np.random.default_rng(seed))
        size = tight_size(parts)
        assert 1.5 < size[2] < 2.0 and 0.25 < size[1] < 0.8
        legs = np.argsort(parts.centre[:, 2])[:2]
        assert (parts.material[legs] == MATERIAL_IDS["clothing"]).all()
        head = np.argmax(parts.centre[:, 2])
        assert parts.shape[head] != BOX and parts.centre[head, 2] > size[2] - 0.2
    # the stride shows: in most poses the two legs' centres lie apart along the walking direction
    strides = []
    for seed in range(10):
        centres = pedestrian(np.random.default_rng(seed)).centre
        legs = centres[np.argsort(centres[:, 2])[:2]]
        strides.append(abs(legs[0, 0] - legs[1, 0]))
    assert np.median(strides) > 0.05


def test_beams_of_the_exact_sensor_are_unit_vectors():
    beams = beam_directions(EXACT)
    np.testing.assert_allclose(np.linalg.norm(beams, axis=1), 1.0, atol=1e-12)
