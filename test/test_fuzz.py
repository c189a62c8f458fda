"""A short `ros-vla bench fuzz` on the whole sim stack: bad inputs on every topic it listens
to, then on the controller topics, then a normal task. The full run (10,000+ inputs) is
`ros-vla bench fuzz`; its figures are in the README's Safety section."""

import pytest
from ros_test_utils import isolated_domain

from ros_vla.tools.bench_fuzz import run_bench_fuzz


@pytest.fixture(scope="module")
def fuzz_result(tmp_path_factory):
    isolated_domain(97)
    return run_bench_fuzz(inputs=1500, controller_inputs=300, seed=3, rate_hz=200.0, planner="rules",
                          output_root=str(tmp_path_factory.mktemp("fuzz")))

def test_every_input_family_was_sent(fuzz_result):
    sent = fuzz_result["stack_inputs_by_family"]
    assert fuzz_result["stack_inputs_sent"] >= 1400, fuzz_result["unsendable"]
    assert not fuzz_result["unsendable"]
    assert min(sent.values()) > 0, [name for name, count in sent.items() if count == 0]
    assert fuzz_result["controller_inputs_sent"] >= 280

def test_no_node_crashed(fuzz_result):
    assert fuzz_result["node_crashes"] == 0, fuzz_result["crashed"]
    assert fuzz_result["controller_phase_crashes"] == 0, fuzz_result["controller_phase_crashed"]

def test_nothing_outside_the_limits_reached_the_controllers(fuzz_result):
    assert sum(fuzz_result["controller_messages"].values()) > 0  # the recorder heard the gate
    assert fuzz_result["out_of_limit_commands"] == 0, fuzz_result["violations"]
    assert fuzz_result["bypass_messages"] == 0
    assert fuzz_result["gate_refusals"] > 0  # the bad commands were refused, not lost
    assert fuzz_result["joint_states_outside_limits"] == 0

def test_a_normal_task_succeeds_afterwards(fuzz_result):
    assert fuzz_result["task_state"] == "succeeded", fuzz_result["task_message"]
    assert fuzz_result["task_ground_truth_success"], fuzz_result["task_ground_truth_detail"]
