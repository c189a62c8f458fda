"""MIAVLM sizes and the attribute benchmark's vocabulary, as plain data.

`MIAVLMConfig` is the network (see README.md beside this file); `BenchmarkConfig` is the
simulated scenes and questions (ros_vla.miavlm.data). Both are frozen so that a weights
file can record exactly what it was trained with and the evaluation rebuild it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

WEIGHTS_FILE = "miavlm.pt"  # in a model folder (ros_vla.models); shipped: models/miavlm


def _from_dict(cls, values: dict):
    """A frozen config from to_dict()'s output after a JSON or torch.save round trip,
    which turns tuples into lists."""
    return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

# The tabletop scene's colour names and RGB (config/scene_tabletop.yaml), copied rather than
# read so that editing the scene never silently changes the benchmark behind shipped weights.
COLORS = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.55, 0.2, 0.75),
    "orange": (0.98, 0.5, 0.1),
    "pink": (0.98, 0.55, 0.75),
    "cyan": (0.1, 0.8, 0.85),
    "white": (0.95, 0.95, 0.95),
    "brown": (0.5, 0.3, 0.15),
}
# "block" and "bowl" are the tabletop scene's kinds; cylinder and ball add round shapes.
KINDS = ("block", "cylinder", "ball", "bowl")
SIZES = ("small", "large")
ATTRIBUTES = ("color", "shape", "size")
# Words a person may use for each size; the first is the canonical one.
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
# Characteristic size (edge, or diameter) per kind and size class, metres. A small block is
# the tabletop's 4 cm block; a small bowl its 13 cm bowl.
SIZE_RANGES_M = {
    "block": {"small": (0.030, 0.045), "large": (0.065, 0.085)},
    "cylinder": {"small": (0.030, 0.045), "large": (0.065, 0.085)},
    "ball": {"small": (0.032, 0.047), "large": (0.070, 0.090)},
    "bowl": {"small": (0.100, 0.130), "large": (0.170, 0.210)},
}


@dataclass(frozen=True)
class BenchmarkConfig:
    """The simulated multiview attribute benchmark (what ros_vla.miavlm.data renders)."""

    image_size: int = 64  # square views, rgb8
    # Focal length of the rendered views in pixels: a 64-pixel view spans 0.25 m at 0.5 m.
    # Camera images of another size are cropped to this field of view (see model.view_input).
    focal_px: float = 128.0
    views_per_scene: int = 9
    camera_distance_m: tuple[float, float] = (0.40, 0.60)
    camera_elevation_deg: tuple[float, float] = (15.0, 65.0)
    aim_jitter_m: float = 0.01  # the look-at point's offset from the target's centre
    occluders: tuple[int, int] = (1, 3)  # grey panels around the target, so some views hide it
    distractors: tuple[int, int] = (0, 2)  # other objects further out, at the views' edges
    distractor_radius_m: tuple[float, float] = (0.17, 0.26)
    color_jitter: float = 0.04  # per-channel offset of an object's RGB
    test_every: int = 10  # scene i is held out for testing when i % test_every == test_every - 1 (9:1)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        return _from_dict(cls, values)


@dataclass(frozen=True)
class MIAVLMConfig:
    """The MIAVLM network (Tan et al., ICASSP 2025) at a size that trains on a 2-core CPU."""

    image_size: int = 64
    model_dim: int = 96
    # Per-view image encoder: a small CNN, stride 8, so a 64x64 view gives 8x8 = 64 tokens.
    encoder_channels: tuple[int, ...] = (32, 64, 64)
    # Visual Extractor: decoder blocks whose queries are the learned soft prompts and whose
    # keys/values are one view's image tokens.
    num_prompts: int = 8
    extractor_blocks: int = 6
    num_heads: int = 4
    feedforward_dim: int = 192
    # Multihead Sampler: a 2-layer MLP turns a view's summary token into this many tokens.
    sampler_heads: int = 4
    question_dim: int = 384  # all-MiniLM-L6-v2
    max_views: int = 9

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        return _from_dict(cls, values)
