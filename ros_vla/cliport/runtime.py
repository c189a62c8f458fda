"""CLIPort on ONNX Runtime: two graphs, pick (image, language) -> logits and place (image,
language, pick pixel) -> logits, exported from the torch model. `OnnxCLIPort` offers the
same pick_logits/place_logits as the torch module, so CLIPortAgent runs on either.

The transport's correlation is exported in its direct (grouped conv) form: the FFT form
that training uses has no ONNX export. Both give the same logits (tested to 1e-3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ros_vla.cliport.model import CLIPort, cross_correlate_direct

PICK_ONNX = "cliport_pick.onnx"
PLACE_ONNX = "cliport_place.onnx"


class _Pick(nn.Module):
    def __init__(self, model: CLIPort):
        super().__init__()
        self.model = model

    def forward(self, image, language):
        return self.model.pick_logits(image, language)


class _Place(nn.Module):
    def __init__(self, model: CLIPort):
        super().__init__()
        self.model = model

    def forward(self, image, language, pick):
        return self.model.place_logits(image, language, pick)


def export_onnx(model: CLIPort, out_dir: str | Path, opset: int = 17) -> tuple[Path, Path]:
    """Write PICK_ONNX and PLACE_ONNX (batch 1) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    h, w = cfg.heightmap.shape
    image, language = torch.zeros(1, 6, h, w), torch.zeros(1, cfg.language_dim)
    pick = torch.tensor([[h // 2, w // 2]])
    model.eval()
    correlate, model.correlate = model.correlate, cross_correlate_direct
    try:
        with torch.no_grad():
            torch.onnx.export(_Pick(model), (image, language), out / PICK_ONNX, input_names=["image", "language"],
                              output_names=["pick_logits"], opset_version=opset, dynamo=False)
            torch.onnx.export(_Place(model), (image, language, pick), out / PLACE_ONNX,
                              input_names=["image", "language", "pick"], output_names=["place_logits"],
                              opset_version=opset, dynamo=False)
    finally:
        model.correlate = correlate
    return out / PICK_ONNX, out / PLACE_ONNX


class OnnxCLIPort:
    """The exported graphs behind the torch module's inference interface."""

    def __init__(self, model_dir: str | Path, cfg, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        folder = Path(model_dir)
        self.pick = ort.InferenceSession(str(folder / PICK_ONNX), options, providers=providers)
        self.place = ort.InferenceSession(str(folder / PLACE_ONNX), options, providers=providers)
        self.cfg = cfg

    def eval(self):
        return self

    def pick_logits(self, image: torch.Tensor, language: torch.Tensor) -> torch.Tensor:
        out = self.pick.run(None, {"image": image.numpy(), "language": language.numpy()})[0]
        return torch.from_numpy(out)

    def place_logits(self, image: torch.Tensor, language: torch.Tensor, pick: torch.Tensor) -> torch.Tensor:
        out = self.place.run(None, {"image": image.numpy(), "language": language.numpy(),
                                    "pick": np.asarray(pick, np.int64)})[0]
        return torch.from_numpy(out)
