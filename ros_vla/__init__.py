"""ros_vla: vision-language-action control stack for a Franka Panda on a mobile base."""

__version__ = "0.1.0"
