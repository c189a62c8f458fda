"""ROS clients behind the `ros-vla` command (demo, benches, record/replay, `say`): they talk
to a running stack over DDS and are not nodes of it."""
