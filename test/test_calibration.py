"""Hand-eye calibration: the solver on synthetic data, calibration files, and the whole
procedure in simulation against the camera mounts of the scene file."""

import dataclasses
import math

import cv2
import numpy as np
import pytest

from ros_vla.calibrate import (
    MAX_ROTATION_ERROR_RAD,
    MAX_TRANSLATION_ERROR_M,
    calibrate_main,
    calibrate_sim_camera,
)
from ros_vla.paths import config_file
from ros_vla.perception.calibration import (
    EYE_IN_HAND,
    EYE_TO_HAND,
    SETUPS,
    BoardDetector,
    BoardNotVisible,
    BoardObservation,
    BoardSpec,
    CalibrationError,
    CameraCalibration,
    Intrinsics,
    board_frame_motions,
    calibrate_dataset,
    calibrate_hand_eye,
    pose_difference,
    pose_from_rotation_vector,
    pose_inverse,
    read_calibration,
    read_intrinsics,
    solve_board_pose,
    solve_hand_eye,
    write_calibration,
    write_dataset,
)
from ros_vla.robot.kinematics import link_frames
from ros_vla.sim.calibration_scene import CalibrationSim, arm_mount_in
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld

SCENE = load_scene(config_file("scene_tabletop.yaml"))
K = np.array([[460.0, 0.0, 320.0], [0.0, 460.0, 240.0], [0.0, 0.0, 1.0]])
INTRINSICS = Intrinsics(K, np.zeros(5), 640, 480)
# Simulated calibration in the tests: 12 views rendered without supersampling keep each
# camera to a few seconds; the CLI's default (20 views, 2x2 supersampling) is more accurate.
SIM_VIEWS = 12


def random_pose(rng, max_angle=math.pi, max_offset=0.5):
    axis = rng.normal(size=3)
    return pose_from_rotation_vector(axis / np.linalg.norm(axis) * rng.uniform(0, max_angle),
                                     rng.uniform(-max_offset, max_offset, 3))


def synthetic_views(setup, camera, board, rng, views=12):
    """Gripper poses and board-in-camera poses consistent with camera pose X and board pose Y."""
    gripper_poses, board_in_camera = [], []
    for _ in range(views):
        seen = pose_from_rotation_vector(rng.normal(size=3) * 0.3, [*rng.uniform(-0.1, 0.1, 2), rng.uniform(0.4, 0.8)])
        motion = camera @ seen @ pose_inverse(board)  # X C = M Y
        gripper_poses.append(motion if setup == EYE_TO_HAND else pose_inverse(motion))
        board_in_camera.append(seen)
    return gripper_poses, board_in_camera


def observations_from_poses(board_in_camera, rng, pixel_noise):
    """Board corners projected through K with Gaussian pixel noise, and their PnP poses."""
    corners = BoardSpec().charuco_board().getChessboardCorners().astype(float)
    out = []
    for pose in board_in_camera:
        in_camera = corners @ pose[:3, :3].T + pose[:3, 3]
        pixels = (in_camera[:, :2] / in_camera[:, 2:]) @ K[:2, :2].T + K[:2, 2]
        pixels = pixels + rng.normal(scale=pixel_noise, size=pixels.shape)
        out.append(BoardObservation(corners, pixels, solve_board_pose(corners, pixels, INTRINSICS), 0.0))
    return out


def add_pose_noise(pose, rng, rotation_rad, translation_m):
    return pose @ pose_from_rotation_vector(rng.normal(scale=rotation_rad, size=3),
                                            rng.normal(scale=translation_m, size=3))


# ----------------------------------------------------------------------------- solver
@pytest.mark.parametrize("setup", SETUPS)
def test_solver_recovers_a_known_transform_exactly_from_noise_free_poses(setup):
    rng = np.random.default_rng(7)
    for _ in range(5):
        camera, board = random_pose(rng), random_pose(rng)
        gripper_poses, seen = synthetic_views(setup, camera, board, rng, views=8)
        x, y = solve_hand_eye(setup, gripper_poses, seen)
        assert max(pose_difference(x, camera)) < 1e-6
        assert max(pose_difference(y, board)) < 1e-6


def test_eye_to_hand_is_eye_in_hand_with_inverted_gripper_poses():
    rng = np.random.default_rng(1)
    gripper_poses = [random_pose(rng) for _ in range(3)]
    inverted = board_frame_motions(EYE_IN_HAND, gripper_poses)
    for direct, via_inverse in zip(board_frame_motions(EYE_TO_HAND, gripper_poses),
                                   board_frame_motions(EYE_IN_HAND, inverted)):
        np.testing.assert_allclose(direct, via_inverse, atol=1e-12)


@pytest.mark.parametrize("setup", SETUPS)
def test_solver_degrades_gracefully_with_pose_noise(setup):
    """The error is linear in the noise: a few times the noise on one pose (the views' lever
    arms are up to 0.5 m), at every level, without a blow-up."""
    rng = np.random.default_rng(3)
    camera, board = random_pose(rng), random_pose(rng)
    gripper_poses, seen = synthetic_views(setup, camera, board, rng, views=20)
    errors = []
    for noise in (1e-4, 1e-3, 1e-2):  # rad and m: 0.006, 0.06, 0.6 deg; 0.1, 1, 10 mm
        noisy_grippers = [add_pose_noise(g, rng, noise, noise) for g in gripper_poses]
        noisy_seen = [add_pose_noise(c, rng, noise, noise) for c in seen]
        x, _ = solve_hand_eye(setup, noisy_grippers, noisy_seen)
        translation, rotation = pose_difference(x, camera)
        assert translation < 6 * noise and rotation < 6 * noise
        errors.append(np.array([translation, rotation]))
    assert np.all(errors[2] > 10 * errors[0])


@pytest.mark.parametrize("setup", SETUPS)
def test_refinement_on_corners_is_exact_without_noise_and_beats_the_closed_form_with_noise(setup):
    rng = np.random.default_rng(5)
    camera, board = random_pose(rng), random_pose(rng)
    gripper_poses, seen = synthetic_views(setup, camera, board, rng, views=15)
    exact = calibrate_hand_eye(setup, gripper_poses, observations_from_poses(seen, rng, 0.0), INTRINSICS)
    assert max(pose_difference(exact.camera_pose, camera)) < 1e-6
    assert exact.reprojection_rms_px < 1e-6

    noisy = calibrate_hand_eye(setup, gripper_poses, observations_from_poses(seen, rng, 0.3), INTRINSICS)
    refined, closed = pose_difference(noisy.camera_pose, camera), pose_difference(noisy.closed_form_camera_pose, camera)
    assert refined[0] < 1e-3 and refined[1] < math.radians(0.05)
    assert refined[0] < closed[0] and refined[1] < closed[1]
    assert noisy.reprojection_rms_px == pytest.approx(0.3 * math.sqrt(2), rel=0.2)


def test_lens_distortion_is_accounted_for():
    """Corners seen through a distorting lens (as a RealSense's factory calibration gives
    it) calibrate exactly when the intrinsics carry the distortion."""
    rng = np.random.default_rng(8)
    distorted = Intrinsics(K, np.array([0.12, -0.25, 0.001, -0.0008, 0.1]), 640, 480)
    camera, board = random_pose(rng), random_pose(rng)
    gripper_poses, seen = synthetic_views(EYE_IN_HAND, camera, board, rng, views=10)
    corners = BoardSpec().charuco_board().getChessboardCorners().astype(float)
    observations = []
    for pose in seen:
        pixels = cv2.projectPoints(corners, cv2.Rodrigues(pose[:3, :3])[0], pose[:3, 3], K, distorted.D)[0]
        pixels = pixels.reshape(-1, 2)
        observations.append(BoardObservation(corners, pixels, solve_board_pose(corners, pixels, distorted), 0.0))
    result = calibrate_hand_eye(EYE_IN_HAND, gripper_poses, observations, distorted)
    assert max(pose_difference(result.camera_pose, camera)) < 1e-6
    assert result.reprojection_rms_px < 1e-4


def test_a_view_with_a_wrong_gripper_pose_is_dropped_with_a_note():
    rng = np.random.default_rng(11)
    camera, board = random_pose(rng), random_pose(rng)
    gripper_poses, seen = synthetic_views(EYE_TO_HAND, camera, board, rng, views=15)
    observations = observations_from_poses(seen, rng, 0.2)
    gripper_poses[4] = gripper_poses[4] @ pose_from_rotation_vector([0, 0, 0], [0.02, 0, 0])  # arm still moving
    result = calibrate_hand_eye(EYE_TO_HAND, gripper_poses, observations, INTRINSICS)
    assert 4 not in result.views_used and len(result.views_used) == 14
    assert any(note.startswith("view 4: dropped") for note in result.notes)
    assert pose_difference(result.camera_pose, camera)[0] < 1e-3


def test_too_few_or_too_similar_views_give_a_clear_error():
    rng = np.random.default_rng(2)
    camera, board = random_pose(rng), random_pose(rng)
    gripper_poses, seen = synthetic_views(EYE_IN_HAND, camera, board, rng, views=5)
    observations = observations_from_poses(seen, rng, 0.1)
    with pytest.raises(CalibrationError, match=r"only 2 of 5 views show the board, need at least 3"):
        calibrate_hand_eye(EYE_IN_HAND, gripper_poses, observations[:2] + [None] * 3, INTRINSICS,
                           notes=["view 2: skipped, 0 board corners found"])
    # Turning about one axis only leaves the rotation about it undetermined.
    turns = [pose_from_rotation_vector([0, 0, a], [0.1 * a, 0, 0]) for a in (0.0, 0.3, 0.6, 0.9)]
    with pytest.raises(CalibrationError, match="one axis"):
        solve_hand_eye(EYE_TO_HAND, turns, [pose_inverse(camera) @ t @ board for t in turns])


# ----------------------------------------------------------------------------- files
def test_calibration_yaml_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    intrinsics = Intrinsics(np.array([[615.2, 0, 322.5], [0, 614.8, 241.1], [0, 0, 1]]),
                            np.array([0.1, -0.05, 0.001, 0.0005, 0.01]), 640, 480)
    original = CameraCalibration("camera", "camera_color_optical_frame", intrinsics, "base_link",
                                 random_pose(rng), {"setup": EYE_TO_HAND, "views_used": 18})
    path = write_calibration(tmp_path / "sub" / "camera.yaml", original)
    back = read_calibration(path)
    assert (back.camera, back.frame, back.parent_frame) == ("camera", "camera_color_optical_frame", "base_link")
    np.testing.assert_allclose(back.intrinsics.K, intrinsics.K)
    np.testing.assert_allclose(back.intrinsics.D, intrinsics.D)
    assert (back.intrinsics.width, back.intrinsics.height) == (640, 480)
    np.testing.assert_allclose(back.pose, original.pose, atol=1e-12)
    assert back.info["views_used"] == 18
    np.testing.assert_allclose(read_intrinsics(path).K, intrinsics.K)


def test_intrinsics_from_an_echoed_camera_info(tmp_path):
    echoed = tmp_path / "camera_info.yaml"
    echoed.write_text("header:\n  stamp:\n    sec: 1\n    nanosec: 0\n  frame_id: camera_color_optical_frame\n"
                      "height: 480\nwidth: 640\ndistortion_model: plumb_bob\nd:\n- 0.0\n- 0.0\n- 0.0\n- 0.0\n- 0.0\n"
                      "k:\n- 615.0\n- 0.0\n- 320.5\n- 0.0\n- 615.0\n- 240.5\n- 0.0\n- 0.0\n- 1.0\n---\n")
    intrinsics = read_intrinsics(echoed)
    np.testing.assert_allclose(intrinsics.K, [[615.0, 0, 320.5], [0, 615.0, 240.5], [0, 0, 1]])
    assert (intrinsics.width, intrinsics.height) == (640, 480)


# ----------------------------------------------------------------------------- simulation
def test_gripper_pose_from_odometry_and_kinematics_matches_the_simulator():
    """The chain calibration uses in place of ground truth: map <- odometry <- arm mount <- FK."""
    world = SimWorld(SCENE, seed=0, renderer=None)
    world.set_base_velocity(0.1, -0.05, 0.3)
    world.step(240)
    world.set_base_velocity(0.0, 0.0, 0.0)
    q, _ = world.arm_joint_state()
    for frame in ("map", "base_link"):
        from_kinematics = arm_mount_in(frame, SCENE, world.base_pose()) @ link_frames(q)["fr3_hand"]
        truth = world.link_pose("fr3_hand")
        if frame == "base_link":
            truth = pose_inverse(world.base_matrix()) @ truth
        assert max(pose_difference(from_kinematics, truth)) < 1e-5
    world.close()


@pytest.fixture(scope="module")
def sim_calibrations():
    return {name: calibrate_sim_camera(SCENE, SCENE.camera(name), SIM_VIEWS, seed=0, supersampling=1)
            for name in ("camera", "wrist", "side")}


@pytest.mark.parametrize("name", ["camera", "wrist", "side"])
def test_simulated_calibration_is_within_5mm_and_half_a_degree_of_the_mount(sim_calibrations, name):
    sim = sim_calibrations[name]
    translation, rotation = sim.error
    print(f"{name}: {translation * 1000:.3f} mm, {math.degrees(rotation):.4f} deg, "
          f"{sim.result.reprojection_rms_px:.3f} px rms, {len(sim.result.views_used)}/{SIM_VIEWS} views")
    assert translation < MAX_TRANSLATION_ERROR_M and rotation < MAX_ROTATION_ERROR_RAD
    assert sim.within_bound
    assert len(sim.result.views_used) >= SIM_VIEWS - 2
    assert sim.result.reprojection_rms_px < 0.5


def test_rendered_board_corners_are_where_the_intrinsics_put_them():
    """No bias between the calibration renders and K: corners detected in the image against
    the board's true corners projected through K, without and with supersampling."""
    cam = SCENE.camera("wrist")
    sim = CalibrationSim(SCENE, cam, seed=4, supersampling=1)
    detector = BoardDetector(sim.board)
    try:
        for _ in range(2):
            sim.capture(1)
            truth = pose_inverse(sim.world.camera_pose(cam)) @ sim.board_pose()
            for supersampling, max_rms in ((1, 0.35), (2, 0.25)):
                sim.supersampling = supersampling
                seen = detector.observe(sim.render(), Intrinsics(cam.intrinsics, np.zeros(5), cam.width, cam.height))
                in_camera = seen.object_points @ truth[:3, :3].T + truth[:3, 3]
                expected = (in_camera[:, :2] / in_camera[:, 2:]) @ cam.intrinsics[:2, :2].T + cam.intrinsics[:2, 2]
                offsets = seen.image_points - expected
                assert np.all(np.abs(offsets.mean(axis=0)) < 0.1)
                assert np.sqrt(np.mean(np.sum(offsets ** 2, axis=1))) < max_rms
    finally:
        sim.close()


def test_views_without_the_board_are_skipped_with_a_note(sim_calibrations):
    dataset = sim_calibrations["wrist"].dataset
    intrinsics = sim_calibrations["wrist"].intrinsics
    hidden = dataset.images[3].copy()
    hidden[:] = (180, 180, 190)  # the board out of view: an empty image
    corner_only = dataset.images[5].copy()
    corner_only[:, 80:] = 0  # most of the board covered
    with pytest.raises(BoardNotVisible, match="board corners found"):
        BoardDetector(dataset.board).observe(hidden, intrinsics)
    dataset = dataclasses.replace(dataset, images=[hidden if i == 3 else corner_only if i == 5 else image
                                                   for i, image in enumerate(dataset.images)])
    result = calibrate_dataset(dataset, intrinsics)
    assert 3 not in result.views_used and 5 not in result.views_used
    assert any(note.startswith("view 3 (view_003.png): skipped") for note in result.notes)
    assert any(note.startswith("view 5 (view_005.png): skipped") for note in result.notes)
    assert max(pose_difference(result.camera_pose, sim_calibrations["wrist"].true_pose)) < 1e-3


def test_recorded_dataset_calibrates_from_files_through_the_cli(sim_calibrations, tmp_path, capsys):
    """--images on what --sim --save-dataset writes (joint positions, as a robot log would
    have them) reproduces the in-memory result; all images blank: a clear error, exit 2."""
    sim = sim_calibrations["camera"]
    write_dataset(tmp_path / "camera", sim.dataset, sim.joint_positions, sim.arm_mount)
    write_calibration(tmp_path / "intrinsics.yaml", CameraCalibration(
        "camera", "camera_color_optical_frame", sim.intrinsics, "base_link", np.eye(4)))
    out = tmp_path / "out"
    assert calibrate_main(["--images", str(tmp_path / "camera"), "--intrinsics", str(tmp_path / "intrinsics.yaml"),
                           "--output", str(out)]) == 0
    written = read_calibration(out / "camera.yaml")
    assert written.parent_frame == "base_link" and written.info["setup"] == EYE_TO_HAND
    assert max(pose_difference(written.pose, sim.result.camera_pose)) < 1e-6
    assert "eye_to_hand" in capsys.readouterr().out

    blank = tmp_path / "blank"
    write_dataset(blank, dataclasses.replace(sim.dataset, images=[np.zeros_like(i) for i in sim.dataset.images]))
    assert calibrate_main(["--images", str(blank), "--intrinsics", str(tmp_path / "intrinsics.yaml"),
                           "--output", str(out)]) == 2
    assert f"only 0 of {SIM_VIEWS} views show the board" in capsys.readouterr().err
