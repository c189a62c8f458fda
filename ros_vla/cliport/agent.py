"""A trained CLIPort as a pick-and-place skill: heightmap + instruction -> targets in fr3_link0.

The networks give the pick pixel and the place (pixel, rotation). The rest is geometry
on the heightmap, and is named here because CLIPort's suction gripper did not need it:

- grasp height: the top of what is under the pick pixel, less `grasp_depth_m` (half a
  4 cm block), never lower than `min_grasp_height_m` above the table;
- grasp yaw: a two-finger gripper must face the block's sides; the yaw of the smallest
  rectangle around the top face under the pick pixel (the networks pick *where*, as in
  the paper, not at which angle);
- release height: the surface under the place pixel (75th percentile within 1 cm) plus
  the grasp point's height above the table (objects are assumed to rest on the table
  when picked).

Confidence (for refusals and for SayCan's affordance): the probability mass within
`confidence_radius_m` of the chosen pick pixel, times the same for the place (summed over
rotations); 1 = the model is sure, a few percent = it sees nothing that fits the text.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ros_vla.cliport.config import WORKSPACE, CLIPortConfig
from ros_vla.cliport.data import downsample, network_input
from ros_vla.cliport.model import build_model


@dataclass(frozen=True)
class Prediction:
    pick_xyz: np.ndarray  # fr3_link0, metres
    pick_yaw: float
    place_xyz: np.ndarray
    place_yaw: float
    pick_pixel: tuple[int, int]  # in the network's heightmap (config resolution)
    place_pixel: tuple[int, int]
    place_rotation_rad: float
    pick_confidence: float
    place_confidence: float
    pick_heatmap: np.ndarray  # [H, W] probabilities
    place_heatmap: np.ndarray  # [H, W] probabilities summed over rotations

    @property
    def confidence(self) -> float:
        return self.pick_confidence * self.place_confidence


@dataclass(frozen=True)
class GeometryConfig:
    grasp_depth_m: float = 0.02
    min_grasp_height_m: float = 0.012
    confidence_radius_m: float = 0.02
    top_face_tolerance_m: float = 0.008


def load_agent(model_dir: str | Path, threads: int = 0) -> CLIPortAgent:
    """A folder written by `ros-vla train cliport` (cliport.pt + config.json)."""
    folder = Path(model_dir)
    if not (folder / "cliport.pt").exists() or not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} has no cliport.pt + config.json (train with `ros-vla train cliport`)")
    cfg = CLIPortConfig.from_dict(json.loads((folder / "config.json").read_text())["config"])
    model, encoder = build_model(cfg)
    missing, unexpected = model.load_state_dict(torch.load(folder / "cliport.pt", weights_only=True), strict=False)
    trained_missing = [k for k in missing if ".trunk.visual." not in k]
    if trained_missing or unexpected:
        raise ValueError(f"{folder / 'cliport.pt'} does not fit its config: missing {trained_missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    return CLIPortAgent(model, encoder, cfg, threads=threads)


class CLIPortAgent:
    def __init__(self, model, encoder, cfg: CLIPortConfig, geometry: GeometryConfig = GeometryConfig(),
                 threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.encoder = encoder
        self.cfg = cfg
        self.geometry = geometry
        self._embeddings: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in self._embeddings]
        if new:
            self._embeddings.update(zip(new, self.encoder.embed(new)))
        return torch.from_numpy(np.stack([self._embeddings[t] for t in texts]))

    def _mass_near(self, probabilities: np.ndarray, pixel: tuple[int, int]) -> float:
        radius = self.geometry.confidence_radius_m / self.cfg.heightmap.pixel_size_m
        rows, cols = np.ogrid[:probabilities.shape[0], :probabilities.shape[1]]
        near = (rows - pixel[0]) ** 2 + (cols - pixel[1]) ** 2 <= radius ** 2
        return float(probabilities[near].sum())

    def predict(self, colour: np.ndarray, height_m: np.ndarray, instruction: str) -> Prediction:
        """colour/height: a heightmap on the WORKSPACE grid (what world_heightmap and the node build)."""
        return self.predict_many(colour, height_m, [instruction])[0]

    @torch.no_grad()
    def predict_many(self, colour: np.ndarray, height_m: np.ndarray, instructions: list[str]) -> list[Prediction]:
        """One prediction per instruction on the same heightmap, in one batch: the parts of
        the network that do not depend on the text run once for all of them."""
        cfg = self.cfg
        small_colour, small_height = downsample(colour, height_m, cfg.downsample)
        image = torch.from_numpy(network_input(small_colour, small_height))[None]
        language = self.embed(instructions)
        h, w = cfg.heightmap.shape
        pick_probabilities = torch.softmax(self.model.pick_logits(image, language), 1).view(-1, h, w).numpy()
        picks = [np.unravel_index(int(p.argmax()), (h, w)) for p in pick_probabilities]
        place_logits = self.model.place_logits(image, language, torch.tensor(picks))
        place_probabilities = torch.softmax(place_logits, 1).view(-1, cfg.n_rotations, h, w).numpy()
        return [self._prediction(height_m, pick_map, pick, place_map)
                for pick_map, pick, place_map in zip(pick_probabilities, picks, place_probabilities)]

    def _prediction(self, height_m: np.ndarray, pick_probabilities: np.ndarray, pick: tuple[int, int],
                    place_probabilities: np.ndarray) -> Prediction:
        rotation, *place = np.unravel_index(int(place_probabilities.argmax()), place_probabilities.shape)
        place_map = place_probabilities.sum(0)
        theta = rotation * 2 * math.pi / self.cfg.n_rotations
        pick_xyz, pick_yaw = self._grasp(height_m, pick)
        place_xyz = self._release(height_m, tuple(place), pick_xyz[2])
        return Prediction(
            pick_xyz=pick_xyz, pick_yaw=pick_yaw, place_xyz=place_xyz, place_yaw=pick_yaw + theta,
            pick_pixel=(int(pick[0]), int(pick[1])), place_pixel=(int(place[0]), int(place[1])),
            place_rotation_rad=float(theta),
            pick_confidence=self._mass_near(pick_probabilities, pick),
            place_confidence=self._mass_near(place_map, tuple(place)),
            pick_heatmap=pick_probabilities, place_heatmap=place_map)

    def _full_pixel(self, pixel: tuple[int, int]) -> tuple[int, int]:
        """Centre pixel on the WORKSPACE grid of a pixel of the network's grid."""
        factor = self.cfg.downsample
        return pixel[0] * factor + factor // 2, pixel[1] * factor + factor // 2

    def _window(self, height_m: np.ndarray, pixel: tuple[int, int], radius_m: float):
        radius = max(1, int(round(radius_m / WORKSPACE.pixel_size_m)))
        row, col = self._full_pixel(pixel)
        r0, c0 = max(row - radius, 0), max(col - radius, 0)
        return height_m[r0:row + radius + 1, c0:col + radius + 1], (row - r0, col - c0)

    def _grasp(self, height_m: np.ndarray, pixel: tuple[int, int]) -> tuple[np.ndarray, float]:
        g = self.geometry
        near, _ = self._window(height_m, pixel, 0.006)
        top = float(near.max()) if near.size else 0.0
        x, y = self.cfg.heightmap.pixel_to_xy(*pixel)
        z = max(top - g.grasp_depth_m, g.min_grasp_height_m)
        return np.array([x, y, z]), self._top_face_yaw(height_m, pixel, top)

    def _top_face_yaw(self, height_m: np.ndarray, pixel: tuple[int, int], top: float) -> float:
        window, centre = self._window(height_m, pixel, 0.04)
        if top < 0.005 or window.size == 0:
            return 0.0
        mask = (np.abs(window - top) <= self.geometry.top_face_tolerance_m).astype(np.uint8)
        count, labels = cv2.connectedComponents(mask, connectivity=4)
        label = labels[min(centre[0], labels.shape[0] - 1), min(centre[1], labels.shape[1] - 1)]
        if label == 0:
            return 0.0
        rows, cols = np.nonzero(labels == label)
        if len(rows) < 4:
            return 0.0
        # Points as (x, y) = (row, col): the rectangle's angle is then a yaw in fr3_link0.
        (_, _), (_, _), angle_deg = cv2.minAreaRect(np.stack([rows, cols], axis=1).astype(np.float32))
        return math.radians(angle_deg)

    def _release(self, height_m: np.ndarray, pixel: tuple[int, int], grasp_height: float) -> np.ndarray:
        window, _ = self._window(height_m, pixel, 0.01)
        surface = float(np.percentile(window, 75)) if window.size else 0.0
        x, y = self.cfg.heightmap.pixel_to_xy(*pixel)
        return np.array([x, y, surface + grasp_height])

    @torch.no_grad()
    def affordances(self, colour: np.ndarray, height_m: np.ndarray, texts: list[str]) -> list[float]:
        """CLIPort's confidence for each skill text on the current heightmap, in one batch."""
        if not texts:
            return []
        return [prediction.confidence for prediction in self.predict_many(colour, height_m, texts)]


def heatmap_picture(colour: np.ndarray, prediction: Prediction, factor: int) -> np.ndarray:
    """Input heightmap with the pick (red) and place (green) heatmaps laid over it and the
    chosen pixels marked: RGB uint8 on the WORKSPACE grid."""
    base = colour.astype(np.float32)
    size = (colour.shape[1], colour.shape[0])
    for heatmap, tint in ((prediction.pick_heatmap, (255, 40, 40)), (prediction.place_heatmap, (40, 255, 40))):
        scaled = cv2.resize(heatmap / max(float(heatmap.max()), 1e-12), size, interpolation=cv2.INTER_LINEAR)
        alpha = 0.8 * np.sqrt(np.clip(scaled, 0, 1))[..., None]  # square root: the tails show too
        base = base * (1 - alpha) + np.array(tint, np.float32) * alpha
    picture = np.clip(base, 0, 255).astype(np.uint8)
    for pixel, tint in ((prediction.pick_pixel, (255, 0, 0)), (prediction.place_pixel, (0, 255, 0))):
        centre = (pixel[1] * factor + factor // 2, pixel[0] * factor + factor // 2)
        cv2.circle(picture, centre, 6, (255, 255, 255), 2)
        cv2.circle(picture, centre, 4, tint, 2)
    return picture
