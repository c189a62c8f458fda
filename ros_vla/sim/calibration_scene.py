"""Hand-eye calibration in simulation: a ChArUco board in the world, the arm driven through
views of it, and images rendered with exactly known intrinsics.

The board is a textured sheet: held by the gripper for a camera fixed on the base or in the
room (eye-to-hand), lying on the cleared work table for the wrist camera (eye-in-hand). Our
GL renderer (gl_renderer.py) draws flat colours only, no textures, so calibration images
come from PyBullet's TinyRenderer, which textures; it is software and deterministic, at
~0.2 s per 640x480 view here (about 4x that at the default 2x2 supersampling). No OpenGL
context is made.

Views are planned from the camera's mount in the scene file, as a person aims the arm with
a rough idea of where the camera is; nothing else reads the mount. The calibration itself
sees only what the robot would give it: images and measured joint positions.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pybullet

from ros_vla.perception.calibration import EYE_IN_HAND, EYE_TO_HAND, BoardSpec, CalibrationError, pose_inverse
from ros_vla.robot import kinematics, panda
from ros_vla.robot.motion import MotionConfig, plan_joint_move
from ros_vla.sim.scene import CameraSpec, SceneConfig
from ros_vla.sim.world import SimWorld, planar_pose_matrix

# White border of the printed sheet around the pattern; the gripper pinches it.
SHEET_MARGIN_M = 0.03
TEXELS_PER_M = 4000  # 0.25 mm texels: finer than any camera here resolves
# The held sheet's near edge sits this far along the hand's approach axis (z), inside the
# fingers (they reach 0.11 m); the sheet lies in the hand's x-z plane, face towards +y.
GRIP_EDGE_Z_M = 0.09
SHEET_GRIP_WIDTH_M = 0.002
# Where the wrist camera's board lies: pattern centre on the work table, in the map frame.
TABLE_BOARD_XY = (0.62, 0.0)
# Eye-to-hand: the held board's centre is drawn from this box (fr3_link0 frame).
HELD_BOARD_REGION = ((0.35, -0.2, 0.2), (0.6, 0.2, 0.45))
MAX_TILT_RAD = math.radians(35.0)  # board normal away from the line of sight
MAX_SPIN_RAD = math.radians(45.0)  # about the line of sight
# Eye-in-hand: the wrist camera looks at the board from this far, at most this far off vertical.
WRIST_DISTANCE_M = (0.3, 0.45)
WRIST_MAX_POLAR_RAD = math.radians(35.0)
MIN_TCP_HEIGHT_M = 0.1  # above the table, while viewing the board on it
IMAGE_MARGIN_PX = 10  # planned views keep the board this far inside the image
SETTLE_S = 0.5  # after a move, before reading the joints: the arm comes to rest
PLAN_ATTEMPTS = 300


def setup_for(cam: CameraSpec) -> str:
    return EYE_IN_HAND if cam.parent == "fr3_hand" else EYE_TO_HAND


def render_rgb(client: int, camera_pose: np.ndarray, K: np.ndarray, width: int, height: int,
               near_m: float, far_m: float, supersampling: int = 2) -> np.ndarray:
    """RGB image (H, W, 3) of the optical frame `camera_pose` (map), exact to K in OpenCV's
    convention (pixel centres at integers) with PyBullet's TinyRenderer.

    Rendered at `supersampling` times the resolution and averaged down, as a sensor's pixels
    integrate light over their area: this anti-aliasing halves the corner noise at 2x.
    """
    s = int(supersampling)
    fx, fy = s * K[0, 0], s * K[1, 1]
    # Pixel centre j of the small image is (s - 1) / 2 + s j in the large one.
    cx, cy = s * K[0, 2] + (s - 1) / 2, s * K[1, 2] + (s - 1) / 2
    w, h = s * width, s * height
    # TinyRenderer samples column j at NDC x = 2j/w - 1 and row i at NDC y = 1 - 2(i + 1)/h
    # (measured; test_calibration checks the rendered corners against K). Hence this
    # off-centre frustum, rather than a symmetric one with the principal point at (w/2, h/2).
    projection = pybullet.computeProjectionMatrix(
        -near_m * cx / fx, near_m * (w - cx) / fx, near_m * (cy + 1 - h) / fy, near_m * (cy + 1) / fy, near_m, far_m)
    eye, forward, down = camera_pose[:3, 3], camera_pose[:3, 2], camera_pose[:3, 1]
    view = pybullet.computeViewMatrix(eye.tolist(), (eye + forward).tolist(), (-down).tolist())
    _, _, rgba, _, _ = pybullet.getCameraImage(w, h, view, projection, renderer=pybullet.ER_TINY_RENDERER,
                                               flags=pybullet.ER_NO_SEGMENTATION_MASK, physicsClientId=client)
    rgb = np.asarray(rgba, np.uint8).reshape(h, w, 4)[:, :, :3]
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA) if s > 1 else np.ascontiguousarray(rgb)


def create_board_sheet(client: int, board: BoardSpec) -> int:
    """A body whose frame is the board's frame (BoardSpec), showing the printed pattern with
    a white margin on its -z face (the face a camera looking along +z sees)."""
    width, height = board.size_m
    pattern = board.charuco_board().generateImage(
        (round(width * TEXELS_PER_M), round(height * TEXELS_PER_M)), marginSize=0)
    margin = round(SHEET_MARGIN_M * TEXELS_PER_M)
    sheet = cv2.copyMakeBorder(pattern, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=255)
    with tempfile.TemporaryDirectory() as folder:  # PyBullet loads textures from files only
        path = str(Path(folder) / "charuco.png")
        cv2.imwrite(path, sheet)
        texture = pybullet.loadTexture(path, physicsClientId=client)
    x0, y0, x1, y1 = -SHEET_MARGIN_M, -SHEET_MARGIN_M, width + SHEET_MARGIN_M, height + SHEET_MARGIN_M
    # Texture v runs up the image (OpenGL): the image's top row is at v = 1, board y = y0.
    shape = pybullet.createVisualShape(
        pybullet.GEOM_MESH, vertices=[[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]],
        indices=[0, 2, 1, 0, 3, 2], uvs=[[0, 1], [1, 1], [1, 0], [0, 0]], normals=[[0, 0, -1]] * 4,
        physicsClientId=client)
    body = pybullet.createMultiBody(0, -1, shape, [0, 0, 0], physicsClientId=client)
    pybullet.changeVisualShape(body, -1, textureUniqueId=texture, rgbaColor=[1, 1, 1, 1], physicsClientId=client)
    return body


def held_board_in_hand(board: BoardSpec) -> np.ndarray:
    """Board pose in fr3_hand for a sheet pinched at its edge: board x along the approach
    axis (away from the hand), y along -x of the hand, z = -y, so the face looks along +y."""
    width, height = board.size_m
    pose = np.eye(4)
    pose[:3, :3] = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], float)  # columns: hand z, -x, -y
    pose[:3, 3] = [height / 2, 0.0, GRIP_EDGE_Z_M + SHEET_MARGIN_M]
    return pose


@dataclass
class SimView:
    image: np.ndarray  # RGB
    joint_positions: np.ndarray  # measured, after the arm came to rest
    base_pose: tuple[float, float, float]  # odometry (x, y, yaw) in map


class CalibrationSim:
    """The tabletop world cleared of objects, one camera, a board, and the arm posing it."""

    def __init__(self, scene: SceneConfig, cam: CameraSpec, board: BoardSpec = BoardSpec(), seed: int = 0,
                 supersampling: int = 2):
        self.scene, self.cam, self.board = scene, cam, board
        self.setup = setup_for(cam)
        self.supersampling = supersampling
        self.rng = np.random.default_rng(seed)
        self.world = SimWorld(dataclasses.replace(scene, objects=()), seed=seed, renderer=None)
        self.motion = MotionConfig()
        self.sheet = create_board_sheet(self.world.client, board)
        self._hand_to_tcp = (pose_inverse(kinematics.link_frames(panda.READY_POSE)["fr3_hand"])
                             @ kinematics.forward_kinematics(panda.READY_POSE))
        if self.setup == EYE_TO_HAND:
            self._board_in_hand = held_board_in_hand(board)
            self.world.set_gripper_width(SHEET_GRIP_WIDTH_M)
        else:
            width, height = board.size_m
            on_table = np.eye(4)  # face up: board z down, board x along map y, y along map x
            on_table[:3, :3] = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]], float)
            on_table[:3, 3] = [TABLE_BOARD_XY[0] - height / 2, TABLE_BOARD_XY[1] - width / 2,
                               scene.work_table.top_z + 0.001]
            self._board_in_map = on_table
        self._move_to(np.asarray(panda.READY_POSE, float))
        self._place_board()

    # ------------------------------------------------------------------ ground truth
    def board_pose(self) -> np.ndarray:
        """Board in map: simulator ground truth, for tests only."""
        if self.setup == EYE_TO_HAND:
            return self.world.link_pose("fr3_hand") @ self._board_in_hand
        return self._board_in_map

    def _place_board(self):
        pose = self.board_pose()
        pybullet.resetBasePositionAndOrientation(
            self.sheet, pose[:3, 3].tolist(), kinematics.quaternion_from_matrix(pose).tolist(),
            physicsClientId=self.world.client)

    # ------------------------------------------------------------------ arm
    def _move_to(self, q_goal: np.ndarray) -> bool:
        q_now, _ = self.world.arm_joint_state()
        plan = plan_joint_move(q_now, q_goal, self.motion)
        if not plan.ok:
            return False
        self.world.set_arm_trajectory(plan.points)
        self.world.step(int((plan.points[-1][1] + SETTLE_S) / self.world.time_step_s))
        return True

    def _link0_in_map(self) -> np.ndarray:
        return self.world.base_matrix() @ self.scene.arm_mount_matrix()

    def _fixed_camera_in_link0(self) -> np.ndarray:
        """The scene file's pose of a camera on base_link or in map, in fr3_link0."""
        mount = self.cam.mount_pose()
        if self.cam.parent == "base_link":
            return pose_inverse(self.scene.arm_mount_matrix()) @ mount
        return pose_inverse(self._link0_in_map()) @ mount

    def _board_in_view(self, board_in_link0: np.ndarray, camera_in_link0: np.ndarray) -> bool:
        width, height = self.board.size_m
        corners = np.array([[0, 0, 0, 1], [width, 0, 0, 1], [width, height, 0, 1], [0, height, 0, 1]], float)
        in_camera = (pose_inverse(camera_in_link0) @ board_in_link0 @ corners.T)[:3]
        if np.any(in_camera[2] < self.cam.near_m):
            return False
        pixels = (self.cam.intrinsics @ (in_camera / in_camera[2]))[:2]
        return bool(np.all(pixels[0] >= IMAGE_MARGIN_PX) and np.all(pixels[0] <= self.cam.width - IMAGE_MARGIN_PX)
                    and np.all(pixels[1] >= IMAGE_MARGIN_PX) and np.all(pixels[1] <= self.cam.height - IMAGE_MARGIN_PX))

    def _random_rotation(self, max_angle: float) -> np.ndarray:
        axis = self.rng.normal(size=3)
        return cv2.Rodrigues(axis / np.linalg.norm(axis) * self.rng.uniform(0.0, max_angle))[0]

    def _candidate_hand_pose(self) -> np.ndarray | None:
        """A hand pose (fr3_link0) from which the camera should see the board, or None."""
        width, height = self.board.size_m
        centre_in_board = np.array([width / 2, height / 2, 0.0])
        if self.setup == EYE_TO_HAND:
            camera = self._fixed_camera_in_link0()
            centre = self.rng.uniform(*HELD_BOARD_REGION)
            # Face the camera, then tilt and spin: hand-eye needs rotations about many axes.
            z_axis = self._random_rotation(MAX_TILT_RAD) @ _unit(centre - camera[:3, 3])
            outward = np.array([centre[0], centre[1], 0.0])  # approach axis points away from the arm
            x_axis = _unit(outward - (outward @ z_axis) * z_axis)
            x_axis = cv2.Rodrigues(z_axis * self.rng.uniform(-MAX_SPIN_RAD, MAX_SPIN_RAD))[0] @ x_axis
            board = np.eye(4)
            board[:3, :3] = np.column_stack([x_axis, np.cross(z_axis, x_axis), z_axis])
            board[:3, 3] = centre - board[:3, :3] @ centre_in_board
            hand = board @ pose_inverse(self._board_in_hand)
            return hand if self._board_in_view(board, camera) else None
        board = pose_inverse(self._link0_in_map()) @ self._board_in_map
        centre = board[:3, :3] @ centre_in_board + board[:3, 3]
        polar, azimuth = self.rng.uniform(0.0, WRIST_MAX_POLAR_RAD), self.rng.uniform(0.0, 2 * math.pi)
        direction = [math.sin(polar) * math.cos(azimuth), math.sin(polar) * math.sin(azimuth), math.cos(polar)]
        eye = centre + self.rng.uniform(*WRIST_DISTANCE_M) * np.array(direction)
        target = centre + self.rng.uniform(-0.03, 0.03, 3) * [1, 1, 0]
        spin = self.rng.uniform(-math.pi / 3, math.pi / 3)
        up = cv2.Rodrigues(_unit(target - eye) * spin)[0] @ np.array([1.0, 0.0, 0.0])
        # A camera looking from eye at target, image top towards up: CameraSpec's look-at.
        camera = CameraSpec("planned", "planned", "map", tuple(eye), tuple(target), tuple(up)).mount_pose()
        hand = camera @ pose_inverse(self.cam.mount_pose())
        if (hand @ self._hand_to_tcp)[2, 3] < MIN_TCP_HEIGHT_M or not self._board_in_view(board, camera):
            return None
        return hand

    def _plan_view(self) -> np.ndarray:
        """Joint positions of a reachable view of the board."""
        q_now, _ = self.world.arm_joint_state()
        for _ in range(PLAN_ATTEMPTS):
            hand = self._candidate_hand_pose()
            if hand is None:
                continue
            ik = kinematics.solve_ik(hand @ self._hand_to_tcp, q_now, random_restarts=2)
            if ik.success and plan_joint_move(q_now, ik.q, self.motion).ok:
                return ik.q
        raise CalibrationError(
            f"no reachable view of the board for camera '{self.cam.namespace}' in {PLAN_ATTEMPTS} attempts")

    # ------------------------------------------------------------------ capture
    def render(self) -> np.ndarray:
        self._place_board()
        cam = self.cam
        return render_rgb(self.world.client, self.world.camera_pose(cam), cam.intrinsics, cam.width, cam.height,
                          cam.near_m, cam.far_m, self.supersampling)

    def capture(self, views: int, progress: Callable[[], None] | None = None) -> list[SimView]:
        """Drive the arm through `views` planned poses; at each, once at rest, read the joints
        and the odometry and take an image."""
        out = []
        for _ in range(views):
            self._move_to(self._plan_view())
            q, _ = self.world.arm_joint_state()
            out.append(SimView(self.render(), q, self.world.base_pose()))
            if progress is not None:
                progress()
        return out

    def close(self):
        self.world.close()


def arm_mount_in(frame: str, scene: SceneConfig, base_pose: tuple[float, float, float]) -> np.ndarray:
    """Pose of fr3_link0 in `frame` (fr3_link0, base_link or map), the base at `base_pose`
    from odometry; map and odom coincide in the simulation (its static map->odom is identity)."""
    if frame == "fr3_link0":
        return np.eye(4)
    if frame == "base_link":
        return scene.arm_mount_matrix()
    if frame == "map":
        return planar_pose_matrix(*base_pose) @ scene.arm_mount_matrix()
    raise ValueError(f"no arm mount in frame '{frame}'")


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)
