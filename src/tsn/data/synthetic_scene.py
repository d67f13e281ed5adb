"""Scene description and sampling for the synthetic benchmark: a camera, a ground, a wall and random primitives
(spheres, capsules, boxes, cylinders, cones and articulated figures), each with a patterned surface.

World frame: metres, ``y`` up, ground plane ``y = 0``. The camera stands at ``(0, height, 0)`` and looks along
``-z``, pitched down. Hit ids: ``0`` is the sky, ``1`` the ground, ``2`` the back wall, ``3..`` the object
primitives. Instance ids: ``0`` sky, ``1`` ground, ``2`` wall, ``3 + k`` the k-th object (a figure is one instance
made of ten primitives). :mod:`tsn.data.synthetic_render` casts the rays.

Determinism: the per-scene trigonometry runs in Python's ``math``, so a scene does not depend on the CPU.
"""

from __future__ import annotations

import bisect
import colorsys
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SHAPES",
    "PATTERNS",
    "Camera",
    "Surface",
    "Scene",
    "sample_scene",
]

FLOAT = np.float32
FAR = 30.0
"""Far plane (m along the optical axis): the open ground ends there, so depth stays bounded as in real data."""
SHAPES = ("plane", "sphere", "capsule", "box", "cylinder", "cone")
"""Primitive kinds and their parameter columns:

* plane: ``nx ny nz offset`` (points with ``n . p = offset``; ``n`` faces the camera);
* sphere: ``cx cy cz r``;
* capsule: ``ax ay az bx by bz r`` (segment ``a-b`` swept by a ball of radius ``r``);
* box: ``cx cy cz hx hy hz cos sin`` (half sizes in the box frame, rotated by an angle about ``y``);
* cylinder: ``cx cz r h`` (vertical, standing on the ground, top cap at ``y = h``);
* cone: ``cx cz r h`` (vertical, base of radius ``r`` on the ground, apex at ``y = h``).
"""

PATTERNS = ("plain", "stripes", "checks", "noise")

# Semantic classes and figure parts (names in tsn.data.synthetic).
SKY_OR_WALL, GROUND, SPHERE, BOX, CYLINDER, CONE_OR_CAPSULE, FIGURE = range(7)
HEAD, TORSO, UPPER_ARM, LOWER_ARM, UPPER_LEG, LOWER_LEG = range(1, 7)
FIRST_OBJECT_INSTANCE = 3

Point3 = tuple[float, float, float]
"""One point or direction."""


# ------------------------------------------------------------------------------------------------ scene description
@dataclass(frozen=True)
class Camera:
    """A pinhole camera at ``(0, height, 0)`` looking along ``-z``, pitched down by ``pitch`` radians."""

    height: float
    pitch: float
    fov: float
    """Full field of view of the (square) image, radians."""

    def basis(self) -> tuple[Point3, Point3, Point3]:
        """World-space ``right``, ``up`` and ``back`` unit vectors (``back`` points away from the view)."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        return (1.0, 0.0, 0.0), (0.0, c, -s), (0.0, s, c)



@dataclass(frozen=True)
class Surface:
    """Albedo of one surface: colour ``a`` and ``b`` mixed by a procedural pattern in the surface's own frame."""

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float]
    pattern: int
    """Index into :data:`PATTERNS`."""
    frequency: float
    """Pattern cells per metre."""
    axis: tuple[float, float, float]
    """Unit direction across the stripes."""
    origin: tuple[float, float, float]
    """Where the pattern is anchored, so that it moves with the object."""


@dataclass(frozen=True)
class Scene:
    """Everything :func:`render` needs, as per-kind parameter tables and per-hit-id lookup tables."""

    camera: Camera
    light: tuple[float, float, float]
    """Unit direction towards the (directional) light."""
    ambient: float
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    surfaces: tuple[Surface, ...]
    shapes: dict[str, np.ndarray]
    """Kind -> ``(M, columns)`` float32 parameters (only the kinds present)."""
    shape_ids: dict[str, np.ndarray]
    """Kind -> ``(M,)`` hit ids of those rows."""
    bounds: dict[str, np.ndarray | None]
    """Kind -> ``(M, 4)`` bounding spheres (centre, radius), None for kinds tested exactly everywhere."""
    instance: np.ndarray
    label: np.ndarray
    part: np.ndarray
    surface: np.ndarray
    """Hit id -> instance id, semantic class, figure part and surface index (``-1`` for the sky)."""
    noise_seed: int
    noise_level: int
    """Half-width of the triangular integer sensor noise, in grey levels."""


def _bounding_spheres(kind: str, params: np.ndarray) -> np.ndarray | None:
    """``(M, 4)`` centre and radius enclosing each primitive, or None where the exact test is as cheap."""
    p = params.astype(np.float64)
    if kind == "capsule":
        centre, half = (p[:, 0:3] + p[:, 3:6]) / 2, (p[:, 3:6] - p[:, 0:3]) / 2
        radius = np.sqrt((half * half).sum(axis=1)) + p[:, 6]
    elif kind == "box":
        centre, radius = p[:, 0:3], np.sqrt((p[:, 3:6] ** 2).sum(axis=1))
    elif kind in ("cylinder", "cone"):
        centre = np.stack([p[:, 0], p[:, 3] / 2, p[:, 1]], axis=1)
        radius = np.sqrt(p[:, 2] ** 2 + (p[:, 3] / 2) ** 2)
    else:
        return None
    # A relative margin keeps the float32 test conservative.
    return np.concatenate([centre, radius[:, None] * 1.001 + 1e-3], axis=1).astype(FLOAT)


class _SceneBuilder:
    """Collects primitives and surfaces while a scene is sampled, then freezes them into lookup tables."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[float, ...]]] = {kind: [] for kind in SHAPES}
        self.ids: dict[str, list[int]] = {kind: [] for kind in SHAPES}
        # hit ids 0 (sky), 1 (ground) and 2 (wall) always exist so that object ids start at 3 in every scene.
        self.instance = [0, 1, 2]
        self.label = [SKY_OR_WALL, GROUND, SKY_OR_WALL]
        self.part = [0, 0, 0]
        self.surface = [-1, 0, 1]
        self.surfaces: list[Surface] = []

    def add_surface(self, surface: Surface) -> int:
        self.surfaces.append(surface)
        return len(self.surfaces) - 1

    def add(self, kind: str, params: tuple[float, ...], *, hit_id: int | None = None, instance: int = 0,
            label: int = 0, part: int = 0, surface: int = 0) -> None:
        """Add one primitive; planes reuse the fixed hit ids 1 and 2 (``hit_id``)."""
        if hit_id is None:
            hit_id = len(self.instance)
            self.instance.append(instance)
            self.label.append(label)
            self.part.append(part)
            self.surface.append(surface)
        self.rows[kind].append(tuple(float(v) for v in params))
        self.ids[kind].append(hit_id)

    def build(self, **fields: Any) -> Scene:
        shapes = {kind: np.asarray(rows, dtype=FLOAT) for kind, rows in self.rows.items() if rows}
        return Scene(
            surfaces=tuple(self.surfaces),
            shapes=shapes,
            bounds={kind: _bounding_spheres(kind, params) for kind, params in shapes.items()},
            shape_ids={kind: np.asarray(self.ids[kind], dtype=np.int64) for kind in shapes},
            instance=np.asarray(self.instance, dtype=np.int32),
            label=np.asarray(self.label, dtype=np.uint8),
            part=np.asarray(self.part, dtype=np.uint8),
            surface=np.asarray(self.surface, dtype=np.int64),
            **fields,
        )


# ------------------------------------------------------------------------------------------------ scene sampling
def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random albedo, neither black nor white so that shading stays visible."""
    return colorsys.hsv_to_rgb(_uniform(rng, 0.0, 1.0), _uniform(rng, 0.15, 0.9), _uniform(rng, 0.35, 0.95))


def _surface(rng: np.random.Generator, origin: tuple[float, float, float], frequency: tuple[float, float],
             patterns: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)) -> Surface:
    """A random surface; ``b`` is a second random colour or a darker/lighter shade of ``a``."""
    color_a = _color(rng)
    if rng.random() < 0.5:
        color_b = _color(rng)
    else:
        factor = _uniform(rng, 0.4, 0.75) if rng.random() < 0.5 else _uniform(rng, 1.3, 1.6)
        red, green, blue = color_a
        color_b = (min(1.0, red * factor), min(1.0, green * factor), min(1.0, blue * factor))
    # A uniform direction on the sphere: uniform height and azimuth (Archimedes).
    height, azimuth = _uniform(rng, -1.0, 1.0), _uniform(rng, 0.0, 2.0 * math.pi)
    ring = math.sqrt(1.0 - height * height)
    pattern = min(bisect.bisect(list(itertools.accumulate(patterns)), rng.random()), len(PATTERNS) - 1)
    return Surface(
        color_a=color_a, color_b=color_b, pattern=pattern, frequency=_uniform(rng, *frequency),
        axis=(ring * math.cos(azimuth), height, ring * math.sin(azimuth)), origin=origin,
    )


def _ground_point(rng: np.random.Generator, camera: Camera, max_distance: float) -> tuple[float, float] | None:
    """A ground point seen near a random pixel of the lower image, or None when that ray misses the ground."""
    u, v = _uniform(rng, -0.9, 0.9), _uniform(rng, -0.95, 0.35)
    right, up, back = camera.basis()
    half = math.tan(0.5 * camera.fov)
    d = [right[i] * u * half + up[i] * v * half - back[i] for i in range(3)]
    if d[1] >= -1e-6:
        return None
    t = camera.height / -d[1]
    x, z = t * d[0], t * d[2]
    return (x, z) if 2.0 <= math.hypot(x, z) <= max_distance else None


def _limb(start: np.ndarray, swing: float, spread: float, side: float, length: float) -> np.ndarray:
    """End of a limb hanging from ``start``: ``swing`` rotates it forwards (+z), ``spread`` sideways (``side`` x)."""
    cs = math.cos(spread)
    return start + length * np.array([side * math.sin(spread), -math.cos(swing) * cs, math.sin(swing) * cs])


def _add_figure(builder: _SceneBuilder, rng: np.random.Generator, x: float, z: float, instance: int) -> None:
    """An articulated person: head sphere, torso capsule or box, capsule arms and legs in a random pose."""
    s = _uniform(rng, 0.9, 1.15)
    yaw = _uniform(rng, -math.pi, math.pi)
    hip_y = 0.92 * s
    neck = np.array([0.0, hip_y + 0.55 * s, 0.0])
    # (part, start, end, radius) in the figure's frame: x sideways, y up, z forwards.
    pieces: list[tuple[int, np.ndarray, np.ndarray, float]] = []
    for side in (-1.0, 1.0):
        hip = np.array([0.11 * s * side, hip_y, 0.0])
        swing = _uniform(rng, -0.6, 0.7)
        knee = _limb(hip, swing, _uniform(rng, 0.0, 0.35), side, 0.46 * s)
        ankle = _limb(knee, swing - _uniform(rng, 0.0, 1.4), _uniform(rng, 0.0, 0.2), side, 0.44 * s)
        pieces += [(UPPER_LEG, hip, knee, 0.11 * s), (LOWER_LEG, knee, ankle, 0.085 * s)]
        shoulder = np.array([0.24 * s * side, neck[1] - 0.06 * s, 0.0])
        swing = _uniform(rng, -0.7, 1.8)
        elbow = _limb(shoulder, swing, _uniform(rng, 0.05, 1.4), side, 0.30 * s)
        wrist = _limb(elbow, swing + _uniform(rng, 0.0, 1.6), _uniform(rng, 0.0, 1.2), side, 0.28 * s)
        pieces += [(UPPER_ARM, shoulder, elbow, 0.075 * s), (LOWER_ARM, elbow, wrist, 0.065 * s)]
    lowest = min(float(end[1]) - radius for _, _, end, radius in pieces)
    lift = np.array([0.0, -lowest, 0.0])  # the lowest foot touches the ground whatever the pose
    c, si = math.cos(yaw), math.sin(yaw)

    def world(p: np.ndarray) -> tuple[float, float, float]:
        q = p + lift
        return (x + c * q[0] + si * q[2], float(q[1]), z - si * q[0] + c * q[2])

    anchor = (x, 0.0, z)
    skin = builder.add_surface(_surface(rng, anchor, (3.0, 8.0), patterns=(0.8, 0.0, 0.0, 0.2)))
    shirt = builder.add_surface(_surface(rng, anchor, (4.0, 12.0)))
    trousers = builder.add_surface(_surface(rng, anchor, (4.0, 12.0), patterns=(0.5, 0.2, 0.1, 0.2)))
    sleeve = shirt if rng.random() < 0.3 else skin
    material = {UPPER_LEG: trousers, LOWER_LEG: trousers, UPPER_ARM: shirt, LOWER_ARM: sleeve}
    add = functools.partial(builder.add, instance=instance, label=FIGURE)
    for part, start, end, radius in pieces:
        add("capsule", (*world(start), *world(end), radius), part=part, surface=material[part])
    add("sphere", (*world(neck + np.array([0.0, 0.17 * s, 0.0])), 0.13 * s), part=HEAD, surface=skin)
    pelvis = np.array([0.0, hip_y, 0.0])
    if rng.random() < 0.5:
        add("capsule", (*world(pelvis + [0, 0.1 * s, 0]), *world(neck - [0, 0.05 * s, 0]), 0.17 * s),
            part=TORSO, surface=shirt)
    else:
        centre = world(pelvis + [0, 0.26 * s, 0])
        add("box", (*centre, 0.2 * s, 0.33 * s, 0.12 * s, c, si), part=TORSO, surface=shirt)


def _add_object(builder: _SceneBuilder, rng: np.random.Generator, kind: int, x: float, z: float,
                instance: int) -> None:
    """One rigid object of semantic class ``kind`` standing (or lying) on the ground at ``(x, z)``."""
    surface = builder.add_surface(_surface(rng, (x, 0.0, z), (2.0, 8.0)))
    add = functools.partial(builder.add, instance=instance, label=kind, surface=surface)
    if kind == SPHERE:
        r = _uniform(rng, 0.3, 0.75)
        add("sphere", (x, r, z, r))
    elif kind == BOX:
        angle = _uniform(rng, 0.0, math.pi)
        hy = _uniform(rng, 0.25, 0.8)
        add("box", (x, hy, z, _uniform(rng, 0.25, 0.7), hy, _uniform(rng, 0.25, 0.7), math.cos(angle),
                    math.sin(angle)))
    elif kind == CYLINDER:
        add("cylinder", (x, z, _uniform(rng, 0.2, 0.5), _uniform(rng, 0.5, 1.8)))
    elif rng.random() < 0.5:
        add("cone", (x, z, _uniform(rng, 0.3, 0.65), _uniform(rng, 0.7, 1.8)))
    else:
        r, half = _uniform(rng, 0.2, 0.4), 0.5 * _uniform(rng, 0.3, 1.2)
        if rng.random() < 0.5:  # standing
            add("capsule", (x, r, z, x, r + 2 * half, z, r))
        else:  # lying
            angle = _uniform(rng, 0.0, math.pi)
            dx, dz = half * math.cos(angle), half * math.sin(angle)
            add("capsule", (x - dx, r, z - dz, x + dx, r, z + dz, r))


_FOOTPRINT = {SPHERE: 0.75, BOX: 1.0, CYLINDER: 0.5, CONE_OR_CAPSULE: 1.0, FIGURE: 0.9}
"""Upper bound of each kind's ground footprint radius (m), to keep objects from interpenetrating."""


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random scene: camera, light, ground, optional back wall, 1-5 objects (a figure in ~65%)."""
    camera = Camera(height=_uniform(rng, 1.0, 2.2), pitch=math.radians(_uniform(rng, 5.0, 25.0)),
                    fov=math.radians(_uniform(rng, 45.0, 65.0)))
    builder = _SceneBuilder()
    builder.add_surface(_surface(rng, (0.0, 0.0, 0.0), (0.4, 2.0), patterns=(0.2, 0.2, 0.35, 0.25)))
    builder.add("plane", (0.0, 1.0, 0.0, 0.0), hit_id=1)
    builder.add_surface(_surface(rng, (0.0, 0.0, 0.0), (0.3, 1.5)))
    elevation = math.radians(_uniform(rng, 25.0, 70.0))
    max_distance = 12.0
    if rng.random() < 0.5:
        # At most 12 m away and 30 degrees yawed: seen at <= 26 m at the image corners, inside FAR.
        distance, wall_yaw = _uniform(rng, 6.0, 12.0), math.radians(_uniform(rng, -30.0, 30.0))
        normal = (math.sin(wall_yaw), 0.0, math.cos(wall_yaw))
        builder.add("plane", (*normal, -distance * normal[2]), hit_id=2)
        max_distance = min(max_distance, distance * normal[2] - 1.0)
        # Light from the camera's side of the wall: the wall then never shadows the whole scene.
        azimuth = wall_yaw + math.radians(_uniform(rng, -75.0, 75.0))
    else:
        azimuth = _uniform(rng, -math.pi, math.pi)
    light = (math.cos(elevation) * math.sin(azimuth), math.sin(elevation), math.cos(elevation) * math.cos(azimuth))

    n_objects = int(rng.integers(1, 6))
    kinds = [FIGURE] if rng.random() < 0.65 else []
    kinds += [int(k) for k in rng.integers(SPHERE, FIGURE, size=n_objects - len(kinds))]
    placed: list[tuple[float, float, float]] = []
    for kind in kinds:
        for _ in range(20):
            point = _ground_point(rng, camera, max_distance)
            radius = _FOOTPRINT[kind]
            if point is not None and all(math.hypot(point[0] - px, point[1] - pz) > radius + pr + 0.1
                                         for px, pz, pr in placed):
                break
        else:
            continue  # no free spot: the scene has one object fewer
        placed.append((*point, radius))
        instance = FIRST_OBJECT_INSTANCE + len(placed) - 1
        if kind == FIGURE:
            _add_figure(builder, rng, *point, instance)
        else:
            _add_object(builder, rng, kind, *point, instance)

    zenith = colorsys.hsv_to_rgb(_uniform(rng, 0.52, 0.66), _uniform(rng, 0.3, 0.8), _uniform(rng, 0.6, 1.0))
    horizon = tuple(0.6 * c + 0.4 * _uniform(rng, 0.75, 1.0) for c in zenith)
    return builder.build(
        camera=camera, light=light, ambient=_uniform(rng, 0.25, 0.45), sky_zenith=zenith,
        sky_horizon=horizon, noise_seed=int(rng.integers(2**63)), noise_level=int(rng.integers(1, 6)),
    )
