"""Tests for ros_vla.sim.gl_renderer: OBJ parsing, and images compared with PyBullet's own
(tiny) renderer on the same physics client: depth, silhouettes, colours, link placement."""

from __future__ import annotations

import time

import numpy as np
import pybullet
import pybullet_data
import pytest

from ros_vla.paths import config_file
from ros_vla.sim import world as world_module
from ros_vla.sim.gl_renderer import GLRenderer, load_obj
from ros_vla.sim.scene import CameraSpec, load_scene
from ros_vla.sim.world import SimWorld


def pybullet_render(client: int, cam: CameraSpec, camera_pose: np.ndarray):
    """RGB, depth (metres along the optical axis, 0 = nothing) and the segmentation mask
    (object + (link + 1) << 24, -1 = nothing) from PyBullet's tiny renderer."""
    eye, forward, down = camera_pose[:3, 3], camera_pose[:3, 2], camera_pose[:3, 1]
    view = pybullet.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), (-down).tolist())
    fov_y_deg = float(np.degrees(2 * np.arctan(cam.height / (2 * cam.fy))))
    aspect = (cam.width / cam.fx) / (cam.height / cam.fy)
    projection = pybullet.computeProjectionMatrixFOV(fov_y_deg, aspect, cam.near_m, cam.far_m)
    _, _, rgba, depth_buffer, segmentation = pybullet.getCameraImage(
        cam.width, cam.height, view, projection, renderer=pybullet.ER_TINY_RENDERER,
        flags=pybullet.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX, physicsClientId=client)
    rgb = np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3]
    buffer = np.asarray(depth_buffer, np.float64).reshape(cam.height, cam.width)
    depth = cam.far_m * cam.near_m / (cam.far_m - (cam.far_m - cam.near_m) * buffer)
    depth[buffer >= 1.0 - 1e-7] = 0.0
    return rgb, depth, np.asarray(segmentation).reshape(cam.height, cam.width)


def depth_agreement(depth_a: np.ndarray, depth_b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Fraction of the pixels where both have depth (and `where`) that agree within 1 cm."""
    both = (depth_a > 0) & (depth_b > 0) & (True if where is None else where)
    return float(np.mean(np.abs(depth_a - depth_b)[both] < 0.01))


def silhouette_iou(depth_a: np.ndarray, depth_b: np.ndarray) -> float:
    a, b = depth_a > 0, depth_b > 0
    return float((a & b).sum() / (a | b).sum())


def interior(mask: np.ndarray) -> np.ndarray:
    """The mask less its boundary pixels, where two rasterisers may differ."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def median_render_ms(render, repeats: int = 5) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(repeats):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        render()
        wall.append(time.perf_counter() - wall_start)
        cpu.append(time.process_time() - cpu_start)
    return 1e3 * float(np.median(cpu)), 1e3 * float(np.median(wall))


# ----------------------------------------------------------------------------- OBJ parsing
def test_obj_faces_are_fan_triangulated_with_relative_indices_and_materials(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl red\nKd 0.9 0.1 0.1\nnewmtl unknown_colour\nKa 1 1 1\n")
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
        "vt 0 0\nvn 0 0 1\n"
        "f 1 2 3 4\n"                        # quad, no normals: two triangles, flat normal +z
        "usemtl red\n"
        "v 0 0 1\nv 1 0 1\nv 1 1 1\n"
        "f -3/1/1 -2/1/1 -1/1/1\n"           # relative indices, v/vt/vn
        "usemtl unknown_colour\n"
        "f 5//1 6//1 7//1\n"                 # v//vn, a material without Kd
        "f 5/1 6/1 7/1\n")                   # v/vt
    mesh = load_obj(str(tmp_path / "m.obj"))
    assert load_obj(str(tmp_path / "m.obj")) is mesh  # parsed once
    corners = mesh.positions[mesh.triangles]
    assert corners.shape == (5, 3, 3)
    np.testing.assert_allclose(corners[:2].reshape(-1, 3)[:, 2], 0.0)
    np.testing.assert_allclose(corners[2:].reshape(-1, 3)[:, 2], 1.0)
    quad_area = 0.5 * np.linalg.norm(np.cross(corners[:2, 1] - corners[:2, 0], corners[:2, 2] - corners[:2, 0]),
                                     axis=1).sum()
    assert quad_area == pytest.approx(1.0)
    np.testing.assert_allclose(mesh.normals[mesh.triangles].reshape(-1, 3), np.tile([0, 0, 1], (15, 1)), atol=1e-6)
    colors = mesh.colors[mesh.triangles[:, 0]]
    assert np.isnan(colors[:2]).all() and np.isnan(colors[3:]).all()
    np.testing.assert_allclose(colors[2], [0.9, 0.1, 0.1], atol=1e-6)


def test_world_without_renderer_creates_no_gl_context(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a physics-only world created a GL renderer")

    monkeypatch.setattr(world_module, "GLRenderer", forbidden)
    world = SimWorld(load_scene(config_file("scene_tabletop.yaml")), seed=0, renderer=None)
    try:
        assert world.renderer == "none"
    finally:
        world.close()


def test_world_falls_back_to_pybullet_renderer_without_gl(monkeypatch, capsys):
    def unavailable(client):
        raise RuntimeError("no EGL here")

    monkeypatch.setattr(world_module, "GLRenderer", unavailable)
    world = SimWorld(load_scene(config_file("scene_tabletop.yaml")), seed=0, renderer="gl")
    try:
        assert world.renderer in ("egl", "tiny")
        assert "no EGL here" in capsys.readouterr().err
    finally:
        world.close()


# ----------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def tabletop():
    scene = load_scene(config_file("scene_tabletop.yaml"))
    world = SimWorld(scene, seed=0, renderer="gl")
    if world.renderer != "gl":
        world.close()
        # make test installs moderngl and Mesa's EGL: a fallback here is a broken set-up.
        pytest.fail("no gl renderer: OpenGL 3.3 through EGL (moderngl + libEGL) is unavailable")
    world.reset(3)  # the renderer re-syncs with the rebuilt scene
    yield scene, world
    world.close()


@pytest.mark.parametrize("namespace", ["camera", "side"])
def test_tabletop_view_matches_pybullet(tabletop, namespace):
    scene, world = tabletop
    cam = scene.camera(namespace)
    rgb, depth = world.render(cam)
    assert rgb.shape == (cam.height, cam.width, 3) and rgb.dtype == np.uint8
    assert depth.shape == (cam.height, cam.width) and depth.dtype == np.float32
    camera_pose = world.camera_pose(cam)
    _, reference_depth, _ = pybullet_render(world.client, cam, camera_pose)
    assert depth_agreement(depth, reference_depth) >= 0.95
    assert silhouette_iou(depth, reference_depth) > 0.9

    # Each object shows its own colour where its ground-truth position projects.
    world_to_camera = np.linalg.inv(camera_pose)
    for obj in world.object_poses():
        x, y, z = world_to_camera[:3, :3] @ obj.position + world_to_camera[:3, 3]
        u, v = int(cam.fx * x / z + cam.width / 2), int(cam.fy * y / z + cam.height / 2)
        assert 1 <= u < cam.width - 1 and 1 <= v < cam.height - 1, f"{obj.name} is out of view"
        assert abs(depth[v, u] - z) < world.objects[obj.name].size_m, f"{obj.name} is not where it should be"
        seen = rgb[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).mean(axis=0)
        expected = np.asarray(scene.colors[obj.color])
        cosine = seen @ expected / (np.linalg.norm(seen) * np.linalg.norm(expected))
        assert np.argmax(seen) == np.argmax(expected) and cosine > 0.98, f"{obj.name} looks {seen}"

    cpu_ms, wall_ms = median_render_ms(lambda: world.render(cam))
    print(f"\ngl render {cam.width}x{cam.height} '{namespace}': median {cpu_ms:.1f} ms CPU, {wall_ms:.1f} ms wall")


@pytest.fixture
def client_and_renderer():
    client = pybullet.connect(pybullet.DIRECT)
    try:
        renderer = GLRenderer(client)
    except RuntimeError as err:
        pybullet.disconnect(client)
        pytest.fail(f"no gl renderer: {err}")
    yield client, renderer
    renderer.close()
    pybullet.disconnect(client)


def test_plane_depth_is_exact(client_and_renderer):
    """Depth and projection against ray casting: principal point at the image centre,
    pixel centres at half-integer coordinates, depth along the optical axis."""
    client, renderer = client_and_renderer
    plane_z = -0.3
    plane = pybullet.createVisualShape(pybullet.GEOM_PLANE, physicsClientId=client)
    pybullet.createMultiBody(0, -1, plane, [0, 0, plane_z], physicsClientId=client)
    renderer.sync_scene()
    cam = CameraSpec("test", "test", "map", eye=(1.3, -0.4, 0.9), target=(0.0, -0.3, 0.35), up=(0, 0, 1),
                     fx=400.0, fy=380.0)
    camera_pose = cam.mount_pose()
    _, depth = renderer.render(camera_pose, cam.fx, cam.fy, cam.width, cam.height, cam.near_m, cam.far_m)
    v, u = np.mgrid[0:cam.height, 0:cam.width] + 0.5
    rays = np.stack([(u - cam.width / 2) / cam.fx, (v - cam.height / 2) / cam.fy, np.ones(u.shape)], axis=-1)
    rays_z_in_world = rays @ camera_pose[2, :3]
    with np.errstate(divide="ignore"):
        expected = (plane_z - camera_pose[2, 3]) / rays_z_in_world  # optical-axis depth (ray z = 1)
    expected[(expected <= 0) | (expected > cam.far_m)] = 0.0
    assert silhouette_iou(depth, expected) > 0.995
    np.testing.assert_allclose(depth[(depth > 0) & (expected > 0)], expected[(depth > 0) & (expected > 0)], atol=2e-3)


def test_bodies_links_and_meshes_are_placed_like_pybullet(client_and_renderer):
    """Every visual geometry type (but the plane), visual frame offsets, inertial frames
    offset from the base and link frames, a scaled mesh, and the Panda in a bent pose."""
    client, renderer = client_and_renderer
    q = pybullet.getQuaternionFromEuler

    def visual(**kwargs):
        return pybullet.createVisualShape(physicsClientId=client, **kwargs)

    shapes = [
        visual(shapeType=pybullet.GEOM_BOX, halfExtents=[0.05, 0.1, 0.03], rgbaColor=[1, 0, 0, 1],
               visualFramePosition=[0.05, 0, 0.02], visualFrameOrientation=q([0.3, 0, 0.5])),
        visual(shapeType=pybullet.GEOM_CYLINDER, radius=0.05, length=0.2, rgbaColor=[0, 1, 0, 1],
               visualFrameOrientation=q([1.2, 0, 0])),
        visual(shapeType=pybullet.GEOM_SPHERE, radius=0.06, rgbaColor=[0, 0, 1, 1]),
        visual(shapeType=pybullet.GEOM_CAPSULE, radius=0.03, length=0.15, rgbaColor=[1, 1, 0, 1],
               visualFramePosition=[0, 0.05, 0]),
        visual(shapeType=pybullet.GEOM_MESH, fileName=pybullet_data.getDataPath() + "/duck.obj",
               meshScale=[0.05, 0.08, 0.05], rgbaColor=[1, 0.5, 0, 1], visualFrameOrientation=q([1.57, 0, 0])),
    ]
    body = pybullet.createMultiBody(
        baseMass=1, baseVisualShapeIndex=shapes[0], basePosition=[0, 0, 0.3], baseOrientation=q([0, 0, 0.4]),
        baseInertialFramePosition=[0.1, -0.05, 0.02], baseInertialFrameOrientation=q([0.2, 0.1, 0.3]),
        linkMasses=[1] * 4, linkCollisionShapeIndices=[-1] * 4, linkVisualShapeIndices=shapes[1:],
        linkPositions=[[0.25, 0, 0], [0, 0.25, 0], [0, 0, 0.2], [-0.25, 0, 0]],
        linkOrientations=[q([0, 0, 0.3])] * 4, linkInertialFramePositions=[[0.05, 0.02, -0.03]] * 4,
        linkInertialFrameOrientations=[q([0.3, 0.2, 0.1])] * 4, linkParentIndices=[0, 1, 0, 0],
        linkJointTypes=[pybullet.JOINT_REVOLUTE] * 4, linkJointAxis=[[0, 0, 1]] * 4, physicsClientId=client)
    robot = pybullet.loadURDF(pybullet_data.getDataPath() + "/franka_panda/panda.urdf", [0.0, -0.6, 0.0],
                              q([0, 0, 0.8]), useFixedBase=True, physicsClientId=client)
    renderer.sync_scene()
    # Poses change after the sync: they are read at each render.
    for joint, angle in enumerate([0.5, -0.7, 1.0, 0.3]):
        pybullet.resetJointState(body, joint, angle, physicsClientId=client)
    for joint, angle in enumerate([0.3, -0.5, 0.2, -2.0, 0.3, 1.8, 0.5]):
        pybullet.resetJointState(robot, joint, angle, physicsClientId=client)

    cam = CameraSpec("test", "test", "map", eye=(1.3, -0.4, 0.9), target=(0.0, -0.3, 0.35), up=(0, 0, 1))
    camera_pose = cam.mount_pose()
    rgb, depth = renderer.render(camera_pose, cam.fx, cam.fy, cam.width, cam.height, cam.near_m, cam.far_m)
    reference_rgb, reference_depth, segmentation = pybullet_render(client, cam, camera_pose)
    assert silhouette_iou(depth, reference_depth) > 0.9
    assert depth_agreement(depth, reference_depth) >= 0.95
    # Each link is where PyBullet draws it, in its colour (shading and tessellation differ).
    drawn = segmentation >= 0
    objects, links = segmentation & ((1 << 24) - 1), (segmentation >> 24) - 1
    for obj, link in sorted(set(zip(objects[drawn].tolist(), links[drawn].tolist()))):
        pixels = interior(drawn & (objects == obj) & (links == link))
        if pixels.sum() < 200:
            continue
        assert np.mean(depth[pixels] > 0) > 0.98, f"body {obj} link {link} is missing"
        assert depth_agreement(depth, reference_depth, pixels) > 0.9, f"body {obj} link {link} is misplaced"
        if obj == body and link in (-1, 0, 1):  # flat-coloured box, cylinder, sphere
            seen, expected = rgb[pixels].mean(axis=0), reference_rgb[pixels].mean(axis=0)
            assert np.abs(seen - expected).max() < 20, f"body {obj} link {link}: {seen} vs {expected}"

