# Quick start: `make demo` runs the simulated robot end to end, `make test` runs the tests.
# Both set up .venv/ on first use (apt packages, PyPI wheels, message packages, this package).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ros_vla-installed
# Isolate our DDS traffic from anything else on the network; tests pick their own ids.
export ROS_DOMAIN_ID ?= 42
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: demo test bench setup clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py package.xml scripts/setup_env.sh scripts/build_msgs.sh $(shell find third_party/msgs interfaces -type f)
	bash scripts/setup_env.sh $(VENV)
	touch $@

demo: $(STAMP)
	$(VENV)/bin/ros-vla demo

test: $(STAMP)
	$(PY) -m pytest -q test

bench: $(STAMP)
	$(VENV)/bin/ros-vla bench sim

clean:
	rm -rf $(VENV) build install log outputs
