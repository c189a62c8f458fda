"""Kinematics of the Franka arm, checked against pybullet's own forward kinematics of the
same URDF the simulation loads, and the IK checked by forward kinematics."""

import math
import os

import numpy as np
import pybullet
import pybullet_data
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vla.robot import kinematics, panda

LOWER = np.array(panda.ARM_JOINT_LOWER_RAD)
UPPER = np.array(panda.ARM_JOINT_UPPER_RAD)
POSITION_TOLERANCE_M = 5e-3
ORIENTATION_TOLERANCE_RAD = math.radians(1.0)

# Our frame names for the pybullet links they must coincide with.
PYBULLET_LINKS = {
    **{f"fr3_link{i}": f"panda_link{i}" for i in range(1, 9)},
    "fr3_hand": "panda_hand",
    panda.TCP_FRAME: "panda_grasptarget",
}


@pytest.fixture(scope="module")
def pybullet_panda():
    client = pybullet.connect(pybullet.DIRECT)
    robot = pybullet.loadURDF(
        os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf"),
        useFixedBase=True,
        physicsClientId=client,
    )
    links = {}
    arm_joints = []
    for index in range(pybullet.getNumJoints(robot, physicsClientId=client)):
        info = pybullet.getJointInfo(robot, index, physicsClientId=client)
        links[info[12].decode()] = index
        if info[1].decode() in {f"panda_joint{i}" for i in range(1, 8)}:
            arm_joints.append(index)

    def link_poses(q):
        for joint, angle in zip(arm_joints, q):
            pybullet.resetJointState(robot, joint, angle, physicsClientId=client)
        poses = {}
        for name, index in links.items():
            state = pybullet.getLinkState(robot, index, computeForwardKinematics=True, physicsClientId=client)
            pose = np.eye(4)
            # Indices 4 and 5 are the URDF link frame (0 and 1 would be the centre of mass).
            pose[:3, :3] = np.reshape(pybullet.getMatrixFromQuaternion(state[5]), (3, 3))
            pose[:3, 3] = state[4]
            poses[name] = pose
        return poses

    yield link_poses
    pybullet.disconnect(client)


def random_configurations(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(LOWER, UPPER) for _ in range(count)]


def pose_errors(target, q):
    actual = kinematics.forward_kinematics(q)
    position_error = np.linalg.norm(target[:3, 3] - actual[:3, 3])
    orientation_error = np.linalg.norm(kinematics.rotation_vector(target[:3, :3] @ actual[:3, :3].T))
    return position_error, orientation_error


def within_limits(q):
    return np.all(q >= LOWER) and np.all(q <= UPPER)


def test_forward_kinematics_matches_pybullet(pybullet_panda):
    for q in [np.array(panda.READY_POSE), np.zeros(7), *random_configurations(30, seed=1)]:
        expected = pybullet_panda(q)
        tcp = kinematics.forward_kinematics(q)
        np.testing.assert_allclose(tcp[:3, 3], expected["panda_grasptarget"][:3, 3], atol=1e-6)
        np.testing.assert_allclose(tcp[:3, :3], expected["panda_grasptarget"][:3, :3], atol=1e-6)
        frames = kinematics.link_frames(q)
        np.testing.assert_allclose(frames[panda.TCP_FRAME], tcp, atol=1e-12)
        for ours, theirs in PYBULLET_LINKS.items():
            np.testing.assert_allclose(frames[ours], expected[theirs], atol=1e-6, err_msg=ours)


def test_ready_pose_points_the_gripper_down():
    tcp = kinematics.forward_kinematics(panda.READY_POSE)
    np.testing.assert_allclose(tcp[:3, :3], kinematics.top_down_grasp_pose(tcp[:3, 3], 0.0)[:3, :3], atol=1e-3)


def test_jacobian_matches_finite_differences():
    step = 1e-6
    for q in random_configurations(10, seed=2):
        jac = kinematics.jacobian(q)
        for joint in range(7):
            delta = np.zeros(7)
            delta[joint] = step
            ahead = kinematics.forward_kinematics(q + delta)
            behind = kinematics.forward_kinematics(q - delta)
            linear = (ahead[:3, 3] - behind[:3, 3]) / (2 * step)
            angular = kinematics.rotation_vector(ahead[:3, :3] @ behind[:3, :3].T) / (2 * step)
            np.testing.assert_allclose(jac[:3, joint], linear, atol=1e-6)
            np.testing.assert_allclose(jac[3:, joint], angular, atol=1e-6)


def test_kinematics_refuse_malformed_joints():
    for q in [np.zeros(6), [0.0] * 6 + [math.nan], [0.0] * 6 + [math.inf]]:
        with pytest.raises(ValueError):
            kinematics.forward_kinematics(q)
        with pytest.raises(ValueError):
            kinematics.jacobian(q)


@pytest.mark.parametrize("perturbed_seed", [False, True])
def test_ik_reaches_random_reachable_poses(perturbed_seed):
    rng = np.random.default_rng(3)
    successes = 0
    for q_true in random_configurations(50, seed=4 + perturbed_seed):
        target = kinematics.forward_kinematics(q_true)
        seed = np.clip(q_true + rng.normal(0.0, 0.3, 7), LOWER, UPPER) if perturbed_seed else panda.READY_POSE
        result = kinematics.solve_ik(target, seed)
        assert within_limits(result.q)
        if result.success:
            successes += 1
            position_error, orientation_error = pose_errors(target, result.q)
            assert position_error <= POSITION_TOLERANCE_M
            assert orientation_error <= ORIENTATION_TOLERANCE_RAD
            assert result.position_error_m == pytest.approx(position_error)
    assert successes >= 48


def test_position_only_ik_ignores_orientation():
    for q_true in random_configurations(20, seed=6):
        target = kinematics.forward_kinematics(q_true)
        # Any orientation will do: ask for one the arm could not hold at this position.
        target[:3, :3] = kinematics.rotation_from_rpy((0.3, 2.0, -1.0))
        result = kinematics.solve_ik(target, panda.READY_POSE, position_only=True)
        assert result.success, result.message
        assert within_limits(result.q)
        assert pose_errors(target, result.q)[0] <= 1e-3


def test_ik_solves_top_down_grasps_over_the_table():
    rng = np.random.default_rng(7)
    for x in np.linspace(0.3, 0.7, 5):
        for y in np.linspace(-0.3, 0.3, 5):
            xyz = (x, y, rng.uniform(0.02, 0.3))
            target = kinematics.top_down_grasp_pose(xyz, rng.uniform(-math.pi / 2, math.pi / 2))
            result = kinematics.solve_ik(target, panda.READY_POSE)
            assert result.success, f"{xyz}: {result.message}"
            assert within_limits(result.q)
            tcp = kinematics.forward_kinematics(result.q)
            np.testing.assert_allclose(tcp[:3, 3], xyz, atol=1e-3)
            assert tcp[:3, 2] @ (0.0, 0.0, -1.0) > math.cos(ORIENTATION_TOLERANCE_RAD)


def test_ik_reports_an_unreachable_target():
    result = kinematics.solve_ik(kinematics.pose_from_xyz_rpy((2.0, 0.0, 0.5), (math.pi, 0, 0)), panda.READY_POSE)
    assert not result.success
    assert "reach" in result.message
    assert within_limits(result.q)


def test_ik_reports_a_reachable_position_with_impossible_orientation_as_failure():
    # Within the reach bound, but pointing down from 1.25 m would put the wrist above the
    # arm's reach.
    target = kinematics.top_down_grasp_pose((0.0, 0.0, 1.25), 0.0)
    result = kinematics.solve_ik(target, panda.READY_POSE)
    assert not result.success
    assert result.message
    assert within_limits(result.q)


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
def test_ik_refuses_a_non_finite_target(bad_value):
    target = kinematics.forward_kinematics(panda.READY_POSE)
    target[0, 3] = bad_value
    result = kinematics.solve_ik(target, panda.READY_POSE)
    assert not result.success
    assert "finite" in result.message
    assert within_limits(result.q)


def test_ik_refuses_malformed_targets_and_seeds():
    good = kinematics.forward_kinematics(panda.READY_POSE)
    skewed = good.copy()
    skewed[:3, :3] *= 2.0
    for target, seed in [(skewed, panda.READY_POSE), (np.eye(3), panda.READY_POSE), (None, panda.READY_POSE),
                         ("pose", panda.READY_POSE), (good, [math.nan] * 7), (good, [0.0] * 6), (good, None)]:
        result = kinematics.solve_ik(target, seed)
        assert not result.success
        assert result.message
        assert within_limits(result.q)


def test_ik_clamps_a_seed_outside_the_limits():
    target = kinematics.forward_kinematics(panda.READY_POSE)
    result = kinematics.solve_ik(target, np.array(panda.READY_POSE) + 10.0)
    assert result.success, result.message
    assert within_limits(result.q)


def test_rpy_and_quaternion_conventions_match_pybullet():
    rng = np.random.default_rng(8)
    for _ in range(20):
        rpy = rng.uniform(-math.pi, math.pi, 3)
        expected = np.reshape(pybullet.getMatrixFromQuaternion(pybullet.getQuaternionFromEuler(rpy)), (3, 3))
        rotation = kinematics.rotation_from_rpy(rpy)
        np.testing.assert_allclose(rotation, expected, atol=1e-9)
        quat = kinematics.quaternion_from_matrix(rotation)
        expected_quat = np.array(pybullet.getQuaternionFromEuler(rpy))
        assert min(np.abs(quat - expected_quat).max(), np.abs(quat + expected_quat).max()) < 1e-9


unit_quaternions = (
    st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4)
    .map(np.array)
    .filter(lambda quat: np.linalg.norm(quat) > 0.1)
    .map(lambda quat: quat / np.linalg.norm(quat))
)


@settings(max_examples=200, deadline=None)
@given(unit_quaternions)
def test_quaternion_round_trip(quat):
    rotation = kinematics.matrix_from_quaternion(quat)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)
    back = kinematics.quaternion_from_matrix(rotation)
    assert back[3] >= 0
    assert min(np.abs(back - quat).max(), np.abs(back + quat).max()) < 1e-9


@settings(max_examples=200, deadline=None)
@given(unit_quaternions)
def test_xyz_rpy_round_trip(quat):
    pose = np.eye(4)
    pose[:3, :3] = kinematics.matrix_from_quaternion(quat)
    pose[:3, 3] = quat[:3]
    xyz, rpy = kinematics.xyz_rpy_from_pose(pose)
    np.testing.assert_allclose(kinematics.pose_from_xyz_rpy(xyz, rpy), pose, atol=1e-9)


def test_xyz_rpy_round_trip_at_gimbal_lock():
    pose = kinematics.pose_from_xyz_rpy((0.1, 0.2, 0.3), (0.4, math.pi / 2, -0.5))
    xyz, rpy = kinematics.xyz_rpy_from_pose(pose)
    np.testing.assert_allclose(kinematics.pose_from_xyz_rpy(xyz, rpy), pose, atol=1e-9)


def test_matrix_from_quaternion_refuses_a_zero_or_non_finite_quaternion():
    for quat in [(0, 0, 0, 0), (math.nan, 0, 0, 1), (math.inf, 0, 0, 1)]:
        with pytest.raises(ValueError):
            kinematics.matrix_from_quaternion(quat)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 0.5, math.pi - 1e-3, math.pi - 1e-6, math.pi])
def test_rotation_vector_inverts_the_exponential_map(angle):
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    quat = np.append(axis * math.sin(angle / 2), math.cos(angle / 2))
    vector = kinematics.rotation_vector(kinematics.matrix_from_quaternion(quat))
    assert np.linalg.norm(vector) == pytest.approx(angle, abs=1e-9)
    if angle > 1e-6:
        # At exactly pi, axis and -axis are the same rotation.
        assert abs(vector @ axis) == pytest.approx(angle, abs=1e-6)


def test_top_down_grasp_pose_closes_the_fingers_across_yaw():
    yaw = 0.7
    pose = kinematics.top_down_grasp_pose((0.5, 0.1, 0.2), yaw)
    np.testing.assert_allclose(pose[:3, 3], (0.5, 0.1, 0.2))
    np.testing.assert_allclose(pose[:3, 2], (0, 0, -1), atol=1e-12)
    np.testing.assert_allclose(pose[:3, 0], (math.cos(yaw), math.sin(yaw), 0), atol=1e-12)
    np.testing.assert_allclose(pose[:3, 1], (math.sin(yaw), -math.cos(yaw), 0), atol=1e-12)
