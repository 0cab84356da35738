"""Part models of the synthetic world's road users: vehicles with body, glass cabin, wheels and a front
unlike their back; trucks, buses, trailers (alone, or towed by a semi-tractor) and construction vehicles in
their own proportions; pedestrians with legs, torso, arms and head in a walking pose; cyclists and
motorcyclists with riders.

Each model returns :class:`~datasets.synthetic_sensor.Primitives` in the object's frame: x forward
(the heading), y left, z up, with the tight box of all parts centred on the origin in x and y and its
bottom at z = 0. :func:`tight_size` gives that box's (dx, dy, dz), the annotated size.
"""
from __future__ import annotations

import math

import numpy as np

from datasets.synthetic_sensor import ELLIPSOID, Primitives, part


def tight_size(parts: Primitives) -> tuple[float, float, float]:
    """(dx, dy, dz) of the axis-aligned box around all parts in their frame."""
    extents = parts.extents()
    low, high = (parts.centre - extents).min(0), (parts.centre + extents).max(0)
    return tuple(float(v) for v in high - low)


def centred(parts: Primitives) -> Primitives:
    """The parts shifted so that their tight box is centred in x, y and stands on z = 0."""
    extents = parts.extents()
    low, high = (parts.centre - extents).min(0), (parts.centre + extents).max(0)
    shift = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
    return parts.moved(-shift, np.eye(3))


def _wheels(xs, half_track, radius, width, spokes=False) -> list[Primitives]:
    material = "spokes" if spokes else "tyre"
    return [part((x, side * half_track, radius), (radius, width / 2, radius), material, ELLIPSOID)
            for x in xs for side in (-1, 1)]


def _lamps(front_x, back_x, half_width, z, gain) -> list[Primitives]:
    """Headlamps ahead, red reflectors and a plate behind: what tells a vehicle's front from its back."""
    parts = []
    for side in (-1, 1):
        parts.append(part((front_x + 0.01, side * (half_width - 0.25), z), (0.02, 0.15, 0.06), "headlamp"))
        parts.append(part((back_x - 0.01, side * (half_width - 0.2), z + 0.1), (0.02, 0.12, 0.05), "tail_reflector"))
    parts.append(part((front_x + 0.01, 0.0, z - 0.12), (0.02, 0.25, 0.06), "plate"))
    parts.append(part((back_x - 0.01, 0.0, z + 0.05), (0.02, 0.25, 0.06), "plate"))
    return parts


def car(rng: np.random.Generator) -> Primitives:
    """Hood lower and longer than the boot, a glass cabin with roof and seats, four wheels."""
    length, width, height = rng.normal(4.55, 0.3), rng.normal(1.86, 0.08), rng.normal(1.55, 0.1)
    gain = float(rng.choice([0.6, 1.0, 1.6, 2.6]))  # dark, mid, light, white paint
    clearance, radius = 0.18, 0.32
    body_top = clearance + 0.62 * (height - clearance) * rng.uniform(0.9, 1.05)
    half_length, half_width = length / 2, width / 2
    cabin_length = 0.48 * length
    cabin_x = -0.08 * length   # the cabin sits behind the middle: long hood, short boot
    roof = height - 0.04
    parts = [
        part((0, 0, (clearance + body_top) / 2), (half_length, half_width, (body_top - clearance) / 2), "paint",
             gain=gain),
        part((cabin_x, 0, (body_top + roof) / 2), (cabin_length / 2, half_width - 0.08, (roof - body_top) / 2),
             "car_glass"),
        part((cabin_x - 0.05, 0, roof + 0.02), (cabin_length / 2 - 0.25, half_width - 0.12, 0.02), "paint", gain=gain),
        part((cabin_x - 0.1, 0, body_top + 0.25), (cabin_length / 2 - 0.35, half_width - 0.25, 0.25), "interior"),
    ]
    for side in (-1, 1):  # pillars at the windscreen and the rear window
        for x in (cabin_x + cabin_length / 2 - 0.1, cabin_x - cabin_length / 2 + 0.1):
            parts.append(part((x, side * (half_width - 0.12), (body_top + roof) / 2),
                              (0.06, 0.05, (roof - body_top) / 2), "paint", gain=gain))
    wheelbase = 0.6 * length
    parts += _wheels((wheelbase / 2 + 0.05, -wheelbase / 2 + 0.05), half_width - 0.12, radius, 0.22)
    parts += _lamps(half_length, -half_length, half_width, clearance + 0.45, gain)
    return centred(Primitives.concatenate(parts))


def truck(rng: np.random.Generator) -> Primitives:
    """A cab with a windscreen ahead of a taller cargo box, six wheels."""
    length, width = rng.uniform(6.0, 9.5), rng.uniform(2.3, 2.55)
    cab_length, cab_height, box_height = 2.0, rng.uniform(2.6, 3.0), rng.uniform(3.0, 3.6)
    gain = float(rng.choice([1.0, 1.8, 2.6]))
    half_length, half_width = length / 2, width / 2
    cab_x = half_length - cab_length / 2
    parts = [
        part((cab_x, 0, 0.45 + (cab_height - 0.45) * 0.35), (cab_length / 2, half_width, (cab_height - 0.45) * 0.35),
             "paint", gain=gain),
        part((cab_x - 0.15, 0, 0.45 + (cab_height - 0.45) * 0.82), (cab_length / 2 - 0.15, half_width - 0.05,
                                                                   (cab_height - 0.45) * 0.18), "car_glass"),
        part((cab_x - 0.4, 0, cab_height - 0.05), (cab_length / 2 - 0.4, half_width - 0.05, 0.05), "paint", gain=gain),
        part((cab_x - 0.4, 0, 1.9), (0.5, half_width - 0.3, 0.4), "interior"),
        part((0, 0, 0.75), (half_length - 0.1, 0.45, 0.18), "metal"),                              # chassis
        part((-cab_length / 2 - 0.15, 0, (1.05 + box_height) / 2),
             ((length - cab_length - 0.3) / 2, half_width, (box_height - 1.05) / 2), "paint", gain=1.5),
    ]
    parts += _wheels((half_length - 1.1, -half_length + 1.6, -half_length + 2.6), half_width - 0.2, 0.5, 0.35)
    parts += _lamps(half_length, -half_length, half_width, 0.75, gain)
    return centred(Primitives.concatenate(parts))


def bus(rng: np.random.Generator) -> Primitives:
    """A long box with a band of side windows, a tall windscreen, doors' glass, six or four wheels."""
    length, width, height = rng.uniform(10.5, 12.5), rng.uniform(2.5, 2.6), rng.uniform(3.0, 3.4)
    half_length, half_width = length / 2, width / 2
    window_low, window_high = 1.25, height - 0.45
    parts = [
        part((0, 0, (0.3 + window_low) / 2), (half_length, half_width, (window_low - 0.3) / 2), "paint", gain=1.6),
        part((0, 0, (window_high + height) / 2), (half_length, half_width, (height - window_high) / 2), "paint",
             gain=1.6),
        part((0, 0, (window_low + window_high) / 2), (half_length - 0.05, half_width - 0.03,
                                                      (window_high - window_low) / 2), "car_glass"),
        part((0, 0, window_low + 0.35), (half_length - 0.8, half_width - 0.5, 0.35), "interior"),
    ]
    for x in np.linspace(-half_length + 0.4, half_length - 0.4, 7):  # pillars between the windows
        for side in (-1, 1):
            parts.append(part((x, side * (half_width - 0.04), (window_low + window_high) / 2),
                              (0.08, 0.04, (window_high - window_low) / 2), "paint", gain=1.6))
    parts += _wheels((half_length - 2.6, -half_length + 3.0), half_width - 0.25, 0.5, 0.3)
    parts += _lamps(half_length, -half_length, half_width, 0.7, 1.0)
    return centred(Primitives.concatenate(parts))


def trailer(rng: np.random.Generator) -> Primitives:
    """A cargo box raised on rear axles and front landing legs, no cab."""
    length, width, height = rng.uniform(9.0, 13.0), rng.uniform(2.45, 2.55), rng.uniform(3.6, 4.0)
    half_length, half_width = length / 2, width / 2
    floor = 1.25
    parts = [part((0, 0, (floor + height) / 2), (half_length, half_width, (height - floor) / 2), "paint",
                  gain=float(rng.choice([1.2, 2.4]))),
             part((0, 0, floor - 0.15), (half_length - 0.2, 0.5, 0.15), "metal")]
    for side in (-1, 1):
        parts.append(part((half_length - 2.5, side * (half_width - 0.4), floor / 2), (0.06, 0.06, floor / 2 - 0.05),
                          "metal"))
        parts.append(part((-half_length + 0.01, side * (half_width - 0.2), floor + 0.1), (0.02, 0.12, 0.05),
                          "tail_reflector"))
    parts += _wheels((-half_length + 1.2, -half_length + 2.5), half_width - 0.3, 0.5, 0.4)
    return centred(Primitives.concatenate(parts))


# A semi-trailer's kingpin sits this far behind its front, over the tractor's fifth wheel, which sits this far
# ahead of the tractor's rear: a towed trailer's box reaches TOW_OVERLAP over the tractor's (m).
KINGPIN_FROM_FRONT = 1.0
FIFTH_WHEEL_FROM_REAR = 1.6
TOW_OVERLAP = KINGPIN_FROM_FRONT + FIFTH_WHEEL_FROM_REAR


def tractor(rng: np.random.Generator) -> Primitives:
    """A semi-trailer's tractor (nuScenes annotates it a truck): a tall cab ahead, a bare chassis with the
    fifth wheel behind it, under the trailer's front; three axles. The cab clears a towed trailer by 0.8-1.2 m."""
    width, cab_length, cab_height = rng.uniform(2.45, 2.55), rng.uniform(2.2, 3.0), rng.uniform(3.0, 3.7)
    length = TOW_OVERLAP + rng.uniform(0.8, 1.2) + cab_length
    gain = float(rng.choice([1.0, 1.8, 2.6]))
    half_length, half_width = length / 2, width / 2
    cab_x = half_length - cab_length / 2
    body_top = 0.5 + 0.7 * (cab_height - 0.5)
    glass_top = body_top + 0.6 * (cab_height - body_top)
    parts = [
        part((cab_x, 0, (0.5 + body_top) / 2), (cab_length / 2, half_width, (body_top - 0.5) / 2), "paint", gain=gain),
        part((cab_x, 0, (body_top + glass_top) / 2), (cab_length / 2 - 0.05, half_width - 0.05,
                                                      (glass_top - body_top) / 2), "car_glass"),
        part((cab_x - 0.2, 0, (glass_top + cab_height) / 2), (cab_length / 2 - 0.2, half_width - 0.05,
                                                              (cab_height - glass_top) / 2), "paint", gain=gain),
        part((cab_x - 0.3, 0, body_top + 0.3), (cab_length / 2 - 0.5, half_width - 0.3, 0.3), "interior"),
        part((-cab_length / 2, 0, 0.8), (half_length - cab_length / 2 - 0.05, 0.45, 0.2), "metal"),  # chassis
        part((-half_length + FIFTH_WHEEL_FROM_REAR, 0, 1.05), (0.5, 0.6, 0.05), "metal"),           # fifth wheel
    ]
    parts += _wheels((half_length - 1.2, -half_length + 0.9, -half_length + 2.2), half_width - 0.25, 0.5, 0.35)
    parts += _lamps(half_length, -half_length, half_width, 0.75, gain)
    return centred(Primitives.concatenate(parts))


def construction_vehicle(rng: np.random.Generator) -> Primitives:
    """A tracked or wheeled base, a turret with a glass cab and an arm reaching forward and up."""
    length, width = rng.uniform(5.0, 7.0), rng.uniform(2.5, 2.9)
    half_length, half_width = length / 2, width / 2
    parts = [
        part((-0.3, 0, 0.5), (half_length - 0.5, half_width, 0.5), "metal", gain=0.8),
        part((-0.6, 0, 1.45), (1.6, half_width - 0.1, 0.45), "paint", gain=2.0),
        part((0.3, half_width * 0.4, 2.45), (0.6, 0.5, 0.55), "car_glass"),
        part((0.3, half_width * 0.4, 3.02), (0.6, 0.5, 0.03), "paint", gain=2.0),
        part((0.3, half_width * 0.4, 2.1), (0.4, 0.35, 0.2), "interior"),
    ]
    arm_pitch = -rng.uniform(0.3, 0.7)  # raised forward
    arm_length = half_length - 0.2
    parts.append(part((half_length - arm_length / 2 * math.cos(arm_pitch), -0.3,
                       2.2 - arm_length / 2 * math.sin(arm_pitch)), (arm_length / 2, 0.2, 0.25), "paint",
                      pitch=arm_pitch, gain=2.0))
    return centred(Primitives.concatenate(parts))


def _person(rng: np.random.Generator, phase: float, stride: float) -> list[Primitives]:
    """Legs, torso, arms and head; legs and arms swing by ``stride`` (rad) at gait ``phase``."""
    height = rng.normal(1.72, 0.08)
    hip, shoulder = 0.53 * height, 0.82 * height
    swing = stride * math.sin(phase)
    leg = hip / 2
    parts = []
    for side, sign in ((-1, 1.0), (1, -1.0)):   # left and right legs swing in opposition
        angle = sign * swing
        parts.append(part((leg * math.sin(angle), side * 0.1, hip - leg * math.cos(angle)), (0.08, 0.08, leg),
                          "clothing", pitch=angle, gain=float(rng.uniform(0.6, 1.6))))
        arm = 0.33 * height / 2
        parts.append(part((-arm * math.sin(angle), side * 0.25, shoulder - arm * math.cos(angle)), (0.055, 0.055, arm),
                          "clothing", pitch=-angle))
    torso_gain = float(rng.uniform(0.5, 2.0))
    parts.append(part((0, 0, (hip + shoulder) / 2 + 0.02), (0.13, 0.21, (shoulder - hip) / 2 + 0.05), "clothing",
                      ELLIPSOID, gain=torso_gain))
    parts.append(part((0, 0, height - 0.11), (0.1, 0.085, 0.115), "skin", ELLIPSOID))
    return parts


def pedestrian(rng: np.random.Generator) -> Primitives:
    return centred(Primitives.concatenate(_person(rng, rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.4))))


def _rider(rng: np.random.Generator, seat_x: float, seat_z: float, lean: float) -> list[Primitives]:
    """A seated rider: thighs forward, torso leaning ``lean`` rad forward, head above."""
    height = rng.normal(1.72, 0.08)
    torso = 0.3 * height
    parts = []
    for side in (-1, 1):
        parts.append(part((seat_x + 0.2, side * 0.12, seat_z - 0.1), (0.22, 0.07, 0.07), "clothing", pitch=0.4))
        parts.append(part((seat_x + 0.38, side * 0.14, seat_z - 0.42), (0.06, 0.06, 0.24), "clothing"))
    top_x, top_z = seat_x + torso * math.sin(lean), seat_z + torso * math.cos(lean)
    parts.append(part(((seat_x + top_x) / 2, 0, (seat_z + top_z) / 2 + 0.05), (0.1, 0.18, torso / 2 + 0.06),
                      "clothing", ELLIPSOID, pitch=lean, gain=float(rng.uniform(0.5, 2.0))))
    parts.append(part((top_x + 0.05, 0, top_z + 0.2), (0.11, 0.1, 0.13), "skin", ELLIPSOID))
    for side in (-1, 1):  # arms to the handlebar
        parts.append(part((top_x + 0.15, side * 0.2, top_z - 0.15), (0.2, 0.045, 0.045), "clothing", pitch=0.6))
    return parts


def bicycle(rng: np.random.Generator, with_rider: bool = True) -> Primitives:
    wheel = 0.34
    base = 1.05
    parts = [part((x, 0, wheel), (wheel, 0.02, wheel), "spokes", ELLIPSOID) for x in (-base / 2, base / 2)]
    parts += [part((0, 0, 0.62), (base / 2 - 0.05, 0.02, 0.025), "metal"),
              part((-0.15, 0, 0.75), (0.12, 0.06, 0.03), "metal"),                      # saddle
              part((base / 2 - 0.05, 0, 0.95), (0.03, 0.28, 0.02), "metal")]           # handlebar
    if with_rider:
        parts += _rider(rng, -0.12, 0.85, rng.uniform(0.25, 0.55))
    return centred(Primitives.concatenate(parts))


def motorcycle(rng: np.random.Generator, with_rider: bool = True) -> Primitives:
    wheel = 0.32
    base = 1.45
    parts = [part((x, 0, wheel), (wheel, 0.07, wheel), "tyre", ELLIPSOID) for x in (-base / 2, base / 2)]
    parts += [part((0.05, 0, 0.6), (0.55, 0.2, 0.2), "paint", gain=float(rng.choice([0.7, 1.5, 2.5]))),
              part((-0.25, 0, 0.83), (0.3, 0.15, 0.05), "interior"),
              part((base / 2 - 0.1, 0, 1.0), (0.04, 0.35, 0.03), "metal"),
              part((base / 2 + 0.05, 0, 0.85), (0.04, 0.1, 0.07), "headlamp"),
              part((-base / 2 - 0.15, 0, 0.75), (0.03, 0.08, 0.05), "tail_reflector")]
    if with_rider:
        parts += _rider(rng, -0.25, 0.9, rng.uniform(0.2, 0.45))
    return centred(Primitives.concatenate(parts))


def barrier(rng: np.random.Generator) -> Primitives:
    """A jersey barrier: wide foot, narrow top; its long side is y (nuScenes: along the kerb)."""
    length, height = rng.uniform(1.8, 2.1), rng.uniform(0.9, 1.15)
    return centred(Primitives.concatenate([
        part((0, 0, 0.15), (0.3, length / 2, 0.15), "barrier"),
        part((0, 0, 0.3 + (height - 0.3) / 2), (0.12, length / 2, (height - 0.3) / 2), "barrier"),
    ]))


def traffic_cone(rng: np.random.Generator) -> Primitives:
    """A square foot and a tapering body (three stacked sections), a reflective band."""
    height = rng.uniform(0.7, 1.0)
    parts = [part((0, 0, 0.02), (0.2, 0.2, 0.02), "cone")]
    for k, (z, r) in enumerate(((0.3, 0.12), (0.55, 0.085), (0.8, 0.05))):
        z *= height
        parts.append(part((0, 0, z), (r, r, 0.13 * height), "tail_reflector" if k == 1 else "cone", ELLIPSOID))
    return centred(Primitives.concatenate(parts))


# detection name → part model
PART_MODELS = {"car": car, "truck": truck, "bus": bus, "trailer": trailer,
               "construction_vehicle": construction_vehicle, "pedestrian": pedestrian, "bicycle": bicycle,
               "motorcycle": motorcycle, "barrier": barrier, "traffic_cone": traffic_cone}
