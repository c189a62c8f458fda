"""Actions <-> RT-1 action tokens: each dimension is one token out of `bins` (256).

A continuous dimension is cut into `bins` uniform bins over [low, high]; a token decodes to
its bin's centre, so a round trip is off by at most half a bin. Values outside the range
clip to the end bins. The categorical mode dimension uses its category index as the token
(3 of the 256 ids).

For a robot, a NaN must never turn into a command: tokenize refuses NaN with a ValueError
(it would otherwise land in some arbitrary bin), and detokenize only accepts integer token
ids inside [0, bins), each of which decodes to a finite value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ros_vla.rt1.config import ActionDimension


class ActionTokenizer:
    def __init__(self, dimensions: Sequence[ActionDimension], bins: int = 256):
        self.dimensions = tuple(dimensions)
        self.bins = bins
        for dim in self.dimensions:
            if not dim.high > dim.low:
                raise ValueError(f"action dimension {dim.name}: high must exceed low")
            if len(dim.categories) > bins:
                raise ValueError(f"action dimension {dim.name}: more categories than bins")
        self._low = np.array([d.low for d in self.dimensions])
        self._high = np.array([d.high for d in self.dimensions])
        self._categorical = np.array([d.categorical for d in self.dimensions])
        # Token ids a dimension can mean: all bins, or one per category.
        self.valid_tokens = np.array([len(d.categories) if d.categorical else bins for d in self.dimensions])
        # A categorical token id past the last category decodes to the last category; for
        # the mode that is "terminate", the safe reading of a token that means nothing.
        self._category_fallback = self.valid_tokens - 1

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    def bin_width(self) -> np.ndarray:
        """Width of one bin per dimension (1 for a categorical dimension)."""
        return np.where(self._categorical, 1.0, (self._high - self._low) / self.bins)

    def tokenize(self, actions) -> np.ndarray:
        """actions [..., D] floats -> tokens [..., D] int64. NaN raises ValueError, values
        out of range clip, a categorical value must be one of its category indices."""
        actions = np.asarray(actions, dtype=np.float64)
        self._check_last_axis(actions)
        if np.isnan(actions).any():
            bad = sorted({self.dimensions[i].name for i in np.argwhere(np.isnan(actions))[:, -1]})
            raise ValueError(f"action has NaN in {', '.join(bad)}: refusing to turn it into tokens")
        fraction = (np.clip(actions, self._low, self._high) - self._low) / (self._high - self._low)
        continuous = np.minimum(np.floor(fraction * self.bins), self.bins - 1)
        category = actions - self._low
        wrong = self._categorical & ((category != np.round(category)) | (category < 0)
                                     | (category >= self.valid_tokens))
        if wrong.any():
            names = sorted({self.dimensions[i].name for i in np.argwhere(wrong)[:, -1]})
            raise ValueError(f"categorical action dimension {', '.join(names)} is not a category index")
        return np.where(self._categorical, category, continuous).astype(np.int64)

    def detokenize(self, tokens) -> np.ndarray:
        """tokens [..., D] integer ids in [0, bins) -> actions [..., D] float64, always finite."""
        tokens = np.asarray(tokens)
        self._check_last_axis(tokens)
        if not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(f"action tokens must be integers, got {tokens.dtype}")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.bins):
            raise ValueError(f"action token ids must lie in [0, {self.bins}), got {tokens.min()}..{tokens.max()}")
        centres = self._low + (tokens + 0.5) * (self._high - self._low) / self.bins
        categories = self._low + np.minimum(tokens, self._category_fallback)
        return np.where(self._categorical, categories, centres)

    def greedy_tokens(self, logits) -> np.ndarray:
        """logits [..., D, bins] -> the most likely token per dimension, choosing only among
        the ids a dimension can mean (the mode's 3 categories, every bin otherwise)."""
        logits = np.asarray(logits)
        if logits.shape[-2:] != (len(self.dimensions), self.bins):
            raise ValueError(f"logits must end in ({len(self.dimensions)}, {self.bins}), got {logits.shape}")
        if not np.isfinite(logits).all():
            raise ValueError("action logits are not finite: refusing to pick action tokens from them")
        meaningful = np.arange(self.bins) < self.valid_tokens[:, None]
        return np.where(meaningful, logits, -np.inf).argmax(-1).astype(np.int64)

    def _check_last_axis(self, array: np.ndarray) -> None:
        if array.ndim == 0 or array.shape[-1] != len(self.dimensions):
            raise ValueError(f"expected a last axis of {len(self.dimensions)} action dimensions, got {array.shape}")
