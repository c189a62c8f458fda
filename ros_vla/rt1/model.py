"""The RT-1 network (Brohan et al. 2022) in PyTorch, as two parts that also run alone:

- `FrameEncoder`: one image + the instruction embedding -> 8 tokens. An EfficientNet whose
  every block is followed by a FiLM layer conditioned on the instruction, a 1x1 conv to the
  token width with one more FiLM layer, then TokenLearner.
- `ActionDecoder`: the tokens of the last 6 frames (48) -> 11 x 256 action logits. A
  decoder-only transformer, causal over frames, read out by 11 learned action queries.

Splitting there is what lets a controller encode only the newest frame per step and keep
the others' tokens (runtime.RT1Policy), and it is where the ONNX graphs are cut.

The instruction embedding comes from a frozen sentence encoder outside this network
(`ros_vla.text_encoder`; by default all-MiniLM-L6-v2, 384-d), computed once per instruction.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ros_vla.rt1.config import RT1Config


class FiLM(nn.Module):
    """Feature-wise linear modulation (Perez et al. 2018): (1 + gamma(e)) * x + beta(e) per
    channel. gamma and beta start at zero so that the layer is the identity at first and
    the EfficientNet behaves as if unconditioned (what RT-1 needs to start from ImageNet
    weights without disturbing them)."""

    def __init__(self, embedding_dim: int, channels: int):
        super().__init__()
        self.gamma = nn.Linear(embedding_dim, channels)
        self.beta = nn.Linear(embedding_dim, channels)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        gamma = self.gamma(embedding)[:, :, None, None]
        beta = self.beta(embedding)[:, :, None, None]
        return features * (1 + gamma) + beta


def _block_out_channels(block: nn.Module) -> int:
    # timm's EfficientNet blocks end in a pointwise conv: conv_pwl in the inverted residual
    # (MBConv) blocks, conv_pw in the depthwise-separable first stage.
    return (block.conv_pwl if hasattr(block, "conv_pwl") else block.conv_pw).out_channels


class FiLMEfficientNet(nn.Module):
    """images [N, 3, S, S] in [0, 1] + embeddings [N, E] -> feature map [N, image_token_dim, s, s]."""

    def __init__(self, config: RT1Config):
        super().__init__()
        net = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="",
                                output_stride=config.output_stride)
        # ImageNet normalisation lives in the graph, so every backend takes the same [0, 1] input.
        self.register_buffer("mean", torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1))
        self.stem = nn.Sequential(net.conv_stem, net.bn1)
        self.blocks = nn.ModuleList(block for stage in net.blocks for block in stage)
        embedding_dim = config.instruction_embedding_dim
        self.block_films = nn.ModuleList(FiLM(embedding_dim, _block_out_channels(b)) for b in self.blocks)
        self.head = nn.Sequential(net.conv_head, net.bn2)
        # As in RT-1: the backbone's 1536 head channels go through a bias-free 1x1 conv to
        # the token width, and that output is FiLM-conditioned once more.
        self.to_token_dim = nn.Conv2d(net.num_features, config.image_token_dim, kernel_size=1, bias=False)
        self.output_film = FiLM(embedding_dim, config.image_token_dim)
        side = config.feature_map_size
        self.positions = (nn.Parameter(torch.randn(1, config.image_token_dim, side, side) * 0.02)
                          if config.feature_positions else None)

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.stem((images - self.mean) / self.std)
        for block, film in zip(self.blocks, self.block_films):
            x = film(block(x), embeddings)
        x = self.output_film(self.to_token_dim(self.head(x)), embeddings)
        return x if self.positions is None else x + self.positions


class TokenLearner(nn.Module):
    """TokenLearner (Ryoo et al. 2021) as RT-1 uses it: an MLP on the layer-normalised
    feature vectors gives `num_tokens` spatial attention maps (softmax over positions); each
    map pools the (un-normalised) features into one token."""

    def __init__(self, channels: int, num_tokens: int, bottleneck: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.attention_maps = nn.Sequential(nn.Linear(channels, bottleneck), nn.GELU(),
                                            nn.Linear(bottleneck, num_tokens))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        positions = features.flatten(2).transpose(1, 2)  # [N, H*W, C]
        weights = self.attention_maps(self.norm(positions)).transpose(1, 2).softmax(dim=-1)  # [N, T, H*W]
        return weights @ positions  # [N, T, C]


class FrameEncoder(nn.Module):
    """images [N, 3, S, S] in [0, 1] + instruction embeddings [N, E] -> tokens [N, 8, image_token_dim]."""

    def __init__(self, config: RT1Config):
        super().__init__()
        self.film_efficientnet = FiLMEfficientNet(config)
        self.token_learner = TokenLearner(config.image_token_dim, config.tokens_per_frame,
                                          config.token_learner_bottleneck)

    def forward(self, images: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return self.token_learner(self.film_efficientnet(images, embeddings))


class DecoderLayer(nn.Module):
    """Pre-norm transformer layer with the shapes of RT-1's reference implementation:
    attention of num_heads x head_dim (wider than the model), and a feed-forward that is a
    single dense layer of model width (no hidden expansion, no activation), both residual."""

    def __init__(self, config: RT1Config):
        super().__init__()
        width = config.num_heads * config.head_dim
        self.num_heads, self.head_dim, self.dropout = config.num_heads, config.head_dim, config.dropout
        self.attention_norm = nn.LayerNorm(config.model_dim, eps=1e-6)
        self.qkv = nn.Linear(config.model_dim, 3 * width)
        self.attention_out = nn.Linear(width, config.model_dim)
        self.feed_forward_norm = nn.LayerNorm(config.model_dim, eps=1e-6)
        self.feed_forward = nn.Linear(config.model_dim, config.model_dim)
        self.feed_forward_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (self.qkv(self.attention_norm(x))
                   .view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.attention_out(attended.transpose(1, 2).reshape(batch, length, -1))
        return x + self.feed_forward_dropout(self.feed_forward(self.feed_forward_norm(x)))


def attention_mask(config: RT1Config) -> torch.Tensor:
    """[L, L] bool, True where a query may attend to a key; L = 48 frame tokens + 11 action
    queries. A frame token sees every token of its own frame and of earlier frames (causal
    over frames, free within one); no frame token sees the action queries, so the frame
    tokens' states are what they would be without any readout. The action queries see all
    frame tokens and each other."""
    frames = torch.arange(config.context_tokens) // config.tokens_per_frame
    length = config.context_tokens + config.num_action_dimensions
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:config.context_tokens, :config.context_tokens] = frames[None, :] <= frames[:, None]
    mask[config.context_tokens:, :] = True
    return mask


class ActionDecoder(nn.Module):
    """context tokens [B, 48, image_token_dim] (oldest frame first) -> action logits [B, 11, bins].

    Readout by learned action queries: 11 extra tokens, one per action dimension, appended
    after the 48 frame tokens; each query's output gives that dimension's 256 logits. All 11
    come out of one forward pass (RT-1 does not decode its action tokens one by one either),
    each dimension can attend to the evidence it needs, and the head stays small (one
    shared 512 x 256 projection) where a projection of pooled tokens to 11 x 256 would be
    2.9 M parameters. The queries act for the newest frame; they see the whole window.

    Positions are learned per slot of the window (token i of the k-th oldest frame), and
    are added here, after the frame encoder, so a frame's cached tokens carry no position:
    when the window rolls, the same tokens take the next slot's position, exactly as in a
    full forward over the same 6 frames.
    """

    def __init__(self, config: RT1Config):
        super().__init__()
        self.token_embedding = nn.Linear(config.image_token_dim, config.model_dim)
        self.position_embedding = nn.Parameter(torch.randn(config.context_tokens, config.model_dim) * 0.02)
        self.action_queries = nn.Parameter(torch.randn(config.num_action_dimensions, config.model_dim) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        self.to_logits = nn.Linear(config.model_dim, config.action_bins)
        self.register_buffer("attention_mask", attention_mask(config), persistent=False)
        self.num_action_dimensions = config.num_action_dimensions

    def forward(self, context_tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(context_tokens) + self.position_embedding
        queries = self.action_queries.expand(x.shape[0], -1, -1)
        x = torch.cat([x, queries], dim=1)
        for layer in self.layers:
            x = layer(x, self.attention_mask)
        return self.to_logits(x[:, -self.num_action_dimensions:])


class RT1(nn.Module):
    def __init__(self, config: RT1Config):
        super().__init__()
        self.config = config
        self.frame_encoder = FrameEncoder(config)
        self.action_decoder = ActionDecoder(config)

    def forward(self, clips: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """The uncached forward. clips [B, 6, 3, S, S] in [0, 1], oldest frame first;
        embeddings [B, E] (one instruction per clip) -> action logits [B, 11, bins] for the
        newest frame."""
        batch, frames = clips.shape[:2]
        tokens = self.frame_encoder(clips.flatten(0, 1), embeddings.repeat_interleave(frames, dim=0))
        return self.action_decoder(tokens.reshape(batch, frames * tokens.shape[1], tokens.shape[2]))


def build_rt1(config: RT1Config, seed: int = 0) -> RT1:
    """A freshly initialised RT-1 in eval mode; the same seed gives the same weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return RT1(config).eval()


def parameter_breakdown(model: RT1) -> dict[str, int]:
    """Trainable parameters by part (the frozen sentence encoder is not part of RT1)."""
    def count(*modules) -> int:
        return sum(p.numel() for m in modules for p in (m.parameters() if isinstance(m, nn.Module) else [m]))

    backbone = model.frame_encoder.film_efficientnet
    decoder = model.action_decoder
    parts = {
        "efficientnet": count(backbone.stem, backbone.blocks, backbone.head),
        "film_layers": count(backbone.block_films, backbone.output_film),
        "conv1x1_to_tokens": count(backbone.to_token_dim),
        "feature_positions": 0 if backbone.positions is None else backbone.positions.numel(),
        "token_learner": count(model.frame_encoder.token_learner),
        "transformer_embeddings": count(decoder.token_embedding, decoder.position_embedding, decoder.action_queries),
        "transformer_layers": count(decoder.layers),
        "action_head": count(decoder.to_logits),
    }
    parts["total"] = sum(parts.values())
    if parts["total"] != count(model):
        raise AssertionError("parameter breakdown misses part of the model")
    return parts

