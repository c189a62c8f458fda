"""Camera calibration maths: ChArUco board pose, hand-eye calibration, calibration files.

Hand-eye calibration finds where a camera sits on the robot from views of a calibration board
together with the gripper pose (from forward kinematics of the joint states) at each view:

- eye-to-hand: the camera is fixed (on the base, or in the room) and the gripper holds the
  board; the result is the camera's pose in the frame the gripper poses are given in.
- eye-in-hand: the camera rides on the hand and the board lies still; the result is the
  camera's pose in the gripper frame.

Both are one problem, X C_i = M_i Y: X is the camera pose in the frame it is fixed to, C_i
the board pose in the camera (from the image), Y the board pose in the frame the board is
fixed to, and M_i the pose of the board's frame in the camera's frame at view i (the gripper
pose G_i for eye-to-hand, its inverse for eye-in-hand, which is OpenCV's "invert the gripper
poses"). A closed form (rotation axes aligned by SVD, then linear least squares for the
translation, as Park and Martin) starts a Levenberg-Marquardt refinement of X and Y on the
reprojection error of every board corner in every view.

OpenCV 5.0.0's Python wheel lacks cv2.calibrateHandEye (opencv/opencv#29565, fixed after
5.0.0.93), so the solver is our own numpy; OpenCV does the board detection and PnP.

Poses are 4x4 homogeneous transforms, "pose of A in B" maps A's coordinates to B's; metres,
radians. No rclpy and no simulator here, so the same code runs on recorded robot data.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from ros_vla.robot.kinematics import link_frames, matrix_from_quaternion, quaternion_from_matrix

EYE_TO_HAND = "eye_to_hand"
EYE_IN_HAND = "eye_in_hand"
SETUPS = (EYE_TO_HAND, EYE_IN_HAND)

# A view needs this many corners for a well-posed board pose (PnP of a plane needs 4 in
# general position; more make the pose far less sensitive to corner noise).
MIN_CORNERS = 6
# A view whose board pose reprojects worse than this is a misdetection or a blurred frame.
MAX_VIEW_RMS_PX = 2.0
# Hand-eye needs at least two motions with rotations about different axes.
MIN_VIEWS = 3
# Rotations between views smaller than this (spread about the second axis, rad) leave the
# camera's rotation about the remaining axis undetermined.
MIN_ROTATION_SPREAD_RAD = math.radians(2.0)
# After the first solve, a view whose residual is this many times the median (and above
# MAX_VIEW_RMS_PX) is dropped: typically an image taken while the arm was still moving.
OUTLIER_FACTOR = 5.0


class CalibrationError(RuntimeError):
    """The data cannot give a calibration; the message says why and what to do."""


class BoardNotVisible(ValueError):
    """No usable board in an image; the message says why."""


# ----------------------------------------------------------------------------- poses
def pose_inverse(pose: np.ndarray) -> np.ndarray:
    inverse = np.eye(4)
    inverse[:3, :3] = pose[:3, :3].T
    inverse[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return inverse


def pose_from_rotation_vector(rotation_vector, translation) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = cv2.Rodrigues(np.asarray(rotation_vector, float).reshape(3))[0]
    pose[:3, 3] = np.asarray(translation, float).reshape(3)
    return pose


def rotation_log(rotation: np.ndarray) -> np.ndarray:
    """Axis * angle of a 3x3 rotation."""
    return cv2.Rodrigues(np.asarray(rotation, float))[0].reshape(3)


def pose_difference(estimate: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(translation error in m, rotation error in rad) of `estimate` against `reference`."""
    translation = float(np.linalg.norm(estimate[:3, 3] - reference[:3, 3]))
    rotation = float(np.linalg.norm(rotation_log(estimate[:3, :3].T @ reference[:3, :3])))
    return translation, rotation


def pose_to_dict(pose: np.ndarray) -> dict:
    return {"translation": [float(v) for v in pose[:3, 3]],
            "rotation_xyzw": [float(v) for v in quaternion_from_matrix(pose)]}


def pose_from_dict(data: dict) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = matrix_from_quaternion(data["rotation_xyzw"])
    pose[:3, 3] = np.asarray(data["translation"], float).reshape(3)
    return pose


# ----------------------------------------------------------------------------- board
@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board as OpenCV defines it: `squares_x` by `squares_y` chessboard squares,
    ArUco markers in the white ones. Its frame: origin at the pattern's top-left outer
    corner, x along the rows, y down the columns, z into the board (away from a viewer)."""

    squares_x: int = 6
    squares_y: int = 5
    square_m: float = 0.04
    marker_m: float = 0.03
    dictionary: str = "DICT_4X4_50"

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, dictionary)

    def to_dict(self) -> dict:
        return {"squares_x": self.squares_x, "squares_y": self.squares_y, "square_m": self.square_m,
                "marker_m": self.marker_m, "dictionary": self.dictionary}

    @classmethod
    def from_dict(cls, data: dict) -> BoardSpec:
        return cls(int(data["squares_x"]), int(data["squares_y"]), float(data["square_m"]),
                   float(data["marker_m"]), str(data["dictionary"]))


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole camera with OpenCV's distortion model; pixel (0, 0) is the centre of the
    top-left pixel, as in ROS CameraInfo."""

    K: np.ndarray
    D: np.ndarray
    width: int
    height: int

    def undistort(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) as an ideal pinhole camera with the same K would see them."""
        pixels = np.asarray(pixels, float).reshape(-1, 1, 2)
        if not np.any(self.D):
            return pixels.reshape(-1, 2)
        # Iterated to convergence (the default stops ~1e-4 px short with strong distortion),
        # so that noise-free corners calibrate exactly.
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        return cv2.undistortPoints(pixels, self.K, self.D, None, None, self.K, criteria).reshape(-1, 2)


@dataclass
class BoardObservation:
    """Board corners seen in one image, and the board pose they give (board in camera)."""

    object_points: np.ndarray  # (N, 3) in the board frame
    image_points: np.ndarray  # (N, 2) detected pixels
    board_in_camera: np.ndarray
    rms_px: float  # of the PnP fit


class BoardDetector:
    def __init__(self, board: BoardSpec):
        self.board = board
        self._charuco = board.charuco_board()
        self._detector = cv2.aruco.CharucoDetector(self._charuco)

    def observe(self, image: np.ndarray, intrinsics: Intrinsics) -> BoardObservation:
        """Detect the board in an RGB or grey image and solve its pose; raises BoardNotVisible."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _, marker_ids = self._detector.detectBoard(gray)
        found = 0 if ids is None else len(ids)
        if found < MIN_CORNERS:
            markers = 0 if marker_ids is None else len(marker_ids)
            raise BoardNotVisible(f"{found} board corners found ({markers} markers), need {MIN_CORNERS}")
        object_points, image_points = self._charuco.matchImagePoints(corners, ids)
        object_points = object_points.reshape(-1, 3).astype(float)
        image_points = image_points.reshape(-1, 2).astype(float)
        spread = np.linalg.svd(object_points - object_points.mean(0), compute_uv=False)
        if spread[1] < 0.5 * self.board.square_m:
            raise BoardNotVisible("the corners found lie on one line: the board pose is undetermined")
        board_in_camera = solve_board_pose(object_points, image_points, intrinsics)
        projected = _project(board_in_camera, object_points, intrinsics)
        rms = float(np.sqrt(np.mean(np.sum((projected - image_points) ** 2, axis=1))))
        if rms > MAX_VIEW_RMS_PX:
            raise BoardNotVisible(f"board pose fits the corners poorly ({rms:.2f} px rms)")
        return BoardObservation(object_points, image_points, board_in_camera, rms)


def solve_board_pose(object_points, image_points, intrinsics: Intrinsics) -> np.ndarray:
    """Board pose in the camera from corners on the board (N, 3) and their pixels (N, 2)."""
    # IPPE is made for planar targets and returns both poses a plane can take; the better
    # one, polished by Levenberg-Marquardt, is the board's.
    _, rotations, translations, errors = cv2.solvePnPGeneric(
        object_points, image_points, intrinsics.K, intrinsics.D, flags=cv2.SOLVEPNP_IPPE)
    best = int(np.argmin(np.asarray(errors).ravel()))
    rotation, translation = cv2.solvePnPRefineLM(object_points, image_points, intrinsics.K, intrinsics.D,
                                                 rotations[best].copy(), translations[best].copy())
    return pose_from_rotation_vector(rotation, translation)


def _project(board_in_camera: np.ndarray, object_points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    rotation = rotation_log(board_in_camera[:3, :3])
    pixels, _ = cv2.projectPoints(object_points, rotation, board_in_camera[:3, 3], intrinsics.K, intrinsics.D)
    return pixels.reshape(-1, 2)


# ----------------------------------------------------------------------------- hand-eye
def board_frame_motions(setup: str, gripper_poses: list[np.ndarray]) -> list[np.ndarray]:
    """M_i: pose of the frame the board is fixed to, in the frame the camera is fixed to."""
    if setup == EYE_TO_HAND:
        return [np.asarray(g, float) for g in gripper_poses]
    if setup == EYE_IN_HAND:
        return [pose_inverse(np.asarray(g, float)) for g in gripper_poses]
    raise ValueError(f"setup must be one of {SETUPS}, got '{setup}'")


def solve_hand_eye(setup: str, gripper_poses: list[np.ndarray],
                   board_in_camera: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form hand-eye solution from poses alone: (camera pose X, board pose Y).

    X is the camera in the base frame (eye-to-hand) or in the gripper frame (eye-in-hand);
    Y the board in the gripper frame (eye-to-hand) or in the base frame (eye-in-hand).
    Exact for consistent poses; least squares over all pairs of views otherwise.
    """
    if len(gripper_poses) != len(board_in_camera):
        raise ValueError(f"{len(gripper_poses)} gripper poses but {len(board_in_camera)} board poses")
    if len(gripper_poses) < MIN_VIEWS:
        raise CalibrationError(f"{len(gripper_poses)} views, need at least {MIN_VIEWS}")
    motions = board_frame_motions(setup, gripper_poses)
    boards = [np.asarray(c, float) for c in board_in_camera]
    # X C_i = M_i Y for all i gives A X = X B with A = M_j M_i^-1 and B = C_j C_i^-1.
    pairs = [(i, j) for i in range(len(motions)) for j in range(i + 1, len(motions))]
    a_poses = [motions[j] @ pose_inverse(motions[i]) for i, j in pairs]
    b_poses = [boards[j] @ pose_inverse(boards[i]) for i, j in pairs]
    # Rotation: R_A = R_X R_B R_X^T, so the rotation axes (scaled by angle) obey a = R_X b.
    a_axes = np.array([rotation_log(a[:3, :3]) for a in a_poses])
    b_axes = np.array([rotation_log(b[:3, :3]) for b in b_poses])
    spread = np.linalg.svd(a_axes, compute_uv=False)[1] / math.sqrt(len(pairs))
    if spread < MIN_ROTATION_SPREAD_RAD:
        raise CalibrationError(
            f"the gripper turns about (nearly) one axis only between views ({math.degrees(spread):.2f} deg "
            f"about a second axis, need {math.degrees(MIN_ROTATION_SPREAD_RAD):.0f}): vary its orientation more")
    u, _, vt = np.linalg.svd(a_axes.T @ b_axes)
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    # Translation: (R_A - I) t_X = R_X t_B - t_A, stacked over all pairs.
    lhs = np.concatenate([a[:3, :3] - np.eye(3) for a in a_poses])
    rhs = np.concatenate([rotation @ b[:3, 3] - a[:3, 3] for a, b in zip(a_poses, b_poses)])
    camera = np.eye(4)
    camera[:3, :3] = rotation
    camera[:3, 3] = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    board = _average_pose([pose_inverse(m) @ camera @ c for m, c in zip(motions, boards)])
    return camera, board


def _average_pose(poses: list[np.ndarray]) -> np.ndarray:
    """Chordal mean: the rotation nearest the mean rotation matrix, the mean translation."""
    u, _, vt = np.linalg.svd(np.mean([p[:3, :3] for p in poses], axis=0))
    mean = np.eye(4)
    mean[:3, :3] = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    mean[:3, 3] = np.mean([p[:3, 3] for p in poses], axis=0)
    return mean


@dataclass
class HandEyeResult:
    setup: str
    camera_pose: np.ndarray  # X: camera optical frame in the base (eye-to-hand) or gripper frame
    board_pose: np.ndarray  # Y: board in the gripper (eye-to-hand) or base frame (eye-in-hand)
    closed_form_camera_pose: np.ndarray  # X before refinement, for comparison
    views_used: list[int]  # indices into the views given
    view_rms_px: list[float]  # per used view, of the hand-eye model
    reprojection_rms_px: float  # over all corners of the used views
    notes: list[str] = field(default_factory=list)  # why views were skipped


def refine_hand_eye(setup: str, gripper_poses: list[np.ndarray], observations: list[BoardObservation],
                    intrinsics: Intrinsics, camera_pose: np.ndarray, board_pose: np.ndarray,
                    iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on X and Y, minimising the reprojection error of every corner
    predicted through the robot's kinematics: board corner -> Y -> M_i -> X^-1 -> pixel.

    This weighs each corner as the image measured it, unlike the closed form, which trusts
    every PnP pose equally in all directions (a board's depth is far less certain than its
    position across the image)."""
    motions = np.array(board_frame_motions(setup, gripper_poses))
    view_index = np.concatenate([np.full(len(o.object_points), i) for i, o in enumerate(observations)])
    points = np.concatenate([o.object_points for o in observations])
    measured = np.concatenate([intrinsics.undistort(o.image_points) for o in observations])
    k = intrinsics.K

    def residuals(camera: np.ndarray, board: np.ndarray) -> np.ndarray:
        board_in_camera = pose_inverse(camera) @ motions @ board  # (V, 4, 4)
        in_camera = np.einsum("nij,nj->ni", board_in_camera[view_index, :3, :3], points) \
            + board_in_camera[view_index, :3, 3]
        pixels = (in_camera[:, :2] / in_camera[:, 2:3]) @ k[:2, :2].T + k[:2, 2]
        return (pixels - measured).ravel()

    def perturbed(x: np.ndarray, y: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x @ pose_from_rotation_vector(delta[0:3], delta[3:6]),
                y @ pose_from_rotation_vector(delta[6:9], delta[9:12]))

    x, y = camera_pose.copy(), board_pose.copy()
    r = residuals(x, y)
    cost, damping, step = float(r @ r), 1e-3, 1e-7
    for _ in range(iterations):
        jacobian = np.empty((len(r), 12))
        for p in range(12):
            delta = np.zeros(12)
            delta[p] = step
            jacobian[:, p] = (residuals(*perturbed(x, y, delta)) - residuals(*perturbed(x, y, -delta))) / (2 * step)
        normal = jacobian.T @ jacobian
        gradient = jacobian.T @ r
        while True:
            delta = -np.linalg.solve(normal + damping * np.diag(np.diag(normal)), gradient)
            candidate = perturbed(x, y, delta)
            r_new = residuals(*candidate)
            cost_new = float(r_new @ r_new)
            if cost_new <= cost or damping > 1e8:
                break
            damping *= 10.0
        if cost_new > cost:
            break
        improvement = cost - cost_new
        (x, y), r, cost = candidate, r_new, cost_new
        damping = max(damping / 10.0, 1e-9)
        if improvement <= 1e-12 * max(cost, 1e-30) or np.max(np.abs(delta)) < 1e-12:
            break
    return x, y


def view_residuals_px(setup: str, gripper_poses: list[np.ndarray], observations: list[BoardObservation],
                      intrinsics: Intrinsics, camera_pose: np.ndarray, board_pose: np.ndarray) -> list[np.ndarray]:
    """Per view, the pixel distance of each detected corner from where the calibration puts it."""
    out = []
    for motion, obs in zip(board_frame_motions(setup, gripper_poses), observations):
        predicted = _project(pose_inverse(camera_pose) @ motion @ board_pose, obs.object_points, intrinsics)
        out.append(np.linalg.norm(predicted - obs.image_points, axis=1))
    return out


def calibrate_hand_eye(setup: str, gripper_poses: list[np.ndarray], observations: list[BoardObservation | None],
                       intrinsics: Intrinsics, notes: list[str] | None = None) -> HandEyeResult:
    """Hand-eye calibration from the views that saw the board (None: it was not seen).

    Closed form, refinement on reprojection error, then once more without views that fit
    far worse than the rest. Raises CalibrationError if too few views are usable.
    """
    notes = list(notes or [])
    used = [i for i, obs in enumerate(observations) if obs is not None]
    if len(used) < MIN_VIEWS:
        raise CalibrationError(
            f"only {len(used)} of {len(observations)} views show the board, need at least {MIN_VIEWS}: "
            "bring the board into the camera's view in more poses" + "".join(f"\n  {n}" for n in notes))
    for attempt in range(2):
        poses = [gripper_poses[i] for i in used]
        obs = [observations[i] for i in used]
        closed_x, closed_y = solve_hand_eye(setup, poses, [o.board_in_camera for o in obs])
        x, y = refine_hand_eye(setup, poses, obs, intrinsics, closed_x, closed_y)
        residuals = view_residuals_px(setup, poses, obs, intrinsics, x, y)
        view_rms = [float(np.sqrt(np.mean(r ** 2))) for r in residuals]
        limit = max(MAX_VIEW_RMS_PX, OUTLIER_FACTOR * float(np.median(view_rms)))
        outliers = [i for i, rms in zip(used, view_rms) if rms > limit]
        if attempt == 1 or not outliers or len(used) - len(outliers) < MIN_VIEWS:
            break
        notes += [f"view {i}: dropped, {rms:.1f} px from the calibration (was the arm still moving?)"
                  for i, rms in zip(used, view_rms) if rms > limit]
        used = [i for i in used if i not in outliers]
    all_residuals = np.concatenate(residuals)
    return HandEyeResult(setup, x, y, closed_x, used, view_rms,
                         float(np.sqrt(np.mean(all_residuals ** 2))), notes)


# ----------------------------------------------------------------------------- files
@dataclass
class CameraCalibration:
    """What calibration/<name>.yaml holds for one camera."""

    camera: str  # the camera's namespace (/<camera>/camera/...)
    frame: str  # its colour optical frame
    intrinsics: Intrinsics
    parent_frame: str
    pose: np.ndarray  # optical frame in parent_frame
    info: dict = field(default_factory=dict)  # how it was made: setup, views, residuals, ...


def write_calibration(path: str | Path, calibration: CameraCalibration) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    intr = calibration.intrinsics
    data = {
        "camera": calibration.camera,
        "frame": calibration.frame,
        "intrinsics": {
            "width": int(intr.width), "height": int(intr.height), "distortion_model": "plumb_bob",
            "K": [[float(v) for v in row] for row in intr.K],
            "D": [float(v) for v in intr.D],
        },
        "extrinsics": {"parent_frame": calibration.parent_frame, "child_frame": calibration.frame,
                       **pose_to_dict(calibration.pose)},
        "calibration": {"created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                        **calibration.info},
    }
    header = (f"# Calibration of camera '{calibration.camera}': intrinsics (OpenCV/ROS pinhole, plumb_bob)\n"
              f"# and the pose of {calibration.frame} in {calibration.parent_frame} (m, quaternion x y z w),\n"
              "# written by `ros-vla calibrate`.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def read_calibration(path: str | Path) -> CameraCalibration:
    data = yaml.safe_load(Path(path).read_text())
    try:
        extrinsics = data["extrinsics"]
        return CameraCalibration(data["camera"], data["frame"], _intrinsics_from_dict(data["intrinsics"]),
                                 extrinsics["parent_frame"], pose_from_dict(extrinsics), data.get("calibration", {}))
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a camera calibration file ({err!r})") from err


def _intrinsics_from_dict(data: dict) -> Intrinsics:
    return Intrinsics(np.asarray(data["K"], float).reshape(3, 3), np.asarray(data.get("D", []), float),
                      int(data["width"]), int(data["height"]))


def read_intrinsics(path: str | Path) -> Intrinsics:
    """Intrinsics from a calibration file of ours, or from a CameraInfo message saved with
    `ros2 topic echo --once /camera/camera/color/camera_info > K.yaml` (fields k, d, width, height)."""
    documents = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    if not documents:
        raise ValueError(f"{path}: empty")
    data = documents[0]
    if "intrinsics" in data:
        return _intrinsics_from_dict(data["intrinsics"])
    if "k" in data:
        return Intrinsics(np.asarray(data["k"], float).reshape(3, 3), np.asarray(data.get("d", []), float),
                          int(data["width"]), int(data["height"]))
    raise ValueError(f"{path}: neither a ros_vla calibration file nor a CameraInfo message (no 'intrinsics' or 'k')")


# ----------------------------------------------------------------------------- recorded views
@dataclass
class Dataset:
    """Views recorded for hand-eye calibration: images plus the gripper pose at each.

    On disk: a folder of images and a `poses.yaml` (format in `read_dataset`)."""

    setup: str
    camera: str
    camera_frame: str
    base_frame: str  # the gripper poses are in this frame
    gripper_frame: str
    board: BoardSpec
    images: list[np.ndarray]  # RGB
    image_names: list[str]
    gripper_poses: list[np.ndarray]  # gripper_frame in base_frame, per image

    @property
    def camera_parent_frame(self) -> str:
        return self.base_frame if self.setup == EYE_TO_HAND else self.gripper_frame


def write_dataset(folder: str | Path, dataset: Dataset, joint_positions: list[np.ndarray] | None = None,
                  arm_mount: np.ndarray | None = None) -> Path:
    """Images as PNG and poses.yaml; with joint positions, views store those (and
    `arm_mount`, fr3_link0 in base_frame) instead of gripper poses, as a robot log would."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    views = []
    for index, (name, image, pose) in enumerate(zip(dataset.image_names, dataset.images, dataset.gripper_poses)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        view = {"image": name}
        if joint_positions is not None:
            view["joint_positions"] = [float(q) for q in joint_positions[index]]
        else:
            view["gripper_pose"] = pose_to_dict(pose)
        views.append(view)
    data = {"setup": dataset.setup, "camera": dataset.camera, "camera_frame": dataset.camera_frame,
            "base_frame": dataset.base_frame, "gripper_frame": dataset.gripper_frame,
            "board": dataset.board.to_dict()}
    if joint_positions is not None:
        data["arm_mount"] = pose_to_dict(np.eye(4) if arm_mount is None else arm_mount)
    data["views"] = views
    path = folder / "poses.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    return path


def read_dataset(folder: str | Path, poses_file: str | Path | None = None) -> Dataset:
    """Read recorded views. poses.yaml (or `poses_file`):

        setup: eye_to_hand            # or eye_in_hand
        camera: camera                # name for the result file
        camera_frame: camera_color_optical_frame
        base_frame: base_link         # gripper poses are given in this frame
        gripper_frame: fr3_hand
        board: {squares_x: 6, squares_y: 5, square_m: 0.04, marker_m: 0.03, dictionary: DICT_4X4_50}
        arm_mount: {translation: [0.12, 0, 0.55], rotation_xyzw: [0, 0, 0, 1]}  # only for joint_positions
        views:
          - {image: view_000.png, gripper_pose: {translation: [x, y, z], rotation_xyzw: [x, y, z, w]}}
          - {image: view_001.png, joint_positions: [q1, q2, q3, q4, q5, q6, q7]}

    A view gives the gripper pose in base_frame, or the seven arm joint positions at the
    moment of the image: then the pose is the forward kinematics of gripper_frame
    (fr3_hand or fr3_hand_tcp) in fr3_link0, put in base_frame by arm_mount.
    Image paths are relative to the folder.
    """
    folder = Path(folder)
    poses_path = Path(poses_file) if poses_file else folder / "poses.yaml"
    data = yaml.safe_load(poses_path.read_text())
    try:
        setup = data["setup"]
        if setup not in SETUPS:
            raise ValueError(f"setup must be one of {SETUPS}, got '{setup}'")
        gripper_frame = data.get("gripper_frame", "fr3_hand")
        arm_mount = pose_from_dict(data["arm_mount"]) if "arm_mount" in data else np.eye(4)
        images, names, poses = [], [], []
        for view in data["views"]:
            image = cv2.imread(str(folder / view["image"]), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"cannot read image {folder / view['image']}")
            if "gripper_pose" in view:
                pose = pose_from_dict(view["gripper_pose"])
            else:
                pose = arm_mount @ link_frames(view["joint_positions"])[gripper_frame]
            images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            names.append(view["image"])
            poses.append(pose)
        return Dataset(setup, data.get("camera", folder.name), data["camera_frame"], data["base_frame"],
                       gripper_frame, BoardSpec.from_dict(data["board"]) if "board" in data else BoardSpec(),
                       images, names, poses)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{poses_path}: malformed poses file ({err!r})") from err


def calibrate_dataset(dataset: Dataset, intrinsics: Intrinsics) -> HandEyeResult:
    """Detect the board in every image (skipping, with a note, those without it) and solve."""
    detector = BoardDetector(dataset.board)
    observations, notes = [], []
    for index, (name, image) in enumerate(zip(dataset.image_names, dataset.images)):
        try:
            observations.append(detector.observe(image, intrinsics))
        except BoardNotVisible as why:
            observations.append(None)
            notes.append(f"view {index} ({name}): skipped, {why}")
    return calibrate_hand_eye(dataset.setup, dataset.gripper_poses, observations, intrinsics, notes)
