"""OpenGL renderer of a PyBullet client's visual scene (moderngl on a standalone EGL context).

PyBullet's own renderers cost 55-110 ms of CPU per 640x480 view on a small machine; this one
draws the same visual shapes in a few milliseconds, on a GPU or on Mesa's llvmpipe.
Geometry is uploaded once per `sync_scene()` (vertices in their link's frame, colours
baked in, grouped by link); each frame only the link poses change. They go to the GPU as a
small float texture of 4x4 matrices, indexed per vertex, and the links whose bounding
sphere is in view are drawn in a few index ranges: on llvmpipe the vertex work dominates,
and the 100k-triangle Panda is mostly out of the head camera's view.

Shading is ambient + one directional light with PyBullet's defaults (no shadows, no
textures); back faces are culled, as PyBullet does. Objects show their rgba colour, OBJ
meshes the `Kd` colours of their materials times the shape's rgba, so the Panda keeps its
grey joints. Depth is exact to the rasteriser, unlike the tiny renderer's (up to ~1 cm off
on far, grazing surfaces).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet

try:
    import moderngl
except ImportError as err:  # GLRenderer() reports it, so the caller can use PyBullet's renderer
    moderngl = None
    _MODERNGL_IMPORT_ERROR = err

# PyBullet's default light (TinyRenderer, z up): direction towards the light, and the
# ambient and diffuse coefficients; rendering with them makes colours match PyBullet's.
LIGHT_DIRECTION = np.array([-50.0, 30.0, 100.0]) / np.linalg.norm([-50.0, 30.0, 100.0])
AMBIENT = 0.6
DIFFUSE = 0.35
BACKGROUND_RGB = (0.7, 0.7, 0.8)  # PyBullet's OpenGL background, where no surface is hit
PLANE_HALF_SIZE_M = 128.0  # PyBullet draws a GEOM_PLANE as a square of this half size
ROUND_SEGMENTS = 32  # around the axis of cylinders, spheres and capsules
HEMISPHERE_RINGS = 8

VERTEX_DTYPE = np.dtype([("position", "f4", 3), ("normal", "f4", 3), ("color", "u1", 4), ("frame", "i4")])
VERTEX_FORMAT = ("3f 3f 4f1 1i", "in_position", "in_normal", "in_color", "in_frame")

# Lit per vertex (Gouraud), so the fragment shader is trivial: filling the frame is the
# other large cost on a software rasteriser. Flat faces carry face normals, so only smooth
# meshes shade slightly differently than per pixel.
VERTEX_SHADER = """
#version 330
uniform mat4 view_projection;
uniform sampler2D frame_poses;  // row i: the world pose of frame i, one column per texel
uniform vec3 light_direction;
uniform float ambient;
uniform float diffuse;
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
in int in_frame;
out vec3 color;
void main() {
    mat4 pose = mat4(texelFetch(frame_poses, ivec2(0, in_frame), 0),
                     texelFetch(frame_poses, ivec2(1, in_frame), 0),
                     texelFetch(frame_poses, ivec2(2, in_frame), 0),
                     texelFetch(frame_poses, ivec2(3, in_frame), 0));
    vec3 normal = mat3(pose) * in_normal;  // rigid pose: scale is baked into the vertices
    color = in_color.rgb * (ambient + diffuse * max(dot(normal, light_direction), 0.0));
    gl_Position = view_projection * (pose * vec4(in_position, 1.0));
}
"""

FRAGMENT_SHADER = """
#version 330
in vec3 color;
out vec4 fragment;
void main() {
    fragment = vec4(color, 1.0);
}
"""


# ----------------------------------------------------------------------------- geometry
class Geometry:
    """An indexed triangle mesh: positions and unit normals (V, 3), triangles (T, 3) of
    vertex indices, counter-clockwise seen from outside, and colours (V, 3). Meshes and
    primitives carry their material colours, NaN where the shape's rgba is to apply."""

    def __init__(self, positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray, colors: np.ndarray):
        self.positions, self.normals, self.triangles, self.colors = positions, normals, triangles, colors

    @classmethod
    def from_corners(cls, corners: np.ndarray, normals: np.ndarray) -> Geometry:
        """From unindexed triangles: corners and normals (T, 3, 3)."""
        count = corners.shape[0] * 3
        return cls(corners.reshape(count, 3), normals.reshape(count, 3),
                   np.arange(count).reshape(-1, 3), np.full((count, 3), np.nan))


# ----------------------------------------------------------------------------- OBJ meshes
# Parsed once per process: a re-sync after each reset, or a second renderer, reuses them.
_OBJ_CACHE: dict[str, Geometry] = {}


def load_obj(path: str) -> Geometry:
    mesh = _OBJ_CACHE.get(path)
    if mesh is None:
        mesh = _OBJ_CACHE[path] = _parse_obj(Path(path))
    return mesh


def _parse_obj(path: Path) -> Geometry:
    lines = path.read_bytes().replace(b"\t", b" ").splitlines()
    # Line kinds by their first two bytes, so each kind is gathered by numpy, not a Python loop.
    kinds = np.array([line[:2] for line in lines], dtype="S2")
    vertex_lines = np.flatnonzero(kinds == b"v ")
    normal_lines = np.flatnonzero(kinds == b"vn")
    face_lines = np.flatnonzero(kinds == b"f ")
    material_lines = np.flatnonzero(kinds == b"us")
    positions = _parse_vectors([lines[i] for i in vertex_lines])
    file_normals = _parse_vectors([lines[i] for i in normal_lines])

    face_tokens = [lines[i].split()[1:] for i in face_lines]
    corners_per_face = np.fromiter(map(len, face_tokens), np.int64, len(face_tokens))
    corner_text = b" ".join(token for tokens in face_tokens for token in tokens).replace(b"//", b"/0/")
    n_corners = int(corners_per_face.sum())
    if corner_text.count(b"/") != 2 * n_corners:
        # Some corners are `v` or `v/vt`: pad them to v/vt/vn, 0 standing for "absent".
        corner_text = b" ".join(token + b"/0" * (2 - token.count(b"/")) for token in corner_text.split())
    indices = np.fromstring(corner_text.replace(b"/", b" "), dtype=np.int64, sep=" ").reshape(n_corners, 3)
    corner_line = np.repeat(face_lines, corners_per_face)
    position_index = _resolve_indices(indices[:, 0], corner_line, vertex_lines)
    normal_index = _resolve_indices(indices[:, 2], corner_line, normal_lines)

    # Fan triangulation: face corners (0, i, i+1) for i = 1 .. n-2.
    first_corner = np.cumsum(corners_per_face) - corners_per_face
    triangles_per_face = np.maximum(corners_per_face - 2, 0)
    face_of_triangle = np.repeat(np.arange(len(face_tokens)), triangles_per_face)
    fan_step = np.arange(len(face_of_triangle)) - np.repeat(np.cumsum(triangles_per_face) - triangles_per_face,
                                                            triangles_per_face) + 1
    start = first_corner[face_of_triangle]
    triangle_corners = np.stack([start, start + fan_step, start + fan_step + 1], axis=1)

    corners = positions[position_index[triangle_corners]]
    # Flat normals where the file gives none (winding is counter-clockwise from outside).
    normals = np.repeat(_unit(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]))[:, None],
                        3, axis=1)
    triangle_normal_index = normal_index[triangle_corners]
    given = triangle_normal_index >= 0
    normals[given] = _unit(file_normals[triangle_normal_index[given]])

    material_colors = _read_materials(path, [lines[i] for i in np.flatnonzero(kinds == b"mt")])
    names = [(lines[i].split(maxsplit=1) + [b""])[1].strip().decode(errors="replace") for i in material_lines]
    palette = np.array([material_colors.get(name, (np.nan,) * 3) for name in names] + [(np.nan,) * 3], np.float32)
    # The material of a face is the last `usemtl` above it (index -1: none yet).
    face_material = np.searchsorted(material_lines, face_lines) - 1
    colors = np.repeat(palette[face_material[face_of_triangle]], 3, axis=0)

    # Index the corners: vertices shared by faces (same position, normal and colour) are
    # shaded once, which more than halves the vertex work for smooth meshes.
    rows = np.ascontiguousarray(np.concatenate(
        [corners.reshape(-1, 3), normals.reshape(-1, 3), colors], axis=1), np.float32)
    keys = rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    unique = rows[first]
    return Geometry(unique[:, :3], unique[:, 3:6], inverse.reshape(-1, 3), unique[:, 6:9])


def _parse_vectors(lines: list[bytes]) -> np.ndarray:
    """(N, 3) from `v x y z` / `vn x y z` lines; extra values (w, vertex colours) are ignored."""
    values = np.fromstring(b" ".join(line[2:] for line in lines), dtype=np.float64, sep=" ")
    if values.size != 3 * len(lines):
        values = np.array([line.split()[1:4] for line in lines], dtype=np.float64)
    return values.reshape(len(lines), 3)


def _resolve_indices(indices: np.ndarray, corner_line: np.ndarray, element_lines: np.ndarray) -> np.ndarray:
    """OBJ indices to 0-based ones; negative ones count back from the last element defined
    above the face; 0 (absent) becomes -1."""
    resolved = indices - 1
    negative = indices < 0
    if negative.any():
        defined_before = np.searchsorted(element_lines, corner_line[negative])
        resolved[negative] = defined_before + indices[negative]
    resolved[indices == 0] = -1
    return resolved


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Vectors along the last axis scaled to length 1 (zero ones stay zero)."""
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, length, out=np.zeros_like(vectors), where=length > 0)


def _read_materials(obj_path: Path, mtllib_lines: list[bytes]) -> dict[str, tuple[float, float, float]]:
    """Diffuse colour (Kd) per material name, from the .mtl files the OBJ names."""
    colors: dict[str, tuple[float, float, float]] = {}
    for mtllib in mtllib_lines:
        for name in mtllib.split()[1:]:
            mtl_path = obj_path.parent / name.decode()
            if not mtl_path.is_file():
                continue
            material = None
            for line in mtl_path.read_text(errors="replace").splitlines():
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "newmtl":
                    material = " ".join(fields[1:])
                elif len(fields) >= 4 and fields[0] == "Kd" and material is not None:
                    colors[material] = tuple(float(v) for v in fields[1:4])
    return colors


# ----------------------------------------------------------------------------- primitives
def _box(extents) -> Geometry:
    """A box centred at the origin, `extents` its full size."""
    corners, normals = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3  # u x v = axis: the quad below winds about +axis
        for sign in (-1.0, 1.0):
            quad = np.zeros((4, 3))
            quad[:, axis] = sign
            quad[:, u] = [-1, 1, 1, -1]
            quad[:, v] = [-1, -1, 1, 1]
            order = [[0, 1, 2], [0, 2, 3]] if sign > 0 else [[0, 2, 1], [0, 3, 2]]
            corners += [quad[order[0]], quad[order[1]]]
            normals += [np.tile(sign * np.eye(3)[axis], (3, 1))] * 2
    return Geometry.from_corners(np.array(corners) * (np.asarray(extents) / 2.0), np.array(normals))


def _revolve(strips: list[np.ndarray]) -> Geometry:
    """Surface of revolution about z. Each strip is a profile, rows (r, z, normal_r, normal_z)
    running so that the outside is on the right (from the bottom up on the side); consecutive
    rows of a strip are joined by a band of quads."""
    angles = np.linspace(0.0, 2 * np.pi, ROUND_SEGMENTS + 1)
    cos, sin = np.cos(angles), np.sin(angles)
    corners, normals = [], []
    for profile in strips:
        r, z, normal_r, normal_z = (profile[:, k][:, None] for k in range(4))
        points = np.stack([r * cos, r * sin, np.broadcast_to(z, r.shape[:1] + cos.shape)], axis=-1)
        directions = np.stack([normal_r * cos, normal_r * sin, np.broadcast_to(normal_z, points.shape[:2])], axis=-1)
        i, j = (k.ravel() for k in np.meshgrid(np.arange(len(profile) - 1), np.arange(ROUND_SEGMENTS), indexing="ij"))
        quad = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j)]  # counter-clockwise from outside
        for triangle in ((0, 1, 2), (0, 2, 3)):
            corners.append(np.stack([points[quad[k]] for k in triangle], axis=1))
            normals.append(np.stack([directions[quad[k]] for k in triangle], axis=1))
    return Geometry.from_corners(np.concatenate(corners), np.concatenate(normals))


def _cylinder(radius: float, length: float) -> Geometry:
    h = length / 2.0
    return _revolve([np.array([[0, -h, 0, -1], [radius, -h, 0, -1]]),
                     np.array([[radius, -h, 1, 0], [radius, h, 1, 0]]),
                     np.array([[radius, h, 0, 1], [0, h, 0, 1]])])


def _capsule(radius: float, length: float) -> Geometry:
    """Two hemispheres `length` apart along z, joined by a cylinder (length 0: a sphere)."""
    lower = np.linspace(-np.pi / 2, 0.0, HEMISPHERE_RINGS + 1)
    upper = np.linspace(0.0, np.pi / 2, HEMISPHERE_RINGS + 1)
    rows = [(radius * np.cos(a), -length / 2 + radius * np.sin(a), np.cos(a), np.sin(a)) for a in lower]
    rows += [(radius * np.cos(a), length / 2 + radius * np.sin(a), np.cos(a), np.sin(a)) for a in upper]
    return _revolve([np.array(rows)])


def _plane() -> Geometry:
    s = PLANE_HALF_SIZE_M
    corners = np.array([[[-s, -s, 0], [s, -s, 0], [s, s, 0]], [[-s, -s, 0], [s, s, 0], [-s, s, 0]]], float)
    return Geometry.from_corners(corners, np.tile([0.0, 0.0, 1.0], (2, 3, 1)))


# ----------------------------------------------------------------------------- maths
def _rotation_matrices(quaternions_xyzw: np.ndarray) -> np.ndarray:
    x, y, z, w = quaternions_xyzw.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def _pose(position, quaternion_xyzw) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = _rotation_matrices(np.asarray([quaternion_xyzw], float))[0]
    pose[:3, 3] = position
    return pose


def optical_projection(fx: float, fy: float, width: int, height: int, near: float, far: float) -> np.ndarray:
    """Clip-space projection of points in the optical frame (x right, y down, z forward),
    principal point at the image centre. Image top maps to NDC y = -1, the first row
    glReadPixels returns, so the image read back needs no flip."""
    return np.array([
        [2 * fx / width, 0, 0, 0],
        [0, 2 * fy / height, 0, 0],
        [0, 0, (far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, 1, 0],
    ])


# ----------------------------------------------------------------------------- EGL binding
EGL_DRAW, EGL_READ = 0x3059, 0x305A


def _load_egl() -> ctypes.CDLL:
    """libEGL as glcontext loads it, to read and restore which context is current."""
    egl = ctypes.CDLL(ctypes.util.find_library("EGL") or "libEGL.so.1")
    for name in ("eglGetCurrentDisplay", "eglGetCurrentContext", "eglGetCurrentSurface"):
        getattr(egl, name).restype = ctypes.c_void_p
    egl.eglGetCurrentSurface.argtypes = [ctypes.c_int]
    egl.eglMakeCurrent.argtypes = [ctypes.c_void_p] * 4
    egl.eglMakeCurrent.restype = ctypes.c_uint
    return egl


def _egl_binding(egl: ctypes.CDLL) -> tuple:
    """(display, draw surface, read surface, context) current on this thread."""
    return (egl.eglGetCurrentDisplay(), egl.eglGetCurrentSurface(EGL_DRAW),
            egl.eglGetCurrentSurface(EGL_READ), egl.eglGetCurrentContext())


# ----------------------------------------------------------------------------- renderer
@dataclass
class _BodyPoses:
    """Where one body's frame poses come from, and which rows of the pose texture they fill."""

    body: int
    base_row: int | None
    links: list[int]
    link_rows: list[int]


def _load_triton_before_opengl():
    """Mesa's software OpenGL and triton each load their own LLVM; triton loaded after an
    OpenGL context exists crashes the process (a segfault in its import). torch loads
    triton lazily (torch.optim, the sentence encoder, torchvision), so any process that
    renders and runs torch would crash at the first such use: load it first, where it is
    installed."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


class GLRenderer:
    """Renders RGB and depth images of the visual shapes in a PyBullet client."""

    def __init__(self, physics_client: int):
        if moderngl is None:
            raise RuntimeError(f"moderngl is not installed ({_MODERNGL_IMPORT_ERROR})")
        _load_triton_before_opengl()
        try:
            self._egl = _load_egl()
            outer = _egl_binding(self._egl)
            self._ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
        except Exception as err:  # moderngl/glcontext raise plain Exceptions for EGL failures
            raise RuntimeError(f"cannot create an OpenGL 3.3 context through EGL: {err}") from err
        self._client = physics_client
        with self._current(outer):
            self._program = self._ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
            self._program["light_direction"].value = tuple(float(v) for v in LIGHT_DIRECTION)
            self._program["ambient"].value = AMBIENT
            self._program["diffuse"].value = DIFFUSE
            # Back faces are not drawn, as in PyBullet. The projection mirrors the image
            # vertically (see optical_projection), so outside faces wind clockwise on screen.
            self._ctx.enable(moderngl.DEPTH_TEST | moderngl.CULL_FACE)
            self._ctx.front_face = "cw"
        self._framebuffers: dict[tuple[int, int], moderngl.Framebuffer] = {}
        self._buffers: list = []  # vertex buffer, index buffer, vertex array, pose texture
        self._vertex_array = self._pose_texture = None
        self._bodies: list[_BodyPoses] = []
        self._frame_ranges = np.zeros((0, 2), np.int64)  # per frame: first index, index count
        self._frame_centers = np.zeros((0, 3))  # bounding spheres of the frames' geometry
        self._frame_radii = np.zeros(0)

    @contextlib.contextmanager
    def _current(self, outer: tuple | None = None):
        """Our context current for the block, then the thread's previous binding (`outer`,
        or the one current on entry) back. glcontext alone would leave no context current,
        and PyBullet's EGL plugin (another world in this thread) then crashes in its next
        render; several GLRenderers in one thread need nothing more than this either."""
        outer = _egl_binding(self._egl) if outer is None else outer
        self._ctx.__enter__()
        try:
            yield
        finally:
            if outer[3]:
                self._egl.eglMakeCurrent(*outer)
            else:
                self._ctx.__exit__(None, None, None)

    # ------------------------------------------------------------------ scene
    def sync_scene(self):
        """Upload the visual shapes of every body in the client. Call it after bodies are
        added or removed, or their visual shapes changed; poses are read at each render."""
        rows: dict[tuple[int, int], int] = {}  # (body, link) -> row of the pose texture
        frame_vertices: list[list[np.ndarray]] = []  # per row, its shapes' vertices
        frame_triangles: list[list[np.ndarray]] = []
        self._bodies = []
        for k in range(pybullet.getNumBodies(physicsClientId=self._client)):
            body = pybullet.getBodyUniqueId(k, physicsClientId=self._client)
            links: list[int] = []
            for shape in pybullet.getVisualShapeData(body, physicsClientId=self._client):
                link = shape[1]
                geometry = _shape_geometry(shape)
                if geometry is None:
                    continue
                if (body, link) not in rows:
                    rows[body, link] = len(frame_vertices)
                    frame_vertices.append([])
                    frame_triangles.append([])
                    if link >= 0:
                        links.append(link)
                row = rows[body, link]
                visual_pose = self._reported_frame_to_link(body, link) @ _pose(shape[5], shape[6])
                frame_triangles[row].append(geometry.triangles + sum(map(len, frame_vertices[row])))
                frame_vertices[row].append(_vertex_array(geometry, visual_pose, row))
            if (body, -1) in rows or links:
                self._bodies.append(_BodyPoses(body, rows.get((body, -1)), links, [rows[body, link] for link in links]))

        # One vertex and index buffer, grouped by frame, so that the frames in view are
        # drawn as a few index ranges and the others cost no vertex work.
        vertices, triangles, self._frame_ranges = [], [], np.zeros((len(frame_vertices), 2), np.int64)
        n_vertices = n_indices = 0
        self._frame_centers = np.zeros((len(frame_vertices), 3))
        self._frame_radii = np.zeros(len(frame_vertices))
        for row, (parts, part_triangles) in enumerate(zip(frame_vertices, frame_triangles)):
            frame = np.concatenate(parts)
            vertices.append(frame)
            triangles.append(np.concatenate(part_triangles) + n_vertices)
            self._frame_ranges[row] = n_indices, triangles[-1].size
            n_vertices, n_indices = n_vertices + len(frame), n_indices + triangles[-1].size
            low, high = frame["position"].min(axis=0), frame["position"].max(axis=0)
            self._frame_centers[row] = (low + high) / 2
            self._frame_radii[row] = np.linalg.norm(high - low) / 2
        with self._current():
            for resource in self._buffers:
                resource.release()
            self._buffers, self._vertex_array, self._pose_texture = [], None, None
            if vertices:
                vertex_buffer = self._ctx.buffer(np.concatenate(vertices))
                index_buffer = self._ctx.buffer(np.concatenate(triangles).astype(np.uint32))
                self._vertex_array = self._ctx.vertex_array(
                    self._program, [(vertex_buffer, *VERTEX_FORMAT)],
                    index_buffer=index_buffer, index_element_size=4)
                self._pose_texture = self._ctx.texture((4, len(vertices)), 4, dtype="f4")
                self._pose_texture.filter = (moderngl.NEAREST, moderngl.NEAREST)
                self._buffers = [self._vertex_array, vertex_buffer, index_buffer, self._pose_texture]

    def _reported_frame_to_link(self, body: int, link: int) -> np.ndarray:
        """Pose of the link frame in the frame whose pose PyBullet reports: getLinkState
        gives the URDF link frame of a link, but getBasePositionAndOrientation the base's
        inertial frame, while visual shapes are placed relative to the URDF frames of both."""
        if link >= 0:
            return np.eye(4)
        info = pybullet.getDynamicsInfo(body, -1, physicsClientId=self._client)
        return np.linalg.inv(_pose(info[3], info[4]))

    def _frame_poses(self) -> np.ndarray:
        """World poses (N, 4, 4), read now, of the frames the vertices are expressed in."""
        n = len(self._frame_ranges)
        positions, quaternions = np.zeros((n, 3)), np.zeros((n, 4))
        for source in self._bodies:
            if source.base_row is not None:
                position, quaternion = pybullet.getBasePositionAndOrientation(
                    source.body, physicsClientId=self._client)
                positions[source.base_row], quaternions[source.base_row] = position, quaternion
            if source.links:
                states = pybullet.getLinkStates(source.body, source.links, computeForwardKinematics=True,
                                                physicsClientId=self._client)
                for row, state in zip(source.link_rows, states):
                    positions[row], quaternions[row] = state[4], state[5]
        poses = np.zeros((n, 4, 4))
        poses[:, :3, :3] = _rotation_matrices(quaternions)
        poses[:, :3, 3] = positions
        poses[:, 3, 3] = 1.0
        return poses

    def _ranges_in_view(self, poses: np.ndarray, world_to_camera: np.ndarray, fx: float, fy: float,
                        width: int, height: int, near: float, far: float) -> list[tuple[int, int]]:
        """(first index, count) ranges of the index buffer covering the frames whose
        bounding spheres meet the view frustum; neighbouring frames share a range."""
        centers = np.einsum("nij,nj->ni", poses[:, :3, :3], self._frame_centers) + poses[:, :3, 3]
        centers = centers @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
        # Inward normals of the four side planes of the frustum (through the optical centre).
        half_x, half_y = width / (2 * fx), height / (2 * fy)
        sides = _unit(np.array([[1, 0, half_x], [-1, 0, half_x], [0, 1, half_y], [0, -1, half_y]]))
        radii = self._frame_radii
        in_view = ((centers @ sides.T >= -radii[:, None]).all(axis=1)
                   & (centers[:, 2] + radii >= near) & (centers[:, 2] - radii <= far))
        # Runs of consecutive frames in view.
        edges = np.flatnonzero(np.diff(np.concatenate([[0], in_view.astype(np.int8), [0]])))
        ranges = []
        for first_row, end_row in zip(edges[::2], edges[1::2]):
            first = self._frame_ranges[first_row, 0]
            ranges.append((int(first), int(self._frame_ranges[end_row - 1].sum() - first)))
        return ranges

    # ------------------------------------------------------------------ rendering
    def _framebuffer(self, width: int, height: int):
        framebuffer = self._framebuffers.get((width, height))
        if framebuffer is None:
            framebuffer = self._framebuffers[width, height] = self._ctx.framebuffer(
                color_attachments=[self._ctx.renderbuffer((width, height), 4)],
                depth_attachment=self._ctx.depth_renderbuffer((width, height)))
        return framebuffer

    def render(self, camera_pose: np.ndarray, fx: float, fy: float, width: int, height: int,
               near: float, far: float) -> tuple[np.ndarray, np.ndarray]:
        """RGB (HxWx3 uint8, row 0 at the top) and depth along the optical axis (HxW float32
        metres, 0 where nothing is within near..far), seen from `camera_pose`, the 4x4 world
        pose of the optical frame (x right, y down, z forward)."""
        world_to_camera = np.linalg.inv(camera_pose)
        view_projection = optical_projection(fx, fy, width, height, near, far) @ world_to_camera
        rgb = np.empty((height, width, 3), np.uint8)
        depth_buffer = np.empty((height, width), np.float32)
        with self._current():
            framebuffer = self._framebuffer(width, height)
            framebuffer.use()
            framebuffer.clear(*BACKGROUND_RGB, 1.0, depth=1.0)
            if self._vertex_array is not None:
                poses = self._frame_poses()
                # Column-major matrices, one per texture row.
                self._pose_texture.write(np.ascontiguousarray(poses.transpose(0, 2, 1), np.float32))
                self._pose_texture.use(0)
                self._program["frame_poses"].value = 0
                self._program["view_projection"].write(np.ascontiguousarray(view_projection.T, np.float32))
                for first, count in self._ranges_in_view(poses, world_to_camera, fx, fy, width, height, near, far):
                    self._vertex_array.render(moderngl.TRIANGLES, vertices=count, first=first)
            framebuffer.read_into(rgb, components=3)
            framebuffer.read_into(depth_buffer, components=1, attachment=-1, dtype="f4")
        # Window depth back to metres along the optical axis (the inverse of the projection).
        background = depth_buffer >= 1.0
        depth = (far * near) / (far - (far - near) * depth_buffer)
        depth[background] = 0.0
        return rgb, depth

    def close(self):
        with self._current():
            for resource in [*self._buffers, *self._framebuffers.values()]:
                resource.release()
        self._buffers, self._vertex_array, self._pose_texture = [], None, None
        self._framebuffers.clear()
        self._ctx.release()


def _shape_geometry(shape) -> Geometry | None:
    """The geometry of a getVisualShapeData entry in its visual frame, colours resolved
    (material colour x rgba, or rgba); None if it is hidden or cannot be drawn."""
    geometry_type, dimensions, file_name = shape[2], shape[3], shape[4].decode(errors="replace")
    rgba = np.asarray(shape[7], float)
    if rgba[3] == 0.0:  # fully transparent: PyBullet's way of hiding a shape
        return None
    if geometry_type == pybullet.GEOM_BOX:
        geometry = _box(dimensions)
    elif geometry_type == pybullet.GEOM_CYLINDER:
        geometry = _cylinder(radius=dimensions[1], length=dimensions[0])
    elif geometry_type == pybullet.GEOM_SPHERE:
        geometry = _capsule(radius=dimensions[0], length=0.0)
    elif geometry_type == pybullet.GEOM_CAPSULE:
        geometry = _capsule(radius=dimensions[1], length=dimensions[0])
    elif geometry_type == pybullet.GEOM_PLANE:
        geometry = _plane()
    elif geometry_type == pybullet.GEOM_MESH and file_name.lower().endswith(".obj"):
        mesh = load_obj(file_name)
        scale = np.asarray(dimensions, float)
        # Normals transform by the inverse transpose of the (diagonal) scale; a mirroring
        # scale turns the winding inside out.
        triangles = mesh.triangles if np.prod(scale) >= 0 else mesh.triangles[:, ::-1]
        geometry = Geometry(mesh.positions * scale, _unit(mesh.normals / np.where(scale == 0, 1.0, scale)),
                            triangles, mesh.colors)
    else:
        print(f"GLRenderer: body {shape[0]} link {shape[1]}: cannot draw visual geometry type "
              f"{geometry_type} '{file_name}' (only primitives and OBJ meshes); skipped", file=sys.stderr)
        return None
    if len(geometry.triangles) == 0:
        return None
    colors = np.where(np.isnan(geometry.colors), 1.0, geometry.colors) * rgba[:3]
    return Geometry(geometry.positions, geometry.normals, geometry.triangles, colors)


def _vertex_array(geometry: Geometry, local: np.ndarray, frame_row: int) -> np.ndarray:
    """Vertices for the GPU, moved by `local` (the visual frame's pose in frame `frame_row`)."""
    vertices = np.zeros(len(geometry.positions), VERTEX_DTYPE)
    vertices["position"] = geometry.positions @ local[:3, :3].T + local[:3, 3]
    vertices["normal"] = geometry.normals @ local[:3, :3].T
    vertices["color"][:, :3] = np.clip(geometry.colors * 255.0 + 0.5, 0, 255)
    vertices["color"][:, 3] = 255
    vertices["frame"] = frame_row
    return vertices
