"""MIAVLM as an attribute checker: a question and whatever views there are in, an answer
out. What attribute_checker_node runs, without ROS.

Question format: a yes/no question about ONE attribute of the object in the middle of the
views (the benchmark's target), in the benchmark's words:
    colour  "is the block red?"          the noun is a reference, not checked
    shape   "is the object a cylinder?"  / "is the red object a ball?"
    size    "is the bowl small?" / "is the block big?"
Colours are the tabletop scene's ten, shapes block, cylinder, ball and bowl, sizes small
(little) and large (big). A question naming none of these words is refused, not guessed.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ros_vla.miavlm.config import COLORS, KINDS, SIZE_WORDS, WEIGHTS_FILE
from ros_vla.miavlm.model import load_checkpoint, view_input

KNOWN_WORDS = frozenset([*COLORS, *KINDS, *(word for words in SIZE_WORDS.values() for word in words)])
MAX_QUESTION_CHARS = 300
EMBEDDING_CACHE_SIZE = 256


def question_problem(question: object, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """Why a question cannot be answered ("" if it can)."""
    if not isinstance(question, str) or not question.strip():
        return "empty question"
    if len(question) > max_chars:
        return f"question longer than {max_chars} characters"
    if not KNOWN_WORDS.intersection(re.findall(r"[a-z]+", question.lower())):
        return ("the question names no colour, shape or size the checker knows (colours: "
                f"{', '.join(COLORS)}; shapes: {', '.join(KINDS)}; sizes: small, little, large, big)")
    return ""


def normalised(question: str) -> str:
    """As the benchmark writes questions: lower case, single spaces."""
    return " ".join(question.lower().split())


@dataclass
class Verdict:
    answer: str  # "yes" or "no"
    confidence: float  # probability of the answer given, 0.5..1
    view_weights: list[float]  # MAP fusion weight of each view, in the order given


class AttributeChecker:
    """Loads MIAVLM weights and the sentence encoder once; answers questions on any 1..9 views."""

    def __init__(self, weights: str | Path, encoder=None):
        """`weights`: a model folder (its miavlm.pt) or a weights file."""
        weights = Path(weights)
        if weights.is_dir():
            weights = weights / WEIGHTS_FILE
        model, meta = load_checkpoint(weights)
        if meta["variant"] != "multiview":
            raise ValueError(f"{weights} holds the '{meta['variant']}' baseline, not the multiview model")
        self.model = model
        self.benchmark = meta["benchmark"]
        self.max_views = model.config.max_views
        if encoder is None:
            from ros_vla.text_encoder import MiniLMInstructionEncoder

            encoder = MiniLMInstructionEncoder()
        self._encoder = encoder
        self._embeddings: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, question: str) -> np.ndarray:
        """The question's embedding; a planner asks the same few questions again and again."""
        text = normalised(question)
        if text in self._embeddings:
            self._embeddings.move_to_end(text)
        else:
            self._embeddings[text] = self._encoder.embed([text])[0]
            if len(self._embeddings) > EMBEDDING_CACHE_SIZE:
                self._embeddings.popitem(last=False)
        return self._embeddings[text]

    def check(self, question: str, images: list[np.ndarray], focal_lengths: list[float | None]) -> Verdict:
        """Answer from camera images (H x W x 3 rgb8) with their focal lengths in pixels (None:
        unknown); 1..max_views of them, in any order."""
        if not 1 <= len(images) <= self.max_views:
            raise ValueError(f"need 1 to {self.max_views} views, got {len(images)}")
        views = np.stack([view_input(image, fx, self.benchmark) for image, fx in zip(images, focal_lengths)])
        embedding = torch.from_numpy(self.embed(question))[None, None]
        with torch.no_grad():
            logits, weights = self.model(torch.from_numpy(views)[None], embedding)
        p_yes = float(torch.sigmoid(logits[0, 0]))
        return Verdict("yes" if p_yes >= 0.5 else "no", max(p_yes, 1.0 - p_yes), weights[0].tolist())
