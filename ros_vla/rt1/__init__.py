"""RT-1 (Brohan et al. 2022): a 6-frame image history and an instruction in, 11 action
dimensions of 256 bins each out. See README.md beside this file.

  config.py     RT1Config.paper() / .small(), the action space
  model.py      the PyTorch network (FrameEncoder + ActionDecoder), the sentence encoder
  tokenizer.py  actions <-> tokens
  runtime.py    torch / ONNX Runtime / TensorRT backends, RT1Policy (token cache)
  control.py    an action -> the robot command of one control step
  demos.py      `ros-vla demos rt1`: scripted (oracle) episodes in sim, goals and their judges
  data.py       episodes -> 6-frame training windows
  train.py      `ros-vla train rt1`
  eval.py       `ros-vla eval rt1`: closed loop in the headless sim or through the ROS stack
  bench.py      `ros-vla bench rt1`

Importing this package does not import torch (ros_vla.rt1.model does), so a controller on
ONNX Runtime does not load it.
"""

from ros_vla.rt1.config import ActionDimension, RT1Config
from ros_vla.rt1.runtime import (
    OnnxModel,
    OnnxRuntimeBackend,
    RT1Policy,
    TensorRTBackend,
    TorchBackend,
    build_tensorrt_engine,
    export_onnx,
    tensorrt_unavailable_reason,
)
from ros_vla.rt1.tokenizer import ActionTokenizer

__all__ = [
    "ActionDimension",
    "ActionTokenizer",
    "OnnxModel",
    "OnnxRuntimeBackend",
    "RT1Config",
    "RT1Policy",
    "TensorRTBackend",
    "TorchBackend",
    "build_tensorrt_engine",
    "export_onnx",
    "tensorrt_unavailable_reason",
]
