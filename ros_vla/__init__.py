"""ros_vla: vision-language-action control stack for a Franka Panda on a mobile base."""

import os

# Spinning OpenMP threads stall for up to seconds when another process holds a core, as
# the robot's other nodes always do (a CLIPort training step went from 0.4 s to 10 s). The
# variable is read when torch first loads, so it is set here, before any of our modules
# imports torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
