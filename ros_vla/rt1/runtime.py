"""Running RT-1 for control: backends and the token-caching policy.

A backend runs the network's two halves on numpy arrays:
  encode_frames(images [N, 3, S, S] float32 in [0, 1], embeddings [N, E]) -> tokens [N, 8, C]
  decode_actions(context tokens [B, 48, C]) -> action logits [B, 11, 256]
Backends: `TorchBackend` (eager), `OnnxRuntimeBackend` (the two graphs `export_onnx`
writes; CUDA provider when present, else CPU) and `TensorRTBackend` (FP16 engines that
`build_tensorrt_engine` makes from those graphs; needs `tensorrt` and an NVIDIA GPU).

`RT1Policy.step(image, instruction_embedding)` is one control step. With the token cache
(the default) it encodes only the new frame and keeps the last 6 frames' tokens; without it,
it keeps the last 6 images and encodes all of them every step, which is the full forward.
Both give the same logits.

torch is imported only where a backend needs it, so a deployment on ONNX Runtime does not
load it.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import psutil

from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.tokenizer import ActionTokenizer

FRAME_ENCODER_ONNX = "rt1_frame_encoder.onnx"
ACTION_DECODER_ONNX = "rt1_action_decoder.onnx"
# The torch backend's weights in a model folder: an RT1 state_dict saved with torch.save.
TORCH_WEIGHTS = "rt1.pt"
BACKENDS = ("onnxruntime", "onnxruntime-int8", "torch", "tensorrt")


class RT1Backend(Protocol):
    name: str

    def encode_frames(self, images: np.ndarray, embeddings: np.ndarray) -> np.ndarray: ...

    def decode_actions(self, context_tokens: np.ndarray) -> np.ndarray: ...


def cpu_threads() -> int:
    """One compute thread per physical core: more threads than cores only contend."""
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class TorchBackend:
    """PyTorch eager on the model's device."""

    name = "torch eager"

    def __init__(self, model):
        import torch

        self._torch = torch
        self.model = model.eval()
        self.device = next(model.parameters()).device

    def _run(self, module, *arrays: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            inputs = [self._torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in arrays]
            return module(*inputs).float().cpu().numpy()

    def encode_frames(self, images: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._run(self.model.frame_encoder, images, embeddings)

    def decode_actions(self, context_tokens: np.ndarray) -> np.ndarray:
        return self._run(self.model.action_decoder, context_tokens)


@dataclass(frozen=True)
class OnnxModel:
    """The two ONNX graphs of one RT-1 network, in one directory."""

    frame_encoder: Path
    action_decoder: Path

    @classmethod
    def in_directory(cls, directory: str | Path) -> OnnxModel:
        directory = Path(directory)
        model = cls(directory / FRAME_ENCODER_ONNX, directory / ACTION_DECODER_ONNX)
        for path in (model.frame_encoder, model.action_decoder):
            if not path.is_file():
                raise FileNotFoundError(f"no ONNX graph at {path} (ros_vla.rt1.runtime.export_onnx writes it)")
        return model


def export_onnx(model, directory: str | Path, opset: int = 17) -> OnnxModel:
    """Write the frame encoder and the action decoder of `model` (an RT1) as two ONNX graphs
    with a dynamic batch axis: frame_encoder(images, instruction_embeddings) -> frame_tokens
    and action_decoder(context_tokens) -> action_logits."""
    import torch

    config: RT1Config = model.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    images = torch.rand(2, 3, config.image_size, config.image_size)
    embeddings = torch.randn(2, config.instruction_embedding_dim)
    context = torch.randn(1, config.context_tokens, config.image_token_dim)
    paths = OnnxModel(directory / FRAME_ENCODER_ONNX, directory / ACTION_DECODER_ONNX)
    # The TorchScript-based exporter (deprecated, still in torch 2.14): the torch.export-based
    # one needs the onnxscript package, which this project does not install.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.frame_encoder, (images, embeddings), str(paths.frame_encoder), dynamo=False,
                          opset_version=opset, input_names=["images", "instruction_embeddings"],
                          output_names=["frame_tokens"],
                          dynamic_axes={"images": {0: "frames"}, "instruction_embeddings": {0: "frames"},
                                        "frame_tokens": {0: "frames"}})
        torch.onnx.export(model.action_decoder, (context,), str(paths.action_decoder), dynamo=False,
                          opset_version=opset, input_names=["context_tokens"], output_names=["action_logits"],
                          dynamic_axes={"context_tokens": {0: "batch"}, "action_logits": {0: "batch"}})
    return paths


def quantize_action_decoder(onnx_model: OnnxModel) -> Path:
    """The action decoder with int8 weights (onnxruntime dynamic quantisation: int8 weights,
    activations quantised per call), cached in the temporary folder (a model folder may be
    read-only, and stays as trained) under the float graph's path and modification time."""
    import hashlib
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = onnx_model.action_decoder.resolve()
    key = hashlib.sha256(f"{source}:{source.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / "ros_vla_rt1_int8" / f"{key}_{source.stem}_int8.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.onnx")
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
        partial.replace(target)  # whole or absent: a reader never sees a half-written graph
    return target


class OnnxRuntimeBackend:
    """ONNX Runtime on the CUDA execution provider when it is available, else the CPU one.

    CPU settings, measured on the 2-core machine with the paper-size network (frame encoder
    + action decoder per step): all graph optimisations (82 ms with one thread; 123 ms at
    EXTENDED and 137 ms at BASIC, which lack the NCHWc conv layouts); one intra-op thread per
    physical core; and no spinning: while another process kept one core busy, 2 spinning
    threads took 175 ms median per step, 2 non-spinning threads 79 ms, 1 thread 80-82 ms.
    A controller shares its CPU with the rest of the stack, so threads must not spin."""

    def __init__(self, onnx_model: OnnxModel, threads: int | None = None, providers: list[str] | None = None,
                 int8_decoder: bool = False):
        """`int8_decoder`: the action decoder with int8 weights (dynamic quantisation of its
        MatMuls, quantize_action_decoder); the frame encoder stays float (int8 convolutions
        made the EfficientNet about twice as slow in a one-off trial)."""
        import onnxruntime as ort

        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        decoder = quantize_action_decoder(onnx_model) if int8_decoder else onnx_model.action_decoder
        self._encoder = ort.InferenceSession(str(onnx_model.frame_encoder), options, providers=providers)
        self._decoder = ort.InferenceSession(str(decoder), options, providers=providers)
        self.providers = self._encoder.get_providers()
        self.name = f"onnxruntime {self.providers[0].removesuffix('ExecutionProvider')}" + (" int8" if int8_decoder
                                                                                             else "")

    def encode_frames(self, images: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._encoder.run(None, {"images": images, "instruction_embeddings": embeddings})[0]

    def decode_actions(self, context_tokens: np.ndarray) -> np.ndarray:
        return self._decoder.run(None, {"context_tokens": context_tokens})[0]


def tensorrt_unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed"
    if importlib.util.find_spec("torch") is None:
        return "torch (used for the CUDA buffers) is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def build_tensorrt_engine(onnx_path: str | Path, engine_path: str | Path, fp16: bool = True,
                          max_batch: int = 6, workspace_bytes: int = 2 << 30) -> Path:
    """Build a serialized TensorRT engine from one of the ONNX graphs. The batch axis gets an
    optimisation profile of 1 (a cached control step) up to `max_batch` (6 frames, the
    uncached step). FP16 lets TensorRT run layers in half precision; inputs and outputs
    stay float32."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise RuntimeError(f"cannot build a TensorRT engine: {reason}")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated there); 8.x needs it.
    explicit_batch = 0 if int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        rest = tuple(tensor.shape)[1:]
        profile.set_shape(tensor.name, (1, *rest), (1, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    return engine_path


class _TensorRTEngine:
    """One deserialized engine, run with torch CUDA tensors as its device buffers."""

    def __init__(self, engine_path: str | Path):
        import tensorrt as trt
        import torch

        self._trt, self._torch = trt, torch
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise RuntimeError(f"TensorRT cannot load the engine {engine_path} (built by another TensorRT version?)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def run(self, **arrays: np.ndarray) -> list[np.ndarray]:
        torch, trt = self._torch, self._trt
        keep = []
        for name in self.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(arrays[name])).cuda()
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = []
        for name in self.outputs:
            dtype = torch.from_numpy(np.empty(0, trt.nptype(self._engine.get_tensor_dtype(name)))).dtype
            tensor = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self._context.set_tensor_address(name, tensor.data_ptr())
            outputs.append(tensor)
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return [t.float().cpu().numpy() for t in outputs]


class TensorRTBackend:
    """Two TensorRT engines built by `build_tensorrt_engine` from the two ONNX graphs."""

    name = "tensorrt"

    def __init__(self, frame_encoder_engine: str | Path, action_decoder_engine: str | Path):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot run TensorRT: {reason}")
        self._encoder = _TensorRTEngine(frame_encoder_engine)
        self._decoder = _TensorRTEngine(action_decoder_engine)

    def encode_frames(self, images: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        return self._encoder.run(images=images, instruction_embeddings=embeddings)[0]

    def decode_actions(self, context_tokens: np.ndarray) -> np.ndarray:
        return self._decoder.run(context_tokens=context_tokens)[0]


def preprocess_image(image: np.ndarray, size: int) -> np.ndarray:
    """rgb8 image [H, W, 3] uint8 (a ROS Image as numpy) -> [3, size, size] float32 in [0, 1],
    resized bilinearly when it is not size x size already."""
    from ros_vla.rt1.data import square_rgb

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an rgb8 image [H, W, 3] uint8, got {image.shape} {image.dtype}")
    image = square_rgb(image, size)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / np.float32(255)


class RT1Policy:
    """Closed-loop RT-1: one camera image per step in, 11 action tokens out.

    The window holds the last `history_frames` (6) frames. Until 6 frames have been seen,
    the first frame of the episode fills the empty (older) slots, as if the robot had
    stood still before it started; a full forward over the same padded clip gives the same
    result. The window starts over on `reset()` and whenever the instruction embedding
    changes (a new instruction is a new episode: earlier frames were encoded for the old one).

    cache_tokens=True: each step encodes the new frame only and keeps earlier frames' tokens.
    cache_tokens=False: each step encodes all 6 frames again (the uncached full forward).
    """

    def __init__(self, backend: RT1Backend, config: RT1Config, cache_tokens: bool = True):
        self.backend, self.config, self.cache_tokens = backend, config, cache_tokens
        self.tokenizer = ActionTokenizer(config.action_dimensions, config.action_bins)
        self._window: deque[np.ndarray] = deque(maxlen=config.history_frames)
        self._embedding: np.ndarray | None = None

    def reset(self) -> None:
        self._window.clear()
        self._embedding = None

    def step(self, image: np.ndarray, instruction_embedding: np.ndarray) -> np.ndarray:
        """-> action tokens [11] int64 (ActionTokenizer.detokenize turns them into an action)."""
        return self.tokenizer.greedy_tokens(self.step_logits(image, instruction_embedding))

    def step_logits(self, image: np.ndarray, instruction_embedding: np.ndarray) -> np.ndarray:
        """-> action logits [11, 256] for the newest frame."""
        frame = preprocess_image(image, self.config.image_size)
        embedding = self._check_embedding(instruction_embedding)
        if self._embedding is None or not np.array_equal(embedding, self._embedding):
            self._window.clear()
            self._embedding = embedding.copy()
        if self.cache_tokens:
            self._push(self.backend.encode_frames(frame[None], embedding[None])[0])
            context = np.concatenate(self._window)[None]
        else:
            self._push(frame)
            context = self._encode_clip(np.stack(self._window), embedding)
        return self.backend.decode_actions(context)[0]

    def forward_clip(self, frames: np.ndarray, instruction_embedding: np.ndarray) -> np.ndarray:
        """The uncached full forward: rgb8 frames [6, H, W, 3], oldest first -> logits [11, 256]."""
        if len(frames) != self.config.history_frames:
            raise ValueError(f"a clip has {self.config.history_frames} frames, got {len(frames)}")
        clip = np.stack([preprocess_image(f, self.config.image_size) for f in frames])
        return self.backend.decode_actions(self._encode_clip(clip, self._check_embedding(instruction_embedding)))[0]

    def _encode_clip(self, clip: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        tokens = self.backend.encode_frames(clip, np.repeat(embedding[None], len(clip), axis=0))
        return tokens.reshape(1, -1, tokens.shape[-1])

    def _push(self, item: np.ndarray) -> None:
        if not self._window:
            self._window.extend([item] * (self.config.history_frames - 1))
        self._window.append(item)

    def _check_embedding(self, embedding: np.ndarray) -> np.ndarray:
        embedding = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if embedding.shape != (self.config.instruction_embedding_dim,) or not np.isfinite(embedding).all():
            raise ValueError(f"instruction embedding must be {self.config.instruction_embedding_dim} finite "
                             f"numbers, got shape {embedding.shape}")
        return embedding


def load_policy(model_dir: str | Path, backend: str = "onnxruntime", config: RT1Config | None = None) -> RT1Policy:
    """The policy in a `ros-vla train rt1` folder on `backend`; its size is the folder's
    config.json "config" (small, paper) unless `config` is given."""
    if config is None:
        config = RT1Config.named(json.loads((Path(model_dir) / "config.json").read_text())["config"])
    return RT1Policy(open_backend(backend, config, model_dir), config)


def open_backend(name: str, config: RT1Config, model_dir: str | Path):
    """The network in `model_dir` on one of BACKENDS: the two ONNX graphs export_onnx
    writes, the TensorRT engines built from them (same names, .engine), or for torch an
    RT1 state_dict in TORCH_WEIGHTS."""
    model_dir = Path(model_dir)
    if name not in BACKENDS:
        raise ValueError(f"unknown RT-1 backend '{name}': one of {', '.join(BACKENDS)}")
    if name in ("onnxruntime", "onnxruntime-int8"):
        return OnnxRuntimeBackend(OnnxModel.in_directory(model_dir), int8_decoder=name == "onnxruntime-int8")
    if name == "tensorrt":
        graphs = (FRAME_ENCODER_ONNX, ACTION_DECODER_ONNX)
        engines = [model_dir / Path(graph).with_suffix(".engine") for graph in graphs]
        for engine in engines:
            if not engine.is_file():
                raise FileNotFoundError(f"no TensorRT engine at {engine} (ros_vla.rt1.build_tensorrt_engine builds it)")
        return TensorRTBackend(*engines)
    import torch

    from ros_vla.rt1.model import build_rt1

    weights = model_dir / TORCH_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"no torch weights at {weights} (torch.save(model.state_dict()) writes them)")
    model = build_rt1(config)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return TorchBackend(model.to("cuda" if torch.cuda.is_available() else "cpu"))
