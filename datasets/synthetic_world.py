"""A synthetic LiDAR world: scenes on a ground plane with static clutter and moving objects of the
nuScenes detection classes, an ego vehicle driving a path, and a ray-cast spinning LiDAR.

Everything is in metres, in a scene's global frame (z up, ground at z = 0). Boxes are
``(x, y, z, dx, dy, dz, yaw)`` with z the box centre and dx along the heading. The world only
describes and senses scenes; ``datasets.nuscenes_writer`` turns them into a nuScenes database.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from datasets.boxes import rotation_z

# detection name: (nuScenes category, size dx, dy, dz, speed range m/s when moving, moving attribute,
# static attribute, reflectivity 0..1)
CLASSES = {
    "car": ("vehicle.car", (4.6, 1.95, 1.7), (3.0, 10.0), "vehicle.moving", "vehicle.parked", 0.55),
    "truck": ("vehicle.truck", (7.5, 2.6, 3.1), (2.0, 8.0), "vehicle.moving", "vehicle.parked", 0.5),
    "construction_vehicle": ("vehicle.construction", (6.5, 2.8, 3.2), (0.5, 2.0), "vehicle.moving",
                             "vehicle.parked", 0.45),
    "bus": ("vehicle.bus.rigid", (11.0, 2.95, 3.5), (2.0, 8.0), "vehicle.moving", "vehicle.stopped", 0.5),
    "trailer": ("vehicle.trailer", (12.0, 2.9, 3.8), (2.0, 6.0), "vehicle.moving", "vehicle.parked", 0.45),
    "barrier": ("movable_object.barrier", (0.5, 2.5, 1.0), None, None, None, 0.7),
    "motorcycle": ("vehicle.motorcycle", (2.1, 0.8, 1.5), (2.0, 8.0), "cycle.with_rider", "cycle.without_rider", 0.5),
    "bicycle": ("vehicle.bicycle", (1.75, 0.6, 1.3), (1.5, 5.0), "cycle.with_rider", "cycle.without_rider", 0.4),
    "pedestrian": ("human.pedestrian.adult", (0.73, 0.67, 1.77), (0.5, 1.8), "pedestrian.moving",
                   "pedestrian.standing", 0.35),
    "traffic_cone": ("movable_object.trafficcone", (0.41, 0.41, 1.07), None, None, None, 0.8),
}
GROUND_REFLECTIVITY = 0.25
CLUTTER_REFLECTIVITY = {"wall": 0.6, "pole": 0.7, "vegetation": 0.3}


@dataclass(frozen=True)
class LidarSpec:
    """A spinning multi-beam LiDAR: elevation angles (degrees) and azimuth steps per turn."""
    elevations_deg: tuple
    azimuth_steps: int = 1080
    max_range: float = 70.0
    range_noise: float = 0.02     # metres, Gaussian
    dropout: float = 0.05         # share of returns lost
    mount: tuple = (0.943, 0.0, 1.84)  # sensor in the ego frame (x forward, z up), metres
    mount_yaw: float = -math.pi / 2    # sensor x axis relative to the ego's, as nuScenes' LIDAR_TOP


HDL32E = LidarSpec(tuple(np.linspace(-30.67, 10.67, 32).round(3)))
HDL64E = LidarSpec(tuple(np.linspace(-24.9, 2.0, 64).round(3)), azimuth_steps=2048, max_range=100.0)
LIDARS = {"hdl32e": HDL32E, "hdl64e": HDL64E}


@dataclass
class SceneObject:
    """A box moving at constant velocity; annotated objects have a detection class name."""
    name: str                 # detection class, or 'wall' / 'pole' / 'vegetation' for clutter
    start: np.ndarray         # (x, y) at t = 0
    yaw: float
    size: tuple               # dx, dy, dz
    velocity: np.ndarray      # (vx, vy) m/s
    reflectivity: float
    annotated: bool

    def box_at(self, t: float) -> np.ndarray:
        x, y = self.start + self.velocity * t
        return np.array([x, y, self.size[2] / 2, *self.size, self.yaw])


@dataclass
class Scene:
    """One drive: the ego path (constant speed and turn rate) and the objects around it."""
    objects: list[SceneObject]
    ego_speed: float
    ego_yaw_rate: float
    ego_start_yaw: float
    duration: float
    lidar: LidarSpec = HDL32E

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
        return origin, ego_rotation @ rotation_z(self.lidar.mount_yaw)


def random_scene(rng: np.random.Generator, duration: float, lidar: LidarSpec = HDL32E) -> Scene:
    """A street: walls, poles and vegetation along both sides, parked and moving traffic in two
    lanes, pedestrians and cyclists on the sidewalks, barriers and cones at the kerb."""
    speed = rng.uniform(3.0, 8.0)
    yaw_rate = rng.uniform(-0.04, 0.04)
    start_yaw = rng.uniform(-math.pi, math.pi)
    length = speed * duration + 120.0
    # Objects are placed in a straight street frame (u along, w across) around the ego's path, then
    # bent onto it: u maps to the ego pose at the matching time.
    placed: list[tuple[str, float, float, float, float, bool]] = []  # name, u, w, heading, speed, annotated

    def lane_objects(name, count, w_choices, moving_probability, heading_jitter=0.05):
        for _ in range(count):
            u = rng.uniform(-50.0, length - 50.0)
            w = rng.choice(w_choices) + rng.normal(0, 0.2)
            speeds = CLASSES[name][2]
            moving = speeds is not None and rng.random() < moving_probability
            heading = 0.0 if w > 0 else math.pi  # traffic keeps to its side of the street
            if name == "barrier":
                heading += math.pi / 2  # nuScenes barriers: the long side (dy) runs along the kerb
            heading += rng.normal(0, heading_jitter)
            speed_value = rng.uniform(*speeds) if moving else 0.0
            placed.append((name, u, w, heading, speed_value, True))

    lane_objects("car", rng.integers(6, 12), [-1.8, 1.8], 0.8)
    lane_objects("car", rng.integers(4, 9), [-4.6, 4.6], 0.0)          # parked at the kerb
    lane_objects("truck", rng.integers(0, 3), [-1.8, 1.8], 0.7)
    lane_objects("bus", rng.integers(0, 2), [-1.8, 1.8], 0.7)
    lane_objects("trailer", rng.integers(0, 2), [-4.8, 4.8], 0.2)
    lane_objects("construction_vehicle", rng.integers(0, 2), [-5.0, 5.0], 0.3)
    lane_objects("pedestrian", rng.integers(6, 14), [-6.8, -6.2, 6.2, 6.8], 0.75, heading_jitter=0.3)
    lane_objects("bicycle", rng.integers(1, 4), [-3.4, 3.4], 0.7)
    lane_objects("motorcycle", rng.integers(0, 3), [-1.8, 1.8], 0.8)
    lane_objects("barrier", rng.integers(2, 6), [-5.6, 5.6], 0.0)
    lane_objects("traffic_cone", rng.integers(3, 8), [-3.0, 3.0], 0.0)
    for u in np.arange(-50.0, length - 50.0, 30.0):                     # walls, in 28 m segments
        for side in (-1, 1):
            if rng.random() < 0.75:
                placed.append(("wall", u + 14.0, side * rng.uniform(10.0, 12.0), 0.0, 0.0, False))
    for u in np.arange(-50.0, length - 50.0, 14.0):                     # poles
        placed.append(("pole", u + rng.normal(0, 1.0), rng.choice([-7.8, 7.8]), 0.0, 0.0, False))
    for _ in range(int(length / 8)):                                    # vegetation
        placed.append(("vegetation", rng.uniform(-50.0, length - 50.0), rng.choice([-1, 1]) * rng.uniform(8.5, 9.5),
                       rng.uniform(0, math.pi), 0.0, False))

    scene = Scene([], speed, yaw_rate, start_yaw, duration, lidar)
    objects: list[SceneObject] = []
    for name, u, w, heading, object_speed, annotated in placed:
        t_ref = u / speed  # the ego passes this point of the street at t_ref (may be outside the scene)
        centre, street_yaw = scene.ego_pose(t_ref)
        across = np.array([-math.sin(street_yaw), math.cos(street_yaw)])
        position = centre + w * across
        yaw = street_yaw + heading
        if name in CLASSES:
            size = tuple(float(s) * rng.uniform(0.92, 1.08) for s in CLASSES[name][1])
            reflectivity = CLASSES[name][5]
        else:
            size = {"wall": (28.0, 0.4, rng.uniform(2.5, 4.0)), "pole": (0.3, 0.3, rng.uniform(3.5, 6.0)),
                    "vegetation": (rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.0), rng.uniform(1.5, 3.5))}[name]
            reflectivity = CLUTTER_REFLECTIVITY[name]
        velocity = object_speed * np.array([math.cos(yaw), math.sin(yaw)])
        candidate = SceneObject(name, position, yaw, size, velocity, reflectivity, annotated)
        if not any(_overlap(candidate, other, duration) for other in objects):
            objects.append(candidate)
    scene.objects = objects
    return scene


def _overlap(a: SceneObject, b: SceneObject, duration: float) -> bool:
    """Conservative: bounding circles closer than their radii at the start, middle or end."""
    radius = math.hypot(a.size[0], a.size[1]) / 2 + math.hypot(b.size[0], b.size[1]) / 2 + 0.3
    return any(np.linalg.norm(a.box_at(t)[:2] - b.box_at(t)[:2]) < radius for t in (0.0, duration / 2, duration))


@dataclass
class Sweep:
    """One turn of the sensor: points in the sensor frame and the pose it was taken from."""
    points: np.ndarray          # (N, 5) float32: x, y, z, intensity 0..255, ring index
    origin: np.ndarray          # sensor origin in the global frame
    rotation: np.ndarray        # (3, 3) sensor → global
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))  # all objects at this time


def ray_cast(scene: Scene, t: float, rng: np.random.Generator) -> Sweep:
    """Cast every beam x azimuth ray at time t against the ground and the objects' boxes."""
    lidar = scene.lidar
    origin, rotation = scene.sensor_pose(t)
    elevation = np.deg2rad(np.asarray(lidar.elevations_deg))[:, None]
    azimuth = np.linspace(-math.pi, math.pi, lidar.azimuth_steps, endpoint=False)[None, :]
    local = np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                         np.sin(elevation)), axis=-1).reshape(-1, 3)
    ring = np.repeat(np.arange(len(lidar.elevations_deg)), lidar.azimuth_steps)
    directions = local @ rotation.T                                   # global
    distance = np.full(len(directions), np.inf)
    cosine = np.zeros(len(directions))
    reflectivity = np.zeros(len(directions))
    down = directions[:, 2] < -1e-9
    ground = np.where(down, -origin[2] / np.where(down, directions[:, 2], -1.0), np.inf)
    hit = ground < distance
    distance[hit], cosine[hit], reflectivity[hit] = ground[hit], np.abs(directions[hit, 2]), GROUND_REFLECTIVITY

    boxes = np.stack([obj.box_at(t) for obj in scene.objects]) if scene.objects else np.zeros((0, 7))
    global_azimuth = np.arctan2(directions[:, 1], directions[:, 0])
    for obj, box in zip(scene.objects, boxes):
        offset = box[:2] - origin[:2]
        reach = math.hypot(*offset)
        half_diagonal = math.hypot(box[3], box[4]) / 2
        if reach - half_diagonal > lidar.max_range:
            continue
        # Only rays within the box's angular extent (as seen from the sensor) can hit it.
        if reach > half_diagonal:
            half_angle = math.asin(min(1.0, half_diagonal / reach))
            centre = math.atan2(offset[1], offset[0])
            candidates = np.nonzero(np.abs(np.angle(np.exp(1j * (global_azimuth - centre)))) <= half_angle)[0]
        else:
            candidates = np.arange(len(directions))
        if not len(candidates):
            continue
        box_rotation = rotation_z(box[6])
        o_local = box_rotation.T @ (origin - box[:3])
        d_local = directions[candidates] @ box_rotation                # rows: R^T d
        half = np.asarray(box[3:6]) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o_local) / d_local
            t2 = (half - o_local) / d_local
        t_near_axes = np.minimum(t1, t2)
        t_near = np.nanmax(t_near_axes, axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        hits = (t_far >= t_near) & (t_near > 0) & (t_near < distance[candidates])
        rows = candidates[hits]
        distance[rows] = t_near[hits]
        face_axis = np.nanargmax(t_near_axes[hits], axis=1)
        cosine[rows] = np.abs(d_local[hits, face_axis])
        reflectivity[rows] = obj.reflectivity
    keep = (distance < lidar.max_range) & (rng.random(len(distance)) >= lidar.dropout)
    measured = distance[keep] + rng.normal(0.0, lidar.range_noise, int(keep.sum()))
    points = local[keep] * measured[:, None]
    intensity = np.clip(255.0 * reflectivity[keep] * (0.3 + 0.7 * cosine[keep]) + rng.normal(0, 2, len(points)), 0, 255)
    cloud = np.column_stack([points, intensity, ring[keep]]).astype(np.float32)
    return Sweep(cloud, origin, rotation, boxes)
