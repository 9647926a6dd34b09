"""`robovla train --policy diffusion`: Diffusion Policy on the same datasets, batches and run layout as a VLA.

The loop is the VLA's without its model-specific parts: `TrainingData` draws the same seeded, resumable batches
(chunks of the policy's horizon), AdamW with the same schedules, and every checkpoint is a folder written
atomically under `out/checkpoints/step-N`: the EMA weights the policy acts with (`model.safetensors`,
`config.json`, `dataset_statistics.json`, `tokenizer.json`), the run's options, and `training_state/` (the raw
weights, optimizer, schedule, sampler position and EMA) from which `--resume` continues exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robovla.diffusion.config import diffusion_preset
from robovla.diffusion.model import DiffusionPolicy, exponential_moving_average
from robovla.diffusion.processor import DiffusionProcessor
from robovla.errors import RobovlaError
from robovla.train.config import TrainConfig
from robovla.train.data import TrainingData
from robovla.train.metrics import MetricsLogger
from robovla.train.precision import resolve_precision
from robovla.train.state import (
    STATE_DIR,
    TRAINING_CONFIG_FILE,
    load_training_state,
    prune_checkpoints,
    write_training_state,
)
from robovla.train.strategies import StrategyReport

TOKENIZER = "tabletop-small"  # the instruction's ids index a learnt embedding: a small vocabulary keeps it small
EMA_FILE = "ema.safetensors"


def build_policy(config: TrainConfig) -> tuple[DiffusionPolicy, DiffusionProcessor]:
    """A fresh policy from `config.preset` shaped by the first dataset (action and state widths), or the
    checkpoint to continue from, with its processor."""
    from robovla.model.factory import packaged_tokenizer_path
    from robovla.processing import TextTokenizer

    cameras = tuple(config.cameras) if config.cameras else None
    if config.checkpoint:
        folder = Path(config.checkpoint)
        policy = DiffusionPolicy.load(folder)
        tokenizer = TextTokenizer(folder / "tokenizer.json")
        if cameras is not None and cameras != policy.config.cameras:
            raise RobovlaError(f"--cameras {' '.join(cameras)}: {folder} reads {' '.join(policy.config.cameras)}")
        if config.proprio is not None and config.proprio != bool(policy.config.state_dim):
            raise RobovlaError(f"--{'' if config.proprio else 'no-'}proprio: {folder} "
                               f"{'reads' if policy.config.state_dim else 'does not read'} the robot state")
        return policy, DiffusionProcessor(policy.config, tokenizer, dict(policy.norm_stats))
    from robovla.train.loop import data_widths

    if not config.datasets:
        raise RobovlaError("no training data: pass --datasets DIR [DIR ...]")
    action_dim, state_dim = data_widths(config.datasets)
    if config.proprio and not state_dim:
        raise RobovlaError(f"--proprio: {config.datasets[0]} has no robot state")
    tokenizer = TextTokenizer(packaged_tokenizer_path(TOKENIZER))
    policy_config = diffusion_preset(config.preset, cameras=cameras or ("image",), action_dim=action_dim,
                                     state_dim=0 if config.proprio is False else state_dim,
                                     vocab_size=len(tokenizer))
    return DiffusionPolicy(policy_config), DiffusionProcessor(policy_config, tokenizer, {})


class DiffusionTrainer:
    """One run. `run()` trains to `config.steps` (or `stop_at`), resuming first when asked."""

    def __init__(self, config: TrainConfig) -> None:
        from robovla.train.loop import check_resume, lr_lambda

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RobovlaError("Diffusion Policy trains in one process: run `robovla train --policy diffusion` "
                               "without torchrun")
        self.config = config
        self.out = Path(config.out)
        self.resume_from = check_resume(config)
        torch.manual_seed(config.seed)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.policy, self.processor = build_policy(config)
        self.data = TrainingData.open(config, self.processor)
        existing = dict(self.policy.norm_stats)
        self.data.check_action_dims(existing)
        stats = {**existing, **self.data.statistics()}
        self.policy.norm_stats = self.processor.norm_stats = stats
        self.policy.to(self.device)
        total = sum(p.numel() for p in self.policy.parameters())
        self.report = StrategyReport("full", total, total)
        self.precision = resolve_precision(config.precision, self.device)
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.ema = exponential_moving_average(self.policy)
        self.step = 0
        self._batches = None
        self._sampler_state: dict | None = None
        if self.resume_from is not None:
            self.step = load_training_state(self.resume_from, self.policy, self.optimizer, self.scheduler,
                                            self.data.sampler)
            self._load_ema(self.resume_from / STATE_DIR)
        self.logger = MetricsLogger(self.out, config)

    # -------------------------------------------------------------------------------------------- one step
    def train_step(self) -> dict[str, float]:
        config = self.config
        if self._batches is None:  # built on first use: after a resume has restored the sampler
            micro = config.batch_size // config.grad_accumulation
            offsets = [m * micro for m in range(config.grad_accumulation)]
            self._batches = self.data.steps(self.step, config.batch_size, offsets, micro, config.loader_workers)
        micro_batches, self._sampler_state = next(self._batches)
        self.policy.train()
        losses = []
        for m, batch in enumerate(micro_batches):
            # the noise and levels of each micro-batch come from (seed, step, m): a resumed run draws the same
            seed = int(np.random.SeedSequence([config.seed, self.step, m]).generate_state(1)[0])
            generator = torch.Generator(device=self.device).manual_seed(seed)
            inputs = batch["inputs"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                loss = self.policy.loss(inputs, batch["actions"].to(self.device), generator)
            if not torch.isfinite(loss):
                raise RobovlaError(f"loss became {loss.item()} at step {self.step + 1}: stopping, nothing saved")
            (loss / config.grad_accumulation).backward()
            losses.append(loss.item())
        grad_norm = 0.0
        if config.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.policy.parameters())
        self.step += 1
        return {"loss": float(np.mean(losses)), "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0]}

    # ---------------------------------------------------------------------------------------------- saving
    def ema_state(self) -> dict[str, torch.Tensor]:
        """The policy's state dict with the EMA's weights: what it acts with."""
        state = {k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()}
        for (name, _), shadow in zip(self.policy.named_parameters(), self.ema.shadow_params):
            state[name] = shadow.detach().cpu().clone()
        return state

    def save(self) -> Path:
        from safetensors.torch import save_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        folder = self.out / "checkpoints" / f"step-{self.step:06d}"
        raw = {k: v.detach().cpu().contiguous() for k, v in self.policy.state_dict().items()}
        optimizer_state = get_optimizer_state_dict(self.policy, self.optimizer,
                                                   options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        shadow = {name: s.detach().cpu().contiguous()
                  for (name, _), s in zip(self.policy.named_parameters(), self.ema.shadow_params)}

        def extra(tmp: Path) -> None:
            self.processor.save(tmp)
            (tmp / TRAINING_CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            write_training_state(tmp, self.step, raw, optimizer_state, self.scheduler.state_dict(),
                                 self._sampler_state or self.data.sampler.state_dict())
            save_file(shadow, str(tmp / STATE_DIR / EMA_FILE),
                      metadata={"optimization_step": str(self.ema.optimization_step)})

        self.policy.save(folder, state=self.ema_state(), write_extra=extra)
        prune_checkpoints(self.out, keep=self.config.keep_checkpoints)
        return folder

    def _load_ema(self, state_dir: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(state_dir / EMA_FILE), framework="pt") as handle:
            self.ema.optimization_step = int(handle.metadata()["optimization_step"])
            for (name, _), shadow in zip(self.policy.named_parameters(), self.ema.shadow_params):
                shadow.copy_(handle.get_tensor(name))

    # ----------------------------------------------------------------------------------------------- run
    def run(self):
        from robovla.train.loop import run_training

        return run_training(self, 1, self.device, lambda metrics: {"loss": f"{metrics['loss']:.4f}"})


def train_diffusion(config: TrainConfig) -> Any:
    """Train (or resume) a Diffusion Policy; returns the run's `TrainSummary`."""
    return DiffusionTrainer(config).run()
