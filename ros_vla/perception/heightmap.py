"""Top-down orthographic RGB-D heightmaps fused from one or more camera views.

The picture CLIPort (and Transporter before it) acts on: the workspace seen from straight
above, one pixel per `pixel_size_m` square, each pixel holding the colour of the highest
surface there and that surface's height above the table. Each view is back-projected
with its pinhole intrinsics (camera_info K) and placed in the heightmap frame with its
extrinsics (calibration file / tf); across views the height is the maximum and the
colour the mean of the views that see the pixel. The same code serves the simulator and
a RealSense.

Pixel (row, col) covers x in [x_min + row * s, x_min + (row + 1) * s) and
y in [y_min + col * s, ...): rows run along x (away from the robot), columns along y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Depth noise scatters the table's own points a little below its plane: they are still the table.
BELOW_FLOOR_TOLERANCE_M = 0.01


@dataclass(frozen=True)
class HeightmapSpec:
    """Workspace bounds in the heightmap frame (metres) and the pixel size."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z_range: tuple[float, float]
    pixel_size_m: float

    def __post_init__(self):
        for name, (low, high) in (("x", self.x_range), ("y", self.y_range), ("z", self.z_range)):
            if not high > low:
                raise ValueError(f"heightmap {name} range must be increasing, got {(low, high)}")
        if not self.pixel_size_m > 0:
            raise ValueError(f"pixel size must be positive, got {self.pixel_size_m}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(round((self.x_range[1] - self.x_range[0]) / self.pixel_size_m)),
                int(round((self.y_range[1] - self.y_range[0]) / self.pixel_size_m)))

    def pixel_to_xy(self, row: float, col: float) -> tuple[float, float]:
        """Centre of a pixel in the heightmap frame."""
        return (self.x_range[0] + (row + 0.5) * self.pixel_size_m, self.y_range[0] + (col + 0.5) * self.pixel_size_m)

    def xy_to_pixel(self, x: float, y: float) -> tuple[int, int]:
        return (int(np.floor((x - self.x_range[0]) / self.pixel_size_m)),
                int(np.floor((y - self.y_range[0]) / self.pixel_size_m)))

    def contains_pixel(self, row: int, col: int) -> bool:
        rows, cols = self.shape
        return 0 <= row < rows and 0 <= col < cols

    def rescaled(self, factor: int) -> HeightmapSpec:
        """The same bounds with pixels `factor` times larger."""
        return HeightmapSpec(self.x_range, self.y_range, self.z_range, self.pixel_size_m * factor)


@dataclass(frozen=True)
class RgbdView:
    """One camera frame: rgb (HxWx3 uint8), depth along the optical axis (HxW metres, 0 =
    no return), the 3x3 intrinsics and the optical frame's pose in the heightmap frame."""

    rgb: np.ndarray
    depth_m: np.ndarray
    intrinsics: np.ndarray
    camera_pose: np.ndarray


def view_points(view: RgbdView) -> tuple[np.ndarray, np.ndarray]:
    """Back-projected points (N x 3, heightmap frame) and their colours (N x 3 uint8) for
    the pixels with a valid depth."""
    depth = np.asarray(view.depth_m, np.float32)
    if depth.shape != view.rgb.shape[:2]:
        raise ValueError(f"depth {depth.shape} and colour {view.rgb.shape[:2]} images differ in size")
    valid = np.isfinite(depth) & (depth > 0)
    rows, cols = np.nonzero(valid)
    z = depth[rows, cols].astype(np.float64)
    fx, fy, cx, cy = view.intrinsics[0, 0], view.intrinsics[1, 1], view.intrinsics[0, 2], view.intrinsics[1, 2]
    camera_points = np.stack([(cols - cx) * z / fx, (rows - cy) * z / fy, z], axis=1)
    pose = np.asarray(view.camera_pose, np.float64)
    points = camera_points @ pose[:3, :3].T + pose[:3, 3]
    return points, view.rgb[rows, cols]


def _single_view(view: RgbdView, spec: HeightmapSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(height, colour, seen) of one view: the highest point in each pixel."""
    rows_n, cols_n = spec.shape
    points, colours = view_points(view)
    row = np.floor((points[:, 0] - spec.x_range[0]) / spec.pixel_size_m).astype(np.int64)
    col = np.floor((points[:, 1] - spec.y_range[0]) / spec.pixel_size_m).astype(np.int64)
    inside = ((row >= 0) & (row < rows_n) & (col >= 0) & (col < cols_n)
              & (points[:, 2] >= spec.z_range[0] - BELOW_FLOOR_TOLERANCE_M) & (points[:, 2] <= spec.z_range[1]))
    height = np.maximum(points[inside, 2] - spec.z_range[0], 0.0)
    row, col, colours = row[inside], col[inside], colours[inside]
    # Written in increasing height, so where several points fall in one pixel the highest wins.
    order = np.argsort(height, kind="stable")
    flat = row[order] * cols_n + col[order]
    height_map = np.zeros(rows_n * cols_n, np.float32)
    colour_map = np.zeros((rows_n * cols_n, 3), np.float32)
    seen = np.zeros(rows_n * cols_n, bool)
    height_map[flat] = height[order]
    colour_map[flat] = colours[order]
    seen[flat] = True
    return height_map.reshape(rows_n, cols_n), colour_map.reshape(rows_n, cols_n, 3), seen.reshape(rows_n, cols_n)


def fuse_heightmap(views: list[RgbdView], spec: HeightmapSpec) -> tuple[np.ndarray, np.ndarray]:
    """Colour (rows x cols x 3 uint8) and height above z_min (rows x cols float32 metres)
    over all views: height maxed, colour averaged over the views that see each pixel.
    Pixels no view sees are black at height 0."""
    if not views:
        raise ValueError("a heightmap needs at least one view")
    rows_n, cols_n = spec.shape
    height = np.zeros((rows_n, cols_n), np.float32)
    colour_sum = np.zeros((rows_n, cols_n, 3), np.float32)
    seen_count = np.zeros((rows_n, cols_n), np.float32)
    for view in views:
        view_height, view_colour, seen = _single_view(view, spec)
        height = np.maximum(height, view_height)
        colour_sum += view_colour * seen[..., None]
        seen_count += seen
    colour = colour_sum / np.maximum(seen_count, 1)[..., None]
    return np.round(colour).astype(np.uint8), height
