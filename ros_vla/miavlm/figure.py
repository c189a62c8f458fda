"""A picture for the model card: test scenes' views, each with its MAP fusion weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ros_vla.miavlm.config import COLORS, KINDS, SIZES
from ros_vla.miavlm.model import MIAVLM

SCALE = 2  # pixels per view pixel in the picture
BAR_PX = 14
LABEL_PX = 14


def fusion_figure(model: MIAVLM, arrays: dict[str, np.ndarray], path: Path, scenes: int = 6):
    """One row per scene (the first `scenes` test scenes): its 8 views, under each a bar
    as long as the view's fusion weight relative to the largest in the row, and the
    fraction of the target the view shows."""
    images = arrays["images"][:scenes, :8]
    with torch.no_grad():
        _, weights = model.fuse(torch.from_numpy(images))
    weights = weights.numpy()
    size = images.shape[2] * SCALE
    row_px = LABEL_PX + size + BAR_PX
    canvas = Image.new("RGB", (8 * size, scenes * row_px), "white")
    draw = ImageDraw.Draw(canvas)
    color_names = list(COLORS)
    for row in range(scenes):
        top = row * row_px
        label = (f"{SIZES[arrays['size'][row]]} {color_names[arrays['color'][row]]} {KINDS[arrays['kind'][row]]}"
                 f"   (bar: fusion weight; number: share of the target in view)")
        draw.text((2, top + 1), label, fill="black")
        for view in range(images.shape[1]):
            left = view * size
            canvas.paste(Image.fromarray(images[row, view]).resize((size, size), Image.NEAREST),
                         (left, top + LABEL_PX))
            length = int((size - 4) * weights[row, view] / weights[row].max())
            draw.rectangle([left + 2, top + LABEL_PX + size + 2, left + 2 + length, top + row_px - 3],
                           fill=(40, 90, 200))
            caption = f"w {weights[row, view]:.2f}  vis {arrays['visible'][row, view]:.0%}"
            draw.text((left + 3, top + LABEL_PX + 2), caption, fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
