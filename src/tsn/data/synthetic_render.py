"""Scene sampling and analytic ray casting for the synthetic benchmark (vectorised numpy, no rendering engine).

World frame: metres, ``y`` up, ground plane ``y = 0``. The camera stands at ``(0, height, 0)`` and looks along
``-z``, pitched down. Every primitive of one shape kind is intersected with every pixel's ray in one broadcast
``(pixels, primitives)`` computation, so a scene costs a few hundred numpy operations whatever its content.

Hit ids: ``0`` is the sky, ``1`` the ground, ``2`` the back wall, ``3..`` the object primitives. Instance ids:
``0`` sky, ``1`` ground, ``2`` wall, ``3 + k`` the k-th object (a figure is one instance made of ten primitives).

:func:`render` always returns the six labels of :class:`Rendering`; the labels of :data:`EXTRA_LABELS` (albedo,
shading, shadow, material, instance contours, occlusion boundaries, distance to the nearest boundary) are computed
only when asked, so that a caller that does not use them pays nothing and the six stay byte-identical.

Determinism: per-pixel arithmetic uses only ``+ - * /``, ``sqrt`` and ``floor`` (correctly rounded in IEEE 754),
never BLAS or vectorised transcendental functions, so the pixels do not depend on the CPU's SIMD level; the
per-scene trigonometry runs in Python's ``math``.
"""

from __future__ import annotations

import bisect
import colorsys
import functools
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import thin

from tsn.errors import TsnError

__all__ = [
    "SHAPES",
    "PATTERNS",
    "Camera",
    "Surface",
    "Scene",
    "Rendering",
    "sample_scene",
    "render",
    "instance_edges",
    "instance_contours",
    "boundary_distance",
    "EXTRA_LABELS",
    "LUMA",
]

FLOAT = np.float32
EPS = 1e-3
"""Smallest accepted ray distance (m): a shadow ray leaving a surface must not hit that surface again."""
FAR = 30.0
"""Far plane (m along the optical axis): the open ground ends there, so depth stays bounded as in real data."""
FOG_START, FOG_MAX = 8.0, 0.7
"""Distance fog: linear from ``FOG_START`` to :data:`FAR`, at most ``FOG_MAX`` so that the far edge stays visible."""

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

EXTRA_LABELS = ("albedo", "shading", "unlit", "material", "contours", "occlusion", "boundary_distance")
"""Labels beyond the six of :class:`Rendering` that :func:`render` computes on request (``extras``), all float32
``H x W``: ``albedo`` (luminance :data:`LUMA` of the surface colour, 0 on the sky), ``shading`` (the factor the
albedo is multiplied by: ambient + Lambert term of the light where nothing blocks it, 0 on the sky), ``unlit``
(1 where a surface receives no direct light: facing away or in a cast shadow), ``material`` (1 + the index of the
surface's pattern in :data:`PATTERNS`, 0 on the sky), ``contours`` (:func:`instance_contours`), ``occlusion``
(contour pixels whose surface hides the neighbouring instance) and ``boundary_distance``
(:func:`boundary_distance`)."""
LUMA = (0.299, 0.587, 0.114)
"""Rec. 601 weights of the albedo luminance (the grey level the ``albedo`` label holds)."""

# Semantic classes and figure parts (names in tsn.data.synthetic).
SKY_OR_WALL, GROUND, SPHERE, BOX, CYLINDER, CONE_OR_CAPSULE, FIGURE = range(7)
HEAD, TORSO, UPPER_ARM, LOWER_ARM, UPPER_LEG, LOWER_LEG = range(1, 7)
FIRST_OBJECT_INSTANCE = 3

Vec3 = Sequence[np.ndarray]
"""The x, y and z components of many points or directions, as three broadcastable arrays (a tuple or a list)."""
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

    def focal(self, size: int) -> float:
        """Focal length in pixels for a ``size x size`` image."""
        return 0.5 * size / math.tan(0.5 * self.fov)


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


class Rendering(NamedTuple):
    """One rendered scene: ``size x size`` arrays in the sample contract's dtypes, plus the instance map."""

    image: np.ndarray
    """uint8 ``H x W x 3`` RGB."""
    instance: np.ndarray
    """int32 ``H x W``."""
    semseg: np.ndarray
    human_parts: np.ndarray
    edges: np.ndarray
    normals: np.ndarray
    """float32 ``H x W x 3`` camera space (x right, y up, z towards the camera), zero on the sky."""
    saliency: np.ndarray
    depth: np.ndarray
    """float32 ``H x W`` distance along the optical axis, 0 on the sky."""
    extras: Mapping[str, np.ndarray] = MappingProxyType({})
    """The labels of :data:`EXTRA_LABELS` asked of :func:`render`, by name."""


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


# ------------------------------------------------------------------------------------------------ vector helpers
def _dot(a: Vec3, b: Vec3 | Point3) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _sub(a: Vec3, b: Vec3) -> Vec3:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2]


def _entry(t: np.ndarray) -> np.ndarray:
    """Distances not beyond :data:`EPS` (or NaN, for a miss) become ``inf``."""
    return np.where(t > EPS, t, np.inf)


# ------------------------------------------------------------------------------------------------ intersections
# Each function takes ray origins and unit directions (tuples of arrays that broadcast to ``(N, 1)``) and the
# parameter columns of M primitives (each ``(1, M)``), and returns the entry distance ``(N, M)`` or inf. Rays
# start outside every solid (the camera, or a visible surface point), so the entry is the nearest hit.
def _hit_planes(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    n = (p[0], p[1], p[2])
    return _entry((p[3] - _dot(n, o)) / _dot(n, d))


def _hit_spheres(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    oc = _sub(o, (p[0], p[1], p[2]))
    b = _dot(d, oc)
    return _entry(-b - np.sqrt(b * b - (_dot(oc, oc) - p[3] * p[3])))


def _hit_capsules(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    a, b, r = (p[0], p[1], p[2]), (p[3], p[4], p[5]), p[6]
    ba, oa = _sub(b, a), _sub(o, a)
    baba, bard, baoa, rdoa, oaoa = _dot(ba, ba), _dot(ba, d), _dot(ba, oa), _dot(d, oa), _dot(oa, oa)
    # Infinite cylinder around the axis, in a form scaled by |ba|^2 to avoid normalising the axis.
    qa = baba - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * oaoa - baoa * baoa - r * r * baba
    t = (-qb - np.sqrt(qb * qb - qa * qc)) / qa
    y = baoa + t * bard  # position of the hit along the axis, times |ba|
    # Beyond an end, the ray can only enter through that end's ball; with o - b = oa - ba, the ball's quadratic
    # reuses the dot products above instead of recomputing them per pixel.
    at_a = y <= 0
    cb = np.where(at_a, rdoa, rdoa - bard)
    cc = np.where(at_a, oaoa, oaoa - 2 * baoa + baba) - r * r
    t_cap = -cb - np.sqrt(cb * cb - cc)
    return _entry(np.where((y > 0) & (y < baba), t, t_cap))


def _box_frame(v: Vec3, cos: np.ndarray, sin: np.ndarray) -> Vec3:
    """World vector -> box frame (rotation by the box angle about y)."""
    return cos * v[0] - sin * v[2], v[1], sin * v[0] + cos * v[2]


def _hit_boxes(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    cos, sin = p[6], p[7]
    lo = _box_frame(_sub(o, (p[0], p[1], p[2])), cos, sin)
    ld = _box_frame(d, cos, sin)
    near, far = None, None
    for axis in range(3):  # slab method
        inv = 1.0 / ld[axis]
        t1, t2 = (-p[3 + axis] - lo[axis]) * inv, (p[3 + axis] - lo[axis]) * inv
        t_lo, t_hi = np.minimum(t1, t2), np.maximum(t1, t2)
        near = t_lo if near is None else np.maximum(near, t_lo)
        far = t_hi if far is None else np.minimum(far, t_hi)
    assert near is not None and far is not None  # set by the first of the three slabs
    return np.where(near <= far, _entry(near), np.inf)


def _hit_cylinders(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    ox, oz, r, h = o[0] - p[0], o[2] - p[1], p[2], p[3]
    a = d[0] * d[0] + d[2] * d[2]
    b = ox * d[0] + oz * d[2]
    t_side = (-b - np.sqrt(b * b - a * (ox * ox + oz * oz - r * r))) / a
    y = o[1] + t_side * d[1]
    t_side = np.where((y >= 0) & (y <= h), _entry(t_side), np.inf)
    t_cap = (h - o[1]) / d[1]
    cx, cz = ox + t_cap * d[0], oz + t_cap * d[2]
    t_cap = np.where(cx * cx + cz * cz <= r * r, _entry(t_cap), np.inf)
    return np.minimum(t_side, t_cap)


def _hit_cones(o: Vec3, d: Vec3, p: list[np.ndarray]) -> np.ndarray:
    ox, oz, h = o[0] - p[0], o[2] - p[1], p[3]
    k2 = (p[2] / h) ** 2  # squared slope: radius shrinks by r/h per metre of height
    w = h - o[1]
    a = d[0] * d[0] + d[2] * d[2] - k2 * d[1] * d[1]
    b = ox * d[0] + oz * d[2] + k2 * w * d[1]
    root = np.sqrt(b * b - a * (ox * ox + oz * oz - k2 * w * w))
    best = None
    for t in ((-b - root) / a, (-b + root) / a):  # either root may be the entry (a changes sign)
        y = o[1] + t * d[1]
        t = np.where((y >= 0) & (y <= h), _entry(t), np.inf)
        best = t if best is None else np.minimum(best, t)
    assert best is not None  # set by the first of the two roots
    return best


# ------------------------------------------------------------------------------------------------ normals
# Each function takes hit points (three ``(Q,)`` arrays) and the parameter columns of the primitive hit at each
# point (each ``(Q,)``), and returns an outward (not yet normalised) normal.
def _normal_planes(x: Vec3, p: list[np.ndarray]) -> Vec3:
    return p[0], p[1], p[2]


def _normal_spheres(x: Vec3, p: list[np.ndarray]) -> Vec3:
    return _sub(x, (p[0], p[1], p[2]))


def _normal_capsules(x: Vec3, p: list[np.ndarray]) -> Vec3:
    a = (p[0], p[1], p[2])
    ba, xa = _sub((p[3], p[4], p[5]), a), _sub(x, a)
    s = np.clip(_dot(xa, ba) / _dot(ba, ba), 0.0, 1.0)  # closest point of the axis segment
    return xa[0] - s * ba[0], xa[1] - s * ba[1], xa[2] - s * ba[2]


def _normal_boxes(x: Vec3, p: list[np.ndarray]) -> Vec3:
    cos, sin = p[6], p[7]
    local = _box_frame(_sub(x, (p[0], p[1], p[2])), cos, sin)
    q = [np.abs(local[i]) / p[3 + i] for i in range(3)]  # the hit face is the one reached in relative terms
    use = [(q[0] >= q[1]) & (q[0] >= q[2]), None, None]
    use[1] = ~use[0] & (q[1] >= q[2])
    use[2] = ~use[0] & ~use[1]
    nx, ny, nz = (np.where(use[i], np.sign(local[i]), 0.0).astype(FLOAT) for i in range(3))
    return cos * nx + sin * nz, ny, cos * nz - sin * nx  # inverse of _box_frame


def _normal_cylinders(x: Vec3, p: list[np.ndarray]) -> Vec3:
    rx, rz = x[0] - p[0], x[2] - p[1]
    on_cap = np.abs(x[1] - p[3]) < np.abs(np.sqrt(rx * rx + rz * rz) - p[2])
    return np.where(on_cap, 0.0, rx), on_cap.astype(FLOAT), np.where(on_cap, 0.0, rz)


def _normal_cones(x: Vec3, p: list[np.ndarray]) -> Vec3:
    rx, rz = x[0] - p[0], x[2] - p[1]
    return rx, p[2] / p[3] * np.sqrt(rx * rx + rz * rz), rz


_Hit = Callable[[Vec3, Vec3, list[np.ndarray]], np.ndarray]
_Normal = Callable[[Vec3, list[np.ndarray]], Vec3]
_KINDS: dict[str, tuple[_Hit, _Normal]] = {
    "plane": (_hit_planes, _normal_planes),
    "sphere": (_hit_spheres, _normal_spheres),
    "capsule": (_hit_capsules, _normal_capsules),
    "box": (_hit_boxes, _normal_boxes),
    "cylinder": (_hit_cylinders, _normal_cylinders),
    "cone": (_hit_cones, _normal_cones),
}


def _columns(params: np.ndarray) -> list[np.ndarray]:
    """``(M, k)`` parameters -> k arrays of shape ``(1, M)`` that broadcast against ``(N, 1)`` rays."""
    return [column[None, :] for column in params.T]


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


def _hit_kind(scene: Scene, kind: str, o: Vec3, d: Vec3, n: int) -> np.ndarray:
    """``(n, M)`` entry distances of ``n`` rays to the M primitives of ``kind``.

    The exact (costly) test runs only on the (ray, primitive) pairs whose ray meets the primitive's bounding
    sphere: most objects cover a small part of the image, so this removes most of the work.
    """
    hit, params, bounds = _KINDS[kind][0], scene.shapes[kind], scene.bounds[kind]
    if bounds is None:
        return np.broadcast_to(hit(o, d, _columns(params)), (n, len(params)))
    c = _columns(bounds)
    oc = _sub(o, (c[0], c[1], c[2]))
    b = _dot(d, oc)
    rows, cols = np.nonzero(b * b - _dot(oc, oc) + c[3] * c[3] >= 0)
    t = np.full((n, len(params)), np.inf, dtype=FLOAT)
    if rows.size:
        pick = [a[:, 0][rows] if a.shape[0] > 1 else a[:, 0] for a in (*o, *d)]
        t[rows, cols] = hit((pick[0], pick[1], pick[2]), (pick[3], pick[4], pick[5]), list(params[cols].T))
    return t


def _cast(scene: Scene, o: Vec3, d: Vec3, n: int, kinds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit distance and hit id (0 = none) of ``n`` rays against the primitives of ``kinds``."""
    present = [kind for kind in kinds if kind in scene.shapes]
    # The sky (id 0) is a column at infinite distance, so that argmin returns it for rays that hit nothing.
    t = np.concatenate([np.full((n, 1), np.inf, dtype=FLOAT)]
                       + [_hit_kind(scene, kind, o, d, n) for kind in present], axis=1)
    ids = np.concatenate([np.zeros(1, dtype=np.int64)] + [scene.shape_ids[kind] for kind in present])
    column = t.argmin(axis=1)
    return t[np.arange(n), column], ids[column]


# ------------------------------------------------------------------------------------------------ rendering
@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates ``u`` (right) and ``v`` (up) in ``[-1, 1]``, flattened row-major."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    u = np.tile(centres, size).astype(FLOAT)
    v = np.repeat(-centres, size).astype(FLOAT)
    u.flags.writeable = v.flags.writeable = False
    return u, v


def _hash_noise(cells: Vec3) -> np.ndarray:
    """A value in ``[0, 1]`` per integer lattice cell (an integer hash: identical on every machine)."""
    h = [c.astype(np.int64) for c in cells]
    k = (h[0] * 73856093) ^ (h[1] * 19349663) ^ (h[2] * 83492791)
    k = ((k ^ (k >> 13)) * 1274126177) & 0xFFFF_FFFF
    return ((k >> 12) & 0xFF).astype(FLOAT) / FLOAT(255.0)


def _albedo(scene: Scene, x: Vec3, surface: np.ndarray) -> np.ndarray:
    """``(Q, 3)`` albedo of points ``x`` on the given surfaces (pattern-mixed colours)."""
    table = scene.surfaces
    origin = np.array([s.origin for s in table], dtype=FLOAT)[surface]
    axis = np.array([s.axis for s in table], dtype=FLOAT)[surface]
    freq = np.array([s.frequency for s in table], dtype=FLOAT)[surface]
    pattern = np.array([s.pattern for s in table], dtype=np.int8)[surface]
    q = tuple((x[i] - origin[:, i]) * freq for i in range(3))
    cells = tuple(np.floor(c) for c in q)
    stripes = np.floor(_dot(q, (axis[:, 0], axis[:, 1], axis[:, 2]))) % 2
    checks = (cells[0] + cells[1] + cells[2]) % 2
    mix = np.select([pattern == 1, pattern == 2, pattern == 3], [stripes, checks, _hash_noise(cells)], 0.0)
    color_a = np.array([s.color_a for s in table], dtype=FLOAT)[surface]
    color_b = np.array([s.color_b for s in table], dtype=FLOAT)[surface]
    return color_a + (color_b - color_a) * mix.astype(FLOAT)[:, None]


def instance_edges(instance: np.ndarray) -> np.ndarray:
    """One-pixel-thin boundaries of an instance map, as a bool map.

    Convention: a pixel is a boundary pixel when its instance differs from the pixel above or on its left (the
    lower/right side of each transition, the mirror of seg2bmap's); the map is then thinned
    (``skimage.morphology.thin``), which removes the corner pixels where a vertical and a horizontal run meet,
    so every kept pixel still has a different instance above or on its left. A 2x2 block survives only where
    topology needs it (a junction of three regions, a one-pixel tip): under 0.1% of the edge pixels.
    """
    edges = np.zeros(instance.shape, dtype=bool)
    edges[1:, :] = instance[1:, :] != instance[:-1, :]
    edges[:, 1:] |= instance[:, 1:] != instance[:, :-1]
    return thin(edges)


def instance_contours(instance: np.ndarray) -> np.ndarray:
    """Both sides of every instance boundary, as a bool map: pixels with a 4-neighbour of another instance.

    Unlike :func:`instance_edges` (one side, thinned), the map is symmetric, so it commutes with flips and
    transposes, and it contains every pixel of an occlusion boundary.
    """
    contours = np.zeros(instance.shape, dtype=bool)
    rows, columns = instance[1:, :] != instance[:-1, :], instance[:, 1:] != instance[:, :-1]
    contours[1:, :] |= rows
    contours[:-1, :] |= rows
    contours[:, 1:] |= columns
    contours[:, :-1] |= columns
    return contours


def boundary_distance(instance: np.ndarray) -> np.ndarray:
    """float32 Euclidean distance, in pixels, from each pixel centre to the nearest pixel of another instance.

    It is exactly 1 on :func:`instance_contours` and above 1 elsewhere; per instance it is the exact distance
    transform (``scipy.ndimage.distance_transform_edt``) of that instance's mask. An image of a single instance
    has no boundary: there the distance is the image diagonal, longer than any distance inside the image.
    """
    distance = np.full(instance.shape, math.hypot(*instance.shape), dtype=np.float64)
    ids, labelled = np.unique(instance, return_inverse=True)
    if ids.size > 1:
        # Each instance within its bounding box grown by one pixel: that ring holds only other instances and is
        # nearer to every inside pixel than anything beyond it, so the crop's transform is the whole image's.
        for k, box in enumerate(ndimage.find_objects(labelled.reshape(instance.shape) + 1)):
            assert box is not None  # every label of np.unique occurs
            grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            mask = instance[grown] == ids[k]
            distance[grown][mask] = ndimage.distance_transform_edt(mask)[mask]
    return distance.astype(FLOAT)


def render(scene: Scene, size: int, extras: Collection[str] = ()) -> Rendering:
    """Ray-cast ``scene`` into a ``size x size`` image and its exact labels, plus the ``extras`` asked (names of
    :data:`EXTRA_LABELS`), which cost nothing when not asked."""
    unknown = sorted(set(extras) - set(EXTRA_LABELS))
    if unknown:
        raise TsnError(f"unknown synthetic label {unknown[0]!r}; the extra labels are: {', '.join(EXTRA_LABELS)}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _render(scene, size, frozenset(extras))


def _camera_rays(camera: Camera, size: int) -> tuple[Vec3, Vec3, np.ndarray]:
    """Origin ``(1, 1)`` arrays, unit world directions ``(P, 1)``, and ``(P,)`` depth per unit ray distance."""
    right, up, back = camera.basis()
    u, v = _pixel_grid(size)
    half = FLOAT(math.tan(0.5 * camera.fov))
    cu, cv = u * half, v * half
    # The camera-space direction (u tan, v tan, -1) has length 1 / cos(angle to the optical axis).
    depth_per_t = FLOAT(1.0) / np.sqrt(cu * cu + cv * cv + FLOAT(1.0))
    d = tuple(((right[i] * cu + up[i] * cv - back[i]) * depth_per_t)[:, None] for i in range(3))
    o = tuple(np.full((1, 1), value, dtype=FLOAT) for value in (0.0, camera.height, 0.0))
    return o, d, depth_per_t


def _unit_normals(scene: Scene, x: Vec3, hit: np.ndarray) -> Vec3:
    """Unit outward world normals at points ``x`` of the primitives ``hit`` (hit ids, none of them the sky)."""
    kind_of = np.full(len(scene.instance), -1, dtype=np.int8)
    row_of = np.zeros(len(scene.instance), dtype=np.int64)
    for k, kind in enumerate(scene.shapes):
        kind_of[scene.shape_ids[kind]] = k
        row_of[scene.shape_ids[kind]] = np.arange(len(scene.shape_ids[kind]))
    normal = [np.zeros(len(hit), dtype=FLOAT) for _ in range(3)]
    for k, kind in enumerate(scene.shapes):
        mine = np.flatnonzero(kind_of[hit] == k)
        if mine.size:
            n_kind = _KINDS[kind][1](tuple(c[mine] for c in x), list(scene.shapes[kind][row_of[hit[mine]]].T))
            for i in range(3):
                normal[i][mine] = n_kind[i]
    inv_norm = FLOAT(1.0) / np.sqrt(_dot(normal, normal))
    return normal[0] * inv_norm, normal[1] * inv_norm, normal[2] * inv_norm


def _direct_light(scene: Scene, x: Vec3, normal: Vec3) -> np.ndarray:
    """Lambertian factor of the directional light, 0 where it is blocked; points facing the light cast a shadow
    ray towards it.

    Shadow rays are tested against objects only: planes cannot shadow anything, since the light is above the
    ground and on the camera's side of the wall.
    """
    lambert = np.maximum(_dot(normal, scene.light), 0.0)
    facing = np.flatnonzero(lambert > 0)
    start = tuple((x[i][facing] + 2 * EPS * normal[i][facing])[:, None] for i in range(3))
    light = tuple(np.full((1, 1), c, dtype=FLOAT) for c in scene.light)
    _, blocker = _cast(scene, start, light, facing.size, SHAPES[1:])
    lambert[facing[blocker > 0]] = 0.0
    return lambert


def _occlusion(scene: Scene, o: Vec3, d: Vec3, depth_per_t: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Contour pixels whose surface hides a 4-neighbour's instance: the pixel's ray, continued beyond its own hit,
    meets that instance within :data:`FAR` (the sky is met by every ray), so the neighbour's surface is occluded
    here. Only contour pixels are re-cast, against the primitives of every kind."""
    size = instance.shape[0]
    padded = np.pad(instance, 1, constant_values=-1)  # -1: no neighbour beyond the image border
    neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    contour = instance_contours(instance) & (instance != 0)  # the sky hides nothing
    pixels = np.flatnonzero(contour)
    occluding = np.zeros(size * size, dtype=bool)
    if not pixels.size:
        return occluding.reshape(instance.shape)
    present = [kind for kind in SHAPES if kind in scene.shapes]
    rays = tuple(c[pixels] for c in d)
    t = np.concatenate([_hit_kind(scene, kind, o, rays, pixels.size) for kind in present], axis=1)
    t[t * depth_per_t[pixels, None] > FAR] = np.inf  # the ground and the wall end at the far plane
    owner = scene.instance[np.concatenate([scene.shape_ids[kind] for kind in present])]
    meets = np.zeros((pixels.size, len(scene.instance) + 1), dtype=bool)  # [pixel, instance id]; ids < #hit ids
    meets[:, 0] = True
    for value in np.unique(owner):
        meets[:, value] = np.isfinite(t[:, owner == value]).any(axis=1)
    own = instance.reshape(-1)[pixels]
    for neighbour in neighbours:
        other = neighbour.reshape(-1)[pixels]
        occluding[pixels] |= (other >= 0) & (other != own) & meets[np.arange(pixels.size), np.maximum(other, 0)]
    return occluding.reshape(instance.shape)


def _render(scene: Scene, size: int, extras: frozenset[str] = frozenset()) -> Rendering:
    o, d, depth_per_t = _camera_rays(scene.camera, size)
    n_pixels = size * size
    t, hit = _cast(scene, o, d, n_pixels, SHAPES)
    hit[t * depth_per_t > FAR] = 0

    # Everything up to the image is computed on the visible surface points only.
    seen = np.flatnonzero(hit)
    depth_seen = t[seen] * depth_per_t[seen]
    x = tuple(o[i][0, 0] + t[seen] * d[i][seen, 0] for i in range(3))
    normal = _unit_normals(scene, x, hit[seen])
    zenith, horizon = (np.asarray(c, dtype=FLOAT) for c in (scene.sky_zenith, scene.sky_horizon))
    albedo = _albedo(scene, x, scene.surface[hit[seen]])
    direct = _direct_light(scene, x, normal)
    shading = scene.ambient + (1.0 - scene.ambient) * direct
    color = albedo * shading[:, None]
    fog = np.clip((depth_seen - FOG_START) / (FAR - FOG_START), 0.0, 1.0) * FOG_MAX
    color += (horizon - color) * fog[:, None]
    image = horizon + (zenith - horizon) * np.clip(d[1] * 2.5, 0.0, 1.0)  # sky gradient, overwritten where seen
    image[seen] = color
    noise = np.random.default_rng(scene.noise_seed).integers(0, scene.noise_level + 1, size=(2, n_pixels, 3))
    image = np.clip(image * 255.0 + (noise[0] - noise[1]).astype(FLOAT), 0, 255).round().astype(np.uint8)

    normals = np.zeros((n_pixels, 3), dtype=FLOAT)
    for i, axis in enumerate(scene.camera.basis()):  # world -> camera (x right, y up, z towards the camera)
        normals[seen, i] = _dot(normal, axis)
    depth = np.zeros(n_pixels, dtype=FLOAT)
    depth[seen] = depth_seen
    square = (size, size)
    instance = scene.instance[hit].reshape(square)
    semseg = scene.label[hit].reshape(square)

    def on_surfaces(values: np.ndarray) -> np.ndarray:
        """A per-visible-point value as a float32 ``H x W`` map, 0 on the sky."""
        plane = np.zeros(n_pixels, dtype=FLOAT)
        plane[seen] = values
        return plane.reshape(square)

    computed: dict[str, Callable[[], np.ndarray]] = {
        # Sums of products, not a matrix product: BLAS could round differently on another CPU.
        "albedo": lambda: on_surfaces(albedo[:, 0] * FLOAT(LUMA[0]) + albedo[:, 1] * FLOAT(LUMA[1])
                                      + albedo[:, 2] * FLOAT(LUMA[2])),
        "shading": lambda: on_surfaces(shading),
        "unlit": lambda: on_surfaces(direct == 0),
        "material": lambda: on_surfaces(
            1 + np.array([s.pattern for s in scene.surfaces], dtype=np.int64)[scene.surface[hit[seen]]]),
        "contours": lambda: instance_contours(instance).astype(FLOAT),
        "occlusion": lambda: _occlusion(scene, o, d, depth_per_t, instance).astype(FLOAT),
        "boundary_distance": lambda: boundary_distance(instance),
    }
    return Rendering(
        image=image.reshape(size, size, 3),
        instance=instance,
        semseg=semseg.astype(FLOAT),
        human_parts=scene.part[hit].reshape(square).astype(FLOAT),
        edges=instance_edges(instance).astype(FLOAT),
        normals=normals.reshape(size, size, 3),
        saliency=(semseg >= SPHERE).astype(FLOAT),
        depth=depth.reshape(square),
        extras=MappingProxyType({name: computed[name]() for name in EXTRA_LABELS if name in extras}),
    )
