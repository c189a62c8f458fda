"""RT-1 sizes and the action space, as plain data.

`RT1Config.paper()` is the network of Brohan et al. 2022 ("RT-1: Robotics Transformer for
Real-World Control at Scale"): FiLM-EfficientNet-B3 on 300x300 images, TokenLearner to 8
tokens per frame, 6 frames of history, an 8-layer decoder-only transformer, 11 action
dimensions of 256 bins each. `RT1Config.small()` is the same code at a size that trains on
a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionDimension:
    """One of the action's dimensions: a continuous range cut into uniform bins, or, when
    `categories` is given, a categorical choice whose index is the token."""

    name: str
    low: float
    high: float
    unit: str
    categories: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return bool(self.categories)


# RT-1's action: a mode, the arm's end-effector displacement, the gripper and the base's
# displacement. The continuous ranges are per control step (RT-1 runs at 3 Hz) and match
# what the stack accepts: /arm/ee_delta is a TCP displacement per control period in
# fr3_link0, /fr3_gripper/command an opening width (the Panda hand opens 0.08 m at most),
# and the base displacement becomes a /base/cmd_vel velocity in the node.
MODES = ("arm", "base", "terminate")
ROBOT_ACTION_DIMENSIONS = (
    ActionDimension("mode", 0, len(MODES) - 1, "category", MODES),
    ActionDimension("arm_x", -0.05, 0.05, "m"),
    ActionDimension("arm_y", -0.05, 0.05, "m"),
    ActionDimension("arm_z", -0.05, 0.05, "m"),
    ActionDimension("arm_roll", -0.25, 0.25, "rad"),
    ActionDimension("arm_pitch", -0.25, 0.25, "rad"),
    ActionDimension("arm_yaw", -0.25, 0.25, "rad"),
    ActionDimension("gripper_opening", 0.0, 0.08, "m"),
    ActionDimension("base_x", -0.1, 0.1, "m"),
    ActionDimension("base_y", -0.1, 0.1, "m"),
    ActionDimension("base_yaw", -0.3, 0.3, "rad"),
)

# Where every RT-1 episode starts, as RT-1's episodes start from a fixed pose: the Panda's
# joints (rad) with the TCP top-down at (0.15, 0, 0.55) m in fr3_link0, high and behind
# the head camera's view, so the first frames show the whole table. From the Panda's usual
# ready pose (TCP at (0.31, 0, 0.49)) the hand hides the near half of the table, and with it
# the block the first actions must head for.
START_JOINT_POSITIONS = (0.0, -1.164, 0.0, -2.327, 0.0, 1.162, 0.785)


@dataclass(frozen=True)
class RT1Config:
    # Image encoder: a timm EfficientNet (built with pretrained=False) with a FiLM layer
    # after every block and after a final 1x1 conv to `image_token_dim` channels.
    backbone: str = "efficientnet_b3"
    image_size: int = 300
    # The backbone's total stride (timm's output_stride: 32, or 16 / 8 with dilated last
    # stages). At 300 px and 32 the feature map is 10x10.
    output_stride: int = 32
    # A learned position per feature-map cell, added before TokenLearner. TokenLearner's
    # tokens are attention-weighted sums of feature vectors, so they say where something
    # is only as far as the features themselves do; ImageNet-trained features at 10x10
    # carry that (RT-1 has no such embedding), features learned from scratch need it.
    feature_positions: bool = False
    image_token_dim: int = 512
    instruction_embedding_dim: int = 384  # all-MiniLM-L6-v2
    # TokenLearner (Ryoo et al. 2021): a small MLP turns the feature map into this many
    # attention maps, each pooling the map into one token.
    tokens_per_frame: int = 8
    token_learner_bottleneck: int = 64
    history_frames: int = 6
    # Decoder-only transformer, as in RT-1's reference configuration: 8 layers, 8 heads of
    # key size 128 (so attention is 1024 wide inside a 512-wide model), a 512-wide
    # feed-forward layer, dropout 0.1.
    model_dim: int = 512
    num_layers: int = 8
    num_heads: int = 8
    head_dim: int = 128
    dropout: float = 0.1
    action_bins: int = 256
    action_dimensions: tuple[ActionDimension, ...] = ROBOT_ACTION_DIMENSIONS

    @classmethod
    def paper(cls) -> RT1Config:
        return cls()

    @classmethod
    def small(cls) -> RT1Config:
        """Same code at a twelfth of the parameters (2.9 M) so that it trains on a 2-core
        CPU: TinyNet-E (Han et al. 2020, EfficientNet's MBConv blocks scaled down in width,
        depth and resolution; 10 blocks) on 96x96 images, 256-wide tokens, a 3-layer
        transformer with 4 heads of 64. EfficientNet-B0 at 128x128 (7.1 M) took 3.7x as
        long per training step here. Output stride 16 gives a 6x6 feature map (32 would
        give 3x3, a cell 32 px wide for blocks 4 px wide) for 20 % more time per step,
        and the map gets learned positions (trained from scratch)."""
        return cls(backbone="tinynet_e", image_size=96, output_stride=16, feature_positions=True,
                   image_token_dim=256, model_dim=256, num_layers=3, num_heads=4, head_dim=64)

    @classmethod
    def named(cls, name: str) -> RT1Config:
        if name not in ("paper", "small"):
            raise ValueError(f"unknown RT-1 config '{name}': paper or small")
        return getattr(cls, name)()

    @property
    def feature_map_size(self) -> int:
        """Side of the backbone's feature map (timm pads so that it is the ceiling)."""
        return -(-self.image_size // self.output_stride)

    @property
    def context_tokens(self) -> int:
        """Tokens the transformer reads: tokens_per_frame for each frame of history (48)."""
        return self.history_frames * self.tokens_per_frame

    @property
    def num_action_dimensions(self) -> int:
        return len(self.action_dimensions)
