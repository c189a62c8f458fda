"""CLIPort (Shridhar et al., CoRL 2021): language-conditioned pick (attention) and place
(transport) over a top-down RGB-D heightmap.

Each of the three networks (pick attention, transport key, transport query) is a
two-stream FCN:

    RGB-D (6 ch) ─► spatial stream: ResNet encoder-decoder ─► laterals ─┐      ┌► spatial head ─┐
    RGB (3 ch) ──► semantic stream: trunk ─► decoder ◄── ⊙ language ◄───┘      └► semantic head ─┴► + ─► logits

The semantic decoder multiplies its features element-wise by a projection of the
instruction embedding at three stages and takes the spatial decoder's features in
through lateral connections (concatenation + 1x1 conv) wherever the resolutions match.

- Pick: one logit per pixel, softmax over the heightmap.
- Place: the query net sees a crop around the pick, rotated n_rotations ways; its
  features are cross-correlated with the key net's features of the whole heightmap,
  giving n_rotations x H x W logits, softmax over all of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ros_vla.cliport.config import CLIPortConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(1, channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(1, channels_out)
        self.skip = (nn.Identity() if stride == 1 and channels_in == channels_out
                     else nn.Conv2d(channels_in, channels_out, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.skip(x))


class ResNetEncoder(nn.Module):
    """Stride 1 stem, then one stride-2 residual stage per further width."""

    def __init__(self, channels_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.stem = ResidualBlock(channels_in, widths[0])
        self.stages = nn.ModuleList(ResidualBlock(a, b, stride=2) for a, b in zip(widths[:-1], widths[1:]))
        self.channels = widths[-1]
        self.stride = 2 ** (len(widths) - 1)

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class UpStage(nn.Module):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()
        self.block = ResidualBlock(channels_in, channels_out)

    def forward(self, x):
        return self.block(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class SpatialStream(nn.Module):
    """Transporter-style ResNet encoder-decoder on RGB-D; returns its decoder features by stride."""

    def __init__(self, channels_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.encoder = ResNetEncoder(channels_in, widths)
        reversed_widths = widths[::-1]
        self.decoder = nn.ModuleList(UpStage(a, b) for a, b in zip(reversed_widths[:-1], reversed_widths[1:]))

    def forward(self, x) -> dict[int, torch.Tensor]:
        features = self.encoder(x)
        stride = self.encoder.stride
        by_stride = {stride: features}
        for stage in self.decoder:
            features = stage(features)
            stride //= 2
            by_stride[stride] = features
        return by_stride


class ClipVisualTrunk(nn.Module):
    """CLIP ModifiedResNet (RN50) up to layer4 (stride 32, 2048 ch), without the attention
    pool; frozen, as in CLIPort."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.channels, self.stride = 2048, 32
        for parameter in self.visual.parameters():
            parameter.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb01):
        v = self.visual
        x = (rgb01 - self.mean) / self.std
        x = v.act1(v.bn1(v.conv1(x)))
        x = v.act2(v.bn2(v.conv2(x)))
        x = v.avgpool(v.act3(v.bn3(v.conv3(x))))
        return v.layer4(v.layer3(v.layer2(v.layer1(x))))


class SemanticStream(nn.Module):
    """Trunk on RGB, then a decoder back to stride 1 with language products at its first
    three stages and lateral inputs from the spatial stream."""

    def __init__(self, trunk: nn.Module, spatial_widths: tuple[int, ...], language_dim: int, out_dim: int):
        super().__init__()
        self.trunk = trunk
        self.top_stride = trunk.stride
        self.spatial_strides = {2 ** i: w for i, w in enumerate(spatial_widths)}
        channels = trunk.channels
        n_up = int(math.log2(self.top_stride))
        widths = [max(spatial_widths[0], channels // 2 ** (i + 1)) for i in range(n_up)]
        self.ups = nn.ModuleList()
        self.language = nn.ModuleList()
        self.laterals = nn.ModuleDict()
        stride = self.top_stride
        for i in range(n_up + 1):
            if i < 3:
                self.language.append(nn.Linear(language_dim, channels))
            if stride in self.spatial_strides:
                self.laterals[str(stride)] = nn.Conv2d(channels + self.spatial_strides[stride], channels, 1)
            if i < n_up:
                self.ups.append(UpStage(channels, widths[i]))
                channels = widths[i]
                stride //= 2
        self.head = nn.Conv2d(channels, out_dim, 1)

    def forward(self, rgb01, language, spatial: dict[int, torch.Tensor]):
        """One image and many texts (image batch 1, language batch T) runs the trunk once
        and the language-conditioned decoder T times, as a batch."""
        x = self.trunk(rgb01)
        stride = self.top_stride
        for i in range(len(self.ups) + 1):
            if i < len(self.language):
                x = x * self.language[i](language)[:, :, None, None]
            if str(stride) in self.laterals:
                lateral = spatial[stride].expand(x.shape[0], -1, -1, -1)
                x = self.laterals[str(stride)](torch.cat([x, lateral], dim=1))
            if i < len(self.ups):
                x = self.ups[i](x)
                stride //= 2
        return self.head(x)


class TwoStreamFCN(nn.Module):
    """Per-pixel features from RGB-D + language: spatial head + semantic head."""

    def __init__(self, cfg: CLIPortConfig, out_dim: int, clip_visual: nn.Module | None = None):
        super().__init__()
        self.spatial = SpatialStream(cfg.input_channels, cfg.widths)
        self.spatial_head = nn.Conv2d(cfg.widths[0], out_dim, 1)
        if cfg.semantic_stream == "clip_rn50":
            trunk = ClipVisualTrunk(clip_visual)
        elif cfg.semantic_stream == "resnet":
            trunk = ResNetEncoder(3, cfg.widths)
        else:
            raise ValueError(f"semantic_stream must be 'resnet' or 'clip_rn50', got '{cfg.semantic_stream}'")
        self.semantic = SemanticStream(trunk, cfg.widths, cfg.language_dim, out_dim)
        self.stride = max(trunk.stride, 2 ** (len(cfg.widths) - 1))

    def forward(self, image, language):
        """image: [B, 6, H, W] (rgb in 0..1, height / MAX_HEIGHT_M x3); language: [B, L].
        B may be 1 for the image and T for the language: the spatial stream and the semantic
        trunk, which do not depend on the text, then run once for all T texts."""
        spatial = self.spatial(image)
        return self.spatial_head(spatial[1]) + self.semantic(image[:, :3], language, spatial)


def _pad_to_multiple(x: torch.Tensor, multiple: int, extra: int = 0) -> tuple[torch.Tensor, int, int]:
    """Zero-pad bottom/right so H and W (+ `extra` on each side) are multiples of `multiple`."""
    h, w = x.shape[-2:]
    pad_h = (-(h + 2 * extra)) % multiple
    pad_w = (-(w + 2 * extra)) % multiple
    return F.pad(x, (extra, extra + pad_w, extra, extra + pad_h)), pad_h, pad_w


def cross_correlate(keys: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """out[b, r, i, j] = sum_{d,u,v} keys[b, d, i+u, j+v] * kernels[b, r, d, u, v]: what
    conv2d computes, through FFTs, which on a CPU is many times faster than a direct
    convolution with 36 large kernels. Rows/columns i, j whose kernel window runs past the
    key map's edge wrap around and must be discarded by the caller."""
    height, width = keys.shape[-2:]
    key_spectrum = torch.fft.rfft2(keys, s=(height, width))
    kernel_spectrum = torch.fft.rfft2(kernels, s=(height, width))
    product = (key_spectrum[:, None] * kernel_spectrum.conj()).sum(dim=2)
    return torch.fft.irfft2(product, s=(height, width))


def cross_correlate_direct(keys: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The same correlation as a grouped conv2d, over the valid window positions only; what
    the ONNX export uses (ONNX has no real FFT that exporters emit)."""
    # Plain ints: the ONNX exporter needs the kernel's shape as constants, not traced values.
    b, r, d, kh, kw = (int(v) for v in kernels.shape)
    height, width = (int(v) for v in keys.shape[-2:])
    out = F.conv2d(keys.reshape(1, b * d, height, width), kernels.reshape(b * r, d, kh, kw), groups=b)
    return out.reshape(b, r, height - kh + 1, width - kw + 1)


class CLIPort(nn.Module):
    def __init__(self, cfg: CLIPortConfig, clip_visual_factory=None):
        super().__init__()
        self.cfg = cfg
        make_visual = clip_visual_factory or (lambda: None)
        self.attention = TwoStreamFCN(cfg, 1, make_visual())
        self.key = TwoStreamFCN(cfg, cfg.transport_dim, make_visual())
        self.query = TwoStreamFCN(cfg, cfg.transport_dim, make_visual())
        self.correlate = cross_correlate  # FFT for training and eager inference; export swaps in the direct form
        angles = torch.arange(cfg.n_rotations) * (2 * math.pi / cfg.n_rotations)
        self.register_buffer("angles", angles, persistent=False)

    # ----------------------------------------------------------------- pick
    def pick_logits(self, image, language) -> torch.Tensor:
        """[B, H*W] logits over pixels."""
        h, w = image.shape[-2:]
        padded, _, _ = _pad_to_multiple(image, self.attention.stride)
        logits = self.attention(padded, language)[:, 0, :h, :w]
        return logits.reshape(logits.shape[0], -1)

    # ----------------------------------------------------------------- place
    @staticmethod
    def rotated_windows(maps, centres, size: int, angles: torch.Tensor) -> torch.Tensor:
        """[B * R, C, size, size]: the window around each centre pixel, turned by each
        rotation angle (what the picked object looks like after the gripper turns it by
        that angle). Window index size // 2 is the centre pixel itself."""
        b, c, h, w = maps.shape
        offsets = torch.arange(size, dtype=maps.dtype, device=maps.device) - size // 2
        d_row, d_col = torch.meshgrid(offsets, offsets, indexing="ij")
        cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
        # Rows run along x and columns along y, so a positive angle turns rows towards columns;
        # output pixel (dr, dc) shows the source point turned back by the angle.
        src_row = cos * d_row + sin * d_col
        src_col = -sin * d_row + cos * d_col
        windows = []
        for i in range(b):
            row = centres[i, 0].to(maps.dtype) + src_row
            col = centres[i, 1].to(maps.dtype) + src_col
            grid = torch.stack([(col + 0.5) / w * 2 - 1, (row + 0.5) / h * 2 - 1], dim=-1)
            windows.append(F.grid_sample(maps[i:i + 1].expand(len(angles), c, h, w), grid,
                                         mode="bilinear", padding_mode="zeros", align_corners=False))
        return torch.cat(windows)

    def query_features(self, image, language, pick_rc) -> torch.Tensor:
        """[B * R, D, crop, crop] query kernels."""
        cfg = self.cfg
        r = cfg.n_rotations
        if cfg.query_rotation == "input":
            crops = self.rotated_windows(image, pick_rc, cfg.crop_size, self.angles)
            crops, _, _ = _pad_to_multiple(crops, self.query.stride)
            return self.query(crops, language.repeat_interleave(r, dim=0))[:, :, :cfg.crop_size, :cfg.crop_size]
        # "features": one unrotated crop wide enough for every turn of the inner window, its
        # features turned instead of the pixels (exact only for a rotation-equivariant net).
        wide = int(math.ceil(cfg.crop_size * math.sqrt(2) / self.query.stride)) * self.query.stride + self.query.stride
        crops = self.rotated_windows(image, pick_rc, wide, self.angles[:1] * 0)
        features = self.query(crops, language)
        centre = torch.full((image.shape[0], 2), wide // 2, device=image.device)
        return self.rotated_windows(features, centre, cfg.crop_size, self.angles)

    def place_logits(self, image, language, pick_rc) -> torch.Tensor:
        """[B, R*H*W] logits over (rotation, pixel). One image (batch 1) with B texts and
        B pick pixels shares the key stream's text-independent work."""
        cfg = self.cfg
        _, _, h, w = image.shape
        b = language.shape[0]
        r = cfg.n_rotations
        pad = cfg.crop_size // 2
        padded, _, _ = _pad_to_multiple(image, self.key.stride, extra=pad)
        keys = self.key(padded, language)[:, :, :h + 2 * pad, :w + 2 * pad]
        queries = self.query_features(image.expand(b, -1, -1, -1), language, pick_rc)
        # Kernel index crop // 2 over padded pixel p + pad lands on heightmap pixel p.
        correlation = self.correlate(keys, queries.reshape(b, r, *queries.shape[1:]))
        scale = math.sqrt(cfg.transport_dim * cfg.crop_size ** 2)
        return (correlation[:, :, :h, :w] / scale).reshape(b, -1)

    def forward(self, image, language, pick_rc):
        return self.pick_logits(image, language), self.place_logits(image, language, pick_rc)


def build_clip(checkpoint: str = ""):
    """open_clip RN50 (visual + text towers): weights from a local file when given (the
    user's CLIP checkpoint), else random (tests, shape checks). Nothing is downloaded."""
    import open_clip

    return open_clip.create_model("RN50", pretrained=checkpoint or None)


class ClipTextEncoder:
    """CLIP's text tower (1024-d for RN50), frozen, unit-length embeddings."""

    def __init__(self, clip_model):
        import open_clip

        self.model = clip_model.eval()
        self.tokenizer = open_clip.get_tokenizer("RN50")
        self.dim = 1024

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        features = self.model.encode_text(self.tokenizer(list(texts)))
        return F.normalize(features, dim=-1).numpy().astype(np.float32)


def build_model(cfg: CLIPortConfig):
    """(CLIPort network, language encoder with .embed(texts) -> float32 [N, dim])."""
    if cfg.semantic_stream == "clip_rn50" or cfg.language_encoder == "clip":
        clip_model = build_clip(cfg.clip_checkpoint)
    if cfg.semantic_stream == "clip_rn50":
        import copy

        model = CLIPort(cfg, clip_visual_factory=lambda: copy.deepcopy(clip_model.visual))
    else:
        model = CLIPort(cfg)
    if cfg.language_encoder == "clip":
        encoder = ClipTextEncoder(clip_model)
    elif cfg.language_encoder == "minilm":
        from ros_vla.text_encoder import MiniLMInstructionEncoder

        encoder = MiniLMInstructionEncoder()
    else:
        raise ValueError(f"language_encoder must be 'minilm' or 'clip', got '{cfg.language_encoder}'")
    if encoder.dim != cfg.language_dim:
        raise ValueError(f"language encoder gives {encoder.dim}-d embeddings, config says {cfg.language_dim}")
    return model, encoder
