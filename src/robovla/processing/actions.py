"""Actions <-> tokens: q01/q99 (un)normalisation with a dataset's statistics (the reference's BOUNDS_Q99 with a
mask) and the 256 uniform bins on the last ids of the base vocabulary, exactly as the reference does both."""

from __future__ import annotations

from typing import Any

import numpy as np

from robovla.errors import RobovlaError


def resolve_unnorm_key(norm_stats: dict[str, Any] | None, unnorm_key: str | None) -> str:
    """The reference's rule: the key may be omitted only when there is exactly one dataset."""
    keys = sorted(norm_stats or {})
    if unnorm_key is None:
        if len(keys) == 1:
            return keys[0]
        if not keys:
            raise RobovlaError("this checkpoint has no norm_stats: actions cannot be unnormalized")
        raise RobovlaError(f"unnorm_key is required: this checkpoint has several datasets: {', '.join(keys)}")
    if unnorm_key not in keys:
        raise RobovlaError(f"unnorm_key {unnorm_key!r} is not in norm_stats; available: {', '.join(keys) or 'none'}")
    return unnorm_key


class ActionNormalizer:
    """Maps raw actions to [-1, 1] with q01/q99 where `mask` is true; masked-off dims (the gripper) pass raw."""

    def __init__(self, action_stats: dict[str, Any]) -> None:
        try:
            self.q01 = np.asarray(action_stats["q01"], dtype=np.float64)
            self.q99 = np.asarray(action_stats["q99"], dtype=np.float64)
        except KeyError as missing:
            raise RobovlaError(f"action statistics lack {missing}") from None
        mask = action_stats.get("mask")
        self.mask = np.ones_like(self.q01, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if not (self.q01.shape == self.q99.shape == self.mask.shape) or self.q01.ndim != 1:
            raise RobovlaError("action statistics q01, q99 and mask must be vectors of one length")

    @classmethod
    def from_norm_stats(cls, norm_stats: dict[str, Any] | None, unnorm_key: str | None) -> "ActionNormalizer":
        key = resolve_unnorm_key(norm_stats, unnorm_key)
        return cls(norm_stats[key]["action"])

    @property
    def action_dim(self) -> int:
        return int(self.q01.shape[0])

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float64)
        scaled = np.clip(2.0 * (actions - self.q01) / (self.q99 - self.q01 + 1e-8) - 1.0, -1.0, 1.0)
        return np.where(self.mask, scaled, actions)

    def unnormalize(self, normalized: np.ndarray) -> np.ndarray:
        normalized = np.asarray(normalized, dtype=np.float64)
        raw = 0.5 * (normalized + 1.0) * (self.q99 - self.q01) + self.q01
        return np.where(self.mask, raw, normalized)


def vector_normalizer(norm_stats: dict[str, Any] | None, field: str, unnorm_key: str | None
                      ) -> tuple[str, ActionNormalizer]:
    """The q01/q99 normaliser of a non-action vector (`proprio`, `grounding`) of one dataset."""
    key = resolve_unnorm_key(norm_stats, unnorm_key)
    stats = norm_stats[key].get(field)
    if not stats:
        raise RobovlaError(f"norm_stats[{key!r}] has no {field} statistics, but this model reads or predicts {field}")
    # a dim that never varies in the data (a fixed tilt) passes raw instead of dividing by ~0
    spread = np.asarray(stats["q99"], dtype=np.float64) - np.asarray(stats["q01"], dtype=np.float64)
    return key, ActionNormalizer({"q01": stats["q01"], "q99": stats["q99"], "mask": (spread > 1e-6).tolist()})


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
