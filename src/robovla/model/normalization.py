"""Action (un)normalisation with a dataset's q01/q99 bounds (the reference's BOUNDS_Q99 with a mask)."""

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
