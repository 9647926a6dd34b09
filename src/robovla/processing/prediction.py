"""What a policy says for a batch of observations: its actions, the tokens behind them, and where it thinks the
instruction's objects are."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ActionPrediction:
    actions: np.ndarray  # [B, K, action_dim] unnormalised, float64: the next K actions in order (K = 1: one step)
    token_ids: np.ndarray | None  # [B, K, action_dim] the generated ids behind them (None: a policy without tokens)
    normalized: np.ndarray  # [B, K, action_dim] bin centres in [-1, 1]
    grounding: np.ndarray | None = None  # [B, G] where the model says the named objects are (grounding models)

    @property
    def first(self) -> np.ndarray:
        """[B, action_dim]: the action to execute now (the reference's whole answer)."""
        return self.actions[:, 0]

    @classmethod
    def concatenate(cls, parts: list["ActionPrediction"]) -> "ActionPrediction":
        """One prediction whose rows are `parts`' rows in order."""
        grounding = None if parts[0].grounding is None else np.concatenate([p.grounding for p in parts])
        token_ids = None if parts[0].token_ids is None else np.concatenate([p.token_ids for p in parts])
        return cls(np.concatenate([p.actions for p in parts]), token_ids, np.concatenate([p.normalized for p in parts]),
                   grounding)
