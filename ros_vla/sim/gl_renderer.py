"""OpenGL renderer of a PyBullet client's visual scene (moderngl on a standalone EGL context).

PyBullet's own renderers cost 60-110 ms of CPU per 640x480 view on a small machine; this one
draws the same visual shapes in a few milliseconds on a GPU and on Mesa's llvmpipe alike.
Geometry is uploaded once per `sync_scene()` (vertices in their link's frame, colours
baked in), and each frame only the link poses change: they go to the GPU as a small float
texture of 4x4 matrices, indexed per vertex, so the whole scene is a single draw call.

Shading is ambient + one directional light with PyBullet's defaults (no shadows, no
textures): objects show their rgba colour, and OBJ meshes the `Kd` colours of their
materials (times the shape's rgba), so the Panda keeps its grey joints.
"""

from __future__ import annotations

import sys
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

VERTEX_SHADER = """
#version 330
uniform mat4 view_projection;
uniform sampler2D frame_poses;  // row i: the world pose of frame i, one column per texel
in vec3 in_position;
in vec3 in_normal;
in vec4 in_color;
in int in_frame;
out vec3 world_position;
out vec3 world_normal;
out vec3 color;
void main() {
    mat4 pose = mat4(texelFetch(frame_poses, ivec2(0, in_frame), 0),
                     texelFetch(frame_poses, ivec2(1, in_frame), 0),
                     texelFetch(frame_poses, ivec2(2, in_frame), 0),
                     texelFetch(frame_poses, ivec2(3, in_frame), 0));
    vec4 position = pose * vec4(in_position, 1.0);
    world_position = position.xyz;
    world_normal = mat3(pose) * in_normal;  // rigid pose: scale is baked into the vertices
    color = in_color.rgb;
    gl_Position = view_projection * position;
}
"""

FRAGMENT_SHADER = """
#version 330
uniform vec3 eye;
uniform vec3 light_direction;
uniform float ambient;
uniform float diffuse;
in vec3 world_position;
in vec3 world_normal;
in vec3 color;
out vec4 fragment;
void main() {
    vec3 normal = normalize(world_normal);
    // Lit on the side facing the camera: mesh winding is not consistent across files.
    if (dot(normal, eye - world_position) < 0.0) normal = -normal;
    float lambert = max(dot(normal, light_direction), 0.0);
    fragment = vec4(color * (ambient + diffuse * lambert), 1.0);
}
"""


# ----------------------------------------------------------------------------- OBJ meshes
class ObjMesh:
    """Triangles of a Wavefront OBJ file, unindexed: corners (T, 3, 3), normals (T, 3, 3),
    per-triangle material colour (T, 3) where `has_color`, else the shape's rgba applies."""

    def __init__(self, corners: np.ndarray, normals: np.ndarray, colors: np.ndarray, has_color: np.ndarray):
        self.corners, self.normals, self.colors, self.has_color = corners, normals, colors, has_color


# Parsed once per process: a re-sync after each reset, or a second renderer, reuses them.
_OBJ_CACHE: dict[str, ObjMesh] = {}


def load_obj(path: str) -> ObjMesh:
    mesh = _OBJ_CACHE.get(path)
    if mesh is None:
        mesh = _OBJ_CACHE[path] = _parse_obj(Path(path))
    return mesh


def _parse_obj(path: Path) -> ObjMesh:
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
    triangles_per_face = corners_per_face - 2
    face_of_triangle = np.repeat(np.arange(len(face_tokens)), triangles_per_face)
    fan_step = np.arange(len(face_of_triangle)) - np.repeat(np.cumsum(triangles_per_face) - triangles_per_face,
                                                            triangles_per_face) + 1
    start = first_corner[face_of_triangle]
    triangle_corners = np.stack([start, start + fan_step, start + fan_step + 1], axis=1)

    corners = positions[position_index[triangle_corners]]
    flat = _face_normals(corners)
    normals = np.repeat(flat[:, None, :], 3, axis=1)
    triangle_normal_index = normal_index[triangle_corners]
    given = triangle_normal_index >= 0
    normals[given] = file_normals[triangle_normal_index[given]]

    material_colors = _read_materials(path, [lines[i] for i in np.flatnonzero(kinds == b"mt")])
    names = [(lines[i].split(maxsplit=1) + [b""])[1].strip().decode(errors="replace") for i in material_lines]
    palette = np.array([material_colors.get(name, (np.nan,) * 3) for name in names] + [(np.nan,) * 3], np.float32)
    # The material of a face is the last `usemtl` above it (index -1: none yet).
    face_material = np.searchsorted(material_lines, face_lines) - 1
    colors = palette[face_material[face_of_triangle]]
    has_color = ~np.isnan(colors[:, 0])
    return ObjMesh(corners.astype(np.float32), normals.astype(np.float32),
                   np.nan_to_num(colors).astype(np.float32), has_color)


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


def _face_normals(corners: np.ndarray) -> np.ndarray:
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


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
def _box(extents) -> tuple[np.ndarray, np.ndarray]:
    """Triangles (12, 3, 3) and normals of a box centred at the origin."""
    corners, normals = [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (-1.0, 1.0):
            quad = np.zeros((4, 3))
            quad[:, axis] = sign
            quad[:, u] = [-1, 1, 1, -1]
            quad[:, v] = [-1, -1, 1, 1]
            corners += [quad[[0, 1, 2]], quad[[0, 2, 3]]]
            normal = np.zeros(3)
            normal[axis] = sign
            normals += [np.tile(normal, (3, 1))] * 2
    return np.array(corners) * (np.asarray(extents) / 2.0), np.array(normals)


def _revolve(strips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about z. Each strip is a profile, rows (r, z, normal_r, normal_z);
    consecutive rows of a strip are joined by a band of quads."""
    angles = np.linspace(0.0, 2 * np.pi, ROUND_SEGMENTS + 1)
    cos, sin = np.cos(angles), np.sin(angles)
    corners, normals = [], []
    for profile in strips:
        r, z, nr, nz = (profile[:, k][:, None] for k in range(4))
        points = np.stack([r * cos, r * sin, np.broadcast_to(z, r.shape[:1] + cos.shape)], axis=-1)
        directions = np.stack([nr * cos, nr * sin, np.broadcast_to(nz, r.shape[:1] + cos.shape)], axis=-1)
        i, j = np.meshgrid(np.arange(len(profile) - 1), np.arange(ROUND_SEGMENTS), indexing="ij")
        i, j = i.ravel(), j.ravel()
        quads = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)]
        for a, b, c in ((0, 1, 2), (0, 2, 3)):
            corners.append(np.stack([points[quads[k]] for k in (a, b, c)], axis=1))
            normals.append(np.stack([directions[quads[k]] for k in (a, b, c)], axis=1))
    return np.concatenate(corners), np.concatenate(normals)


def _cylinder(radius: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    h = length / 2.0
    return _revolve([np.array([[0, -h, 0, -1], [radius, -h, 0, -1]]),
                     np.array([[radius, -h, 1, 0], [radius, h, 1, 0]]),
                     np.array([[radius, h, 0, 1], [0, h, 0, 1]])])


def _capsule(radius: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Two hemispheres `length` apart along z, joined by a cylinder (length 0: a sphere)."""
    lower = np.linspace(-np.pi / 2, 0.0, HEMISPHERE_RINGS + 1)
    upper = np.linspace(0.0, np.pi / 2, HEMISPHERE_RINGS + 1)
    rows = [(radius * np.cos(a), -length / 2 + radius * np.sin(a), np.cos(a), np.sin(a)) for a in lower]
    rows += [(radius * np.cos(a), length / 2 + radius * np.sin(a), np.cos(a), np.sin(a)) for a in upper]
    return _revolve([np.array(rows)])


def _plane() -> tuple[np.ndarray, np.ndarray]:
    s = PLANE_HALF_SIZE_M
    corners = np.array([[[-s, -s, 0], [s, -s, 0], [s, s, 0]], [[-s, -s, 0], [s, s, 0], [-s, s, 0]]], float)
    return corners, np.tile([0.0, 0.0, 1.0], (2, 3, 1))


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


# ----------------------------------------------------------------------------- renderer
class _BodyPoses:
    """Where one body's frame poses come from, and which rows of the pose texture they fill."""

    def __init__(self, body: int, base_row: int | None, links: list[int], link_rows: list[int]):
        self.body, self.base_row, self.links, self.link_rows = body, base_row, links, link_rows


class GLRenderer:
    """Renders RGB and depth images of the visual shapes in a PyBullet client."""

    def __init__(self, physics_client: int):
        if moderngl is None:
            raise RuntimeError(f"moderngl is not installed ({_MODERNGL_IMPORT_ERROR})")
        try:
            self._ctx = moderngl.create_context(standalone=True, backend="egl", require=330)
        except Exception as err:  # moderngl/glcontext raise plain Exceptions for EGL failures
            raise RuntimeError(f"cannot create an OpenGL 3.3 context through EGL: {err}") from err
        self._client = physics_client
        with self._ctx:
            self._program = self._ctx.program(vertex_shader=VERTEX_SHADER, fragment_shader=FRAGMENT_SHADER)
            self._program["light_direction"].value = tuple(float(v) for v in LIGHT_DIRECTION)
            self._program["ambient"].value = AMBIENT
            self._program["diffuse"].value = DIFFUSE
        self._framebuffers: dict[tuple[int, int], moderngl.Framebuffer] = {}
        self._vertex_buffer = self._vertex_array = self._pose_texture = None
        self._bodies: list[_BodyPoses] = []
        self._frame_offsets = np.zeros((0, 4, 4))

    # ------------------------------------------------------------------ scene
    def sync_scene(self):
        """Upload the visual shapes of every body in the client. Call it after bodies are
        added or removed, or their visual shapes changed; poses are read at each render."""
        rows: dict[tuple[int, int], int] = {}
        offsets: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        self._bodies = []
        for k in range(pybullet.getNumBodies(physicsClientId=self._client)):
            body = pybullet.getBodyUniqueId(k, physicsClientId=self._client)
            links: list[int] = []
            for shape in pybullet.getVisualShapeData(body, physicsClientId=self._client):
                link = shape[1]
                vertices = self._shape_vertices(shape)
                if vertices is None:
                    continue
                if (body, link) not in rows:
                    rows[body, link] = len(offsets)
                    offsets.append(self._link_frame_offset(body, link))
                    if link >= 0:
                        links.append(link)
                vertices["frame"] = rows[body, link]
                parts.append(vertices)
            base_row = rows.get((body, -1))
            if base_row is not None or links:
                self._bodies.append(_BodyPoses(body, base_row, links, [rows[body, link] for link in links]))
        self._frame_offsets = np.array(offsets).reshape(-1, 4, 4)
        with self._ctx:
            for resource in (self._vertex_array, self._vertex_buffer, self._pose_texture):
                if resource is not None:
                    resource.release()
            self._vertex_buffer = self._vertex_array = self._pose_texture = None
            if parts:
                self._vertex_buffer = self._ctx.buffer(np.concatenate(parts).tobytes())
                self._vertex_array = self._ctx.vertex_array(
                    self._program, [(self._vertex_buffer, *VERTEX_FORMAT)])
                self._pose_texture = self._ctx.texture((4, len(offsets)), 4, dtype="f4")
                self._pose_texture.filter = (moderngl.NEAREST, moderngl.NEAREST)

    def _link_frame_offset(self, body: int, link: int) -> np.ndarray:
        """Link frame in the frame whose pose PyBullet reports: getLinkState gives the URDF
        link frame of a link, but getBasePositionAndOrientation the base's inertial frame,
        while visual shapes are placed relative to the URDF frames of both."""
        if link >= 0:
            return np.eye(4)
        info = pybullet.getDynamicsInfo(body, -1, physicsClientId=self._client)
        return np.linalg.inv(_pose(info[3], info[4]))

    def _shape_vertices(self, shape) -> np.ndarray | None:
        """Vertices of one visual shape in its link frame, or None if it cannot be drawn."""
        geometry, dimensions, file_name = shape[2], shape[3], shape[4].decode(errors="replace")
        rgba = np.asarray(shape[7], float)
        colors = None
        if geometry == pybullet.GEOM_BOX:
            corners, normals = _box(dimensions)
        elif geometry == pybullet.GEOM_CYLINDER:
            corners, normals = _cylinder(radius=dimensions[1], length=dimensions[0])
        elif geometry == pybullet.GEOM_SPHERE:
            corners, normals = _capsule(radius=dimensions[0], length=0.0)
        elif geometry == pybullet.GEOM_CAPSULE:
            corners, normals = _capsule(radius=dimensions[1], length=dimensions[0])
        elif geometry == pybullet.GEOM_PLANE:
            corners, normals = _plane()
        elif geometry == pybullet.GEOM_MESH and file_name.lower().endswith(".obj"):
            mesh = load_obj(file_name)
            scale = np.asarray(dimensions, float)
            corners = mesh.corners * scale
            # Normals transform by the inverse transpose of the (diagonal) scale.
            normals = mesh.normals / np.where(scale == 0, 1.0, scale)
            colors = np.where(mesh.has_color[:, None], mesh.colors * rgba[:3], rgba[:3])
        else:
            print(f"GLRenderer: body {shape[0]} link {shape[1]}: cannot draw visual geometry "
                  f"{geometry} '{file_name}' (only primitives and OBJ meshes); skipped", file=sys.stderr)
            return None
        if rgba[3] == 0.0:  # fully transparent: PyBullet's way of hiding a shape
            return None
        local = _pose(shape[5], shape[6])
        vertices = np.zeros(corners.shape[0] * 3, VERTEX_DTYPE)
        vertices["position"] = corners.reshape(-1, 3) @ local[:3, :3].T + local[:3, 3]
        lengths = np.linalg.norm(normals, axis=-1, keepdims=True)
        unit_normals = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
        vertices["normal"] = unit_normals.reshape(-1, 3) @ local[:3, :3].T
        per_triangle = np.broadcast_to(rgba[:3], (corners.shape[0], 3)) if colors is None else colors
        vertices["color"][:, :3] = np.repeat(np.clip(per_triangle * 255.0 + 0.5, 0, 255), 3, axis=0)
        vertices["color"][:, 3] = 255
        return vertices

    def _frame_poses(self) -> np.ndarray:
        """World poses (N, 4, 4) of the frames the vertices are expressed in, read now."""
        n = len(self._frame_offsets)
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
        return poses @ self._frame_offsets

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
        camera_pose = np.asarray(camera_pose, float)
        view_projection = optical_projection(fx, fy, width, height, near, far) @ np.linalg.inv(camera_pose)
        rgb = np.empty((height, width, 3), np.uint8)
        depth_buffer = np.empty((height, width), np.float32)
        with self._ctx:
            framebuffer = self._framebuffer(width, height)
            framebuffer.use()
            self._ctx.enable(moderngl.DEPTH_TEST)
            framebuffer.clear(*BACKGROUND_RGB, 1.0, depth=1.0)
            if self._vertex_array is not None:
                # Column-major matrices, one per texture row.
                poses = np.ascontiguousarray(self._frame_poses().transpose(0, 2, 1), np.float32)
                self._pose_texture.write(poses)
                self._pose_texture.use(0)
                self._program["frame_poses"].value = 0
                self._program["view_projection"].write(view_projection.T.astype(np.float32).tobytes())
                self._program["eye"].value = tuple(float(v) for v in camera_pose[:3, 3])
                self._vertex_array.render(moderngl.TRIANGLES)
            framebuffer.read_into(rgb, components=3)
            framebuffer.read_into(depth_buffer, components=1, attachment=-1, dtype="f4")
        # Window depth back to metres along the optical axis (the inverse of the projection).
        background = depth_buffer >= 1.0
        depth = (far * near) / (far - (far - near) * depth_buffer)
        depth[background] = 0.0
        return rgb, depth

    def close(self):
        for framebuffer in self._framebuffers.values():
            framebuffer.release()
        self._framebuffers.clear()
        self._ctx.release()
