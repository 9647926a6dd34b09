"""What a policy says for a batch of observations: its actions, the tokens behind them, and where it thinks the
instruction's objects are."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ActionPrediction:
    actions: np.ndarray  # [B, action_dim] unnormalised, float64: the action to execute now
    token_ids: np.ndarray  # [B, action_dim] generated ids of that action
    normalized: np.ndarray  # [B, action_dim] bin centres in [-1, 1]
    grounding: np.ndarray | None = None  # [B, G] where the model says the named objects are (grounding models)
    chunk: np.ndarray | None = None  # [B, K, action_dim] the next K actions (chunking models); actions = chunk[:, 0]

    @property
    def next_actions(self) -> np.ndarray:
        """[B, K, action_dim]: the actions to execute in order, K = 1 for a model that does not chunk."""
        return self.chunk if self.chunk is not None else self.actions[:, None]
