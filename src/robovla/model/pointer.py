"""Grounding pointer: a small head that says which image patch each named object of the instruction is in.

The grounding tokens of a VLA name a place as binned x, y values. Learning them end to end means learning which
words pick which patch through a long chain of bins, and a model that sees each scene under one instruction
learns the layout instead (docs/training.md). The pointer makes the binding direct: the instruction's hidden
states are read by a learned query per role (target, goal), and each role's query is matched against every
patch's hidden state, so the training signal ("this patch, not that one") lands on exactly the word-to-patch
match that was missing. Where each patch is on the table comes from the camera (`patch_xy`, a buffer saved with
the weights), so the head learns which patch, never the geometry.

It reads the language model's hidden states entering layer `config.layer` (the prefix pass computes them anyway)
and its estimate is emitted as the model's grounding tokens (`VLA.predict`), so the actions are conditioned on it
exactly as on given positions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robovla.config import POINTER_KEY as CONFIG_KEY
from robovla.errors import RobovlaError


@dataclass
class PointerConfig:
    """Shape of the pointer; stored in config.json under `robovla_grounding_pointer`."""

    layer: int  # reads the hidden states entering this language-model layer
    roles: int = 2  # named things, each an (x, y) pair of the grounding vector: target, goal
    width: int = 128
    heads: int = 4
    max_text: int = 64  # prompt tokens it reads (the instruction, robot state and markers)
    target_sigma: float = 0.02  # metres: spread of the training target over patches around the true position

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PointerConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise RobovlaError(f"{CONFIG_KEY}: unknown keys {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_layer(self, num_layers: int) -> None:
        if not 0 <= self.layer < num_layers:
            raise RobovlaError(f"{CONFIG_KEY}.layer must name one of the {num_layers} language-model layers, "
                               f"got {self.layer}")


def compact_text(hidden: torch.Tensor, mask: torch.Tensor, max_text: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The real (unmasked) prompt positions of each row, moved to the front in order: ([B, T, H], [B, T] bool).

    Prompts are left-padded in a batch; compacting them gives every row the same positions for the same tokens."""
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :max_text]
    rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
    text, kept = hidden[rows, order], mask[rows, order]
    if text.shape[1] < max_text:
        pad = max_text - text.shape[1]
        text, kept = F.pad(text, (0, 0, 0, pad)), F.pad(kept, (0, pad))
    return text, kept


def prefix_parts(hidden: torch.Tensor, mask: torch.Tensor | None, n_patches: int,
                 max_text: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prefix hidden states [B, L, H] laid out like `VLA.multimodal_inputs` ([BOS] + patches + prompt; `mask` the
    full prefix mask or None) -> (patch states [B, N, H], compacted prompt states [B, T, H], their mask [B, T])."""
    text = hidden[:, 1 + n_patches :]
    if mask is None:
        text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
    else:
        text_mask = mask[:, 1 + n_patches :].bool()  # BOS's padded slot is already masked there
    words, kept = compact_text(text, text_mask, max_text)
    return hidden[:, 1 : 1 + n_patches], words, kept


class GroundingPointer(nn.Module):
    """Logits over patches for each role, from the prompt's and the patches' hidden states."""

    def __init__(self, config: PointerConfig, hidden_size: int, num_patches: int) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.text_in = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, width))
        self.patch_in = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, width))
        self.text_pos = nn.Parameter(torch.randn(config.max_text, width) * 0.02)
        self.patch_pos = nn.Parameter(torch.randn(num_patches, width) * 0.02)
        # one self-attention layer over the words, so that "red" knows whether it names the target or the goal
        self.text_encoder = nn.TransformerEncoderLayer(width, config.heads, 2 * width, dropout=0.0,
                                                       batch_first=True, norm_first=True)
        self.role_queries = nn.Parameter(torch.randn(config.roles, width) * 0.02)
        self.role_pool = nn.MultiheadAttention(width, config.heads, batch_first=True)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        # where each patch's centre ray meets the table (metres), set from the camera before training
        self.register_buffer("patch_xy", torch.zeros(num_patches, 2))

    @property
    def grid(self) -> int:
        return math.isqrt(self.patch_xy.shape[0])

    def forward(self, patches: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """patches [B, N, H], text [B, T, H] compacted (`compact_text`), text_mask [B, T] -> logits [B, roles, N]."""
        dtype = self.query.weight.dtype
        words = self.text_in(text.to(dtype)) + self.text_pos[: text.shape[1]]
        words = self.text_encoder(words, src_key_padding_mask=~text_mask)
        queries = self.role_queries.expand(len(words), -1, -1)
        roles, _ = self.role_pool(queries, words, words, key_padding_mask=~text_mask, need_weights=False)
        keys = self.patch_in(patches.to(dtype)) + self.patch_pos
        return torch.einsum("brw,bnw->brn", self.query(roles), self.key(keys)) / math.sqrt(keys.shape[-1])

    def positions(self, logits: torch.Tensor) -> torch.Tensor:
        """[B, roles, N] logits -> [B, roles * 2] table positions (x, y per role, metres): the mean of the patch
        centres around the likeliest patch (3x3), weighted by their probabilities; finer than one patch."""
        grid = self.grid
        best = logits.argmax(dim=-1)  # [B, R]
        rows, cols = best // grid, best % grid
        index = torch.arange(logits.shape[-1], device=logits.device)
        near = ((index // grid)[None, None] - rows[..., None]).abs().le(1) & \
               ((index % grid)[None, None] - cols[..., None]).abs().le(1)
        weights = logits.float().masked_fill(~near, float("-inf")).softmax(dim=-1)
        return torch.einsum("brn,nc->brc", weights, self.patch_xy.float()).flatten(1)

    def loss(self, logits: torch.Tensor, grounding: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against a Gaussian over patch centres around each role's true position ([B, roles*2]),
        averaged over the roles whose position is known: a NaN pair (a referring question names one thing, not a
        target and a goal) adds nothing."""
        truth = grounding.float().view(len(grounding), self.config.roles, 1, 2)
        known = torch.isfinite(truth).all(dim=-1).squeeze(-1)  # [B, R]
        squared = ((self.patch_xy.float()[None, None] - truth.nan_to_num()) ** 2).sum(-1)  # [B, R, N]
        target = (-squared / (2 * self.config.target_sigma**2)).softmax(dim=-1)
        per_role = -(target * logits.float().log_softmax(dim=-1)).sum(-1)
        return per_role[known].sum() / known.sum().clamp(min=1)
