"""The synthetic world's layout: objects keep their surroundings, barriers of a road works site stand end
to end as nuScenes' rows do. Footprint gaps are measured here on densely sampled rectangle outlines, not
with the world's separating-axis test."""
import math

import numpy as np
import pytest

from datasets import synthetic_world
from datasets.synthetic_world import SceneObject, _furniture, _Occupancy, random_scene

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


def test_every_other_pair_of_objects_keeps_its_clearance(scenes):
    for scene in scenes:
        objects = scene.objects
        for t in (0.0, DURATION):
            boxes = [obj.box_at(t) for obj in objects]
            for i in range(len(objects)):
                for j in range(i + 1, len(objects)):
                    if not near(boxes[i], boxes[j], 0.6) or objects[i].name == objects[j].name == "barrier":
                        continue
                    assert gap(boxes[i], boxes[j]) >= 0.59, (objects[i].name, objects[j].name, t)


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
