"""The synthetic LiDAR: a spinning multi-beam sensor ray-cast against solid primitives (oriented boxes and
ellipsoids) and a slightly uneven ground, with materials calibrated on the real nuScenes key frame.

Geometry is a :class:`Primitives` table (one row per part); a sweep casts every beam x azimuth ray once.
Culling is per primitive: only the rays of the rings and azimuth columns its bird's-eye footprint and
height span are tested, all (primitive, ray) pairs in one vectorised pass; the nearest return wins.
Every firing yields a point, as in the real HDL-32E files: a ray with no return (sky, too weak, lost) is
stored a few centimetres along its beam, like the real sensor's placeholder points near the origin.
Units: metres, radians; intensities 0..255 integers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOX, ELLIPSOID = 0, 1
MAX_TILT = 0.2  # radians of sensor pitch or roll; the ray culling widens its windows by the tilt


@dataclass(frozen=True)
class Material:
    """How a surface answers a beam.

    intensity: median real intensity (0..255) at normal incidence; hit_probability: share of crossing rays
    that return (glass, foliage, spokes < 1); depth: mean depth (m) a ray travels into a volume before it
    returns (foliage), 0 for surfaces.
    """
    intensity: float
    hit_probability: float = 1.0
    depth: float = 0.0


# Calibrated on the real key frame, whose medians are: road 8-14, points in car boxes 12, in pedestrian boxes
# 25, in barrier boxes 11, all returns 12; retro-reflectors (plates, lamps, signs, cone bands) reach 60..255.
# The values are before the incidence factor (0.5 + 0.5 cos) and the log-normal speckle of scan().
MATERIALS = {
    "asphalt": Material(12.0), "concrete": Material(20.0), "facade": Material(20.0), "glass": Material(10.0, 0.08),
    "interior": Material(8.0), "paint": Material(10.0), "car_glass": Material(8.0, 0.15), "tyre": Material(5.0),
    "plate": Material(110.0), "headlamp": Material(45.0), "tail_reflector": Material(140.0),
    "clothing": Material(22.0), "skin": Material(25.0), "metal": Material(26.0), "sign": Material(160.0),
    "foliage": Material(9.0, 0.45, 0.35), "hedge": Material(10.0, 0.75, 0.15), "bark": Material(12.0),
    "fence": Material(18.0, 0.6), "barrier": Material(14.0), "cone": Material(60.0), "spokes": Material(15.0, 0.25),
    "ego": Material(20.0),
}
MATERIAL_IDS = {name: index for index, name in enumerate(MATERIALS)}
_INTENSITY = np.array([m.intensity for m in MATERIALS.values()])
_HIT_PROBABILITY = np.array([m.hit_probability for m in MATERIALS.values()])
_DEPTH = np.array([m.depth for m in MATERIALS.values()])


@dataclass(frozen=True)
class LidarSpec:
    """A spinning multi-beam LiDAR: elevation angles (degrees, ascending) and azimuth steps per turn.

    range_noise: Gaussian along the beam (m). dropout: share of otherwise good returns lost at random.
    weak_range: range (m) at which a return of intensity 5 is lost half the time; brighter returns reach
    farther (sqrt of the intensity), so the far field keeps bright surfaces as in the real scans.
    keeps_no_returns: every firing is stored, a ray without return as a placeholder within
    ``placeholder_range`` of the sensor (the nuScenes HDL-32E files: 32 x 1084 points, always).
    """
    elevations_deg: tuple
    azimuth_steps: int = 1084
    max_range: float = 70.0
    range_noise: float = 0.02
    dropout: float = 0.03
    weak_range: float = 50.0
    keeps_no_returns: bool = True
    placeholder_range: tuple = (0.05, 0.45)
    mount: tuple = (0.943, 0.0, 1.84)  # sensor in the ego frame (x forward, z up), metres
    mount_yaw: float = -math.pi / 2    # sensor x axis relative to the ego's, as nuScenes' LIDAR_TOP
    # (pitch, roll) radians of the sensor on the ego: rotation sensor → ego = Rz(mount_yaw) Ry(pitch) Rx(roll).
    # Real mounts are not level: the real key frame's LIDAR_TOP has pitch 0.006, roll -0.024.
    mount_tilt: tuple = (0.0, 0.0)

    def __post_init__(self):
        # the ray culling finds a part's rings by binary search over the elevations: out of order, it would
        # silently skip rays that meet the part
        elevations = np.asarray(self.elevations_deg, dtype=float)
        if elevations.ndim != 1 or not len(elevations) or not (np.diff(elevations) > 0).all() or \
                not (np.abs(elevations) < 90).all():
            raise ValueError(f"LidarSpec.elevations_deg must be strictly ascending degrees in (-90, 90), got "
                             f"{self.elevations_deg}")
        if len(self.mount_tilt) != 2 or not all(abs(angle) <= MAX_TILT for angle in self.mount_tilt):
            raise ValueError(f"LidarSpec.mount_tilt must be (pitch, roll) within +-{MAX_TILT} rad, "
                             f"got {self.mount_tilt}")
        if self.azimuth_steps < 1 or not self.max_range > 0 or self.range_noise < 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"LidarSpec: azimuth_steps >= 1, max_range > 0, range_noise >= 0 and 0 <= dropout < 1 "
                             f"expected, got {self.azimuth_steps}, {self.max_range}, {self.range_noise}, "
                             f"{self.dropout}")


# HDL-32E: the real key frame's per-ring median elevations (degrees) for the rings it sees all the way round
# (8-30); the steep rings 1-7, half hidden by the roof, keep the nominal -30.67 + 1.333 k; 1084 firings per
# ring and turn (0.332 deg), as in the real file.
HDL32E_ELEVATIONS = (-30.67, -29.336, -28.003, -26.669, -25.336, -24.002, -22.669, -21.335, -20.129, -18.775,
                     -17.416, -16.044, -14.715, -13.365, -12.032, -10.703, -9.354, -8.023, -6.678, -5.342, -4.011,
                     -2.682, -1.342, -0.007, 1.323, 2.662, 3.996, 5.326, 6.664, 7.995, 9.323, 10.67)
HDL32E = LidarSpec(HDL32E_ELEVATIONS, max_range=100.0)
HDL64E = LidarSpec(tuple(np.linspace(-24.9, 2.0, 64).round(3)), azimuth_steps=2048, max_range=100.0,
                   weak_range=45.0, keeps_no_returns=False)
LIDARS = {"hdl32e": HDL32E, "hdl64e": HDL64E}


@dataclass
class Primitives:
    """N solid parts in one frame: centre (N, 3), rotation (N, 3, 3) part → frame, half sizes (N, 3),
    shape (N,) BOX / ELLIPSOID, material (N,) index into MATERIALS, gain (N,) intensity factor."""
    centre: np.ndarray
    rotation: np.ndarray
    half: np.ndarray
    shape: np.ndarray
    material: np.ndarray
    gain: np.ndarray

    @staticmethod
    def empty() -> "Primitives":
        return Primitives(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0, np.int8),
                          np.zeros(0, np.int16), np.zeros(0))

    @staticmethod
    def concatenate(parts: list["Primitives"]) -> "Primitives":
        parts = [p for p in parts if len(p)] or [Primitives.empty()]
        return Primitives(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("centre", "rotation", "half", "shape", "material", "gain")))

    def __len__(self) -> int:
        return len(self.centre)

    def moved(self, position: np.ndarray, rotation: np.ndarray) -> "Primitives":
        """These parts after a rigid motion: x → rotation @ x + position."""
        return Primitives(self.centre @ rotation.T + position, rotation[None] @ self.rotation, self.half, self.shape,
                          self.material, self.gain)

    def extents(self) -> np.ndarray:
        """(N, 3) half extents of each part's axis-aligned bounding box in this frame (tight)."""
        box = np.abs(self.rotation) @ self.half[:, :, None]
        ellipsoid = np.sqrt((self.rotation ** 2) @ (self.half ** 2)[:, :, None])
        return np.where(self.shape[:, None, None] == BOX, box, ellipsoid)[:, :, 0]


def part(centre, half, material: str, shape: int = BOX, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
         gain: float = 1.0) -> Primitives:
    """One part: rotation = Rz(yaw) Ry(pitch) Rx(roll) about its centre."""
    cz, sz, cy, sy, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(roll), \
        math.sin(roll)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1.0]])
    ry = np.array([[cy, 0, sy], [0, 1.0, 0], [-sy, 0, cy]])
    rx = np.array([[1.0, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return Primitives(np.array([centre], float), (rz @ ry @ rx)[None], np.array([half], float),
                      np.array([shape], np.int8), np.array([MATERIAL_IDS[material]], np.int16), np.array([gain]))


@dataclass(frozen=True)
class Ground:
    """The road surface z = sum of a few gentle waves (a few centimetres) in the global frame."""
    amplitudes: tuple = ()
    wave_vectors: tuple = ()   # (kx, ky) rad/m per wave
    phases: tuple = ()

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        z = np.zeros_like(x)
        for a, (kx, ky), p in zip(self.amplitudes, self.wave_vectors, self.phases):
            z += a * np.sin(kx * x + ky * y + p)
        return z


def mount_rotation(spec: LidarSpec) -> np.ndarray:
    """(3, 3) rotation sensor → ego of the mount: Rz(mount_yaw) Ry(pitch) Rx(roll)."""
    pitch, roll = spec.mount_tilt
    cy, sy, cp, sp, cr, sr = (math.cos(spec.mount_yaw), math.sin(spec.mount_yaw), math.cos(pitch), math.sin(pitch),
                              math.cos(roll), math.sin(roll))
    return np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]]) @ \
        np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])


def beam_directions(spec: LidarSpec) -> np.ndarray:
    """(rings * azimuth_steps, 3) unit beams in the sensor frame, ring-major; azimuth from -pi."""
    elevation = np.deg2rad(np.asarray(spec.elevations_deg))[:, None]
    azimuth = -math.pi + np.arange(spec.azimuth_steps)[None, :] * (2 * math.pi / spec.azimuth_steps)
    return np.stack(np.broadcast_arrays(np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                                        np.sin(elevation)), axis=-1).reshape(-1, 3)


def footprints(primitives: Primitives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each part's bird's-eye footprint as an oriented rectangle: yaw (N,), half lengths (N, 2) along
    and across it, and the half height (N,) of its bounding box."""
    yaw = np.arctan2(primitives.rotation[:, 1, 0], primitives.rotation[:, 0, 0])
    c, s = np.cos(yaw), np.sin(yaw)
    unyawed = primitives.rotation.copy()
    unyawed[:, 0], unyawed[:, 1] = (c[:, None] * primitives.rotation[:, 0] + s[:, None] * primitives.rotation[:, 1],
                                    -s[:, None] * primitives.rotation[:, 0] + c[:, None] * primitives.rotation[:, 1])
    local = Primitives(primitives.centre, unyawed, primitives.half, primitives.shape, primitives.material,
                       primitives.gain).extents()
    return yaw, local[:, :2], local[:, 2]


def candidate_pairs(primitives: Primitives, origin: np.ndarray, rotation: np.ndarray, spec: LidarSpec):
    """(primitive index, ray index) pairs whose ring x azimuth window can meet each primitive: the
    azimuths its footprint's corners span and the rings between its bottom and top at its nearest and
    farthest footprint distance, for the sensor at ``origin`` with ``rotation`` sensor → world. A tilted
    sensor (its z axis off the world's by tilt) moves a ray's elevation by up to the tilt and its azimuth
    by up to about the tilt times the tangent of its elevation: the windows widen by that much (the
    azimuths by the primitive's steepest ring)."""
    steps = spec.azimuth_steps
    sensor_yaw = math.atan2(rotation[1, 0], rotation[0, 0])
    tilt = math.acos(min(1.0, float(rotation[2, 2])))
    elevations = np.deg2rad(np.asarray(spec.elevations_deg))
    yaw, half_xy, half_z = footprints(primitives)
    c, s = np.cos(yaw), np.sin(yaw)
    offset = primitives.centre[:, :2] - origin[:2]
    # the sensor in each footprint's frame
    sx, sy = -(c * offset[:, 0] + s * offset[:, 1]), -(-s * offset[:, 0] + c * offset[:, 1])
    gap = np.hypot(np.maximum(np.abs(sx) - half_xy[:, 0], 0), np.maximum(np.abs(sy) - half_xy[:, 1], 0))
    inside = gap < 0.05
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    corner_local = signs[None] * half_xy[:, None]                                   # (N, 4, 2)
    corner_x = offset[:, None, 0] + c[:, None] * corner_local[..., 0] - s[:, None] * corner_local[..., 1]
    corner_y = offset[:, None, 1] + s[:, None] * corner_local[..., 0] + c[:, None] * corner_local[..., 1]
    near, far = np.maximum(gap, 0.01), np.hypot(corner_x, corner_y).max(1)
    low = primitives.centre[:, 2] - half_z - origin[2]
    high = primitives.centre[:, 2] + half_z - origin[2]
    lowest = np.arctan(np.minimum(low / near, low / far)) - tilt
    highest = np.arctan(np.maximum(high / near, high / far)) + tilt
    ring_lo = np.searchsorted(elevations, lowest, side="left")
    ring_hi = np.searchsorted(elevations, highest, side="right")
    # azimuth columns of slack: the tilt's azimuth shift at the primitive's steepest ring, plus one for rounding
    step = 2 * math.pi / steps
    slack = 0
    if tilt > 1e-9:
        last_ring = np.clip(ring_hi - 1, 0, len(elevations) - 1)
        steepest = np.maximum(np.abs(elevations[np.clip(ring_lo, 0, len(elevations) - 1)]),
                              np.abs(elevations[last_ring]))
        slack = np.ceil(tilt * np.tan(steepest) / step).astype(np.int64) + 1
    centre_azimuth = np.arctan2(offset[:, 1], offset[:, 0])
    relative = np.angle(np.exp(1j * (np.arctan2(corner_y, corner_x) - centre_azimuth[:, None])))
    start = centre_azimuth + relative.min(1) - sensor_yaw
    first = np.ceil((start + math.pi) / step).astype(np.int64) - slack
    last = np.floor((centre_azimuth + relative.max(1) - sensor_yaw + math.pi) / step).astype(np.int64) + slack
    columns = np.where(inside, steps, np.minimum(last - first + 1, steps))
    first = np.where(inside, 0, first)
    ring_count = ring_hi - ring_lo
    visible = (gap <= spec.max_range) & (ring_count > 0) & (columns > 0)
    counts = np.where(visible, ring_count * columns, 0)
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(primitives)), counts)
    local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    width = columns[owner]
    ring = ring_lo[owner] + local // width
    column = (first[owner] + local % width) % steps
    return owner, ring * steps + column


def intersect(primitives: Primitives, owner: np.ndarray, origin: np.ndarray, directions: np.ndarray):
    """Entry and exit distances (P,) of rays from ``origin`` along unit ``directions`` (P, 3) through the
    primitives ``owner`` (P,), and the cosine of incidence at the entry; NaN entry where they miss."""
    # ray origin and direction in each part's frame (R^T (o - c), R^T d)
    local_origin = np.einsum("nij,ni->nj", primitives.rotation, origin - primitives.centre)
    o = local_origin[owner]
    d = np.einsum("pij,pi->pj", primitives.rotation[owner], directions)
    half = primitives.half[owner]
    entry = np.full(len(owner), np.nan)
    exit_ = np.full(len(owner), np.nan)
    cosine = np.zeros(len(owner))
    is_box = primitives.shape[owner] == BOX
    rows = np.nonzero(is_box)[0]
    if len(rows):
        ob, db, hb = o[rows], d[rows], half[rows]
        # a zero component becomes tiny: the slab then gives +-huge distances, the right answer in the limit
        inverse = 1.0 / np.where(db == 0, 1e-300, db)
        t1, t2 = (-hb - ob) * inverse, (hb - ob) * inverse
        near_axes = np.minimum(t1, t2)
        axis = near_axes.argmax(1)
        t_near = np.take_along_axis(near_axes, axis[:, None], 1)[:, 0]
        t_far = np.maximum(t1, t2).min(1)
        hit = (t_far >= t_near) & (t_near > 0)
        rows, t_near, t_far = rows[hit], t_near[hit], t_far[hit]
        entry[rows], exit_[rows] = t_near, t_far
        cosine[rows] = np.abs(np.take_along_axis(db[hit], axis[hit, None], 1)[:, 0])
    rows = np.nonzero(~is_box)[0]
    if len(rows):
        he = half[rows]
        oe, de = o[rows] / he, d[rows] / he
        a = (de * de).sum(1)
        b = 2 * (oe * de).sum(1)
        c = (oe * oe).sum(1) - 1
        discriminant = b * b - 4 * a * c
        hit = (discriminant >= 0) & (c > 0)
        root = np.sqrt(np.where(hit, discriminant, 0))
        t_near, t_far = (-b - root) / (2 * a), (-b + root) / (2 * a)
        hit &= t_near > 0
        entry[rows[hit]], exit_[rows[hit]] = t_near[hit], t_far[hit]
        normal = (oe[hit] + t_near[hit, None] * de[hit]) / he[hit]
        cosine[rows[hit]] = np.abs((normal * d[rows[hit]]).sum(1)) / np.linalg.norm(normal, axis=1)
    return entry, exit_, cosine


def body_returns(body: Primitives, spec: LidarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Distance (inf: none) and incidence cosine of every beam on the carrier's own body, given in the
    sensor frame: fixed for a sensor, so computed once."""
    beams = beam_directions(spec)
    owner = np.repeat(np.arange(len(body)), len(beams))
    ray = np.tile(np.arange(len(beams)), len(body))
    entry, _exit, cosine = intersect(body, owner, np.zeros(3), beams[ray])
    entry = np.where(np.isnan(entry), np.inf, entry).reshape(len(body), -1)
    nearest = entry.argmin(0)
    columns = np.arange(len(beams))
    return entry[nearest, columns], cosine.reshape(len(body), -1)[nearest, columns]


def scan(primitives: Primitives, ground: Ground, origin: np.ndarray, rotation: np.ndarray, spec: LidarSpec,
         rng: np.random.Generator, beams: np.ndarray | None = None,
         body: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One turn of the sensor at ``origin`` (global, m) with ``rotation`` (3, 3) sensor → global (any yaw,
    tilted up to MAX_TILT): (N, 5) float32 points x, y, z, intensity 0..255, ring, in the sensor frame.
    ``body``: :func:`body_returns` of the carrier, which hides what lies behind it."""
    beams = beam_directions(spec) if beams is None else beams
    rotation = np.asarray(rotation, dtype=float)
    if rotation.shape != (3, 3) or math.acos(min(1.0, float(rotation[2, 2]))) > MAX_TILT + 1e-9:
        raise ValueError(f"scan: rotation must be a (3, 3) sensor → global rotation tilted at most {MAX_TILT} rad, "
                         f"got {rotation.tolist()}")
    directions = beams @ rotation.T
    rays = len(beams)
    distance = np.full(rays, np.inf)
    cosine = np.zeros(rays)
    base = np.zeros(rays)

    down = np.nonzero(directions[:, 2] < -1e-6)[0]
    t = np.full(rays, np.inf)
    t[down] = -origin[2] / directions[down, 2]
    for _ in range(2):  # fixed-point steps onto the gentle waves of the road
        x, y = origin[0] + t[down] * directions[down, 0], origin[1] + t[down] * directions[down, 1]
        t[down] = (ground.height(x, y) - origin[2]) / directions[down, 2]
    hit_ground = t < spec.max_range
    distance[hit_ground] = t[hit_ground]
    cosine[hit_ground] = -directions[hit_ground, 2]
    base[hit_ground] = _INTENSITY[MATERIAL_IDS["asphalt"]]
    if body is not None:
        on_body = body[0] < distance
        distance[on_body], cosine[on_body] = body[0][on_body], body[1][on_body]
        base[on_body] = _INTENSITY[MATERIAL_IDS["ego"]]

    if len(primitives):
        owner, ray = candidate_pairs(primitives, origin, rotation, spec)
        entry, exit_, incidence = intersect(primitives, owner, origin, directions[ray])
        material = primitives.material[owner]
        depth = _DEPTH[material]
        returned = rng.random(len(owner)) < _HIT_PROBABILITY[material]
        into = np.where(depth > 0, rng.exponential(1.0, len(owner)) * depth, 0.0)
        stop = entry + into
        valid = np.isfinite(entry) & returned & (stop <= np.where(depth > 0, exit_, np.inf))
        owner, ray, stop, incidence = owner[valid], ray[valid], stop[valid], incidence[valid]
        # Volume returns scatter from foliage facing any way: their incidence is drawn, not the hull's.
        foliage = depth[valid] > 0
        incidence[foliage] = rng.uniform(0.2, 1.0, int(foliage.sum()))
        nearest = np.full(rays, np.inf)
        np.minimum.at(nearest, ray, stop)
        winner = (stop == nearest[ray]) & (stop < distance[ray])
        rows = ray[winner]
        distance[rows] = stop[winner]
        cosine[rows] = incidence[winner]
        base[rows] = _INTENSITY[primitives.material[owner[winner]]] * primitives.gain[owner[winner]]

    found = np.isfinite(distance) & (distance < spec.max_range)
    # Intensity: a Lambertian share plus a floor, times log-normal speckle; weak far returns are lost.
    intensity = base * (0.5 + 0.5 * cosine) * np.exp(rng.normal(0.0, 0.6, rays))
    reach = spec.weak_range * np.sqrt(np.maximum(intensity, 0.5) / 5.0)
    keep_probability = (1.0 - spec.dropout) / (1.0 + np.exp((distance - reach) / (0.12 * reach)))
    found &= rng.random(rays) < keep_probability
    measured = np.where(found, distance + rng.normal(0.0, spec.range_noise, rays), 0.0)
    ring = np.repeat(np.arange(len(spec.elevations_deg)), spec.azimuth_steps)
    if spec.keeps_no_returns:
        placeholder = ~found
        measured[placeholder] = rng.uniform(*spec.placeholder_range, int(placeholder.sum()))
        intensity[placeholder] = rng.lognormal(math.log(10.0), 1.0, int(placeholder.sum()))
        keep = np.ones(rays, bool)
    else:
        keep = found
    points = beams[keep] * measured[keep, None]
    values = np.clip(np.round(intensity[keep]), 0, 255)
    return np.column_stack([points, values, ring[keep]]).astype(np.float32)
