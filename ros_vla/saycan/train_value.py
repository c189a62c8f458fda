"""Train the SayCan value function on recorded skills (value_data.py); episodes are split
into training and validation sets, and the figures go into config.json.

    ros-vla train saycan-value --data data/saycan/value_data.npz --out models/saycan_value
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ros_vla.saycan.value_model import IMAGE_SIZE, VIEWS, build_value_network


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
    (out / "config.json").write_text(json.dumps({"text_dim": int(embeddings.shape[1]), "width": 64,
                                                         "views": list(VIEWS), "image_size": list(IMAGE_SIZE),
                                                         "training": result}, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SayCan value function: train on recorded data")
    parser.add_argument("--data", default="data/saycan/value_data.npz")
    parser.add_argument("--out", default="models/saycan_value")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with np.load(args.data) as f:
        recorded = {k: f[k] for k in f.files}
    print(json.dumps(train_value_function(recorded, Path(args.out), args.epochs, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
