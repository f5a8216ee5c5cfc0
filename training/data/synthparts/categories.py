"""The SynthParts object categories: each is a parametric shape built from analytic primitives.

Part names are generic and shared across categories the way real objects share them (PACO style:
``handle`` on mug, pan, kettle, knife, hammer, ...), so a model can learn a part once and find it on an
object it never saw. Builders work in the object frame: z up, origin at the centre of the footprint on
the table, lying objects along +x. All sizes are metres and drawn from ``rng`` on every call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.data.synthparts.primitives import Primitive, box, capsule, cylinder, ellipsoid, rot_z

PartGeometry = list[tuple[str, list[Primitive]]]

UP = np.array([0.0, 0.0, 1.0])
X = np.array([1.0, 0.0, 0.0])


def _arc(
    centre: np.ndarray, radius_x: float, radius_z: float, start: float, stop: float, tube: float, n: int = 6
) -> list[Primitive]:
    """A bent handle: a chain of capsules along an elliptic arc in the x-z plane."""
    angles = np.linspace(start, stop, n + 1)
    pts = [centre + np.array([radius_x * np.cos(a), 0.0, radius_z * np.sin(a)]) for a in angles]
    return [capsule(pts[i], pts[i + 1], tube) for i in range(n)]


def _ring(centre: np.ndarray, rx: float, ry: float, tube: float, n: int = 8) -> list[Primitive]:
    """A flat closed loop (scissor finger hole) in the x-y plane."""
    angles = np.linspace(0.0, 2 * np.pi, n + 1)
    pts = [centre + np.array([rx * np.cos(a), ry * np.sin(a), 0.0]) for a in angles]
    return [capsule(pts[i], pts[i + 1], tube) for i in range(n)]


def mug(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.035, 0.048), rng.uniform(0.08, 0.115)
    bulge, tube = rng.uniform(0.022, 0.035), rng.uniform(0.005, 0.008)
    handle = _arc(
        np.array([r - tube, 0, h * 0.52]), bulge, h * rng.uniform(0.26, 0.33), -np.pi / 2, np.pi / 2, tube
    )
    return [("body", [cylinder(np.zeros(3), UP, r, h)]), ("handle", handle)]


def pan(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.09, 0.13), rng.uniform(0.035, 0.06)
    length, rise = rng.uniform(0.13, 0.19), rng.uniform(0.01, 0.04)
    start = np.array([r - 0.005, 0, h * 0.8])
    return [
        ("body", [cylinder(np.zeros(3), UP, r, h)]),
        ("handle", [capsule(start, start + np.array([length, 0, rise]), rng.uniform(0.009, 0.013))]),
    ]


def pot(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.07, 0.1), rng.uniform(0.08, 0.13)
    length = rng.uniform(0.12, 0.17)
    start = np.array([r - 0.005, 0, h * 0.85])
    parts: PartGeometry = [
        ("body", [cylinder(np.zeros(3), UP, r, h)]),
        ("handle", [capsule(start, start + np.array([length, 0, 0.02]), rng.uniform(0.009, 0.012))]),
    ]
    if rng.random() < 0.75:  # some pots come without their lid
        lid_h = rng.uniform(0.01, 0.018)
        lid = [cylinder(np.array([0, 0, h]), UP, r * 1.03, lid_h)]
        lid.append(ellipsoid(np.array([0, 0, h + lid_h]), np.array([0.015, 0.015, 0.012])))
        parts.append(("lid", lid))
    return parts


def kettle(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.065, 0.085), rng.uniform(0.11, 0.16)
    body = [
        cylinder(np.zeros(3), UP, r, h * 0.75),
        ellipsoid(np.array([0, 0, h * 0.75]), np.array([r, r, h * 0.2])),
    ]
    lid_r = r * rng.uniform(0.45, 0.6)
    lid = [cylinder(np.array([0, 0, h * 0.91]), UP, lid_r, rng.uniform(0.015, 0.022))]
    spout_base = np.array([-r * 0.85, 0, h * 0.35])
    spout_tip = spout_base + np.array([-rng.uniform(0.05, 0.08), 0, rng.uniform(0.06, 0.09)])
    tube = rng.uniform(0.007, 0.01)
    handle = _arc(
        np.array([r - tube, 0, h * 0.55]), rng.uniform(0.03, 0.045), h * 0.3, -np.pi / 2, np.pi / 2, tube
    )
    return [
        ("body", body),
        ("lid", lid),
        ("spout", [capsule(spout_base, spout_tip, rng.uniform(0.008, 0.012))]),
        ("handle", handle),
    ]


def knife(rng: np.random.Generator) -> PartGeometry:
    blade_l, blade_w, th = rng.uniform(0.1, 0.18), rng.uniform(0.018, 0.032), rng.uniform(0.002, 0.004)
    handle_l, handle_r = rng.uniform(0.08, 0.12), rng.uniform(0.008, 0.011)
    blade = box(np.array([blade_l / 2, 0, th / 2]), np.array([blade_l / 2, blade_w / 2, th / 2]))
    handle = capsule(np.array([-handle_l, 0, handle_r]), np.array([-0.005, 0, handle_r]), handle_r)
    return [("blade", [blade]), ("handle", [handle])]


def scissors(rng: np.random.Generator) -> PartGeometry:
    blade_l, th, opening = rng.uniform(0.07, 0.11), 0.003, rng.uniform(0.05, 0.3)
    blades = []
    for sign in (-1, 1):
        R = rot_z(sign * opening / 2)
        centre = R @ np.array([blade_l / 2, 0, th / 2 + (sign + 1) * th / 2])
        blades.append(box(centre, np.array([blade_l / 2, 0.007, th / 2]), R))
    tube, rx, ry = rng.uniform(0.004, 0.006), rng.uniform(0.018, 0.024), rng.uniform(0.012, 0.016)
    handles = []
    for sign in (-1, 1):
        handles += _ring(np.array([-rx - 0.01, sign * (ry + 0.003), tube]), rx, ry, tube)
    return [("blade", blades), ("handle", handles)]


def hammer(rng: np.random.Generator) -> PartGeometry:
    handle_l, handle_r = rng.uniform(0.22, 0.3), rng.uniform(0.011, 0.015)
    head_l, head_s = rng.uniform(0.08, 0.12), rng.uniform(0.022, 0.03)
    head = box(np.array([handle_l, 0, head_s / 2]), np.array([head_s / 2, head_l / 2, head_s / 2]))
    handle = capsule(np.array([0, 0, handle_r]), np.array([handle_l - head_s / 2, 0, head_s / 2]), handle_r)
    return [("head", [head]), ("handle", [handle])]


def screwdriver(rng: np.random.Generator) -> PartGeometry:
    handle_l, handle_r = rng.uniform(0.08, 0.12), rng.uniform(0.012, 0.018)
    shaft_l, shaft_r = rng.uniform(0.07, 0.14), rng.uniform(0.0025, 0.004)
    handle = capsule(np.array([0, 0, handle_r]), np.array([handle_l, 0, handle_r]), handle_r)
    shaft_start = np.array([handle_l + handle_r * 0.8, 0, handle_r])
    shaft = capsule(shaft_start, shaft_start + np.array([shaft_l, 0, -handle_r + shaft_r]), shaft_r)
    return [("handle", [handle]), ("shaft", [shaft])]


def wrench(rng: np.random.Generator) -> PartGeometry:
    handle_l, width, th = rng.uniform(0.12, 0.2), rng.uniform(0.015, 0.022), rng.uniform(0.005, 0.008)
    head_r = rng.uniform(0.02, 0.028)
    handle = box(np.array([handle_l / 2, 0, th / 2]), np.array([handle_l / 2, width / 2, th / 2]))
    head = cylinder(np.array([handle_l + head_r * 0.7, 0, 0]), UP, head_r, th * 1.2)
    return [("head", [head]), ("handle", [handle])]


def spatula(rng: np.random.Generator) -> PartGeometry:
    handle_l, handle_r = rng.uniform(0.14, 0.2), rng.uniform(0.007, 0.01)
    head_l, head_w = rng.uniform(0.06, 0.09), rng.uniform(0.05, 0.075)
    handle = capsule(np.array([-handle_l, 0, handle_r]), np.array([0, 0, 0.004]), handle_r)
    head = box(np.array([head_l / 2, 0, 0.002]), np.array([head_l / 2, head_w / 2, 0.002]))
    return [("head", [head]), ("handle", [handle])]


def ladle(rng: np.random.Generator) -> PartGeometry:
    bowl_r, bowl_h = rng.uniform(0.035, 0.05), rng.uniform(0.02, 0.03)
    handle_l = rng.uniform(0.16, 0.24)
    head = ellipsoid(np.array([0, 0, bowl_h]), np.array([bowl_r, bowl_r, bowl_h]))
    handle = capsule(
        np.array([bowl_r * 0.8, 0, bowl_h * 1.5]), np.array([bowl_r + handle_l, 0, 0.008]), 0.006
    )
    return [("head", [head]), ("handle", [handle])]


def bottle(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.028, 0.042), rng.uniform(0.12, 0.2)
    neck_r, neck_h = r * rng.uniform(0.32, 0.45), rng.uniform(0.03, 0.06)
    shoulder = rng.uniform(0.015, 0.03)
    body = [cylinder(np.zeros(3), UP, r, h), ellipsoid(np.array([0, 0, h]), np.array([r, r, shoulder]))]
    neck = [cylinder(np.array([0, 0, h + shoulder * 0.8]), UP, neck_r, neck_h)]
    parts: PartGeometry = [("body", body), ("neck", neck)]
    if rng.random() < 0.8:  # an open bottle shows no cap
        cap_base = np.array([0, 0, h + shoulder * 0.8 + neck_h])
        parts.append(("cap", [cylinder(cap_base, UP, neck_r * 1.2, rng.uniform(0.012, 0.022))]))
    return parts


def jar(rng: np.random.Generator) -> PartGeometry:
    r, h = rng.uniform(0.04, 0.06), rng.uniform(0.07, 0.13)
    lid_h = rng.uniform(0.012, 0.022)
    return [
        ("body", [cylinder(np.zeros(3), UP, r, h)]),
        ("lid", [cylinder(np.array([0, 0, h]), UP, r * 1.04, lid_h)]),
    ]


def drawer(rng: np.random.Generator) -> PartGeometry:
    depth, width, height = rng.uniform(0.18, 0.26), rng.uniform(0.22, 0.32), rng.uniform(0.1, 0.16)
    body = box(np.array([0, 0, height / 2]), np.array([depth / 2, width / 2, height / 2]))
    bar_l, standoff, tube = (
        width * rng.uniform(0.3, 0.5),
        rng.uniform(0.015, 0.025),
        rng.uniform(0.005, 0.007),
    )
    z = height * rng.uniform(0.45, 0.6)
    front = depth / 2
    handle = [
        capsule(
            np.array([front + standoff, -bar_l / 2, z]), np.array([front + standoff, bar_l / 2, z]), tube
        ),
        capsule(np.array([front - 0.002, -bar_l / 2, z]), np.array([front + standoff, -bar_l / 2, z]), tube),
        capsule(np.array([front - 0.002, bar_l / 2, z]), np.array([front + standoff, bar_l / 2, z]), tube),
    ]
    return [("body", [body]), ("handle", handle)]


BUILDERS: dict[str, Callable[[np.random.Generator], PartGeometry]] = {
    "mug": mug,
    "pan": pan,
    "pot": pot,
    "kettle": kettle,
    "knife": knife,
    "scissors": scissors,
    "hammer": hammer,
    "screwdriver": screwdriver,
    "wrench": wrench,
    "spatula": spatula,
    "ladle": ladle,
    "bottle": bottle,
    "jar": jar,
    "drawer": drawer,
}

# Every part name a category can show (optional parts such as a pot's lid included), in build order.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "mug": ("body", "handle"),
    "pan": ("body", "handle"),
    "pot": ("body", "handle", "lid"),
    "kettle": ("body", "lid", "spout", "handle"),
    "knife": ("blade", "handle"),
    "scissors": ("blade", "handle"),
    "hammer": ("head", "handle"),
    "screwdriver": ("handle", "shaft"),
    "wrench": ("head", "handle"),
    "spatula": ("head", "handle"),
    "ladle": ("head", "handle"),
    "bottle": ("body", "neck", "cap"),
    "jar": ("body", "lid"),
    "drawer": ("body", "handle"),
}
