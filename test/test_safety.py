"""Safety checks: they must refuse anything non-finite or out of limits and never raise,
whatever numbers arrive."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ros_vla.robot import panda
from ros_vla.robot.safety import (
    BaseVelocityLimiter,
    JointLimits,
    Watchdog,
    WorkspaceBox,
    finite,
    reorder_positions,
    time_parameterize,
    validate_joint_trajectory,
)

LIMITS = JointLimits()
NAMES = panda.ARM_JOINT_NAMES
READY = np.array(panda.READY_POSE)
LOWER = np.array(panda.ARM_JOINT_LOWER_RAD)
UPPER = np.array(panda.ARM_JOINT_UPPER_RAD)

any_floats = st.floats(allow_nan=True, allow_infinity=True)
joint_vectors = st.lists(any_floats, min_size=7, max_size=7)
in_limit_vectors = st.tuples(*(st.floats(lo, hi) for lo, hi in zip(LOWER, UPPER))).map(np.array)


def within(q):
    return all(lo <= value <= hi for value, lo, hi in zip(q, LOWER, UPPER))


def test_finite():
    assert finite(1.0) and finite([1, 2, 3]) and finite(np.zeros((2, 2)))
    assert not finite(math.nan) and not finite([0.0, math.inf]) and not finite("abc") and not finite([None])


def test_default_limits_are_the_panda_arm():
    assert LIMITS.joint_names == NAMES
    assert LIMITS.check_positions(READY) == []


def test_check_positions_names_the_joint_and_value():
    q = READY.copy()
    q[3] = 0.5
    (error,) = LIMITS.check_positions(q)
    assert "fr3_joint4" in error and "0.5000" in error
    q[5] = math.nan
    assert len(LIMITS.check_positions(q)) == 2


@pytest.mark.parametrize("q", [[0.0] * 6, [0.0] * 8, "abcdefg", None, [[0.0] * 7]])
def test_check_positions_refuses_malformed_input(q):
    assert LIMITS.check_positions(q)


@settings(max_examples=300, deadline=None)
@given(joint_vectors)
def test_check_positions_refuses_exactly_the_bad_vectors(q):
    errors = LIMITS.check_positions(q)
    assert bool(errors) == (not finite(q) or not within(q))


def test_limits_refuse_inconsistent_configuration():
    with pytest.raises(ValueError):
        JointLimits(("a", "b"), (0.0,), (1.0,), (1.0,))
    with pytest.raises(ValueError):
        JointLimits(("a",), (1.0,), (0.0,), (1.0,))
    with pytest.raises(ValueError):
        JointLimits(("a",), (0.0,), (1.0,), (0.0,))


def ready_to(q_goal, velocity_scale=0.5):
    return time_parameterize([READY + 0.5 * (q_goal - READY), q_goal], READY, LIMITS, velocity_scale)


def test_a_parameterized_trajectory_validates():
    goal = READY + np.array([0.3, 0.2, -0.2, 0.3, 0.1, -0.2, 0.5])
    points = ready_to(goal)
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY, velocity_scale=0.5) == []


def test_trajectory_names_may_come_in_any_order():
    goal = READY + 0.2
    points = ready_to(goal)
    order = [6, 2, 0, 1, 5, 4, 3]
    shuffled_names = [NAMES[i] for i in order]
    shuffled_points = [(q[order], t) for q, t in points]
    assert validate_joint_trajectory(shuffled_names, shuffled_points, LIMITS, NAMES, q_current=READY) == []
    np.testing.assert_array_equal(reorder_positions(shuffled_names, shuffled_points[-1][0], NAMES), goal)


@pytest.mark.parametrize(
    "names, complaint",
    [
        (NAMES[:6], "missing"),
        (NAMES[:6] + ("fr3_joint1",), "duplicate"),
        (NAMES[:6] + ("panda_joint7",), "unexpected"),
    ],
)
def test_trajectory_with_wrong_names_is_refused(names, complaint):
    points = [(READY, 1.0)]
    errors = validate_joint_trajectory(names, points, LIMITS, NAMES)
    assert any(complaint in error for error in errors)
    with pytest.raises(ValueError):
        reorder_positions(names, READY, NAMES)


def test_trajectory_times_must_increase():
    points = [(READY, 1.0), (READY + 0.01, 1.0)]
    assert any("does not come after" in e for e in validate_joint_trajectory(NAMES, points, LIMITS, NAMES))
    points = [(READY, 1.0), (READY + 0.01, 0.5)]
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES)


def test_trajectory_starting_where_the_arm_is_may_start_at_time_zero():
    points = [(READY, 0.0), (READY + 0.1, 1.0)]
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY) == []
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY + 0.1)


def test_trajectory_too_fast_is_refused():
    points = [(READY, 1.0), (READY + np.array([0, 0, 0, 0, 0, 0, 1.0]), 1.2)]
    (error,) = validate_joint_trajectory(NAMES, points, LIMITS, NAMES)
    assert "fr3_joint7" in error and "5.000 rad/s" in error
    # The first point itself is reached too fast from where the arm is.
    points = [(READY + 0.5, 0.1)]
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY)
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES) == []
    # Slowed down by the scale, a move that is fine at full speed is refused.
    points = [(READY + 0.1, 0.1)]
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY) == []
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=READY, velocity_scale=0.1)


def test_trajectory_refuses_bad_scale_empty_points_and_bad_current_state():
    assert validate_joint_trajectory(NAMES, [(READY, 1.0)], LIMITS, NAMES, velocity_scale=0.0)
    assert validate_joint_trajectory(NAMES, [(READY, 1.0)], LIMITS, NAMES, velocity_scale=math.nan)
    assert validate_joint_trajectory(NAMES, [], LIMITS, NAMES)
    assert validate_joint_trajectory(NAMES, [(READY, 1.0)], LIMITS, NAMES, q_current=[math.nan] * 7)


def test_trajectory_error_list_is_capped():
    points = [(READY + 10.0, float(t)) for t in range(1, 100)]
    errors = validate_joint_trajectory(NAMES, points, LIMITS, NAMES)
    assert len(errors) == 21 and "more problems" in errors[-1]


trajectory_points = st.lists(
    st.tuples(st.one_of(joint_vectors, in_limit_vectors), any_floats), min_size=1, max_size=5
)


@settings(max_examples=300, deadline=None)
@given(trajectory_points, st.one_of(st.none(), joint_vectors, in_limit_vectors))
def test_trajectory_validation_never_raises_and_refuses_bad_numbers(points, q_current):
    errors = validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=q_current)
    bad_point = any(not finite(q) or not within(q) or not finite(t) or t < 0 for q, t in points)
    if bad_point or (q_current is not None and not finite(q_current)):
        assert errors


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=3), st.sampled_from(NAMES)), max_size=8), trajectory_points)
def test_trajectory_validation_never_raises_on_odd_names(names, points):
    errors = validate_joint_trajectory(names, points, LIMITS, NAMES)
    if sorted(names) != sorted(NAMES):
        assert errors


@settings(max_examples=100, deadline=None)
@given(st.lists(in_limit_vectors, min_size=1, max_size=6), in_limit_vectors, st.floats(0.05, 1.0))
def test_time_parameterized_trajectories_respect_the_scaled_limits(waypoints, q_start, scale):
    points = time_parameterize(waypoints, q_start, LIMITS, velocity_scale=scale, min_segment_s=0.05)
    assert validate_joint_trajectory(NAMES, points, LIMITS, NAMES, q_current=q_start, velocity_scale=scale) == []
    durations = np.diff([0.0] + [t for _, t in points])
    assert np.all(durations >= 0.05 - 1e-12)


def test_time_parameterize_refuses_bad_input():
    for waypoints, q_start, scale in [
        ([READY], [math.nan] * 7, 0.5),
        ([[math.inf] * 7], READY, 0.5),
        ([READY[:6]], READY, 0.5),
        ([READY], READY, 0.0),
        ([READY], READY, 1.5),
    ]:
        with pytest.raises(ValueError):
            time_parameterize(waypoints, q_start, LIMITS, velocity_scale=scale)


def test_workspace_box():
    box = WorkspaceBox((0.2, -0.4, 0.0), (0.8, 0.4, 0.6))
    assert box.contains((0.5, 0.0, 0.3)) and box.explain((0.5, 0.0, 0.3)) == ""
    assert not box.contains((0.9, 0.0, -0.1))
    reason = box.explain((0.9, 0.0, -0.1))
    assert "x = 0.900" in reason and "z = -0.100" in reason
    for point in [(math.nan, 0.0, 0.3), (0.5, 0.0), "abc"]:
        assert not box.contains(point) and box.explain(point)
    with pytest.raises(ValueError):
        WorkspaceBox((0.0, 0.0, 0.0), (0.0, 1.0, 1.0))


LIMITER_ARGS = dict(max_linear=0.5, max_angular=1.0, max_linear_accel=1.0, max_angular_accel=2.0)


def test_base_limiter_ramps_up_and_clamps_speed():
    limiter = BaseVelocityLimiter(**LIMITER_ARGS)
    vx, vy, wz = limiter.step(2.0, 0.0, 5.0, 0.1)
    assert (vx, vy, wz) == pytest.approx((0.1, 0.0, 0.2))
    for _ in range(50):
        vx, vy, wz = limiter.step(2.0, 2.0, 5.0, 0.1)
    assert math.hypot(vx, vy) == pytest.approx(0.5) and vx == pytest.approx(vy)
    assert wz == pytest.approx(1.0)


def test_base_limiter_stops_gradually_on_a_non_finite_command():
    limiter = BaseVelocityLimiter(**LIMITER_ARGS)
    for _ in range(10):
        limiter.step(0.5, 0.0, 0.0, 0.1)
    vx, _, _ = limiter.step(math.nan, 0.0, 0.0, 0.1)
    assert vx == pytest.approx(0.4)
    assert "not finite" in limiter.last_rejection
    for _ in range(10):
        limiter.step(0.0, math.inf, 0.0, 0.1)
    assert limiter.velocity == (0.0, 0.0, 0.0)
    limiter.step(0.1, 0.0, 0.0, 0.1)
    assert limiter.last_rejection == ""


def test_base_limiter_reset_forgets_the_velocity():
    limiter = BaseVelocityLimiter(**LIMITER_ARGS)
    limiter.step(0.5, 0.0, 0.0, 0.1)
    limiter.reset()
    assert limiter.velocity == (0.0, 0.0, 0.0)
    assert limiter.step(0.5, 0.0, 0.0, 0.1) == pytest.approx((0.1, 0.0, 0.0))


def test_base_limiter_holds_velocity_on_a_bad_time_step():
    limiter = BaseVelocityLimiter(**LIMITER_ARGS)
    held = limiter.step(0.5, 0.0, 0.0, 0.1)
    for dt in [0.0, -0.1, math.nan, math.inf]:
        assert limiter.step(0.0, 0.0, 0.0, dt) == held
        assert limiter.last_rejection


def test_base_limiter_refuses_bad_limits():
    with pytest.raises(ValueError):
        BaseVelocityLimiter(0.5, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError):
        BaseVelocityLimiter(math.inf, 1.0, 1.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(any_floats, any_floats, any_floats, st.one_of(any_floats, st.floats(1e-4, 1.0))),
                min_size=1, max_size=20))
def test_base_limiter_output_is_always_finite_bounded_and_smooth(commands):
    limiter = BaseVelocityLimiter(**LIMITER_ARGS)
    previous = (0.0, 0.0, 0.0)
    slack = 1e-9
    for vx_cmd, vy_cmd, wz_cmd, dt in commands:
        vx, vy, wz = limiter.step(vx_cmd, vy_cmd, wz_cmd, dt)
        assert finite((vx, vy, wz))
        assert math.hypot(vx, vy) <= LIMITER_ARGS["max_linear"] + slack
        assert abs(wz) <= LIMITER_ARGS["max_angular"] + slack
        if finite(dt) and dt > 0:
            assert math.hypot(vx - previous[0], vy - previous[1]) <= LIMITER_ARGS["max_linear_accel"] * dt + slack
            assert abs(wz - previous[2]) <= LIMITER_ARGS["max_angular_accel"] * dt + slack
        else:
            assert (vx, vy, wz) == previous
        previous = (vx, vy, wz)


def test_watchdog():
    watchdog = Watchdog(0.5)
    assert watchdog.expired(0.0)
    watchdog.feed(10.0)
    assert not watchdog.expired(10.4)
    assert watchdog.expired(10.6)
    assert watchdog.expired(9.0)  # the clock went backwards
    assert watchdog.expired(math.nan)
    watchdog.feed(math.nan)
    assert watchdog.seconds_since_feed(10.25) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        Watchdog(0.0)
