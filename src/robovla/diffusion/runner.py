"""`DiffusionRunner`: a Diffusion Policy checkpoint ready to act, as `robovla.Policy` is for a VLA.

Observations are the same dicts a VLA policy reads (the config's cameras, "instruction", "proprio" when it reads
the state); `predict` denoises a plan of `horizon` actions and answers the first `n_action_steps` of them, the
part Diffusion Policy executes before it looks again, as an `ActionPrediction` (no tokens: it says no tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from robovla.diffusion.model import DiffusionPolicy
from robovla.diffusion.processor import DiffusionProcessor
from robovla.errors import RobovlaError


class DiffusionRunner:
    def __init__(self, policy: DiffusionPolicy, processor: DiffusionProcessor, unnorm_key: str | None = None,
                 seed: int = 0) -> None:
        from robovla.processing import resolve_unnorm_key

        if unnorm_key is not None:
            resolve_unnorm_key(policy.norm_stats, unnorm_key)  # an unknown dataset fails here, listing the known
        self.policy = policy.eval()
        self.processor = processor
        self.unnorm_key = unnorm_key
        self.seed = seed
        self.generator = torch.Generator(device=self._device).manual_seed(seed)

    @classmethod
    def from_pretrained(cls, path: str | Path, unnorm_key: str | None = None, seed: int = 0,
                        device: str = "cpu") -> "DiffusionRunner":
        """A checkpoint folder written by `robovla train --policy diffusion` (or `DiffusionPolicy.save` plus a
        tokenizer.json)."""
        from robovla.processing import TextTokenizer

        folder = Path(path)
        policy = DiffusionPolicy.load(folder).to(device)
        if not (folder / "tokenizer.json").exists():
            raise RobovlaError(f"{folder}: tokenizer.json is missing (the instruction's ids need it)")
        processor = DiffusionProcessor(policy.config, TextTokenizer(folder / "tokenizer.json"), policy.norm_stats)
        return cls(policy, processor, unnorm_key, seed)

    @property
    def _device(self) -> torch.device:
        return next(self.policy.parameters()).device

    @property
    def config(self):
        return self.policy.config

    @property
    def norm_stats(self) -> dict[str, Any]:
        return self.policy.norm_stats

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.config.cameras)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def action_chunk(self) -> int:
        """Actions per answer: the executed part of each plan."""
        return self.config.n_action_steps

    @property
    def reads_proprio(self) -> bool:
        return bool(self.config.state_dim)

    def prompt_token_limit(self) -> None:
        """No context to fill: an instruction's ids beyond `MAX_LANGUAGE_TOKENS` are dropped, not refused."""
        return None

    @property
    def observation_keys(self) -> list[str]:
        return [*self.cameras, "instruction", *(["proprio"] if self.config.state_dim else [])]

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return self.config.action_dim

    def proprio_dim(self, unnorm_key: str | None = None) -> int | None:
        return self.config.state_dim or None

    def predict(self, observations: Mapping[str, Any] | Sequence[Mapping[str, Any]], unnorm_key: str | None = None,
                generator: torch.Generator | None = None):
        """One observation dict or a list of them -> `ActionPrediction` with [B, n_action_steps, action_dim]
        actions. The noise comes from `generator` (default: the runner's, seeded once, so a run of calls is
        reproducible)."""
        from robovla.processing import resolve_unnorm_key
        from robovla.processing.prediction import ActionPrediction

        batch = [observations] if isinstance(observations, Mapping) else list(observations)
        key = resolve_unnorm_key(self.norm_stats, unnorm_key or self.unnorm_key)
        inputs = self.processor.inputs(batch, key).to(self._device)
        normalized = self.policy.sample(inputs, generator or self.generator)[:, : self.config.n_action_steps]
        return ActionPrediction(self.processor.actions(normalized, key), None,
                                normalized.detach().cpu().double().numpy())


def is_diffusion_checkpoint(path: str | Path) -> bool:
    """Whether a folder's config.json says it holds a Diffusion Policy."""
    import json

    from robovla.diffusion.config import POLICY_TYPE

    config = Path(path) / "config.json"
    return config.exists() and json.loads(config.read_text()).get("policy_type") == POLICY_TYPE
