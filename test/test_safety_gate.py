"""The safety gate's checks (ros_vla.robot.gate): what they let through always stays within
the limits and the workspace, whatever arrives; they never raise."""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vla.robot import kinematics, panda
from ros_vla.robot.gate import (
    ArmGateLimits,
    Arming,
    StampCheck,
    gripper_problem,
    hold_point,
    joint_state_positions,
    outside_distance,
    trajectory_problems,
)
from ros_vla.robot.motion import MotionConfig, plan_pose_goal
from ros_vla.robot.safety import WorkspaceBox, reorder_positions

NAMES = list(panda.ARM_JOINT_NAMES)
READY = np.array(panda.READY_POSE)
LOWER = np.array(panda.ARM_JOINT_LOWER_RAD)
UPPER = np.array(panda.ARM_JOINT_UPPER_RAD)
BOX = WorkspaceBox((-0.2, -0.7, 0.0), (0.9, 0.7, 0.9))
LIMITS = ArmGateLimits(workspace=BOX, velocity_scale=0.5)

any_floats = st.floats(allow_nan=True, allow_infinity=True)
in_limit_vectors = st.tuples(*(st.floats(lo, hi) for lo, hi in zip(LOWER, UPPER))).map(np.array)


def tool(q):
    return kinematics.forward_kinematics(q)[:3, 3]


@settings(max_examples=200, deadline=None)
@given(in_limit_vectors)
def test_batched_tool_positions_are_forward_kinematics(q):
    assert np.allclose(kinematics.tcp_positions(q[None])[0], tool(q), atol=1e-12)


def test_a_planned_motion_passes():
    target = kinematics.forward_kinematics(READY)
    target[:3, 3] += [0.05, 0.1, -0.1]
    plan = plan_pose_goal(READY, target, MotionConfig())
    assert plan.ok, plan.message
    assert trajectory_problems(NAMES, [(q.tolist(), t) for q, t in plan.points], READY, LIMITS) == []


def test_a_hold_where_the_arm_is_passes():
    assert trajectory_problems(NAMES, [(READY.tolist(), 0.05)], READY, LIMITS) == []


def test_no_joint_state_means_no_motion():
    assert "no fresh /joint_states" in trajectory_problems(NAMES, [(READY.tolist(), 1.0)], None, LIMITS)[0]


def test_refusals_name_the_problem():
    fast = READY.copy()
    fast[0] += 1.0
    nan = READY.copy()
    nan[3] = math.nan
    cases = [
        ([f"joint{i}" for i in range(7)], [(READY.tolist(), 1.0)], "missing joints"),
        (NAMES, [(nan.tolist(), 1.0)], "not finite"),
        (NAMES, [(fast.tolist(), 0.5)], "rad/s"),
        (NAMES, [((READY + [0, 0, 0, 3.0, 0, 0, 0]).tolist(), 10.0)], "upper limit"),
        (NAMES, [(READY.tolist(), float(t)) for t in range(1001)], "at most 1000"),
    ]
    for names, points, expected in cases:
        problems = trajectory_problems(names, points, READY, LIMITS)
        assert problems and expected in " ".join(problems), (expected, problems)


def test_the_path_between_points_must_stay_in_the_workspace():
    """Two configurations inside the box whose joint-space interpolation swings the tool
    out of it: checking only the points would let this through."""
    beside = WorkspaceBox((-0.2, -0.7, 0.0), (0.15, 0.7, 0.9))  # nothing in front of the arm
    limits = ArmGateLimits(workspace=beside, velocity_scale=1.0)
    start, end = READY.copy(), READY.copy()
    start[0], end[0] = 1.4, -1.4  # from the left to the right side, sweeping through the front
    inside = [beside.contains(tool(q)) for q in (start, end)]
    midway = tool((start + end) / 2)
    assert all(inside) and not beside.contains(midway), (tool(start), tool(end), midway)
    problems = trajectory_problems(NAMES, [(end.tolist(), 5.0)], start, limits)
    assert problems and "leaves the workspace" in problems[0]


def test_an_arm_outside_may_come_back_but_not_go_further():
    high = WorkspaceBox((-0.2, -0.7, 0.3), (0.9, 0.7, 0.9))
    limits = ArmGateLimits(workspace=high)
    outside = READY.copy()
    outside[1], outside[3] = 0.6, -1.6  # the tool reaches forward and down, below the box
    assert outside_distance(high, tool(outside)) > 0.1
    assert trajectory_problems(NAMES, [(READY.tolist(), 5.0)], outside, limits) == []
    assert trajectory_problems(NAMES, [(outside.tolist(), 0.05)], outside, limits) == [], "holding is allowed"
    further = outside.copy()
    further[1] = 0.8
    assert outside_distance(high, tool(further)) > outside_distance(high, tool(outside)) + 0.05
    assert trajectory_problems(NAMES, [(further.tolist(), 5.0)], outside, limits)


point_lists = st.lists(st.tuples(st.one_of(st.lists(any_floats, min_size=0, max_size=9), in_limit_vectors),
                                 any_floats), min_size=0, max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(NAMES), st.text(max_size=4)), max_size=9), point_lists,
       st.one_of(st.none(), in_limit_vectors))
def test_whatever_passes_is_within_limits_and_the_workspace(names, points, q_now):
    """Random names, numbers and states: the checks never raise, and anything they pass
    is a trajectory the controller may follow (named right, in limits, slow enough, in the box)."""
    if q_now is not None and outside_distance(BOX, tool(q_now)) > 0:
        q_now = READY
    if trajectory_problems(names, points, q_now, LIMITS):
        return
    assert sorted(names) == sorted(NAMES) and q_now is not None
    previous, start = q_now, 0.0
    for positions, time_s in points:
        q = reorder_positions(names, positions, NAMES)
        assert np.all(q >= LOWER) and np.all(q <= UPPER)
        if time_s > start:
            speed = np.abs(q - previous) / (time_s - start)
            assert np.all(speed <= 0.5 * np.array(panda.ARM_JOINT_VELOCITY_RAD_S) + 1e-9)
        else:
            assert np.allclose(q, previous)
        for fraction in np.linspace(0.0, 1.0, 21):
            assert outside_distance(BOX, tool(previous + fraction * (q - previous))) < 2e-3
        previous, start = q, time_s


@settings(max_examples=200, deadline=None)
@given(in_limit_vectors, st.lists(st.floats(-0.05, 0.05), min_size=7, max_size=7))
def test_a_hold_is_inside_the_limits_and_no_faster_than_what_passes(q, offset):
    """The fuzz found a hold sent to an arm measured 1e-3 rad past a limit: that hold was
    itself a command outside the limits."""
    q_now = q + np.array(offset)  # a measured state may lie up to joint_state_tolerance_rad outside
    q_hold, hold_s = hold_point(q_now, LIMITS, 0.05)
    assert np.all(q_hold >= LOWER) and np.all(q_hold <= UPPER)
    assert hold_s >= 0.05
    inside = np.all(q_now >= LOWER) and np.all(q_now <= UPPER)
    assert not inside or (np.array_equal(q_hold, q_now) and hold_s == 0.05)
    speed = np.abs(q_hold - q_now) / hold_s
    assert np.all(speed <= LIMITS.velocity_scale * np.array(panda.ARM_JOINT_VELOCITY_RAD_S) * (1 + 1e-9))


def test_joint_states_are_believed_only_when_well_formed():
    names = NAMES + list(panda.FINGER_JOINT_NAMES)
    good = READY.tolist() + [0.04, 0.04]
    q, problem = joint_state_positions(names, good)
    assert problem == "" and np.allclose(q, READY)
    shuffled = list(reversed(names))
    q, _ = joint_state_positions(shuffled, list(reversed(good)))
    assert np.allclose(q, READY)
    nan = list(good)
    nan[2] = math.nan
    far = list(good)
    far[0] = 10.0
    for bad_names, bad_positions in [(names, nan), (names, far), (names, good[:5]), (NAMES[:6], good[:6]),
                                     (names[:1] + names, [0.0] + good), (names, ["a"] * 9)]:
        q, problem = joint_state_positions(bad_names, bad_positions)
        assert q is None and problem


def test_gripper_widths():
    assert gripper_problem(0.0, LIMITS) == "" and gripper_problem(0.08, LIMITS) == ""
    for width in (-0.001, 0.081, math.nan, math.inf, 1e300):
        assert gripper_problem(width, LIMITS)


def test_stamps_stale_future_out_of_order_and_repeated():
    check = StampCheck(max_age_s=0.5, max_ahead_s=0.5)
    assert check.problem(0.0, 100.0) == "", "a zero stamp means now"
    assert "stale" in check.problem(99.0, 100.0)
    assert "future" in check.problem(101.0, 100.0)
    assert "finite" in check.problem(math.nan, 100.0)
    assert check.problem(100.0, 100.1, "a") == ""
    check.accept(100.0, "a")
    assert "out of order" in check.problem(99.9, 100.1, "b")
    assert "repeat" in check.problem(100.0, 100.1, "a")
    assert check.problem(100.0, 100.1, "b") == "", "the same stamp with new content is a new command"


def test_arming_on_the_robot_requires_arming_again_after_a_stop():
    robot = Arming(armed=True, rearm_after_estop=True)
    assert robot.forwarding
    assert robot.engage_estop() and not robot.engage_estop()
    assert not robot.forwarding and robot.arm_refusal()
    assert robot.release_estop() and not robot.forwarding, "released: still disarmed"
    assert robot.arm_refusal() == ""
    sim = Arming(armed=True, rearm_after_estop=False)
    sim.engage_estop()
    assert not sim.forwarding
    sim.release_estop()
    assert sim.forwarding, "simulation: releasing the stop resumes"
