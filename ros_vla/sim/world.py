"""PyBullet world: a Franka Panda on a kinematic mobile base, tables, blocks, bowls, cameras.

Headless (DIRECT) and deterministic for a seed. The arm follows joint trajectories with
position control (as franka_ros2's joint trajectory controller would), the gripper takes a
target width, and the base integrates planar velocity commands kinematically.

Simplification, named: a closing gripper whose two fingers touch the same object holds
it with a fixed constraint, so grasps do not slip while the base drives. Everything that
reads object poses from here is ground truth, for evaluation and oracles only.
"""

from __future__ import annotations

import functools
import pkgutil
import sys
from dataclasses import dataclass

import numpy as np
import pybullet
import pybullet_data

from ros_vla.robot.kinematics import quaternion_from_matrix
from ros_vla.sim.gl_renderer import GLRenderer
from ros_vla.sim.scene import CameraSpec, SceneConfig

PANDA_URDF = "franka_panda/panda.urdf"
ARM_LINKS = [f"panda_link{i}" for i in range(1, 8)]
ARM_EFFORT_NM = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)
ARM_VELOCITY_RAD_S = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
FINGER_FORCE_N = 40.0
MAX_FINGER_WIDTH_M = 0.08


@dataclass
class SimObject:
    name: str
    kind: str
    color: str
    body_id: int
    size_m: float


@dataclass(frozen=True)
class ObjectPose:
    name: str
    kind: str
    color: str
    position: tuple[float, float, float]
    quaternion_xyzw: tuple[float, float, float, float]
    held: bool


def yaw_to_quaternion(yaw: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(np.sin(yaw / 2.0)), float(np.cos(yaw / 2.0)))


def pose_matrix(position, quaternion_xyzw) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = np.array(pybullet.getMatrixFromQuaternion(quaternion_xyzw)).reshape(3, 3)
    pose[:3, 3] = position
    return pose


def planar_pose_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:2, 3] = [x, y]
    return pose


class JointTrajectoryFollower:
    """Samples a joint trajectory by linear interpolation in time, holding the last point.

    Like ros2_control's trajectory controller, a new trajectory replaces the current one
    and starts from the joint state at the moment it arrives.
    """

    def __init__(self, q_start: np.ndarray):
        self._times = np.array([0.0])
        self._points = np.asarray(q_start, float)[None, :]
        self._start_time = 0.0

    def set(self, now: float, q_current: np.ndarray, points: list[tuple[np.ndarray, float]]):
        times = [0.0] + [float(t) for _, t in points]
        if points and points[0][1] <= 0.0:
            times, qs = times[1:], [np.asarray(q, float) for q, _ in points]
        else:
            qs = [np.asarray(q_current, float)] + [np.asarray(q, float) for q, _ in points]
        self._times = np.asarray(times)
        self._points = np.stack(qs)
        self._start_time = now

    def hold(self, now: float, q_current: np.ndarray):
        self.set(now, q_current, [])

    def sample(self, now: float) -> np.ndarray:
        t = now - self._start_time
        if t >= self._times[-1] or len(self._times) == 1:
            return self._points[-1].copy()
        i = int(np.searchsorted(self._times, t, side="right")) - 1
        i = max(0, min(i, len(self._times) - 2))
        alpha = (t - self._times[i]) / max(self._times[i + 1] - self._times[i], 1e-9)
        return (1 - alpha) * self._points[i] + alpha * self._points[i + 1]


class SimWorld:
    """The simulated robot and its scene. All poses are in the map frame unless named."""

    def __init__(self, scene: SceneConfig, seed: int = 0, time_step_s: float = 1.0 / 240.0,
                 renderer: str | None = "gl"):
        self.scene = scene
        self.time_step_s = time_step_s
        self.client = pybullet.connect(pybullet.DIRECT)
        self._p = _ClientBound(self.client)
        self._gl_renderer: GLRenderer | None = None
        self.renderer = self._load_renderer(renderer)
        self.objects: dict[str, SimObject] = {}
        self._reset_world(seed)

    # ----------------------------------------------------------------- construction
    def _load_renderer(self, renderer: str) -> str:
        """gl (GLRenderer, OpenGL through EGL) costs a few ms of CPU per 640x480 view even on
        Mesa's software llvmpipe; PyBullet's EGL plugin over ten times more, its tiny software
        renderer more still. Each falls back to the next where it cannot start. None: the
        world is never rendered (physics only) and no OpenGL context is created."""
        if renderer is None:
            return "none"
        if renderer == "gl":
            try:
                self._gl_renderer = GLRenderer(self.client)
                return "gl"
            except RuntimeError as err:
                print(f"SimWorld: no gl renderer ({err}); falling back to PyBullet's", file=sys.stderr)
                renderer = "egl"
        if renderer == "egl":
            egl = pkgutil.get_loader("eglRenderer")
            if egl is not None:
                plugin = pybullet.loadPlugin(egl.get_filename(), "_eglRendererPlugin",
                                             physicsClientId=self.client)
                if plugin >= 0:
                    return "egl"
            renderer = "tiny"
        if renderer != "tiny":
            raise ValueError(f"renderer must be 'gl', 'egl' or 'tiny', got '{renderer}'")
        return "tiny"

    def _box(self, half_extents, position, rgba, mass=0.0, collision=True) -> int:
        cid = self._p.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half_extents) if collision else -1
        vid = self._p.createVisualShape(pybullet.GEOM_BOX, halfExtents=half_extents, rgbaColor=rgba)
        return self._p.createMultiBody(mass, cid, vid, position)

    def _reset_world(self, seed: int):
        p = self._p
        p.resetSimulation()
        p.setGravity(0, 0, -9.81)
        p.setTimeStep(self.time_step_s)
        p.setPhysicsEngineParameter(numSolverIterations=50, deterministicOverlappingPairs=1)
        self.time_s = 0.0
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._box([6, 6, 0.01], [0, 0, -0.01], [0.78, 0.78, 0.75, 1])
        for table in self.scene.furniture:
            half = [table.size[0] / 2, table.size[1] / 2, table.top_z / 2]
            self._box(half, [table.center[0], table.center[1], table.top_z / 2], list(table.rgba))

        bx, by, bz = self.scene.base_size
        self._base_pose = np.array(self.scene.stations.get("table", (0.0, 0.0, 0.0)), float)
        self.base_body = self._box([bx / 2, by / 2, bz / 2], [0, 0, bz / 2], [0.25, 0.25, 0.28, 1])
        self._base_velocity = np.zeros(3)

        p.setAdditionalSearchPath(pybullet_data.getDataPath())
        self.robot = p.loadURDF(PANDA_URDF, [0, 0, 0], useFixedBase=True)
        links = {p.getJointInfo(self.robot, j)[12].decode(): j for j in range(p.getNumJoints(self.robot))}
        self._arm_joints = [self._joint_index(f"panda_joint{i}") for i in range(1, 8)]
        self._finger_joints = [self._joint_index("panda_finger_joint1"), self._joint_index("panda_finger_joint2")]
        self._hand_link = links["panda_hand"]
        self._tcp_link = links["panda_grasptarget"]
        self._place_base()
        for link in self._finger_joints:
            p.changeDynamics(self.robot, link, lateralFriction=1.5, spinningFriction=0.01)
        q_ready = np.asarray(self.scene.ready_pose, float)
        for joint, q in zip(self._arm_joints, q_ready):
            p.resetJointState(self.robot, joint, q)
        for joint in self._finger_joints:
            p.resetJointState(self.robot, joint, MAX_FINGER_WIDTH_M / 2)
        self.follower = JointTrajectoryFollower(q_ready)
        self._gripper_target_m = MAX_FINGER_WIDTH_M
        self._grasp_constraint: int | None = None
        self._held_object: str | None = None
        self._spawn_objects()
        self._apply_arm_control(q_ready)
        self._apply_gripper_control()
        if self._gl_renderer is not None:
            self._gl_renderer.sync_scene()

    def _joint_index(self, name: str) -> int:
        for j in range(self._p.getNumJoints(self.robot)):
            if self._p.getJointInfo(self.robot, j)[1].decode() == name:
                return j
        raise KeyError(name)

    def _spawn_objects(self):
        spawn = self.scene.spawn
        top_z = self.scene.work_table.top_z
        self.objects = {}
        placed: list[tuple[np.ndarray, str]] = []
        station = planar_pose_matrix(*self.scene.stations.get("table", (0.0, 0.0, 0.0)))
        arm_base_xy = (station @ self.arm_mount_in_base())[:2, 3]
        # A stand is longer than the usual spacing: keep everything clear of its ends.
        stand_clearance = spawn.stand_size[0] / 2 + spawn.block_size
        for spec in self.scene.objects:
            for _ in range(1000):
                xy = np.array([self.rng.uniform(*spawn.region_x), self.rng.uniform(*spawn.region_y)])
                reachable = np.linalg.norm(xy - arm_base_xy) <= spawn.max_reach_m
                if reachable and all(
                        np.linalg.norm(xy - other) >= (max(spawn.min_separation, stand_clearance)
                                                        if "stand" in (spec.kind, other_kind) else spawn.min_separation)
                        for other, other_kind in placed):
                    break
            else:
                raise RuntimeError(f"cannot place {spec.name}: spawn region too small for the objects")
            placed.append((xy, spec.kind))
            yaw = self.rng.uniform(-np.pi / 4, np.pi / 4)
            rgba = list(self.scene.colors[spec.color]) + [1.0]
            if spec.kind == "block":
                half = spawn.block_size / 2
                body = self._box([half] * 3, [xy[0], xy[1], top_z + half], rgba, mass=0.08)
                self._p.resetBasePositionAndOrientation(body, [xy[0], xy[1], top_z + half], yaw_to_quaternion(yaw))
                self._p.changeDynamics(body, -1, lateralFriction=1.2)
                size = spawn.block_size
            elif spec.kind == "stand":
                half = [v / 2 for v in spawn.stand_size]
                body = self._box(half, [xy[0], xy[1], top_z + half[2]], rgba, mass=0.0)
                self._p.resetBasePositionAndOrientation(body, [xy[0], xy[1], top_z + half[2]], yaw_to_quaternion(yaw))
                self._p.changeDynamics(body, -1, lateralFriction=1.2)
                size = spawn.stand_size[0]
            else:
                body = self._make_bowl(xy, top_z, spawn.bowl_radius, spawn.bowl_height, rgba)
                size = 2 * spawn.bowl_radius
            self.objects[spec.name] = SimObject(spec.name, spec.kind, spec.color, body, size)

    def _make_bowl(self, xy, top_z, radius, height, rgba) -> int:
        """A shallow round container: a floor disc and a ring of 16 wall segments."""
        wall = 0.006
        positions, orientations = [], []
        floor_c = self._p.createCollisionShape(pybullet.GEOM_CYLINDER, radius=radius, height=wall)
        floor_v = self._p.createVisualShape(pybullet.GEOM_CYLINDER, radius=radius, length=wall, rgbaColor=rgba)
        segments = 16
        seg_half_len = radius * np.tan(np.pi / segments) + wall
        for k in range(segments):
            angle = 2 * np.pi * k / segments
            positions.append([radius * np.cos(angle), radius * np.sin(angle), height / 2])
            orientations.append(pybullet.getQuaternionFromEuler([0, 0, angle]))
        half = [wall / 2, seg_half_len, height / 2]
        shapes_c = [self._p.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half) for _ in range(segments)]
        shapes_v = [self._p.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=rgba)
                    for _ in range(segments)]
        body = self._p.createMultiBody(
            baseMass=0.25, baseCollisionShapeIndex=floor_c, baseVisualShapeIndex=floor_v,
            basePosition=[xy[0], xy[1], top_z + wall / 2],
            linkMasses=[0.02] * segments, linkCollisionShapeIndices=shapes_c,
            linkVisualShapeIndices=shapes_v, linkPositions=positions,
            linkOrientations=orientations, linkInertialFramePositions=[[0, 0, 0]] * segments,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * segments,
            linkParentIndices=[0] * segments, linkJointTypes=[pybullet.JOINT_FIXED] * segments,
            linkJointAxis=[[0, 0, 1]] * segments,
        )
        self._p.changeDynamics(body, -1, lateralFriction=1.0)
        return body

    # ----------------------------------------------------------------- base
    def arm_mount_in_base(self) -> np.ndarray:
        return self.scene.arm_mount_matrix()

    def base_pose(self) -> tuple[float, float, float]:
        """Base pose (x, y, yaw) in the map frame (the simulated odometry is exact)."""
        return tuple(float(v) for v in self._base_pose)

    def base_matrix(self) -> np.ndarray:
        return planar_pose_matrix(*self._base_pose)

    def base_velocity(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self._base_velocity)

    def set_base_velocity(self, vx: float, vy: float, wz: float):
        """Body-frame planar velocity; non-finite input stops the base."""
        command = np.array([vx, vy, wz], float)
        self._base_velocity = command if np.all(np.isfinite(command)) else np.zeros(3)

    def _place_base(self):
        x, y, yaw = self._base_pose
        bz = self.scene.base_size[2]
        self._p.resetBasePositionAndOrientation(self.base_body, [x, y, bz / 2], yaw_to_quaternion(yaw))
        # PyBullet poses a base by its centre of mass: shift by link0's inertial offset.
        arm = self.base_matrix() @ self.arm_mount_in_base()
        inertial_offset = np.asarray(self._p.getDynamicsInfo(self.robot, -1)[3])
        position = arm[:3, 3] + arm[:3, :3] @ inertial_offset
        self._p.resetBasePositionAndOrientation(self.robot, position.tolist(), yaw_to_quaternion(yaw))

    # ----------------------------------------------------------------- arm and gripper
    def arm_joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = self._p.getJointStates(self.robot, self._arm_joints)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def finger_joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = self._p.getJointStates(self.robot, self._finger_joints)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def set_arm_trajectory(self, points: list[tuple[np.ndarray, float]]):
        """Follow joint-space points [(q, time_from_start_s)], starting now from the current state."""
        q, _ = self.arm_joint_state()
        self.follower.set(self.time_s, q, points)

    def hold_arm(self):
        q, _ = self.arm_joint_state()
        self.follower.hold(self.time_s, q)

    def set_gripper_width(self, width_m: float):
        if np.isfinite(width_m):
            self._gripper_target_m = float(np.clip(width_m, 0.0, MAX_FINGER_WIDTH_M))

    def gripper_target_width(self) -> float:
        return self._gripper_target_m

    def held_object(self) -> str | None:
        return self._held_object

    def _apply_arm_control(self, q_target: np.ndarray):
        self._p.setJointMotorControlArray(
            self.robot, self._arm_joints, pybullet.POSITION_CONTROL, targetPositions=q_target.tolist(),
            forces=list(ARM_EFFORT_NM), positionGains=[0.3] * 7)

    def _apply_gripper_control(self):
        half = self._gripper_target_m / 2
        self._p.setJointMotorControlArray(
            self.robot, self._finger_joints, pybullet.POSITION_CONTROL, targetPositions=[half, half],
            forces=[FINGER_FORCE_N] * 2)

    def link_pose(self, frame: str) -> np.ndarray:
        """Pose in map of fr3_hand, fr3_hand_tcp, fr3_link0 or base_link."""
        if frame == "base_link":
            return self.base_matrix()
        if frame == "fr3_link0":
            return self.base_matrix() @ self.arm_mount_in_base()
        link = {"fr3_hand": self._hand_link, "fr3_hand_tcp": self._tcp_link}[frame]
        state = self._p.getLinkState(self.robot, link, computeForwardKinematics=True)
        return pose_matrix(state[4], state[5])

    def _update_grasp(self):
        closing = self._gripper_target_m < MAX_FINGER_WIDTH_M * 0.9
        if self._grasp_constraint is not None:
            widths, _ = self.finger_joint_state()
            if not closing or self._gripper_target_m > widths.sum() + 0.005:
                self._p.removeConstraint(self._grasp_constraint)
                self._grasp_constraint, self._held_object = None, None
            return
        if not closing:
            return
        for obj in self.objects.values():
            touching = [bool(self._p.getContactPoints(self.robot, obj.body_id, finger))
                        for finger in self._finger_joints]
            if all(touching):
                # Constraint frames are relative to the link's centre of mass, not its URDF frame.
                com = self._p.getLinkState(self.robot, self._hand_link, computeForwardKinematics=True)
                hand = pose_matrix(com[0], com[1])
                pos, quat = self._p.getBasePositionAndOrientation(obj.body_id)
                rel = np.linalg.inv(hand) @ pose_matrix(pos, quat)
                rel_quat = quaternion_from_matrix(rel).tolist()
                self._grasp_constraint = self._p.createConstraint(
                    self.robot, self._hand_link, obj.body_id, -1, pybullet.JOINT_FIXED, [0, 0, 0],
                    rel[:3, 3].tolist(), [0, 0, 0], childFrameOrientation=[0, 0, 0, 1],
                    parentFrameOrientation=rel_quat)
                self._p.changeConstraint(self._grasp_constraint, maxForce=200.0)
                self._held_object = obj.name
                return

    # ----------------------------------------------------------------- stepping
    def step(self, n: int = 1):
        for _ in range(n):
            if np.any(self._base_velocity):
                vx, vy, wz = self._base_velocity
                x, y, yaw = self._base_pose
                dt = self.time_step_s
                self._base_pose = np.array([
                    x + dt * (vx * np.cos(yaw) - vy * np.sin(yaw)),
                    y + dt * (vx * np.sin(yaw) + vy * np.cos(yaw)),
                    float(np.arctan2(np.sin(yaw + dt * wz), np.cos(yaw + dt * wz))),
                ])
                self._place_base()
            self._apply_arm_control(self.follower.sample(self.time_s))
            self._apply_gripper_control()
            self._p.stepSimulation()
            self.time_s += self.time_step_s
            self._update_grasp()

    # ----------------------------------------------------------------- cameras
    def camera_pose(self, cam: CameraSpec) -> np.ndarray:
        """Pose of the camera's optical frame in map."""
        return self.link_pose(cam.parent) @ cam.mount_pose() if cam.parent != "map" else cam.mount_pose()

    def render(self, cam: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
        """RGB (HxWx3 uint8) and depth along the optical axis (HxW float32 metres, 0 = no return)."""
        pose = self.camera_pose(cam)
        if self._gl_renderer is not None:
            return self._gl_renderer.render(pose, cam.fx, cam.fy, cam.width, cam.height, cam.near_m, cam.far_m)
        eye, forward, down = pose[:3, 3], pose[:3, 2], pose[:3, 1]
        view = pybullet.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), (-down).tolist())
        projection = _projection_matrix(cam)
        renderer = pybullet.ER_BULLET_HARDWARE_OPENGL if self.renderer == "egl" else pybullet.ER_TINY_RENDERER
        _, _, rgba, depth_buffer, _ = self._p.getCameraImage(
            cam.width, cam.height, view, projection, renderer=renderer,
            flags=pybullet.ER_NO_SEGMENTATION_MASK)
        rgb = np.asarray(rgba, np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3]
        buffer = np.asarray(depth_buffer, np.float32).reshape(cam.height, cam.width)
        near, far = cam.near_m, cam.far_m
        depth = far * near / (far - (far - near) * buffer)
        depth[buffer >= 1.0 - 1e-7] = 0.0
        return np.ascontiguousarray(rgb), depth.astype(np.float32)

    def set_kinematic_state(self, base_pose, arm_q, finger_q, object_poses: dict[str, tuple]):
        """Pose everything without simulating: a render-only mirror of another world."""
        self._base_pose = np.asarray(base_pose, float)
        self._place_base()
        for joint, q in zip(self._arm_joints + self._finger_joints, list(arm_q) + list(finger_q)):
            self._p.resetJointState(self.robot, joint, float(q))
        for name, (position, quaternion) in object_poses.items():
            if name in self.objects:
                self._p.resetBasePositionAndOrientation(self.objects[name].body_id, position, quaternion)

    # ----------------------------------------------------------------- ground truth
    def object_poses(self) -> list[ObjectPose]:
        """Ground truth for evaluation and named oracles only; never for a policy."""
        poses = []
        for obj in self.objects.values():
            pos, quat = self._p.getBasePositionAndOrientation(obj.body_id)
            poses.append(ObjectPose(obj.name, obj.kind, obj.color, tuple(pos), tuple(quat),
                                    obj.name == self._held_object))
        return poses

    def reset(self, seed: int):
        self._reset_world(seed)

    def close(self):
        if self._gl_renderer is not None:
            self._gl_renderer.close()
            self._gl_renderer = None
        if pybullet.isConnected(self.client):
            pybullet.disconnect(self.client)


def _projection_matrix(cam: CameraSpec) -> list[float]:
    """OpenGL projection matching the pinhole intrinsics (principal point at the centre)."""
    fov_y_deg = float(np.degrees(2 * np.arctan(cam.height / (2 * cam.fy))))
    aspect = (cam.width / cam.fx) / (cam.height / cam.fy)
    return pybullet.computeProjectionMatrixFOV(fov_y_deg, aspect, cam.near_m, cam.far_m)


class _ClientBound:
    """pybullet functions with this world's physicsClientId filled in."""

    def __init__(self, client: int):
        self._client = client

    def __getattr__(self, name):
        bound = functools.partial(getattr(pybullet, name), physicsClientId=self._client)
        setattr(self, name, bound)  # later look-ups skip __getattr__: this is the physics hot path
        return bound
