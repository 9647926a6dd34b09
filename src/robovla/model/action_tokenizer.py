"""Continuous actions <-> the last `n_bins` ids of the base vocabulary, exactly as the reference does it."""

from __future__ import annotations

import numpy as np


class ActionTokenizer:
    """Uniform bins on [-1, 1]. Token t decodes to bin centre k = clip(V - t - 1, 0, n_bins - 2).

    `vocab_size` is the base vocabulary (32000 for openvla-7b: text_config.vocab_size - pad_to_multiple_of), so
    ids V-256..V-1 are actions, V-1 being the most negative bin.
    """

    def __init__(self, vocab_size: int, n_bins: int = 256, min_action: float = -1.0, max_action: float = 1.0):
        self.vocab_size = int(vocab_size)
        self.n_bins = int(n_bins)
        self.bins = np.linspace(min_action, max_action, self.n_bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0

    @property
    def first_action_id(self) -> int:
        return self.vocab_size - self.n_bins

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Normalised actions in [-1, 1] (any shape) -> token ids (int64, same shape)."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), self.bins[0], self.bins[-1])
        return (self.vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def bin_indices(self, token_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64)
        return np.clip(self.vocab_size - ids - 1, 0, self.bin_centers.shape[0] - 1)

    def decode(self, token_ids: np.ndarray) -> np.ndarray:
        """Token ids -> normalised actions in float64 (ids outside the action range clip to the end bins)."""
        return self.bin_centers[self.bin_indices(token_ids)]
