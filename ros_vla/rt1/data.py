"""RT-1 training data: recorded episodes (ros_vla.rt1.demos) cut into 6-frame windows.

A training sample is one control step t of an episode: the window of frames t-5..t (the
episode's first frame fills the slots before it, exactly as RT1Policy does at the start of
an episode), the instruction, and the 11 action tokens recorded at t.

Consecutive windows share 5 of their 6 frames, and the frame encoder sees one frame at a
time, so training draws *chunks*: `chunk_steps` consecutive steps of one episode, whose
frames are encoded once and then gathered into that many windows (`Chunk.windows`). A chunk
of 8 steps encodes at most 13 frames for 8 samples where separate windows would encode 48.
Every frame of a chunk gets the same random shift and colour jitter, so a window never
mixes two augmentations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class EpisodeData:
    """One recorded episode: frames uint8 [T, S, S, 3], tokens uint8 [T, 11], and where the
    named block is in each frame, float32 [T, 2] (u, v) pixels, None in recordings made
    before demos stored it."""

    file: str
    task: str
    instruction: str
    images: np.ndarray
    tokens: np.ndarray
    source: str  # the folder it came from (a camera placement, a robot configuration)
    target_px: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return len(self.tokens)


@dataclass
class Chunk:
    """Frames [F, S, S, 3] uint8, windows [W, history] indices into frames (oldest first),
    targets [W, 11] tokens, the episode's instruction, and the named block's pixel in each
    frame [F, 2] (NaN where the recording has none)."""

    frames: np.ndarray
    windows: np.ndarray
    targets: np.ndarray
    instruction: str
    target_px: np.ndarray | None = None

    def __post_init__(self):
        if self.target_px is None:
            self.target_px = np.full((len(self.frames), 2), np.nan, np.float32)


def rescaled_pixels(pixels: np.ndarray, scale) -> np.ndarray:
    """(u, v) pixel coordinates (pixel centres at integers) in an image resized by `scale`
    (one factor, or one per axis)."""
    return ((np.asarray(pixels) + 0.5) * np.asarray(scale) - 0.5).astype(np.float32)


def square_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """An rgb8 image [H, W, 3] resized bilinearly to size x size: the frame the policy sees.
    Demonstrations, training data and the runtime all resize with this."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([square_rgb(im, size) for im in images])


def load_episodes(data_dir: str | Path, tasks: list[str], per_task: int, image_size: int,
                  successful_only: bool = True) -> list[EpisodeData]:
    """Up to `per_task` episodes of each of `tasks` from a folder written by `ros-vla demos
    rt1`, in index order (a folder may hold some of the tasks only), failed ones left out
    unless `successful_only` is False. Frames recorded at another size are resized to
    `image_size` (bilinear, as RT1Policy resizes camera frames)."""
    data_dir = Path(data_dir)
    index = data_dir / "index.jsonl"
    if not index.is_file():
        raise FileNotFoundError(f"no {index}: record demonstrations with `ros-vla demos rt1 --out {data_dir}`")
    entries = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    episodes = []
    for task in tasks:
        chosen = [e for e in entries if e["task"] == task and (e["success"] or not successful_only)][:per_task]
        for entry in chosen:
            with np.load(data_dir / entry["file"]) as recorded:
                target_px = (rescaled_pixels(recorded["target_px"], image_size / recorded["images"].shape[2])
                             if "target_px" in recorded.files else None)
                episodes.append(EpisodeData(entry["file"], task, str(recorded["instruction"]),
                                            _resized(recorded["images"], image_size), recorded["tokens"].copy(),
                                            data_dir.name, target_px))
    return episodes


def window_frame_indices(step: int, history: int) -> np.ndarray:
    """Frame indices of the window that ends at `step`, oldest first; frame 0 fills in for
    steps before the episode began."""
    return np.maximum(np.arange(step - history + 1, step + 1), 0)


def sample_chunk(episode: EpisodeData, chunk_steps: int, history: int, rng: np.random.Generator,
                 max_shift_px: int = 0, jitter: float = 0.0, history_dropout: float = 0.0) -> Chunk:
    """`chunk_steps` consecutive steps (fewer at the episode's end) from a random start.

    history_dropout: the fraction of windows whose earlier frames are all replaced by the
    newest one, as at the start of an episode. Without it the network learned to carry on
    the motion it sees in the earlier frames (the demonstrator's own motion) instead of
    finding the target in the newest frame: teacher-forced it was 2.4 mm per step off the
    demonstrator's xy, but on the first 3 steps of an episode, with no motion to copy, no
    better than a blind per-step average (7.1 vs 6.3 mm), and it failed every closed-loop
    episode (the copycat problem of behaviour cloning with history, Wen et al. 2020)."""
    start = int(rng.integers(0, episode.steps))
    stop = min(episode.steps, start + chunk_steps)
    first_frame = max(0, start - history + 1)
    windows = np.stack([window_frame_indices(t, history) for t in range(start, stop)]) - first_frame
    dropped = rng.random(len(windows)) < history_dropout
    windows[dropped, :-1] = windows[dropped, -1:]
    frames, shift = augment(episode.images[first_frame:stop], rng, max_shift_px, jitter)
    target_px = None if episode.target_px is None else episode.target_px[first_frame:stop] + shift
    return Chunk(frames, windows, episode.tokens[start:stop].astype(np.int64), episode.instruction, target_px)


def augment(frames: np.ndarray, rng: np.random.Generator, max_shift_px: int,
            jitter: float) -> tuple[np.ndarray, np.ndarray]:
    """The same random translation (edge pixels repeated) and brightness/contrast change
    for every frame given; also the translation, (du, dv) pixels, that moves image content."""
    out, dx, dy = frames, 0, 0
    if max_shift_px:
        dy, dx = rng.integers(-max_shift_px, max_shift_px + 1, 2)
        pad = max_shift_px
        padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
        out = padded[:, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
    if jitter:
        gain, offset = 1 + rng.uniform(-jitter, jitter), 255 * rng.uniform(-jitter, jitter) / 2
        out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    # Cropping at (pad + dy, pad + dx) moves the content by (-dx, -dy).
    return np.ascontiguousarray(out), np.array([-dx, -dy], np.float32)
