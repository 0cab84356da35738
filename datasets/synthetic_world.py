"""A synthetic LiDAR world: streets with kerbs and sidewalks, building facades with windows and setbacks,
trees, hedges, poles, signs and fences, rows of parked vehicles, pedestrian groups and traffic in lanes,
an ego vehicle driving the street, and a ray-cast spinning LiDAR (datasets.synthetic_sensor).

Everything is in metres, in a scene's global frame (z up, road at z ~ 0, sidewalks at z = KERB_HEIGHT).
Boxes are ``(x, y, z, dx, dy, dz, yaw)`` with z the box centre and dx along the heading; an annotated box
is the tight box around all parts of its object (datasets.synthetic_objects). The world only describes
and senses scenes; ``datasets.nuscenes_writer`` turns them into a nuScenes database.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from datasets.boxes import rotation_z
from datasets.synthetic_objects import PART_MODELS, TOW_OVERLAP, centred, tight_size, tractor
from datasets.synthetic_sensor import (  # noqa: F401
    ELLIPSOID,
    HDL32E,
    HDL64E,
    LIDARS,
    Ground,
    LidarSpec,
    Primitives,
    beam_directions,
    body_returns,
    mount_rotation,
    part,
    scan,
)

# detection name: (nuScenes category, typical size dx, dy, dz, speed range m/s when moving, moving attribute,
# static attribute, share of this class that moves)
CLASSES = {
    "car": ("vehicle.car", (4.6, 1.95, 1.7), (3.0, 12.0), "vehicle.moving", "vehicle.parked", 0.8),
    "truck": ("vehicle.truck", (7.5, 2.6, 3.1), (2.0, 9.0), "vehicle.moving", "vehicle.parked", 0.6),
    "construction_vehicle": ("vehicle.construction", (6.5, 2.8, 3.2), (0.5, 2.0), "vehicle.moving",
                             "vehicle.parked", 0.3),
    "bus": ("vehicle.bus.rigid", (11.0, 2.95, 3.5), (2.0, 9.0), "vehicle.moving", "vehicle.stopped", 0.7),
    "trailer": ("vehicle.trailer", (12.0, 2.9, 3.8), (2.0, 7.0), "vehicle.moving", "vehicle.parked", 0.3),
    "barrier": ("movable_object.barrier", (0.5, 2.5, 1.0), None, None, None, 0.0),
    "motorcycle": ("vehicle.motorcycle", (2.1, 0.8, 1.5), (2.0, 10.0), "cycle.with_rider", "cycle.without_rider",
                   0.8),
    "bicycle": ("vehicle.bicycle", (1.75, 0.6, 1.3), (2.0, 6.0), "cycle.with_rider", "cycle.without_rider", 0.7),
    "pedestrian": ("human.pedestrian.adult", (0.73, 0.67, 1.77), (0.6, 1.8), "pedestrian.moving",
                   "pedestrian.standing", 0.75),
    "traffic_cone": ("movable_object.trafficcone", (0.41, 0.41, 1.07), None, None, None, 0.0),
}
KERB_HEIGHT = 0.12        # sidewalks stand this high above the road (m)
KERB_STONE = 0.16         # width of the kerbstone along a sidewalk's road edge (m)
CLEARANCE = 0.7           # static clutter keeps this far from annotated objects (m)
RAILING_PANEL = 2.5       # length of a kerb railing's panel (m)
# The ego car in its own frame (x forward from the rear axle): the roof under the sensor hides the body
# from the steep beams, only the hood shows ahead (the real key frame: rings 0-7 partly on the roof).
EGO_BODY = Primitives.concatenate([part((0.943, 0.0, 1.45), (0.75, 0.55, 0.05), "ego"),
                                   part((1.2, 0.0, 0.5), (2.2, 0.9, 0.35), "ego")])


@dataclass
class SceneObject:
    """A rigid object moving at constant velocity; ``parts`` in its frame (see synthetic_objects).
    Annotated objects have a detection class name."""
    name: str                 # detection class, or a clutter kind
    start: np.ndarray         # (x, y) at t = 0, centre of the tight box
    yaw: float
    size: tuple               # dx, dy, dz of the tight box around the parts
    velocity: np.ndarray      # (vx, vy) m/s
    annotated: bool
    parts: Primitives = field(default_factory=Primitives.empty)
    base: float = 0.0         # z of the box bottom (0 on the road, KERB_HEIGHT on a sidewalk)

    def box_at(self, t: float) -> np.ndarray:
        x, y = self.start + self.velocity * t
        return np.array([x, y, self.base + self.size[2] / 2, *self.size, self.yaw])

    def parts_at(self, t: float) -> Primitives:
        x, y = self.start + self.velocity * t
        return self.parts.moved(np.array([x, y, self.base]), rotation_z(self.yaw))


@dataclass
class Scene:
    """One drive: the ego path (constant speed and turn rate), the objects, and the static street."""
    objects: list[SceneObject]
    ego_speed: float
    ego_yaw_rate: float
    ego_start_yaw: float
    duration: float
    lidar: LidarSpec = HDL32E
    static: Primitives = field(default_factory=Primitives.empty)  # street geometry in the global frame
    ground: Ground = field(default_factory=Ground)

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """(x, y) and yaw of the ego at time t (seconds from the scene start)."""
        yaw0, w, v = self.ego_start_yaw, self.ego_yaw_rate, self.ego_speed
        if abs(w) < 1e-9:
            return np.array([v * t * math.cos(yaw0), v * t * math.sin(yaw0)]), yaw0
        return np.array([v / w * (math.sin(yaw0 + w * t) - math.sin(yaw0)),
                         -v / w * (math.cos(yaw0 + w * t) - math.cos(yaw0))]), yaw0 + w * t

    def sensor_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Sensor origin (3,) and rotation (3, 3) sensor → global at time t."""
        position, yaw = self.ego_pose(t)
        mount = np.array(self.lidar.mount)
        ego_rotation = rotation_z(yaw)
        origin = np.array([*position, 0.0]) + ego_rotation @ mount
        return origin, ego_rotation @ mount_rotation(self.lidar)


class _Street:
    """Places things in a straight street frame (u along, w across, w > 0 left of the ego's direction)
    and bends them onto the ego's path: u maps to the ego pose when the ego passes u."""

    def __init__(self, scene: Scene, ego_w: float):
        self.scene, self.ego_w = scene, ego_w   # the ego drives at w = ego_w (its lane's centre)

    def pose(self, u: float, w: float) -> tuple[np.ndarray, float]:
        centre, street_yaw = self.scene.ego_pose(u / self.scene.ego_speed)
        return centre + (w - self.ego_w) * np.array([-math.sin(street_yaw), math.cos(street_yaw)]), street_yaw


def _rectangle_corners(rects: np.ndarray, margin: float) -> np.ndarray:
    """(..., 4, 2) corners of BEV rectangles (..., 5) [x, y, dx, dy, yaw], each grown by ``margin``."""
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * (rects[..., None, 2:4] + margin) / 2
    c, s = np.cos(rects[..., 4])[..., None], np.sin(rects[..., 4])[..., None]
    return np.stack([half[..., 0] * c - half[..., 1] * s, half[..., 0] * s + half[..., 1] * c], -1) + \
        rects[..., None, :2]


def _overlapping(a: np.ndarray, b: np.ndarray, margin: float) -> np.ndarray:
    """Separating-axis test of BEV rectangles a (..., 5) against b (..., 5), broadcast, each grown by
    ``margin`` (so rectangles closer than ``margin`` overlap): (...) bool."""
    a, b = np.broadcast_arrays(a, b)
    corners_a, corners_b = _rectangle_corners(a, margin), _rectangle_corners(b, margin)
    yaws = np.stack([a[..., 4], b[..., 4]], -1)                                          # (..., 2)
    axes = np.concatenate([np.stack([np.cos(yaws), np.sin(yaws)], -1),
                           np.stack([-np.sin(yaws), np.cos(yaws)], -1)], -2)             # (..., 4, 2)
    pa = np.einsum("...kd,...cd->...kc", axes, corners_a)
    pb = np.einsum("...kd,...cd->...kc", axes, corners_b)
    separated = (pa.max(-1) < pb.min(-1)) | (pb.max(-1) < pa.min(-1))
    return ~separated.any(-1)


class _Occupancy:
    """The footprints (BEV rectangles) and heights of placed objects at five times of a scene, to keep
    new objects and clutter clear of them. A bounding circle of each object's whole path rules out
    far pairs before the exact rectangle test."""

    def __init__(self, duration: float):
        self.times = tuple(np.linspace(0.0, duration, 5))
        self.rects = np.zeros((len(self.times), 0, 5))
        self.heights = np.zeros((0, 2))
        self.circles = np.zeros((0, 3))                                              # x, y, radius
        self.names: list[str] = []

    def _rects_of(self, obj: SceneObject) -> np.ndarray:
        return np.array([obj.box_at(t)[[0, 1, 3, 4, 6]] for t in self.times])           # (T, 5)

    @staticmethod
    def _circle(rects: np.ndarray) -> np.ndarray:
        centre = rects[:, :2].mean(0)
        reach = np.hypot(*(rects[:, :2] - centre).T).max() + np.hypot(*rects[0, 2:4]) / 2
        return np.array([*centre, reach])

    def _near(self, circle: np.ndarray, margin: float) -> np.ndarray:
        gap = np.hypot(self.circles[:, 0] - circle[0], self.circles[:, 1] - circle[1])
        return np.nonzero(gap < self.circles[:, 2] + circle[2] + margin)[0]

    def add(self, obj: SceneObject) -> None:
        rects = self._rects_of(obj)
        self.rects = np.concatenate([self.rects, rects[:, None]], 1)
        self.heights = np.concatenate([self.heights, [[obj.base, obj.base + obj.size[2]]]])
        self.circles = np.concatenate([self.circles, self._circle(rects)[None]])
        self.names.append(obj.name)

    def clashes(self, obj: SceneObject, margin: float, abutting: bool = False) -> bool:
        """Whether ``obj`` comes within ``margin`` of a placed object; with ``abutting``, objects of its own
        class may touch it (barriers stand end to end in a row) but not overlap."""
        rects = self._rects_of(obj)
        near = self._near(self._circle(rects), margin)
        if abutting:
            kin = np.array([self.names[i] == obj.name for i in near], bool)
            if kin.any() and _overlapping(rects[:, None], self.rects[:, near[kin]], 0.0).any():
                return True
            near = near[~kin]
        return bool(len(near)) and bool(_overlapping(rects[:, None], self.rects[:, near], margin).any())

    def clashes_static(self, parts: Primitives, margin: float) -> bool:
        """Whether any part (global frame, its bounding box) comes within ``margin`` of an object."""
        extents = parts.extents()
        low, high = (parts.centre - extents).min(0), (parts.centre + extents).max(0)
        near = self._near(np.array([*(low[:2] + high[:2]) / 2, np.hypot(*(high[:2] - low[:2])) / 2]), margin)
        near = near[(low[2] < self.heights[near, 1] + margin) & (high[2] > self.heights[near, 0] - margin)]
        if not len(near):
            return False
        near_in_z = (parts.centre[:, None, 2] - extents[:, None, 2] < self.heights[None, near, 1] + margin) & \
                    (parts.centre[:, None, 2] + extents[:, None, 2] > self.heights[None, near, 0] - margin)
        rects = np.column_stack([parts.centre[:, :2], 2 * extents[:, :2], np.zeros(len(parts))])  # (P, 5)
        overlap = _overlapping(rects[:, None, None], self.rects[None][:, :, near], margin)      # (P, T, M)
        return bool((overlap & near_in_z[:, None, :]).any())


# Real mounts are not level: the real key frame's LIDAR_TOP has this (pitch, roll) in radians (a 1.4 degree
# tilt, which drops the road 1.2 m over 50 m on one side). Each scene's sensor gets it within +-MOUNT_JITTER:
# the fleet's sensors sit alike, and GT sampling pastes objects between scenes, which needs their road
# planes to agree (0.005 rad is 15 cm at 30 m). Training's tilt augmentation covers other mounts.
MOUNT_TILT = (0.0059, -0.0242)
MOUNT_JITTER = 0.005


def random_scene(rng: np.random.Generator, duration: float, lidar: LidarSpec = HDL32E) -> Scene:
    """A street: road with lanes, kerbs and sidewalks, buildings with windows behind varied setbacks, trees,
    hedges, poles, signs and fences; rows of parked vehicles, traffic in the lanes, pedestrian groups on the
    sidewalks and crossing, cyclists, barriers and cones. The sensor sits on the ego with the pitch and roll of
    MOUNT_TILT, each within +-MOUNT_JITTER."""
    speed = rng.uniform(3.0, 9.0)
    scene = Scene([], speed, rng.uniform(-0.015, 0.015), rng.uniform(-math.pi, math.pi), duration, lidar)
    scene.ground = Ground(tuple(rng.uniform(0.005, 0.012, 3)),
                          tuple(tuple(rng.normal(0, 0.6, 2)) for _ in range(3)), tuple(rng.uniform(0, 6.3, 3)))
    lanes_per_side = int(rng.choice([1, 1, 2]))
    lane_width = rng.uniform(3.0, 3.5)
    street = _Street(scene, -lane_width / 2)  # right-hand traffic: the ego in the first lane right of the centre
    begin, end = -85.0, speed * duration + 85.0
    parking = [bool(rng.random() < 0.65) for _ in range(2)]
    half_road = {side: lanes_per_side * lane_width + (2.2 if parking[i] else 0.3)
                 for i, side in enumerate((-1, 1))}
    sidewalk = {side: rng.uniform(2.5, 5.0) for side in (-1, 1)}
    # Each side is built up (facades) or open (a park or plaza with trees, maybe a parking lot, buildings
    # far back); a cross street may cut both sides.
    open_side = {side: bool(rng.random() < 0.4) for side in (-1, 1)}
    crossing_at = rng.uniform(begin + 25, end - 25) if rng.random() < 0.5 else None
    cross_width = rng.uniform(10, 18)
    objects: list[SceneObject] = []
    occupancy = _Occupancy(duration)
    start, ego_yaw = scene.ego_pose(0.0)
    occupancy.add(SceneObject("ego", start + 1.45 * np.array([math.cos(ego_yaw), math.sin(ego_yaw)]), ego_yaw,
                              (4.9, 1.9, 1.6), speed * np.array([math.cos(ego_yaw), math.sin(ego_yaw)]), False))

    def candidate(name, u, w, heading, moving_speed, base=0.0, parts=None) -> SceneObject:
        position, street_yaw = street.pose(u, w)
        yaw = street_yaw + heading
        parts = parts if parts is not None else _part_model(name, rng, moving_speed > 0)
        velocity = moving_speed * np.array([math.cos(yaw), math.sin(yaw)])
        return SceneObject(name, position, yaw, tight_size(parts), velocity, True, parts, base)

    def place_together(*group: SceneObject, abutting=False):
        """All of ``group`` or none of it (a tractor and its trailer overlap each other, nothing else)."""
        # each object's 0.5 m surroundings are its own, but for the next barrier of a row
        if not any(occupancy.clashes(obj, 0.6, abutting) for obj in group):
            for obj in group:
                objects.append(obj)
                occupancy.add(obj)

    def add(name, u, w, heading, moving_speed, base=0.0, parts=None, abutting=False):
        place_together(candidate(name, u, w, heading, moving_speed, base, parts), abutting=abutting)

    def add_towed_trailer(u, w, heading, moving_speed) -> float:
        """A semi-trailer behind its tractor (annotated a truck, as nuScenes does), the pair reaching from u up
        the street; returns its length. ``heading`` near 0 or pi: along the street or against it."""
        tractor_parts, trailer_parts = tractor(rng), _part_model("trailer", rng, moving_speed > 0)
        tractor_length, trailer_size = tight_size(tractor_parts)[0], tight_size(trailer_parts)
        length = tractor_length + trailer_size[0] - TOW_OVERLAP
        u_tractor = u + (length - tractor_length / 2 if math.cos(heading) > 0 else tractor_length / 2)
        pulling = candidate("truck", u_tractor, w, heading, moving_speed, parts=tractor_parts)
        # straight behind it, in one rigid motion: the pair stays coupled where the street bends
        back = (tractor_length + trailer_size[0]) / 2 - TOW_OVERLAP
        towed = SceneObject("trailer", pulling.start - back * np.array([math.cos(pulling.yaw), math.sin(pulling.yaw)]),
                            pulling.yaw, trailer_size, pulling.velocity.copy(), True, trailer_parts)
        place_together(pulling, towed)
        return length

    # Road works in most scenes, one or two sites: jersey barriers end to end in a row (nuScenes' rows are
    # unbroken, 2 m a barrier) along a lane edge or the kerb, cones ahead of it. Placed first: the
    # traffic and parked cars keep clear of the site.
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        side = int(rng.choice([-1, 1]))
        u = rng.uniform(begin + 20, end - 40)
        w = side * (lanes_per_side * lane_width + rng.uniform(-0.5, 0.8) if rng.random() < 0.6
                    else half_road[side] - rng.uniform(0.4, 0.8))
        for k in range(int(rng.integers(2, 6))):
            add("traffic_cone", u - 3 - k * 2.0, w - side * rng.uniform(0.5, 1.5), rng.uniform(0, math.pi), 0.0)
        for _ in range(int(rng.integers(3, 21))):
            parts = _part_model("barrier", rng, False)
            length = tight_size(parts)[1]  # a barrier's long side is across its heading
            add("barrier", u + length / 2, w + rng.normal(0, 0.05), math.pi / 2 + rng.normal(0, 0.01), 0.0,
                parts=parts, abutting=True)
            u += length + rng.uniform(0.05, 0.3)
    # Traffic in the lanes, right-hand: along the street (heading 0) at w < 0, against it at w > 0.
    for side in (-1, 1):
        heading = 0.0 if side < 0 else math.pi
        for lane in range(lanes_per_side):
            w = side * (lane + 0.5) * lane_width
            u = begin + rng.uniform(0, 15)
            while u < end:
                # about nuScenes' share of trucks: one for every 5 cars (5.6 in its train split)
                name = rng.choice(["car"] * 12 + ["truck"] * 4 + ["bus", "motorcycle", "trailer",
                                                                   "construction_vehicle"])
                low, high = CLASSES[name][2]
                moving = rng.random() < CLASSES[name][5] + 0.1
                if side < 0 and lane == 0 and -20 < u < speed * duration + 20:
                    u += 10  # the ego's own lane stays clear around it
                    continue
                if name == "trailer":  # a trailer on the road is towed, its tractor ahead of it
                    u += add_towed_trailer(u, w + rng.normal(0, 0.2), heading + rng.normal(0, 0.03),
                                           rng.uniform(low, high) if moving else 0.0)
                else:
                    add(name, u, w + rng.normal(0, 0.2), heading + rng.normal(0, 0.03),
                        rng.uniform(low, high) if moving else 0.0)
                u += rng.uniform(12, 45)
    # Rows of parked vehicles at the kerb, nose to tail with gaps.
    for i, side in enumerate((-1, 1)):
        if not parking[i]:
            continue
        u = begin + rng.uniform(0, 5)
        while u < end:
            if rng.random() < 0.25:
                u += rng.uniform(5, 15)  # a driveway or an empty stretch
                continue
            name = rng.choice(["car"] * 10 + ["truck"] * 2 + ["trailer", "construction_vehicle"])
            heading = (0.0 if side < 0 else math.pi) + rng.normal(0, 0.03)
            parts = _part_model(name, rng, False)
            length = tight_size(parts)[0]
            w = side * (half_road[side] - tight_size(parts)[1] / 2 - rng.uniform(0.15, 0.4))
            add(name, u + length / 2, w, heading, 0.0, parts=parts)
            u += length + rng.uniform(0.9, 2.5)
    # Pedestrians in groups on the sidewalks and on crossings; cyclists at the lane edge.
    for _ in range(int(rng.integers(5, 11))):
        side = int(rng.choice([-1, 1]))
        u = rng.uniform(begin, end)
        moving = rng.random() < CLASSES["pedestrian"][5]
        pace = rng.uniform(*CLASSES["pedestrian"][2]) if moving else 0.0
        crossing = rng.random() < 0.2
        heading = (side * math.pi / 2 if crossing else float(rng.choice([0.0, math.pi]))) + rng.normal(0, 0.15)
        # on a sidewalk wide enough, two abreast (1.3 m apart) from the kerb side, else in single file
        abreast = not crossing and sidewalk[side] >= 3.3
        w0 = (side * rng.uniform(1.0, half_road[side] - 1.0) if crossing
              else side * (half_road[side] + 0.8 + (0.0 if abreast else rng.uniform(0.0, sidewalk[side] - 1.6))))
        for member in range(int(rng.integers(1, 5))):
            if crossing:
                du, dw = member * 1.35, rng.normal(0, 0.15)
            elif abreast:
                du, dw = 1.4 * (member // 2) + rng.normal(0, 0.3), side * 1.3 * (member % 2)
            else:
                du, dw = 1.5 * member + rng.normal(0, 0.2), 0.0
            add("pedestrian", u + du, w0 + dw, heading + rng.normal(0, 0.1), pace,
                base=0.0 if crossing else KERB_HEIGHT)
    for side in (-1, 1):  # people out on the open side's plaza or park
        if not open_side[side]:
            continue
        for _ in range(int(rng.integers(2, 7))):
            u, w = rng.uniform(begin, end), side * (half_road[side] + sidewalk[side] + rng.uniform(1.0, 18.0))
            heading, moving = rng.uniform(-math.pi, math.pi), rng.random() < CLASSES["pedestrian"][5]
            pace = rng.uniform(*CLASSES["pedestrian"][2]) if moving else 0.0
            for member in range(int(rng.integers(1, 4))):
                add("pedestrian", u + rng.normal(0, 0.2), w + 1.3 * member, heading + rng.normal(0, 0.1), pace)
    for _ in range(int(rng.integers(1, 5))):
        side = int(rng.choice([-1, 1]))
        name = "bicycle" if rng.random() < 0.6 else "motorcycle"
        moving = rng.random() < CLASSES[name][5]
        if moving:
            add(name, rng.uniform(begin, end), side * (lanes_per_side * lane_width - 0.8),
                (0.0 if side < 0 else math.pi) + rng.normal(0, 0.05), rng.uniform(*CLASSES[name][2]))
        else:  # parked on the sidewalk, against the kerb
            add(name, rng.uniform(begin, end), side * (half_road[side] + 0.9), side * math.pi / 2 + rng.normal(0, 0.2),
                0.0, base=KERB_HEIGHT)
    for _ in range(int(rng.integers(0, 5))):  # scattered cones
        side = int(rng.choice([-1, 1]))
        add("traffic_cone", rng.uniform(begin, end), side * (half_road[side] - rng.uniform(0.3, 1.5)),
            rng.uniform(0, math.pi), 0.0)

    for side in (-1, 1):  # parking lots on open sides: rows of cars nose-in, on the road level
        if not open_side[side] or rng.random() < 0.5:
            continue
        u0 = rng.uniform(begin, end - 40)
        row_w = side * (half_road[side] + sidewalk[side] + rng.uniform(4, 8))
        for row in range(int(rng.integers(1, 3))):
            u = u0
            for _ in range(int(rng.integers(4, 12))):
                if rng.random() < 0.8:
                    add("car", u, row_w + side * row * 6.0, side * math.pi / 2 + math.pi * (rng.random() < 0.3)
                        + rng.normal(0, 0.04), 0.0)
                u += rng.uniform(2.5, 3.0)

    scene.objects = objects
    gaps = [] if crossing_at is None else [(crossing_at - cross_width / 2, crossing_at + cross_width / 2)]
    scene.static = _street_geometry(rng, street, begin, end, half_road, sidewalk, occupancy, open_side, gaps)
    # drawn last, so that the street is the one the same seed gave before mounts were tilted
    tilt = np.asarray(MOUNT_TILT) + rng.uniform(-MOUNT_JITTER, MOUNT_JITTER, 2)
    scene.lidar = replace(lidar, mount_tilt=tuple(float(a) for a in tilt))
    # and the pavement after it, so that streets, road users and mounts are those the same seed gave in world 5
    scene.static = Primitives.concatenate([_pavement(rng, street, begin, end, half_road, sidewalk, gaps),
                                           scene.static])
    return scene


def _part_model(name: str, rng: np.random.Generator, moving: bool) -> Primitives:
    model = PART_MODELS[name]
    if name in ("bicycle", "motorcycle"):
        return model(rng, with_rider=moving)
    return model(rng)


def _street_geometry(rng, street: _Street, begin, end, half_road, sidewalk, occupancy: _Occupancy, open_side,
                     gaps) -> Primitives:
    """Kerbs and sidewalks, buildings, vegetation, poles, signs and fences, in the global frame; clutter
    keeps CLEARANCE from every annotated object's path (so an object's surroundings are its own)."""
    pieces: list[Primitives] = []

    def place(parts: Primitives, u: float, w: float, heading: float = 0.0, base: float = 0.0,
              check: bool = True) -> bool:
        if any(low <= u <= high for low, high in gaps):
            return False
        position, street_yaw = street.pose(u, w)
        placed = parts.moved(np.array([*position, base]), rotation_z(street_yaw + heading))
        if check and occupancy.clashes_static(placed, CLEARANCE):
            return False
        pieces.append(placed)
        return True

    # Low garden and park walls come from a generator of their own (spawning one leaves ``rng`` where it was), so
    # that streets and road users stay those the same seed gave in world 6.
    walls = rng.spawn(1)[0]
    for side in (-1, 1):
        width = sidewalk[side]
        edge = half_road[side] + width
        if open_side[side]:
            _buildings(rng, place, begin, end, side, edge + rng.uniform(20, 35), walls)
            for _ in range(int((end - begin) * rng.uniform(0.2, 0.5))):  # trees and bushes in a park
                kind = rng.choice(["tree", "tree", "bush"])
                place(_furniture(kind, rng), rng.uniform(begin, end), side * (edge + rng.uniform(1.5, 30)),
                      rng.uniform(0, math.pi))
            if walls.random() < 0.5:  # the park's low wall along the sidewalk's back edge, open at gates
                u = begin + walls.uniform(0, 10)
                while u < end:
                    length = walls.uniform(4, 12)
                    place(_boundary("wall", walls, length), u + length / 2, side * (edge + 0.2), 0.0, KERB_HEIGHT)
                    u += length + (walls.uniform(2, 6) if walls.random() < 0.3 else 0.05)
        else:
            _buildings(rng, place, begin, end, side, edge, walls)
        if rng.random() < 0.3:
            # A pedestrian railing along the kerb, in panels, broken where someone stands or parks. Not annotated:
            # nuScenes' barriers are the temporary ones (real streets are lined with look-alikes).
            height, start = rng.uniform(0.9, 1.2), rng.uniform(begin, end - 20)
            for u in np.arange(start, min(end, start + rng.uniform(15, 60)), RAILING_PANEL):
                place(_boundary("fence", rng, RAILING_PANEL - 0.1, height), u + RAILING_PANEL / 2,
                      side * (half_road[side] + 0.25), 0.0, KERB_HEIGHT)
        u = begin + rng.uniform(0, 8)
        while u < end:  # street furniture on the kerb strip
            w = side * (half_road[side] + rng.uniform(0.9, 1.3))
            kind = rng.choice(["tree", "tree", "tree", "pole", "sign", "bush", "bollards", "hydrant"])
            heading = rng.uniform(0, math.pi) if kind not in ("sign", "bollards") else 0.0
            place(_furniture(kind, rng), u, w, heading, KERB_HEIGHT)
            u += rng.uniform(5, 12)
        # Person-sized things that are not people, by the houses or out in the open: bins, benches, post
        # boxes, planters; a detector must learn that a small upright cluster is not always a pedestrian.
        u = begin + rng.uniform(0, 10)
        while u < end:
            w = side * (half_road[side] + (width - rng.uniform(0.4, 0.8) if not open_side[side]
                                           else width + rng.uniform(0.5, 15.0)))
            kind = rng.choice(["bin", "bench", "post_box", "planter"])
            place(_furniture(kind, rng), u, w, 0.0 if side > 0 else math.pi, KERB_HEIGHT)
            u += rng.uniform(6, 20)
    return Primitives.concatenate(pieces)


# Pavement brightness, calibrated on the real key frame: its road returns 5-20 within 10 m, but its western
# sidewalk 30-60 and the kerb's face along it 60-80+, while concrete of gain 1 returns about 11 on a sidewalk
# seen from the roof and 20 on a kerb face. Each side of a street draws its own gains (log-uniform, median
# about 1.6), and each slab varies around them: with one brightness everywhere, a detector learns that a bright
# low return is a cone, as the demo model did along that kerb.
SIDEWALK_GAIN = (0.6, 4.0)
KERB_GAIN = (0.8, 5.0)
SLAB_GAIN_SPREAD = 0.25   # log-normal sigma of one slab's gain around its side's


def _pavement(rng, street: _Street, begin, end, half_road, sidewalk, gaps) -> Primitives:
    """Sidewalk slabs and the kerbstones at their road edge, in the global frame; none across a cross street."""
    segment = 6.0  # sidewalks follow the bent street in short straight slabs
    pieces = []
    for side in (-1, 1):
        width = sidewalk[side]
        side_gain = {name: math.exp(rng.uniform(math.log(low), math.log(high)))
                     for name, (low, high) in (("slab", SIDEWALK_GAIN), ("kerb", KERB_GAIN))}
        for u in np.arange(begin, end, segment):
            if any(low <= u + segment / 2 <= high for low, high in gaps):
                continue
            slab_gain, kerb_gain = (side_gain[name] * math.exp(rng.normal(0.0, SLAB_GAIN_SPREAD))
                                    for name in ("slab", "kerb"))
            half_length = segment / 2 + 0.05
            # the kerbstone stands 1 cm proud of the slab's face and top, so that its own face is what rays meet
            slab = Primitives.concatenate([
                part((0, 0, KERB_HEIGHT / 2), (half_length, width / 2, KERB_HEIGHT / 2), "concrete", gain=slab_gain),
                part((0, -side * (width / 2 - KERB_STONE / 2 + 0.01), KERB_HEIGHT / 2 + 0.005),
                     (half_length, KERB_STONE / 2, KERB_HEIGHT / 2 + 0.005), "concrete", gain=kerb_gain)])
            position, street_yaw = street.pose(u + segment / 2, side * (half_road[side] + width / 2))
            pieces.append(slab.moved(np.array([*position, 0.0]), rotation_z(street_yaw)))
    return Primitives.concatenate(pieces)


def _buildings(rng, place, begin, end, side, sidewalk_edge, walls):
    """Facades along one side: setbacks with hedges, fences or low walls (drawn from ``walls``), floors of
    windows, gaps between houses."""
    u = begin
    while u < end:
        length = rng.uniform(8, 30)
        if rng.random() < 0.1:
            u += rng.uniform(4, 12)  # a gap: an alley or a parking lot
            continue
        setback = float(rng.choice([0.0, 0.0, rng.uniform(1.5, 6.0)]))
        floors = int(rng.integers(1, 7))
        facade = _facade(rng, length, floors)
        place(facade, u + length / 2, side * (sidewalk_edge + setback), 0.0 if side > 0 else math.pi,
              KERB_HEIGHT, check=False)
        if setback > 1.0:
            kind = rng.choice(["hedge", "fence", "none"])
            if kind == "none" and walls.random() < 0.75:
                place(_boundary("wall", walls, length - 0.5), u + length / 2, side * (sidewalk_edge + 0.3),
                      0.0, KERB_HEIGHT)
            elif kind != "none":
                place(_boundary(kind, rng, length - 0.5), u + length / 2, side * (sidewalk_edge + 0.3),
                      0.0, KERB_HEIGHT)
        u += length + rng.uniform(0, 1.5)


def _facade(rng, length: float, floors: int) -> Primitives:
    """A building front in its frame: y = 0 is the facade plane, +y into the building, x along it.
    Piers and floor bands frame windows; behind the glass the rooms end in a back wall."""
    storey = rng.uniform(2.8, 3.4)
    height = floors * storey + rng.uniform(0.3, 1.0)
    gain = rng.uniform(0.6, 1.6)
    bay = rng.uniform(2.4, 3.6)
    bays = max(1, int(length // bay))
    bay = length / bays
    window = bay * rng.uniform(0.45, 0.65)
    parts = [part((0, 4.0, height / 2), (length / 2, 0.5, height / 2), "facade", gain=gain),       # back wall
             part((-length / 2 + 0.15, 2.0, height / 2), (0.15, 2.0, height / 2), "facade", gain=gain),
             part((length / 2 - 0.15, 2.0, height / 2), (0.15, 2.0, height / 2), "facade", gain=gain)]
    for k in range(bays + 1):  # piers between windows, full height
        x = -length / 2 + k * bay
        width = (bay - window) / 2 if 0 < k < bays else (bay - window) / 4 + 0.15
        x = min(max(x, -length / 2 + width), length / 2 - width)
        parts.append(part((x, 0.15, height / 2), (width, 0.15, height / 2), "facade", gain=gain))
    sill, lintel = rng.uniform(0.8, 1.0), rng.uniform(2.1, 2.4)
    for floor in range(floors):
        z0 = floor * storey
        parts.append(part((0, 0.15, z0 + sill / 2), (length / 2, 0.15, sill / 2), "facade", gain=gain))
        top = (floor + 1) * storey if floor < floors - 1 else height
        parts.append(part((0, 0.15, (z0 + lintel + top) / 2), (length / 2, 0.15, (top - z0 - lintel) / 2), "facade",
                          gain=gain))
        parts.append(part((0, 0.25, z0 + (sill + lintel) / 2), (length / 2, 0.02, (lintel - sill) / 2), "glass"))
    return Primitives.concatenate(parts)


def _boundary(kind: str, rng, length: float, height: float | None = None) -> Primitives:
    """A hedge (its height drawn), a solid low wall of knee to chest height, or a fence of posts and mesh
    (``height``: drawn when None), along x. Low walls are what real sidewalks are lined with and the world
    lacked: the demo model put rows of barriers and pedestrians on the real key frame's (world 6)."""
    if kind == "hedge" and height is None:
        return centred(part((0, 0, 0), (length / 2, rng.uniform(0.3, 0.6), rng.uniform(0.5, 0.9)), "hedge"))
    if kind == "wall" and height is None:
        height, thickness = rng.uniform(0.4, 1.3), rng.uniform(0.2, 0.4)
        return centred(part((0, 0, 0), (length / 2, thickness / 2, height / 2), "concrete",
                            gain=float(rng.uniform(0.6, 2.5))))
    if kind != "fence":
        raise ValueError(f"unknown boundary {kind!r} (height {height}): expected 'hedge', 'wall' or 'fence'")
    height = rng.uniform(1.0, 1.8) if height is None else height
    parts = [part((x, 0, height / 2), (0.04, 0.04, height / 2), "metal")
             for x in np.arange(-length / 2, length / 2, 2.5)]
    parts.append(part((0, 0, height / 2), (length / 2, 0.02, height / 2 - 0.05), "fence"))
    return centred(Primitives.concatenate(parts))


def _furniture(kind: str, rng) -> Primitives:
    """A piece of street furniture in its frame, standing on z = 0 (see synthetic_objects.centred)."""
    if kind == "tree":
        trunk = rng.uniform(2.0, 3.2)
        crown = rng.uniform(1.2, 2.8)
        return centred(Primitives.concatenate([
            part((0, 0, trunk / 2), (0.13, 0.13, trunk / 2), "bark"),
            part((0, 0, trunk + crown * 0.8), (crown, crown * rng.uniform(0.8, 1.0), crown), "foliage", ELLIPSOID)]))
    if kind == "bush":
        r = rng.uniform(0.4, 0.9)
        return centred(part((0, 0, r * 0.8), (r, r * 1.2, r * 0.8), "hedge", ELLIPSOID))
    if kind == "pole":
        height = rng.uniform(5.0, 8.0)
        return centred(Primitives.concatenate([
            part((0, 0, height / 2), (0.08, 0.08, height / 2), "metal"),
            part((0.8, 0, height - 0.1), (0.8, 0.06, 0.06), "metal"),
            part((1.5, 0, height - 0.25), (0.3, 0.12, 0.08), "metal")]))
    if kind == "bollards":  # a row along the kerb
        height, spacing = rng.uniform(0.8, 1.1), rng.uniform(1.2, 1.8)
        return centred(Primitives.concatenate([
            part((k * spacing, 0, height / 2), (0.08, 0.08, height / 2), "metal")
            for k in range(int(rng.integers(3, 7)))]))
    if kind == "hydrant":
        return centred(Primitives.concatenate([part((0, 0, 0.3), (0.12, 0.12, 0.3), "paint", gain=2.0),
                                               part((0, 0, 0.45), (0.06, 0.2, 0.05), "paint", gain=2.0)]))
    if kind == "bin":
        r, height = rng.uniform(0.25, 0.4), rng.uniform(0.8, 1.1)
        return centred(part((0, 0, height / 2), (r, r, height / 2), "metal", gain=float(rng.uniform(0.4, 1.2))))
    if kind == "post_box":
        return centred(part((0, 0, 0.65), (0.25, 0.25, 0.65), "paint", gain=float(rng.uniform(0.8, 2.0))))
    if kind == "bench":  # seat, back and two legs; x along the street, the sitter faces -y
        length = rng.uniform(1.5, 2.2)
        return centred(Primitives.concatenate([
            part((0, 0, 0.45), (length / 2, 0.25, 0.03), "metal"),
            part((0, 0.22, 0.7), (length / 2, 0.03, 0.2), "metal"),
            *[part((x, 0, 0.22), (0.04, 0.22, 0.22), "metal") for x in (-length / 2 + 0.15, length / 2 - 0.15)]]))
    if kind == "planter":  # a concrete trough with a shrub in it
        half = rng.uniform(0.4, 0.8)
        return centred(Primitives.concatenate([
            part((0, 0, 0.3), (half, half, 0.3), "concrete"),
            part((0, 0, 0.6 + half * 0.6), (half * 0.9, half * 0.9, half * 0.7), "hedge", ELLIPSOID)]))
    if kind == "sign":  # a post and a retro-reflective plate facing the road
        height = rng.uniform(2.2, 2.8)
        return centred(Primitives.concatenate([
            part((0, 0, height / 2), (0.04, 0.04, height / 2), "metal"),
            part((0, 0.05, height - 0.35), (0.35, 0.02, 0.35), "sign")]))
    raise ValueError(f"unknown street furniture {kind!r}")


@dataclass
class Sweep:
    """One turn of the sensor: points in the sensor frame and the pose it was taken from."""
    points: np.ndarray          # (N, 5) float32: x, y, z, intensity 0..255, ring index
    origin: np.ndarray          # sensor origin in the global frame
    rotation: np.ndarray        # (3, 3) sensor → global
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # all objects at this time


_SENSOR_CACHE: dict = {}  # LidarSpec → (beams, returns from the ego's own body)


def _sensor_constants(lidar: LidarSpec):
    if lidar not in _SENSOR_CACHE:
        # the ego body in the sensor frame: undo the mount's translation and rotation
        to_sensor = mount_rotation(lidar).T
        body = EGO_BODY.moved(-to_sensor @ np.asarray(lidar.mount), to_sensor)
        _SENSOR_CACHE[lidar] = beam_directions(lidar), body_returns(body, lidar)
    return _SENSOR_CACHE[lidar]


def scene_primitives(scene: Scene, t: float) -> Primitives:
    """Everything the beams can hit at time t except the road and the ego: street and objects."""
    return Primitives.concatenate([scene.static] + [obj.parts_at(t) for obj in scene.objects])


def ray_cast(scene: Scene, t: float, rng: np.random.Generator) -> Sweep:
    """Cast every beam x azimuth ray at time t against the street, the objects' parts and the road."""
    lidar = scene.lidar
    origin, rotation = scene.sensor_pose(t)
    beams, body = _sensor_constants(lidar)
    points = scan(scene_primitives(scene, t), scene.ground, origin, rotation, lidar, rng, beams, body)
    boxes = np.stack([obj.box_at(t) for obj in scene.objects]) if scene.objects else np.zeros((0, 7))
    return Sweep(points, origin, rotation, boxes)
