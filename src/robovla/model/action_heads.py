"""The parts the parallel-decoding recipe adds around the language model (OpenVLA-OFT's recipe, Kim et al. 2025).

- `ActionQueries`: the input embeddings of the K x D empty action positions appended after the prompt. They attend
  to the whole prefix and to each other (bidirectionally), and the language model's output at each of them says
  that action value, all in one forward pass.
- `L1ActionHead`: the continuous head, an MLP from the hidden states of one action's D positions to its D
  normalised values, trained with L1. (The discrete head is the language model's own head over the 256 bins.)
- `StateProjector`: the robot state (normalised with the checkpoint's q01/q99) -> N embedding tokens, placed after
  the image patches.

All three are plain modules whose weights are extra tensors of the Hugging Face checkpoint
(`action_queries.*`, `action_head.*`, `state_projector.*`).
"""

from __future__ import annotations

import torch
from torch import nn


class ActionQueries(nn.Module):
    """One learned input embedding per action position (chunk step k, dimension d), laid out k-major."""

    def __init__(self, chunk: int, action_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.chunk, self.action_dim = chunk, action_dim
        self.spec = (chunk, action_dim, hidden_size)  # what `VLA` compares when its recipe changes
        self.weight = nn.Parameter(torch.randn(chunk * action_dim, hidden_size) * 0.02)

    @property
    def slots(self) -> int:
        return self.chunk * self.action_dim

    def forward(self, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """[batch, K * D, hidden]"""
        return self.weight.to(dtype).unsqueeze(0).expand(batch, -1, -1)


class L1ActionHead(nn.Module):
    """[B, K, D, H] hidden states of the action positions -> [B, K, D] normalised actions (one MLP per chunk step,
    shared across steps, reading the D positions of that step together, as OFT's head does)."""

    def __init__(self, action_dim: int, hidden_size: int, width: int | None = None) -> None:
        super().__init__()
        self.spec = (action_dim, hidden_size)
        width = width or hidden_size
        self.net = nn.Sequential(
            nn.LayerNorm(action_dim * hidden_size),
            nn.Linear(action_dim * hidden_size, width),
            nn.GELU(),
            nn.Linear(width, width),
            nn.GELU(),
            nn.Linear(width, action_dim),
        )

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        batch, chunk = slots.shape[:2]
        dtype = self.net[1].weight.dtype
        return self.net(slots.reshape(batch, chunk, -1).to(dtype))


class StateProjector(nn.Module):
    """[B, state_dim] normalised robot state -> [B, tokens, hidden] embeddings."""

    def __init__(self, state_dim: int, hidden_size: int, tokens: int) -> None:
        super().__init__()
        self.tokens = tokens
        self.spec = (state_dim, hidden_size, tokens)
        self.net = nn.Sequential(nn.Linear(state_dim, hidden_size), nn.GELU(),
                                 nn.Linear(hidden_size, tokens * hidden_size))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        dtype = self.net[0].weight.dtype
        return self.net(state.to(dtype)).view(len(state), self.tokens, -1)


def parallel_attention_mask(keep: torch.Tensor, slots: int) -> torch.Tensor:
    """The 4-D boolean mask [B, 1, L + slots, L + slots] (True: may attend) of a parallel pass.

    `keep` [B, L] marks the prefix's real positions. The prefix is causal; the `slots` action positions at the end
    see every real prefix position and each other (bidirectional among themselves); nothing sees padding. A padded
    position sees itself, so its row of the softmax is never empty (an empty row gives NaN, which would reach the
    real positions through 0 * NaN in the value product)."""
    batch, length = keep.shape
    total = length + slots
    device = keep.device
    allowed = torch.ones(total, total, dtype=torch.bool, device=device).tril()
    allowed[length:, length:] = True
    real = torch.cat([keep.bool(), torch.ones(batch, slots, dtype=torch.bool, device=device)], dim=1)
    mask = allowed.unsqueeze(0) & real.unsqueeze(1)
    mask |= torch.eye(total, dtype=torch.bool, device=device).unsqueeze(0)
    return mask.unsqueeze(1)
