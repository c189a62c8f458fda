"""The MIAVLM network (Tan et al., ICASSP 2025) in PyTorch, and its weights files.

    view v ─► ViewEncoder (shared CNN, stride 8) ─► 64 image tokens ─┐ (same weights, every view)
    soft prompts P (8 learned queries) ─► VisualExtractor: 6 decoder blocks ─► O_v (8 tokens)
    O_v ─► mean = summary s_v ─► MultiheadSampler: MLP(s_v) = m=4 tokens, each scored against
           every prompt, mean over prompts, mean over heads ─► score_v ─► softmax over views = w_v
    MAP fusion: F = sum_v w_v O_v
    question ─► all-MiniLM-L6-v2 (frozen, 384-d) ─► AnswerHead(F, q) ─► logit of "yes"

Nothing mixes views before the softmax-weighted sum, no view carries an index, and a sum is
symmetric: the answer is the same for any order of the views, for any number of them.
The visual side does not see the question, so one pass over a scene's views answers every
question about it (training uses six per scene).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ros_vla.miavlm.config import COLORS, KINDS, SIZES, WEIGHTS_FILE, BenchmarkConfig, MIAVLMConfig

VARIANTS = ("multiview", "tiled")


def sinusoidal_positions(rows: int, columns: int, dim: int) -> torch.Tensor:
    """[rows * columns, dim] 2-D sine/cosine positions (half the channels per axis): defined
    for any grid, so the tiled baseline's larger image needs no other parameters."""
    quarter = dim // 4
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(quarter) / quarter)
    y, x = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(columns, dtype=torch.float32),
                          indexing="ij")
    parts = []
    for coordinate in (y.reshape(-1, 1), x.reshape(-1, 1)):
        angles = coordinate * frequencies
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1)


class ViewEncoder(nn.Module):
    """One view (uint8 RGB) to a grid of image tokens: a small CNN with stride 8."""

    def __init__(self, config: MIAVLMConfig):
        super().__init__()
        channels = (3, *config.encoder_channels)
        layers = []
        for index, (inputs, outputs) in enumerate(zip(channels[:-1], channels[1:])):
            layers += [nn.Conv2d(inputs, outputs, 3, stride=2, padding=1), nn.GroupNorm(8, outputs), nn.GELU()]
            if index == 1:  # one more layer at stride 4, where shapes are a few pixels across
                layers += [nn.Conv2d(outputs, outputs, 3, padding=1), nn.GroupNorm(8, outputs), nn.GELU()]
        layers.append(nn.Conv2d(channels[-1], config.model_dim, 1))
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(config.model_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[N, H, W, 3] uint8 -> [N, H/8 * W/8, model_dim]."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        features = self.layers(x)
        n, dim, rows, columns = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        return self.norm(tokens + sinusoidal_positions(rows, columns, dim).to(tokens))


class ExtractorBlock(nn.Module):
    """A transformer decoder block (pre-norm): the queries attend to each other, then to
    one view's image tokens, then a feed-forward layer."""

    def __init__(self, config: MIAVLMConfig):
        super().__init__()
        dim = config.model_dim
        self.self_norm, self.cross_norm, self.ff_norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, config.num_heads, batch_first=True)
        self.cross_attention = nn.MultiheadAttention(dim, config.num_heads, batch_first=True)
        self.feedforward = nn.Sequential(nn.Linear(dim, config.feedforward_dim), nn.GELU(),
                                         nn.Linear(config.feedforward_dim, dim))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.self_norm(queries)
        queries = queries + self.self_attention(x, x, x, need_weights=False)[0]
        x = self.cross_norm(queries)
        queries = queries + self.cross_attention(x, tokens, tokens, need_weights=False)[0]
        return queries + self.feedforward(self.ff_norm(queries))


class VisualExtractor(nn.Module):
    """Learned soft prompts read one view each through `extractor_blocks` decoder blocks."""

    def __init__(self, config: MIAVLMConfig):
        super().__init__()
        self.prompts = nn.Parameter(torch.randn(config.num_prompts, config.model_dim) * 0.02)
        self.blocks = nn.ModuleList(ExtractorBlock(config) for _ in range(config.extractor_blocks))
        self.norm = nn.LayerNorm(config.model_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N, T, dim] image tokens of N views -> [N, num_prompts, dim]."""
        queries = self.prompts.expand(tokens.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, tokens)
        return self.norm(queries)


class MultiheadSampler(nn.Module):
    """How much each view counts: its summary token becomes `sampler_heads` tokens (a
    2-layer MLP), each scored against every soft prompt; the scores are averaged over the
    prompts, then over the heads, and normalised over the views (softmax)."""

    def __init__(self, config: MIAVLMConfig):
        super().__init__()
        self.heads = config.sampler_heads
        dim = config.model_dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, self.heads * dim))

    def forward(self, outputs: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """[B, V, K, dim] extractor outputs, [K, dim] prompts -> [B, V] weights summing to 1."""
        batch, views, _, dim = outputs.shape
        summary = outputs.mean(dim=2)
        heads = self.mlp(summary).view(batch, views, self.heads, dim)
        scores = torch.einsum("bvhd,kd->bvhk", heads, prompts) / math.sqrt(dim)
        return torch.softmax(scores.mean(dim=3).mean(dim=2), dim=1)


class AnswerHead(nn.Module):
    """The question (a sentence embedding) pools the fused tokens by attention; an MLP on
    the pooled vector, the projected question and their product gives the logit of yes.

    Sentence embeddings of questions that differ in one word ("is the block red?", "... blue?")
    share most of their length; `question_mean` (the mean embedding of the training
    questions, set by training, saved with the weights) is subtracted so that what tells
    them apart is what the projection sees."""

    def __init__(self, config: MIAVLMConfig):
        super().__init__()
        dim = config.model_dim
        self.register_buffer("question_mean", torch.zeros(config.question_dim))
        self.question = nn.Sequential(nn.Linear(config.question_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.mlp = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, fused: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """[B, K, dim] fused tokens, [B, Q, 384] questions -> [B, Q] logits."""
        q = self.question(embeddings - self.question_mean)
        attention = torch.softmax(q @ fused.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        pooled = attention @ fused
        return self.mlp(torch.cat([pooled, q, pooled * q], dim=-1)).squeeze(-1)


class MIAVLM(nn.Module):
    def __init__(self, config: MIAVLMConfig = MIAVLMConfig()):
        super().__init__()
        self.config = config
        self.encoder = ViewEncoder(config)
        self.extractor = VisualExtractor(config)
        self.sampler = MultiheadSampler(config)
        self.head = AnswerHead(config)
        # Linear read-outs of the target's attributes from the fused tokens, for an auxiliary
        # training loss (see README.md: without it the colour questions stayed at chance).
        self.probes = nn.ModuleDict({name: nn.Linear(config.model_dim, len(values))
                                     for name, values in (("color", COLORS), ("shape", KINDS), ("size", SIZES))})

    def attribute_logits(self, fused: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B, K, dim] fused tokens -> logits over each attribute's values, [B, n values]."""
        pooled = fused.mean(dim=1)
        return {name: probe(pooled) for name, probe in self.probes.items()}

    def view_outputs(self, views: torch.Tensor) -> torch.Tensor:
        """[B, V, H, W, 3] uint8 views -> the extractor's tokens of each view on its own,
        [B, V, K, dim]. All B x V views go through the encoder and the extractor as one batch."""
        batch, count = views.shape[:2]
        outputs = self.extractor(self.encoder(views.flatten(0, 1)))
        return outputs.view(batch, count, *outputs.shape[1:])

    def fuse_outputs(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MAP fusion of per-view tokens [B, V, K, dim] -> fused tokens [B, K, dim] and view
        weights [B, V] (the softmax over the views and the weighted sum: symmetric in V)."""
        weights = self.sampler(outputs, self.extractor.prompts)
        return torch.einsum("bv,bvkd->bkd", weights, outputs), weights

    def fuse(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, V, H, W, 3] uint8 views -> fused tokens [B, K, dim] and view weights [B, V]."""
        return self.fuse_outputs(self.view_outputs(views))

    def forward(self, views: torch.Tensor, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Views [B, V, H, W, 3] uint8 and questions [B, Q, 384] -> logits of yes [B, Q] and
        the view weights [B, V]."""
        fused, weights = self.fuse(views)
        return self.head(fused, embeddings), weights


def tile_views(views: torch.Tensor, grid: int = 3) -> torch.Tensor:
    """The naive baseline's input: up to grid x grid views [B, V, S, S, 3] laid out row by
    row in one [B, 1, grid*S, grid*S, 3] image, black where there are fewer views."""
    batch, count, size = views.shape[:3]
    if count > grid * grid:
        raise ValueError(f"cannot tile {count} views in a {grid}x{grid} grid")
    canvas = views.new_zeros(batch, grid * grid, size, size, 3)
    canvas[:, :count] = views
    rows = canvas.view(batch, grid, grid, size, size, 3).permute(0, 1, 3, 2, 4, 5)
    return rows.reshape(batch, 1, grid * size, grid * size, 3)


def view_input(rgb: np.ndarray, fx: float | None, benchmark: BenchmarkConfig = BenchmarkConfig()) -> np.ndarray:
    """A camera image (H x W x 3 uint8) as the network's view: the centred square that spans
    the benchmark's field of view (given the camera's focal length `fx` in pixels; without
    it, the largest centred square), resized to image_size x image_size."""
    from PIL import Image

    height, width = rgb.shape[:2]
    side = min(height, width)
    if fx is not None and fx > 0:
        side = int(round(min(side, benchmark.image_size * fx / benchmark.focal_px)))
    top, left = (height - side) // 2, (width - side) // 2
    crop = np.ascontiguousarray(rgb[top:top + side, left:left + side])
    if side == benchmark.image_size:
        return crop
    return np.asarray(Image.fromarray(crop).resize((benchmark.image_size, benchmark.image_size),
                                                   Image.BILINEAR, reducing_gap=2.0))


# ----------------------------------------------------------------------------- weights files
def save_checkpoint(path: str | Path, model: MIAVLM, variant: str, benchmark: BenchmarkConfig, training: dict):
    """The weights and what they are. `path`: a .pt file, or a model folder (ros_vla.models:
    miavlm.pt, and config.json with the same record but the weights)."""
    path = Path(path)
    record = {"variant": variant, "config": model.config.to_dict(), "benchmark": benchmark.to_dict(),
              "training": training}
    if path.suffix != ".pt":
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(record, indent=2) + "\n")
        path = path / WEIGHTS_FILE
    torch.save({**record, "state_dict": model.state_dict()}, path)


def load_checkpoint(path: str | Path) -> tuple[MIAVLM, dict]:
    """The network in eval mode and the file's metadata (variant, benchmark, training)."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = MIAVLM(MIAVLMConfig.from_dict(saved["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model, {"variant": saved["variant"], "benchmark": BenchmarkConfig.from_dict(saved["benchmark"]),
                   "training": saved["training"]}


def answer_logits(model: MIAVLM, variant: str, views: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Logits [B, Q] for either variant: the tiled baseline sees its views as one image."""
    if variant == "tiled":
        views = tile_views(views)
    return model(views, embeddings)[0]

