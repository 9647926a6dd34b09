"""The MLP that maps fused patch features into the LLM's embedding space."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Fused backbones: fc1 (D -> 4D) GELU fc2 (4D -> H) GELU fc3 (H -> H); single: fc1 (D -> H) GELU fc2 (H -> H).

    GELU is the exact (erf) form, as in the reference.
    """

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
            self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1 = nn.Linear(vision_dim, llm_dim)
            self.fc2 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.act(self.fc1(patches)))
        if self.fused:
            x = self.fc3(self.act(x))
        return x
