"""Can: a learned value function p(success | camera views, skill text), and its data.

The value function sees what the robot's cameras see: the head camera (is the robot at
the table, what is on it) and the wrist camera (is something in the gripper), each
downsampled to 80x60 RGB, and the skill text as an all-MiniLM-L6-v2 sentence embedding.
It never sees object poses.

Training data comes from skills executed in the headless simulator: episodes of random
library skills from a fresh scene, each one recorded as (views before it, skill text,
success from simulator ground truth) and then left in effect, so later skills start from
varied states (blocks in bowls or stacked, an object in the gripper, the base at the
user). Labels are outcomes, not rules: a pick at the user station fails because the arm
cannot reach, a pick of a block in a bowl grabs the bowl, "put it down" fails with an
empty gripper.

    python -m ros_vla.saycan.affordance data --episodes 80 --out data/saycan/value_data.npz
    python -m ros_vla.saycan.affordance train --data data/saycan/value_data.npz --out models/saycan_value
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ros_vla.paths import config_file
from ros_vla.saycan.config import Skill, SkillLibrary, load_skill_library
from ros_vla.sim.scene import SceneConfig, load_scene

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
        meta = json.loads((model_dir / "value_function.json").read_text())
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


# ----------------------------------------------------------------- data from the simulator

def generate_data(scene: SceneConfig, library: SkillLibrary, episodes: int, skills_per_episode: int,
                  first_seed: int, progress=print) -> dict:
    """Run random library skills in fresh scenes; one sample per executed skill."""
    import torch

    from ros_vla.robot.motion import MotionConfig
    from ros_vla.saycan.sim_skills import execute_skill
    from ros_vla.sim.world import SimWorld

    torch.set_num_threads(1)
    cfg = MotionConfig()
    candidates = [s for s in library.skills if s.executor != "done"]
    # Each kind of skill about as often as the others, whatever the number of objects.
    kind_weight = {"pick_place": 0.45, "pick": 0.2, "navigate": 0.15, "put_down": 0.2}
    weights = np.array([kind_weight.get(s.executor, 0.1) / sum(c.executor == s.executor for c in candidates)
                        for s in candidates])
    rng = np.random.default_rng(first_seed)
    images, texts, labels, episode_ids, details = [], [], [], [], []
    world = SimWorld(scene, seed=first_seed, renderer="gl")
    started = time.perf_counter()
    try:
        for episode in range(episodes):
            world.reset(first_seed + episode)
            world.step(60)
            for _ in range(skills_per_episode):
                skill = candidates[rng.choice(len(candidates), p=weights / weights.sum())]
                images.append(render_observation(world))
                success, detail = execute_skill(world, skill, cfg)
                texts.append(skill.text)
                labels.append(success)
                episode_ids.append(episode)
                details.append(detail)
            if progress and (episode + 1) % 10 == 0:
                progress(f"episode {episode + 1}/{episodes}: {len(labels)} samples, "
                         f"{np.mean(labels) * 100:.0f}% successes, {time.perf_counter() - started:.0f} s")
    finally:
        world.close()
    return {"images": np.stack(images), "texts": np.array(texts), "labels": np.array(labels, bool),
            "episodes": np.array(episode_ids), "details": np.array(details), "views": np.array(VIEWS)}


def train_value_function(data: dict, out: Path, epochs: int, seed: int, validation_fraction: float = 0.2) -> dict:
    """Fit the network; episodes are split into training and validation sets."""
    import torch

    from ros_vla.text_encoder import MiniLMInstructionEncoder

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    texts = [str(t) for t in data["texts"]]
    unique = sorted(set(texts))
    table = dict(zip(unique, MiniLMInstructionEncoder().embed(unique)))
    embeddings = np.stack([table[t] for t in texts])
    labels = data["labels"].astype(np.float32)
    episodes = np.unique(data["episodes"])
    held_out = set(rng.choice(episodes, max(1, int(len(episodes) * validation_fraction)), replace=False).tolist())
    val = np.array([e in held_out for e in data["episodes"]])
    images = torch.from_numpy(data["images"])
    text = torch.from_numpy(embeddings)
    target = torch.from_numpy(labels)
    network = build_value_network(embeddings.shape[1])
    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-3)
    train_idx = np.flatnonzero(~val)
    started = time.perf_counter()
    for epoch in range(epochs):
        network.train()
        order = rng.permutation(train_idx)
        for start in range(0, len(order), 64):
            batch = torch.from_numpy(order[start:start + 64])
            batch_images = images[batch]
            # Small shifts: the camera pose and lighting are not pixel-exact on a real robot.
            dx, dy = rng.integers(-2, 3, size=2)
            batch_images = torch.roll(batch_images, shifts=(int(dy), int(dx)), dims=(2, 3))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(network(batch_images, text[batch]),
                                                                        target[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    with torch.inference_mode():
        p = torch.sigmoid(network(images, text)).numpy()

    def metrics(mask):
        y, q = labels[mask].astype(bool), p[mask]
        return {"samples": int(mask.sum()), "success_rate": float(y.mean()),
                "accuracy": float(((q >= 0.5) == y).mean()),
                "brier": float(np.mean((q - y) ** 2)),
                "majority_accuracy": float(max(y.mean(), 1 - y.mean()))}

    per_executor = {}
    for kind in ("pick up the", "go to the", "put it down"):
        mask = val & np.array([t.startswith(kind) for t in texts])
        if mask.any():
            per_executor[kind] = metrics(mask)
    result = {"train": metrics(~val), "validation": metrics(val), "validation_by_skill_prefix": per_executor,
              "epochs": epochs, "train_wall_s": round(time.perf_counter() - started, 1),
              "parameters": sum(p.numel() for p in network.parameters())}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), out / "value_function.pt")
    (out / "value_function.json").write_text(json.dumps({"text_dim": int(embeddings.shape[1]), "width": 64,
                                                         "views": list(VIEWS), "image_size": list(IMAGE_SIZE),
                                                         "training": result}, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SayCan value function: simulator data and training")
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="record executed skills in the headless simulator")
    data.add_argument("--episodes", type=int, default=80)
    data.add_argument("--skills-per-episode", type=int, default=8)
    data.add_argument("--first-seed", type=int, default=5000)
    data.add_argument("--out", default="data/saycan/value_data.npz")
    train = sub.add_parser("train", help="train the value function on recorded data")
    train.add_argument("--data", default="data/saycan/value_data.npz")
    train.add_argument("--out", default="models/saycan_value")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "data":
        scene = load_scene(config_file("scene_tabletop.yaml"))
        library = load_skill_library(config_file("saycan_skills.yaml"), scene)
        recorded = generate_data(scene, library, args.episodes, args.skills_per_episode, args.first_seed)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **recorded)
        print(f"{len(recorded['labels'])} samples ({recorded['labels'].mean() * 100:.0f}% successes) -> {out}")
        return 0
    with np.load(args.data) as f:
        recorded = {k: f[k] for k in f.files}
    print(json.dumps(train_value_function(recorded, Path(args.out), args.epochs, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def data_main(argv: list[str] | None = None) -> int:
    """ros-vla demos saycan-value ..."""
    return main(["data", *(argv or [])])


def train_main(argv: list[str] | None = None) -> int:
    """ros-vla train saycan-value ..."""
    return main(["train", *(argv or [])])
