"""The synthetic world's layout: objects keep their surroundings, barriers of a road works site stand end
to end as nuScenes' rows do. Footprint gaps are measured here on densely sampled rectangle outlines, not
with the world's separating-axis test."""
import math

import numpy as np
import pytest

from datasets import synthetic_world
from datasets.synthetic_sensor import MATERIAL_IDS, Ground, scan
from datasets.synthetic_world import (
    KERB_GAIN,
    KERB_HEIGHT,
    SIDEWALK_GAIN,
    SLAB_GAIN_SPREAD,
    Scene,
    SceneObject,
    _boundary,
    _furniture,
    _Occupancy,
    _pavement,
    _Street,
    random_scene,
)
from tests.datasets.test_synthetic_objects import EXACT, surface_distance

DURATION = 2.0


def outline(box: np.ndarray, step: float = 0.02) -> np.ndarray:
    """Points every ``step`` m along the BEV outline of a box [x, y, z, dx, dy, dz, yaw]."""
    half = np.array(box[3:5]) / 2
    corners = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1], [1, 1]]) * half
    edges = [np.linspace(a, b, max(2, int(np.linalg.norm(b - a) / step) + 1)) for a, b in zip(corners, corners[1:])]
    local = np.concatenate(edges)
    c, s = math.cos(box[6]), math.sin(box[6])
    return local @ np.array([[c, s], [-s, c]]) + box[:2]


def inside(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    c, s = math.cos(box[6]), math.sin(box[6])
    d = points - box[:2]
    return (np.abs(d @ [c, s]) < box[3] / 2 - 1e-6) & (np.abs(d @ [-s, c]) < box[4] / 2 - 1e-6)


def near(a: np.ndarray, b: np.ndarray, within: float) -> bool:
    """Whether the footprints' bounding circles come within ``within`` of each other."""
    return np.hypot(*(a[:2] - b[:2])) <= (np.hypot(*a[3:5]) + np.hypot(*b[3:5])) / 2 + within


def gap(a: np.ndarray, b: np.ndarray) -> float:
    """BEV distance between two boxes' footprints (to the outlines' 2 cm sampling); negative when they
    overlap."""
    pa, pb = outline(a), outline(b)
    if inside(pa, b).any() or inside(pb, a).any():
        return -1.0
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1)).min())


def test_objects_of_one_class_may_abut_when_asked_but_never_overlap():
    def barrier(x):
        return SceneObject("barrier", np.array([x, 0.0]), 0.0, (2.0, 0.6, 1.0), np.zeros(2), True)

    occupancy = _Occupancy(DURATION)
    occupancy.add(barrier(0.0))
    touching, overlapping = barrier(2.05), barrier(1.9)
    assert occupancy.clashes(touching, 0.6)                   # the usual clearance
    assert not occupancy.clashes(touching, 0.6, abutting=True)
    assert occupancy.clashes(overlapping, 0.6, abutting=True)
    car = SceneObject("car", np.array([1.9, 0.0]), 0.0, (1.0, 0.6, 1.0), np.zeros(2), True)
    assert occupancy.clashes(car, 0.6, abutting=True)          # another class keeps its distance


@pytest.fixture(scope="module")
def scenes():
    return [random_scene(np.random.default_rng([0, i]), DURATION) for i in range(12)]


def test_road_works_stand_barriers_end_to_end_in_rows(scenes):
    rows = 0
    for scene in scenes:
        boxes = np.array([obj.box_at(0.0) for obj in scene.objects if obj.name == "barrier"])
        for i, box in enumerate(boxes):
            gaps = [gap(box, other) for j, other in enumerate(boxes) if j != i and near(box, other, 0.6)]
            if not gaps:
                continue
            assert min(gaps) >= 0.0
            neighbours = sum(g < 0.35 for g in gaps)
            assert neighbours <= 2      # a row, not a heap
            rows += neighbours == 2
    assert rows >= 10, f"only {rows} barriers stand between two neighbours in 12 scenes"


def tows(tractor: SceneObject, trailer: SceneObject) -> bool:
    """Whether ``trailer`` hangs on ``tractor`` as a semi-trailer does: the same heading and motion, straight
    behind it, the trailer's front 2.6 m over the tractor's rear (its kingpin 1.0 m behind its front, on a
    fifth wheel 1.6 m ahead of the tractor's rear)."""
    if (tractor.name, trailer.name) != ("truck", "trailer") or tractor.yaw != trailer.yaw:
        return False
    ahead = np.array([math.cos(tractor.yaw), math.sin(tractor.yaw)])
    offset = tractor.start - trailer.start
    overlap = (tractor.size[0] + trailer.size[0]) / 2 - offset @ ahead
    return (np.array_equal(tractor.velocity, trailer.velocity) and abs(offset @ [-ahead[1], ahead[0]]) < 1e-9
            and abs(overlap - 2.6) < 1e-9)


def test_every_other_pair_of_objects_keeps_its_clearance(scenes):
    for scene in scenes:
        objects = scene.objects
        for t in (0.0, DURATION):
            boxes = [obj.box_at(t) for obj in objects]
            for i in range(len(objects)):
                for j in range(i + 1, len(objects)):
                    if not near(boxes[i], boxes[j], 0.6) or objects[i].name == objects[j].name == "barrier":
                        continue
                    if tows(objects[i], objects[j]) or tows(objects[j], objects[i]):
                        continue
                    assert gap(boxes[i], boxes[j]) >= 0.59, (objects[i].name, objects[j].name, t)


def test_trailers_in_the_lanes_are_towed_and_the_tractors_cab_clears_them(scenes):
    """Every trailer out in a lane hangs on one tractor; parked at the kerb it may stand alone. The
    tractor's glass cab ends ahead of the trailer's front."""
    towed = 0
    for scene in scenes:
        trucks = [obj for obj in scene.objects if obj.name == "truck"]
        for trailer in (obj for obj in scene.objects if obj.name == "trailer"):
            tractors = [truck for truck in trucks if tows(truck, trailer)]
            assert len(tractors) <= 1
            if np.any(trailer.velocity):
                assert tractors, "a trailer moves on its own"
            if not tractors:
                continue
            towed += 1
            tractor = tractors[0]
            glass = tractor.parts.material == MATERIAL_IDS["car_glass"]
            cab_back = (tractor.parts.centre[glass, 0] - tractor.parts.half[glass, 0]).min()
            trailer_front = trailer.size[0] / 2 - (np.hypot(*(tractor.start - trailer.start)))
            assert cab_back - trailer_front >= 0.75
    assert towed >= 5, f"only {towed} towed trailers in {len(scenes)} scenes"


PERSON_SIZED = ("bin", "post_box", "planter", "hydrant", "bench")


@pytest.mark.parametrize("kind", PERSON_SIZED + ("bollards",))
def test_street_clutter_stands_on_the_ground_at_a_persons_size(kind):
    rng = np.random.default_rng(0)
    for _ in range(5):
        parts = _furniture(kind, rng)
        extents = parts.extents()
        low, high = (parts.centre - extents).min(0), (parts.centre + extents).max(0)
        assert abs(low[2]) < 1e-9 and 0.5 <= high[2] <= 1.6          # knee to head height, on the ground
        assert np.allclose((low[:2] + high[:2]) / 2, 0.0)
        footprint = np.sort(high[:2] - low[:2])
        if kind == "bollards":                                        # 3-6 posts in a row, 1.2-1.8 m apart
            assert footprint[0] < 0.2 and 2.5 < footprint[1] < 9.2
        else:
            assert footprint[1] <= 2.3


@pytest.mark.parametrize("kind, height", [("fense", None), ("hedge", 1.0), ("wall", 0.8), ("none", None)])
def test_a_boundary_it_cannot_build_is_refused(kind, height):
    with pytest.raises(ValueError, match=f"unknown boundary '{kind}'"):
        _boundary(kind, np.random.default_rng(0), 5.0, height)


def test_unknown_street_furniture_is_refused():
    with pytest.raises(ValueError, match="unknown street furniture 'bollard'"):
        _furniture("bollard", np.random.default_rng(0))


def test_scenes_place_the_person_sized_clutter(monkeypatch):
    made = []

    def recording(kind, rng):
        made.append(str(kind))
        return _furniture(kind, rng)

    monkeypatch.setattr(synthetic_world, "_furniture", recording)
    for i in range(3):
        random_scene(np.random.default_rng([0, i]), DURATION)
    assert set(PERSON_SIZED + ("bollards",)) <= set(made)


def test_some_kerbs_carry_a_railing_of_panels(monkeypatch):
    """Unannotated look-alikes of a barrier row: railings along the kerb, panel by panel, waist high."""
    panels = []

    def recording(kind, rng, length, height=None):
        if height is not None:
            panels.append((kind, length, height))
        return _boundary(kind, rng, length, height)

    monkeypatch.setattr(synthetic_world, "_boundary", recording)
    for i in range(6):
        random_scene(np.random.default_rng([0, i]), DURATION)
    assert len(panels) >= 10
    assert all(kind == "fence" and length == 2.4 and 0.9 <= height <= 1.2 for kind, length, height in panels)


def test_set_back_houses_and_parks_have_low_solid_walls(monkeypatch):
    """Unannotated solid walls of knee to chest height in front of houses and along parks, standing on the
    sidewalk's level; the hedges and fences stay."""
    made = []

    def recording(kind, rng, length, height=None):
        parts = _boundary(kind, rng, length, height)
        made.append((kind, parts))
        return parts

    monkeypatch.setattr(synthetic_world, "_boundary", recording)
    scenes = [random_scene(np.random.default_rng([0, i]), DURATION) for i in range(6)]
    walls = [parts for kind, parts in made if kind == "wall"]
    assert len(walls) >= 10 and {"hedge", "fence"} <= {kind for kind, _ in made}
    for parts in walls:
        top = parts.centre[:, 2] + parts.half[:, 2]
        assert len(parts) == 1 and parts.material[0] == MATERIAL_IDS["concrete"]
        assert abs(parts.centre[0, 2] - parts.half[0, 2]) < 1e-9 and 0.4 <= top[0] <= 1.3
        assert 0.2 <= 2 * parts.half[0, 1] <= 0.4
    # placed in the streets, standing on the sidewalk (kerb height), upright
    half = np.concatenate([scene.static.half for scene in scenes])
    bottom = np.concatenate([scene.static.centre[:, 2] for scene in scenes]) - half[:, 2]
    placed = [np.isclose(half, parts.half[0]).all(1) for parts in walls]
    assert sum(match.any() for match in placed) >= 10
    assert all(np.allclose(bottom[match], KERB_HEIGHT) for match in placed)


def test_kerbstones_face_the_road_and_rays_meet_them_on_their_surfaces():
    """A straight street along x (u = x, w = y): slabs and kerbstones of both sidewalks, none across the cross
    street, and the rays of a sensor on the road that hit the pavement lie on its parts' surfaces; those that
    meet the kerb's height from the road hit the kerbstone's face, 1 cm proud of the slab's."""
    street = _Street(Scene([], 5.0, 0.0, 0.0, DURATION), 0.0)
    half_road, sidewalk = {-1: 4.0, 1: 5.5}, {-1: 3.0, 1: 2.5}
    pavement = _pavement(np.random.default_rng(0), street, -30.0, 42.0, half_road, sidewalk, gaps=[(6.0, 18.0)])
    ends = (pavement.centre[:, 0] - pavement.half[:, 0], pavement.centre[:, 0] + pavement.half[:, 0])
    assert not ((ends[1] > 6.05) & (ends[0] < 18.0 - 0.05)).any()     # the cross street is open
    kerbs = pavement.half[:, 2] > KERB_HEIGHT / 2 + 1e-6
    assert kerbs.sum() * 2 == len(pavement) == 2 * 2 * 10             # a kerbstone to every slab, 10 a side
    assert np.allclose(pavement.centre[kerbs, 2] + pavement.half[kerbs, 2], KERB_HEIGHT + 0.01)
    faces = np.abs(pavement.centre[kerbs, 1]) - pavement.half[kerbs, 1]
    assert np.allclose(faces, np.where(pavement.centre[kerbs, 1] > 0, half_road[1], half_road[-1]) - 0.01)

    sensor = np.array([-2.0, 0.0, 1.84])
    points = scan(pavement, Ground(), sensor, np.eye(3), EXACT, np.random.default_rng(0))
    hits = points[:, :3].astype(np.float64) + sensor
    hits = hits[hits[:, 2] > 1e-3]
    assert len(hits) > 1000
    assert surface_distance(hits, pavement).max() < 2e-4
    face_hits = hits[(hits[:, 2] > 0.02) & (hits[:, 2] < KERB_HEIGHT - 0.02)]
    assert len(face_hits) > 20
    assert np.allclose(np.abs(face_hits[:, 1]), np.where(face_hits[:, 1] > 0, half_road[1], half_road[-1]) - 0.01,
                       atol=1e-4)


def test_sidewalks_and_kerbs_differ_in_brightness_from_street_to_street():
    """Each side draws its gains log-uniform in its range, each slab within a few sigma of its side's: dark
    and bright pavements both occur (the real key frame's sidewalk returns 30-60, its road 5-20)."""
    street = _Street(Scene([], 5.0, 0.0, 0.0, DURATION), 0.0)
    medians = {"slab": [], "kerb": []}
    for seed in range(40):
        pavement = _pavement(np.random.default_rng(seed), street, 0.0, 60.0, {-1: 4.0, 1: 4.0}, {-1: 3.0, 1: 3.0}, [])
        kerbs = pavement.half[:, 2] > KERB_HEIGHT / 2 + 1e-6
        for side in (-1, 1):
            on_side = np.sign(pavement.centre[:, 1]) == side
            medians["slab"].append(np.median(pavement.gain[on_side & ~kerbs]))
            medians["kerb"].append(np.median(pavement.gain[on_side & kerbs]))
    for name, (low, high) in (("slab", SIDEWALK_GAIN), ("kerb", KERB_GAIN)):
        gains = np.array(medians[name])
        spread = np.exp(3 * SLAB_GAIN_SPREAD)
        assert (gains > low / spread).all() and (gains < high * spread).all(), name
        assert gains.min() < low * 1.5 and gains.max() > high / 1.5, name
