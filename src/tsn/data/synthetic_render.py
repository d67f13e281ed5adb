"""Analytic ray casting for the synthetic benchmark (vectorised numpy, no rendering engine).

Scenes come from :mod:`tsn.data.synthetic_scene` (world frame: metres, ``y`` up, ground plane ``y = 0``; the
camera looks along ``-z``, pitched down). Every primitive of one shape kind is intersected with every pixel's ray in
one broadcast ``(pixels, primitives)`` computation, so a scene costs a few hundred numpy operations whatever its
content.

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

import functools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from tsn.data.synthetic_labels import boundary_distance, instance_contours, instance_edges
from tsn.data.synthetic_scene import (
    FAR,
    FLOAT,
    SHAPES,
    SPHERE,
    Camera,
    Point3,
    Scene,
)
from tsn.errors import TsnError

__all__ = [
    "Rendering",
    "render",
    "instance_edges",
    "instance_contours",
    "boundary_distance",
    "EXTRA_LABELS",
    "LUMA",
]

EPS = 1e-3
"""Smallest accepted ray distance (m): a shadow ray leaving a surface must not hit that surface again."""
FOG_START, FOG_MAX = 8.0, 0.7
"""Distance fog: linear from ``FOG_START`` to :data:`FAR`, at most ``FOG_MAX`` so that the far edge stays visible."""

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

Vec3 = Sequence[np.ndarray]
"""The x, y and z components of many points or directions, as three broadcastable arrays (a tuple or a list)."""


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
