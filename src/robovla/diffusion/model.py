"""Diffusion Policy: observation features condition a U-Net that turns Gaussian noise into an action sequence.

Training adds noise of a random level to the demonstrated actions (diffusers' DDPM schedule) and regresses the
noise; acting starts from noise and removes it in a few DDIM steps. Actions and state arrive normalized to
[-1, 1] (the dataset's q01/q99, as OpenVLA's bins use), images as float RGB in [0, 1].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from robovla.diffusion.config import DiffusionConfig
from robovla.diffusion.networks import ConditionalUnet1D, ImageEncoder, masked_mean
from robovla.errors import RobovlaError

WEIGHTS = "model.safetensors"
STATS = "dataset_statistics.json"


@dataclass
class DiffusionInputs:
    """One batch of observations, already tensors (the processor's output)."""

    images: dict[str, torch.Tensor]  # camera -> [B, 3, S, S] float in [0, 1]
    language_ids: torch.Tensor  # [B, L] token ids of the instruction
    language_mask: torch.Tensor  # [B, L] 1 where an id is real, 0 for padding
    state: torch.Tensor | None = None  # [B, state_dim] normalized to [-1, 1]

    def to(self, device: torch.device | str) -> "DiffusionInputs":
        return DiffusionInputs({camera: image.to(device) for camera, image in self.images.items()},
                               self.language_ids.to(device), self.language_mask.to(device),
                               None if self.state is None else self.state.to(device))


class DiffusionPolicy(nn.Module):
    def __init__(self, config: DiffusionConfig, norm_stats: dict[str, Any] | None = None) -> None:
        from diffusers import DDIMScheduler, DDPMScheduler

        super().__init__()
        self.config = config
        self.norm_stats = norm_stats or {}
        self.encoders = nn.ModuleDict({camera: ImageEncoder(config.resnet_layers, config.resnet_width,
                                                            config.keypoints, config.vision_dim)
                                       for camera in config.cameras})
        self.language = nn.Embedding(config.vocab_size, config.language_dim)
        self.unet = ConditionalUnet1D(config.action_dim, config.condition_dim, config.down_dims,
                                      config.kernel_size, config.groups, config.timestep_dim)
        schedule = {"num_train_timesteps": config.train_steps, "beta_schedule": config.beta_schedule,
                    "clip_sample": True, "prediction_type": "epsilon"}
        self.noise_scheduler = DDPMScheduler(**schedule)
        self.sampler = DDIMScheduler(**schedule)

    # ------------------------------------------------------------------------------------------ conditioning
    def condition(self, inputs: DiffusionInputs) -> torch.Tensor:
        """[B, condition_dim]: each camera's keypoint features (the recipe's order), the instruction, the state."""
        missing = [camera for camera in self.config.cameras if camera not in inputs.images]
        if missing:
            raise RobovlaError(f"no image for camera(s) {', '.join(missing)} (this policy reads "
                               f"{', '.join(self.config.cameras)})")
        parts = [self.encoders[camera](inputs.images[camera] * 2.0 - 1.0) for camera in self.config.cameras]
        parts.append(masked_mean(self.language(inputs.language_ids), inputs.language_mask))
        if self.config.state_dim:
            if inputs.state is None or inputs.state.shape[-1] != self.config.state_dim:
                got = "none" if inputs.state is None else inputs.state.shape[-1]
                raise RobovlaError(f"this policy reads a state of length {self.config.state_dim}, got {got}")
            parts.append(inputs.state.to(parts[0].dtype))
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------------------------------------------ train
    def loss(self, inputs: DiffusionInputs, actions: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """MSE between the noise added to `actions` [B, horizon, action_dim] at random levels and its prediction."""
        expected = (self.config.horizon, self.config.action_dim)
        if tuple(actions.shape[1:]) != expected:
            raise RobovlaError(f"action targets are {list(actions.shape[1:])}, this policy predicts {list(expected)}")
        noise = torch.randn(actions.shape, generator=generator, device=actions.device, dtype=actions.dtype)
        levels = torch.randint(0, self.config.train_steps, (actions.shape[0],), generator=generator,
                               device=actions.device)
        noisy = self.noise_scheduler.add_noise(actions, noise, levels)
        return F.mse_loss(self.unet(noisy, levels, self.condition(inputs)), noise)

    # ------------------------------------------------------------------------------------------------- act
    @torch.no_grad()
    def sample(self, inputs: DiffusionInputs, generator: torch.Generator | None = None,
               steps: int | None = None) -> torch.Tensor:
        """Normalized actions [B, horizon, action_dim] by DDIM from Gaussian noise (`generator` fixes the noise)."""
        condition = self.condition(inputs)
        batch = condition.shape[0]
        shape = (batch, self.config.horizon, self.config.action_dim)
        actions = torch.randn(shape, generator=generator, device=condition.device, dtype=condition.dtype)
        self.sampler.set_timesteps(steps or self.config.inference_steps, device=condition.device)
        for level in self.sampler.timesteps:
            noise = self.unet(actions, level.expand(batch), condition)
            actions = self.sampler.step(noise, level, actions).prev_sample
        return actions.clamp(-1.0, 1.0)

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, state: dict[str, torch.Tensor] | None = None,
             write_extra: Callable[[Path], None] | None = None) -> Path:
        """config.json (the recipe, `policy_type: diffusion`), model.safetensors (`state`, default these weights),
        dataset_statistics.json, and whatever `write_extra(folder)` adds; the folder appears whole or not at all."""
        from safetensors.torch import save_file

        from robovla.files import write_folder_atomic

        weights = {k: v.detach().to("cpu").contiguous() for k, v in (state or self.state_dict()).items()}

        def fill(folder: Path) -> None:
            (folder / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            save_file(weights, str(folder / WEIGHTS), metadata={"format": "pt"})
            (folder / STATS).write_text(json.dumps(self.norm_stats, indent=2) + "\n")
            if write_extra is not None:
                write_extra(folder)

        return write_folder_atomic(path, fill)

    @classmethod
    def load(cls, path: str | Path) -> "DiffusionPolicy":
        from safetensors.torch import load_file

        folder = Path(path)
        if not (folder / "config.json").exists():
            raise RobovlaError(f"{folder}: config.json is missing (not a checkpoint folder?)")
        config = DiffusionConfig.from_dict(json.loads((folder / "config.json").read_text()))
        stats = json.loads((folder / STATS).read_text()) if (folder / STATS).exists() else {}
        policy = cls(config, stats)
        state = load_file(str(folder / WEIGHTS))
        expected = policy.state_dict()
        unexpected = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        if unexpected or missing:
            raise RobovlaError(f"{folder}: weights do not fit the config (missing {missing[:3]}, unexpected "
                               f"{unexpected[:3]})")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise RobovlaError(f"{folder}: tensor {name!r} has shape {list(tensor.shape)}, the config expects "
                                   f"{list(expected[name].shape)}")
        policy.load_state_dict(state)
        return policy.eval()


def exponential_moving_average(policy: DiffusionPolicy):
    """diffusers' EMA of the policy's weights as Diffusion Policy keeps it: the decay warms up as
    1 - (1 + step)^-0.75 towards `config.ema_decay`, so early weights are not averaged in for long. Call
    `.step(policy.parameters())` after each optimizer step and `.copy_to(policy.parameters())` before saving."""
    from diffusers.training_utils import EMAModel

    return EMAModel(policy.parameters(), decay=policy.config.ema_decay, use_ema_warmup=True, inv_gamma=1.0,
                    power=0.75)
