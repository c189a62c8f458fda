"""Can: the learned value function p(success | camera views, skill text).

The value function sees what the robot's cameras see: the head camera (is the robot at
the table, what is on it) and the wrist camera (is something in the gripper), each
downsampled to 80x60 RGB, and the skill text as an all-MiniLM-L6-v2 sentence embedding.
It never sees object poses. Its data: value_data.py; its training: train_value.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ros_vla.saycan.config import Skill

VIEWS = ("camera", "wrist")
IMAGE_SIZE = (80, 60)  # width, height of each view as the network sees it


def downsample(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame of any size -> IMAGE_SIZE, uint8 (area averaging)."""
    return np.asarray(Image.fromarray(rgb).resize(IMAGE_SIZE, Image.BOX), np.uint8)


def observation(frames: dict[str, np.ndarray]) -> np.ndarray:
    """The network's image input from one RGB frame per view: uint8 [views, H, W, 3]."""
    return np.stack([downsample(frames[view]) for view in VIEWS])


def render_observation(world) -> np.ndarray:
    """Render the views in a SimWorld as the cameras would deliver them."""
    return observation({view: world.render(world.scene.camera(view))[0] for view in VIEWS})


def build_value_network(text_dim: int = 384, width: int = 64):
    import torch
    from torch import nn

    class ViewEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d((3, 4)), nn.Flatten(), nn.Linear(32 * 12, width), nn.ReLU())

        def forward(self, x):
            return self.net(x)

    class ValueNetwork(nn.Module):
        """Views (uint8 [B, V, H, W, 3]) and text embeddings ([B, D]) -> success logit [B]."""

        def __init__(self):
            super().__init__()
            self.views = nn.ModuleList(ViewEncoder() for _ in VIEWS)
            self.text = nn.Sequential(nn.Linear(text_dim, width), nn.ReLU())
            # The text gates the image features (FiLM-like) and is also concatenated: which
            # parts of the scene matter depends on the skill.
            self.gate = nn.Linear(text_dim, width * len(VIEWS))
            self.head = nn.Sequential(nn.Linear(width * (len(VIEWS) + 1), 128), nn.ReLU(), nn.Linear(128, 1))

        def forward(self, images, text):
            x = images.float().permute(0, 1, 4, 2, 3) / 255.0
            features = torch.cat([encoder(x[:, i]) for i, encoder in enumerate(self.views)], dim=1)
            features = features * torch.sigmoid(self.gate(text)) * 2
            return self.head(torch.cat([features, self.text(text)], dim=1))[:, 0]

    return ValueNetwork()


class ValueFunction:
    """The trained network with its text encoder: p(success) per skill text from one observation."""

    def __init__(self, model_dir: str | Path, encoder=None):
        import torch

        from ros_vla.text_encoder import MiniLMInstructionEncoder

        self._torch = torch
        model_dir = Path(model_dir)
        meta = json.loads((model_dir / "config.json").read_text())
        self.network = build_value_network(meta["text_dim"], meta["width"])
        self.network.load_state_dict(torch.load(model_dir / "value_function.pt", map_location="cpu"))
        self.network.eval()
        self.encoder = encoder or MiniLMInstructionEncoder()
        self._embeddings: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._embeddings]
        if missing:
            self._embeddings.update(zip(missing, self.encoder.embed(missing)))
        return np.stack([self._embeddings[t] for t in texts])

    def predict(self, obs: np.ndarray, texts: list[str]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            images = torch.from_numpy(np.repeat(obs[None], len(texts), axis=0))
            logits = self.network(images, torch.from_numpy(self.embed(texts)))
            return torch.sigmoid(logits).numpy().astype(float)


class RenderedValueAffordance:
    """Affordances in the headless simulator: render the cameras, ask the value function."""

    def __init__(self, world, value_function: ValueFunction):
        self.world = world
        self.value_function = value_function

    def __call__(self, skills: list[Skill]) -> np.ndarray:
        return self.value_function.predict(render_observation(self.world), [s.text for s in skills])
