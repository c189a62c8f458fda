"""Scene description for the simulated world, read from a YAML file (config/scene_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

OBJECT_KINDS = ("block", "bowl", "stand")
CAMERA_PARENTS = ("map", "base_link", "fr3_hand")


@dataclass(frozen=True)
class CameraSpec:
    """A simulated RealSense: topics under /<namespace>/camera/..., frames <frame_prefix>_*."""

    namespace: str
    frame_prefix: str
    parent: str
    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    width: int = 640
    height: int = 480
    fx: float = 460.0
    fy: float = 460.0
    rate_hz: float = 10.0
    near_m: float = 0.05
    far_m: float = 4.0

    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 pinhole matrix K, principal point at the image centre. In the ROS/OpenCV
        convention pixel centres sit at integer coordinates, so the centre of a W-pixel-wide
        image (where a symmetric OpenGL frustum puts the optical axis) is (W - 1) / 2."""
        return np.array(
            [[self.fx, 0.0, (self.width - 1) / 2.0], [0.0, self.fy, (self.height - 1) / 2.0], [0.0, 0.0, 1.0]]
        )

    @property
    def color_frame(self) -> str:
        return f"{self.frame_prefix}_color_optical_frame"

    @property
    def link_frame(self) -> str:
        return f"{self.frame_prefix}_link"

    def mount_pose(self) -> np.ndarray:
        """Pose of the optical frame (z forward, x right, y down) in the parent frame."""
        eye = np.asarray(self.eye, float)
        forward = np.asarray(self.target, float) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(self.up, float))
        if np.linalg.norm(right) < 1e-6:
            raise ValueError(f"camera {self.namespace}: 'up' is parallel to the viewing direction")
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        pose = np.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, eye
        return pose


@dataclass(frozen=True)
class ObjectSpec:
    kind: str
    color: str
    instance: int = 0  # tells apart objects of the same colour and kind: red_block, red_block_1, ...

    @property
    def name(self) -> str:
        return f"{self.color}_{self.kind}" + (f"_{self.instance}" if self.instance else "")


@dataclass(frozen=True)
class Furniture:
    name: str
    center: tuple[float, float]
    size: tuple[float, float]
    top_z: float
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class SpawnSpec:
    region_x: tuple[float, float]
    region_y: tuple[float, float]
    min_separation: float = 0.13
    block_size: float = 0.04
    bowl_radius: float = 0.065
    bowl_height: float = 0.035
    stand_size: tuple[float, float, float] = (0.18, 0.06, 0.01)  # a flat base to build on (length, width, height)
    max_reach_m: float = 0.75  # horizontal distance from the arm base at the table station


@dataclass(frozen=True)
class SceneConfig:
    base_size: tuple[float, float, float]
    arm_mount_xyz: tuple[float, float, float]
    ready_pose: tuple[float, ...]
    stations: dict[str, tuple[float, float, float]]
    furniture: tuple[Furniture, ...]
    colors: dict[str, tuple[float, float, float]]
    objects: tuple[ObjectSpec, ...]
    spawn: SpawnSpec
    cameras: tuple[CameraSpec, ...] = field(default_factory=tuple)

    def arm_mount_matrix(self) -> np.ndarray:
        """Pose of fr3_link0 in base_link."""
        mount = np.eye(4)
        mount[:3, 3] = self.arm_mount_xyz
        return mount

    @property
    def work_table(self) -> Furniture:
        return self.furniture[0]

    def camera(self, namespace: str) -> CameraSpec:
        for cam in self.cameras:
            if cam.namespace == namespace:
                return cam
        raise KeyError(f"no camera with namespace '{namespace}'")


def _triple(values, what: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"{what}: expected 3 numbers, got {values!r}")
    return out


def load_scene(path: str | Path) -> SceneConfig:
    """Read and validate a scene file; errors name the offending entry."""
    path = Path(path)
    with open(path) as f:
        raw = yaml.safe_load(f)
    try:
        colors = {name: _triple(rgb, f"color {name}") for name, rgb in raw["colors"].items()}
        objects = tuple(ObjectSpec(kind=o["kind"], color=o["color"]) for o in raw["objects"])
        for obj in objects:
            if obj.kind not in OBJECT_KINDS:
                raise ValueError(f"object kind '{obj.kind}' is not one of {OBJECT_KINDS}")
            if obj.color not in colors:
                raise ValueError(f"object colour '{obj.color}' is not in the colours list")
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise ValueError(f"object names must be unique, got {names}")
        cameras = tuple(CameraSpec(**{**c, "eye": tuple(c["eye"]), "target": tuple(c["target"]),
                                      "up": tuple(c["up"])}) for c in raw.get("cameras", []))
        for cam in cameras:
            if cam.parent not in CAMERA_PARENTS:
                raise ValueError(f"camera {cam.namespace}: parent must be one of {CAMERA_PARENTS}")
            cam.mount_pose()
        robot = raw["robot"]
        return SceneConfig(
            base_size=_triple(robot["base_size"], "robot.base_size"),
            arm_mount_xyz=_triple(robot["arm_mount_xyz"], "robot.arm_mount_xyz"),
            ready_pose=tuple(float(v) for v in robot["ready_pose"]),
            stations={k: _triple(v, f"station {k}") for k, v in raw["stations"].items()},
            furniture=tuple(
                Furniture(name=f["name"], center=tuple(f["center"]), size=tuple(f["size"]),
                          top_z=float(f["top_z"]), rgba=tuple(f["rgba"]))
                for f in raw["furniture"]
            ),
            colors=colors,
            objects=objects,
            spawn=SpawnSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["spawn"].items()}),
            cameras=cameras,
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: malformed scene file ({err!r})") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
