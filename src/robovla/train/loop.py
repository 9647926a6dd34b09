"""The training loop: plain PyTorch, readable top to bottom.

model (preset or checkpoint) -> strategy -> DDP/FSDP2 -> AdamW + schedule -> for each step: draw the global
batch, each rank takes its slice, micro-batches with bf16 autocast, clip, step; log metrics; save atomic
checkpoints in the openvla-7b layout with a resumable training state inside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

import robovla
from robovla.config import DATA_SEEN_KEY
from robovla.errors import RobovlaError
from robovla.model.vla import VLAOutput
from robovla.processing.processor import IGNORE_INDEX
from robovla.train.config import TrainConfig
from robovla.train.data import VL_ROWS, TrainingData
from robovla.train.distributed import Distributed
from robovla.train.metrics import MetricsLogger, peak_memory_mb
from robovla.train.precision import resolve_precision
from robovla.train.state import (
    TRAINING_CONFIG_FILE,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    write_training_state,
)
from robovla.train.strategies import apply_strategy, merged_state_dict

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    steps: int
    wall_seconds: float
    samples_per_second: float
    trainable_parameters: int
    total_parameters: int
    peak_memory_mb: float
    final_loss: float
    final_action_accuracy: float
    final_l1: float
    checkpoint: str | None


def lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if config.schedule == "constant":
            return 1.0
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def check_resume(config: TrainConfig) -> Path | None:
    """The checkpoint a run continues from (None: a fresh run); refuses a fresh run into a folder that holds
    checkpoints, and a resumption whose options differ from the saved ones (listing each)."""
    out = Path(config.out)
    latest = latest_checkpoint(out)
    if not config.resume:
        if latest is not None:
            raise RobovlaError(f"{out} already holds checkpoints: pass --resume, or choose another --out")
        return None
    if latest is None:
        raise RobovlaError(f"--resume: no checkpoint found under {out / 'checkpoints'}")
    saved = TrainConfig.from_dict(json.loads((latest / TRAINING_CONFIG_FILE).read_text()))
    differing = saved.differences(config)
    if differing:
        details = ", ".join(f"{k} ({getattr(saved, k)!r} -> {getattr(config, k)!r})" for k in differing)
        raise RobovlaError(f"--resume with a different configuration: {details}")
    return latest


def build_base_model(config: TrainConfig, device: torch.device) -> robovla.VLA:
    if config.checkpoint:
        model = robovla.load_pretrained(config.checkpoint, device=device)
        if model.grounding_pointer is not None:
            # the pointer reads the language model's hidden states, which training changes: it would be stale
            model.set_grounding_pointer(None)
            logger.warning("%s: its grounding pointer is left out of training; refit one on the result "
                           "(robovla fit-pointer)", config.checkpoint)
    else:
        model = robovla.build_model(config.preset, device=device, seed=config.seed)
    widths = data_widths(config.datasets) if config.needs_data_widths and config.datasets else (None, None)
    model.set_recipe(config.recipe_for(model.recipe, *widths))  # saved in config.json: the checkpoint keeps it
    return model


def data_widths(paths: list[str]) -> tuple[int, int]:
    """(action width, state width) of the first dataset: the shapes of a parallel head and a state projector."""
    from robovla.data import open_dataset

    dataset = open_dataset(paths[0])
    return int(dataset.actions.shape[1]), int(dataset.proprio.shape[1])


def set_norm_stats(model: robovla.VLA, data: TrainingData) -> None:
    """From scratch: the datasets' statistics. Fine-tuning: the checkpoint's, plus those of new datasets."""
    existing = dict(model.config.norm_stats or {}) if model.processor and model.config.norm_stats else {}
    data.check_action_dims(existing)
    merged = {**existing, **data.statistics()}
    model.config.norm_stats = merged
    model.processor.norm_stats = merged


def enable_gradient_checkpointing(model: robovla.VLA) -> None:
    model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for tower in model.vision_backbone.towers:
        tower.set_grad_checkpointing(True)


class Trainer:
    """One run. `run()` trains to `config.steps`, resuming first when asked."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dist = Distributed.from_env(config.distributed)
        self.out = Path(config.out)
        self.resume_from = check_resume(config)
        torch.manual_seed(config.seed)
        base = build_base_model(config, self.dist.device)
        self.data = TrainingData.open(config, base.processor)
        robot = next(iter(self.data.datasets.values()), None)  # none in a vision-language stage
        action_dim = int(robot.actions.shape[1]) if robot is not None else 0
        self.action_tokens = action_dim * base.processor.action_chunk  # labelled action tokens per example
        self.data_history = list(base.config.extra.get(DATA_SEEN_KEY, []))  # earlier runs' data
        set_norm_stats(base, self.data)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(base)
        if config.strategy in ("lora", "qlora") and self.dist.mode == "fsdp":
            raise RobovlaError("LoRA runs use DDP: pass --distributed ddp (FSDP2 is for full training)")
        micro = config.batch_size // config.grad_accumulation
        if micro % self.dist.world_size:
            raise RobovlaError(
                f"the micro-batch ({micro} = batch_size / grad_accumulation) must divide by {self.dist.world_size} ranks"
            )
        model, self.report = apply_strategy(base, config)
        self.vla = base
        self.inner = model  # without DDP: named like the saved training state
        self.model = self.dist.wrap(model)
        self.trainable_names = [n for n, p in self.inner.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config))
        self.step = 0
        self._batches = None  # TrainingData.steps, from the current step on
        self._sampler_state: dict | None = None  # the sampler as of the last step trained (batches run ahead)
        if self.resume_from is not None:
            self.step = load_training_state(self.resume_from, self.model, self.optimizer, self.scheduler,
                                            self.data.sampler)
        self.logger = MetricsLogger(self.out, config, enabled=self.dist.is_main)
        self.precision = resolve_precision(config.precision, self.dist.device)

    # -------------------------------------------------------------------------------------------- one step
    def train_step(self) -> dict[str, float]:
        config, dist = self.config, self.dist
        if self._batches is None:  # built on first use: after a resume has restored the sampler
            micro = config.batch_size // config.grad_accumulation
            per_rank = micro // dist.world_size
            offsets = [m * micro + dist.rank * per_rank for m in range(config.grad_accumulation)]
            self._batches = self.data.steps(self.step, config.batch_size, offsets, per_rank, config.loader_workers)
        micro_batches, self._sampler_state = next(self._batches)
        # loss*tokens, tokens, correct action tokens, action tokens, l1 sum, the same three for grounding tokens,
        # then vision-language answers' loss*tokens, tokens and correct tokens
        totals = np.zeros(11)
        self.model.train()
        for m, batch in enumerate(micro_batches):
            last = m + 1 == len(micro_batches)
            vl_rows = batch.pop(VL_ROWS, None)
            sync = self.model.no_sync() if (dist.mode == "ddp" and not last) else contextlib.nullcontext()
            with sync, torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                out = self.model(**{k: _to(v, dist.device) for k, v in batch.items()}, full_logits=False)
            rows = batch["input_ids"].shape[0]
            if vl_rows is not None:
                loss, sums = self._mixed_loss(out, batch["labels"], vl_rows)
            elif self.vla.recipe.parallel:
                loss, sums = out.loss, self._parallel_metrics(out, batch)
            else:
                loss, sums = self._weighted_loss(out, rows), self._token_metrics(out, rows)
            if not torch.isfinite(loss):
                raise RobovlaError(f"loss became {loss.item()} at step {self.step + 1}: stopping, nothing saved")
            with sync:
                (loss / config.grad_accumulation).backward()
            totals[: len(sums)] += sums
        grad_norm = 0.0
        if config.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals = np.array(dist.all_reduce_sum(totals.tolist()))
        metrics = {
            "loss": totals[0] / max(totals[1], 1),
            "action_accuracy": totals[2] / max(totals[3], 1),
            "l1": totals[4] / max(totals[3], 1),
            "grad_norm": grad_norm,
            "lr": self.scheduler.get_last_lr()[0],
        }
        if totals[6]:
            metrics["grounding_accuracy"] = totals[5] / totals[6]
            metrics["grounding_l1"] = totals[7] / totals[6]
        if totals[9]:
            metrics["vl_loss"] = totals[8] / totals[9]
            metrics["vl_accuracy"] = totals[10] / totals[9]
        return metrics

    def _mixed_loss(self, out, labels: torch.Tensor, vl_rows: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """A batch of robot examples and vision-language questions: the mean over every labelled token (RT-2's
        co-training), the robot tokens' part weighted as `_weighted_loss` says; metrics for each part."""
        per_row = (labels != IGNORE_INDEX).sum(1).to(out.labels.device)
        is_vl = torch.repeat_interleave(vl_rows.to(out.labels.device), per_row)  # per supervised token
        sums = np.zeros(11)
        total = out.logits.new_zeros((), dtype=torch.float32)
        n_robot, n_vl = int((~is_vl).sum()), int(is_vl.sum())
        if n_robot:
            logits, targets = out.logits[~is_vl], out.labels[~is_vl]
            robot = VLAOutput(F.cross_entropy(logits.float(), targets), logits, targets)
            robot_rows = int((~vl_rows).sum())
            total = total + self._weighted_loss(robot, robot_rows) * n_robot
            sums[:8] = self._token_metrics(robot, robot_rows)
        if n_vl:
            logits, targets = out.logits[is_vl], out.labels[is_vl]
            vl_loss = F.cross_entropy(logits.float(), targets)
            total = total + vl_loss * n_vl
            correct = int((logits.argmax(-1) == targets).sum())
            sums[0] += vl_loss.item() * n_vl
            sums[1] += n_vl
            sums[8:] = [vl_loss.item() * n_vl, n_vl, correct]
        return total / (n_robot + n_vl), sums

    def _weighted_loss(self, out, rows: int) -> torch.Tensor:
        """The loss to train on: the mean token cross-entropy, or with `grounding_loss_weight` != 1 a weighted
        mean in which each grounding token counts that many times (the logged loss stays the plain mean)."""
        weight = self.config.grounding_loss_weight
        n_grounding = self._grounding_tokens(out, rows)
        if weight == 1.0 or n_grounding == 0:
            return out.loss
        per_token = F.cross_entropy(out.logits.float(), out.labels, reduction="none").view(rows, -1)
        weights = torch.ones_like(per_token)
        weights[:, :n_grounding] = weight
        return (per_token * weights).sum() / weights.sum()

    def _grounding_tokens(self, out, rows: int) -> int:
        """Grounding tokens per example: every example labels [grounding G][actions K*D][EOS]."""
        return out.labels.numel() // rows - 1 - self.action_tokens

    def _token_metrics(self, out, rows: int) -> np.ndarray:
        """Sums for the loss, action-token accuracy and L1 of decoded actions (EOS excluded from the last two),
        then accuracy and L1 (normalised units) of the grounding tokens that precede the action."""
        with torch.no_grad():
            labels = out.labels.view(rows, -1)  # the same count of tokens per example, flattened row-major
            predicted = out.logits.argmax(-1).view(rows, -1)
            n_grounding = self._grounding_tokens(out, rows)
            sums = [out.loss.item() * labels.numel(), labels.numel()]
            for part in (slice(n_grounding, -1), slice(0, n_grounding)):
                sums += self._bin_token_sums(predicted[:, part], labels[:, part])
        return np.array(sums)

    def _parallel_metrics(self, out, batch: dict) -> np.ndarray:
        """The parallel recipe's sums in `_token_metrics`' layout: loss, bin accuracy and L1 (normalised units)
        of every action value said in one pass (the L1 head's values count as the bin they fall in)."""
        with torch.no_grad():
            labels = batch["labels"].flatten()
            if out.actions is not None:
                said = out.actions.flatten().cpu().numpy()
                predicted = torch.as_tensor(self.vla.processor.action_tokenizer.encode(said))
                sums = [out.loss.item() * labels.numel(), labels.numel()]
                correct = int((predicted == labels).sum())
                l1 = float(np.abs(said - batch["action_targets"].flatten().numpy()).sum())
                return np.array(sums + [correct, labels.numel(), l1, 0, 0, 0])
            predicted = out.logits.argmax(-1).cpu() + self.vla.processor.action_tokenizer.first_action_id
            sums = [out.loss.item() * labels.numel(), labels.numel()]
            return np.array(sums + self._bin_token_sums(predicted, labels) + [0, 0, 0])

    def _bin_token_sums(self, predicted: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """[correct, count, sum of |decoded predicted - decoded label|] over bin tokens."""
        tokenizer = self.vla.processor.action_tokenizer
        is_bin = (labels >= tokenizer.first_action_id) & (labels < tokenizer.vocab_size)
        correct = int((predicted[is_bin] == labels[is_bin]).sum())
        l1 = float(np.abs(tokenizer.decode(predicted[is_bin].cpu().numpy())
                          - tokenizer.decode(labels[is_bin].cpu().numpy())).sum())
        return [correct, int(is_bin.sum()), l1]

    # ---------------------------------------------------------------------------------------------- saving
    def save(self) -> Path:
        """Collective: every rank calls it; rank 0 writes the checkpoint folder atomically."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full_state = get_model_state_dict(self.inner, options=options)
        optimizer_state = get_optimizer_state_dict(self.inner, self.optimizer, options=options)
        folder = self.out / "checkpoints" / f"step-{self.step:06d}"
        sampler_state = self._sampler_state or self.data.sampler.state_dict()
        self.vla.config.extra[DATA_SEEN_KEY] = self.data_history + [self.data_record(sampler_state)]
        if self.dist.is_main:
            trainable = {name: full_state[name] for name in self.trainable_names}
            if self.config.strategy in ("lora", "qlora"):
                export = merged_state_dict(self.inner)
            else:
                export = full_state
            robovla.save_pretrained(
                self.vla,
                folder,
                state=export,
                extra_files={TRAINING_CONFIG_FILE: self.config.to_dict()},
                write_extra=lambda tmp: write_training_state(
                    tmp, self.step, trainable, optimizer_state, self.scheduler.state_dict(),
                    sampler_state,
                    adapter_model=self.inner if "lora" in self.config.strategy else None,
                ),
            )
            prune_checkpoints(self.out, keep=self.config.keep_checkpoints)
        self.dist.barrier()
        return folder

    def data_record(self, sampler_state: dict) -> dict[str, Any]:
        """What this run has trained on so far, as config.json's `robovla_data_seen` lists it after the base
        checkpoint's own runs: the stage, the steps, the folders and the samples drawn from each dataset."""
        config = self.config
        return {"stage": config.stage, "steps": self.step, "datasets": list(config.datasets),
                "vl_corpus": config.vl_corpus, "samples": self.data.samples_drawn(sampler_state)}

    # ----------------------------------------------------------------------------------------------- run
    def run(self) -> TrainSummary:
        def postfix(metrics: dict[str, float]) -> dict[str, str]:
            shown = {"loss": f"{metrics['loss']:.3f}"}
            if self.action_tokens:
                shown["acc"] = f"{metrics['action_accuracy']:.3f}"
            if "vl_accuracy" in metrics:
                shown["vl_acc"] = f"{metrics['vl_accuracy']:.3f}"
            return shown

        return run_training(self, self.dist.world_size, self.dist.device, postfix)


def run_training(trainer: Any, world_size: int, device: torch.device,
                 postfix: Callable[[dict[str, float]], dict[str, str]]) -> TrainSummary:
    """The loop every trainer shares: `trainer.train_step()` up to `config.steps` (or `stop_at`), metrics every
    `log_every` steps, `trainer.save()` every `save_every` and at the last step; `postfix` says what the progress
    bar shows. The trainer has `config`, `logger`, `report`, `precision` (resolved), `step`, `resume_from` and its
    batch stream in `_batches`."""
    config = trainer.config
    trainer.logger.start(trainer.report, world_size, trainer.step, device, trainer.precision)
    start, start_step = time.perf_counter(), trainer.step
    metrics: dict[str, float] = {}
    checkpoint: Path | None = trainer.resume_from
    progress = trainer.logger.progress_bar(initial=trainer.step, total=config.steps) if config.progress else None
    last_step = min(config.steps, config.stop_at or config.steps)
    while trainer.step < last_step:
        t0 = time.perf_counter()
        metrics = trainer.train_step()
        metrics["samples_per_s"] = config.batch_size / (time.perf_counter() - t0)
        if trainer.step % config.log_every == 0 or trainer.step == config.steps:
            trainer.logger.log(trainer.step, metrics)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(**postfix(metrics))
        if (config.save_every and trainer.step % config.save_every == 0) or trainer.step == last_step:
            checkpoint = trainer.save()
    if progress is not None:
        progress.close()
    if trainer._batches is not None:
        trainer._batches.close()  # stops the loader workers
        trainer._batches = None
    elapsed = time.perf_counter() - start
    summary = TrainSummary(
        steps=trainer.step,
        wall_seconds=round(elapsed, 2),
        samples_per_second=round((trainer.step - start_step) * config.batch_size / max(elapsed, 1e-9), 2),
        trainable_parameters=trainer.report.trainable,
        total_parameters=trainer.report.total,
        peak_memory_mb=round(peak_memory_mb(device), 1),
        final_loss=float(metrics.get("loss", float("nan"))),
        final_action_accuracy=float(metrics.get("action_accuracy", float("nan"))),
        final_l1=float(metrics.get("l1", float("nan"))),
        checkpoint=str(checkpoint) if checkpoint else None,
    )
    trainer.logger.finish(asdict(summary))
    return summary


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def train(config: TrainConfig) -> TrainSummary:
    """Run one training job (single process, or one rank of a torchrun job)."""
    if config.policy == "diffusion":
        from robovla.diffusion.training import train_diffusion

        return train_diffusion(config)
    trainer = Trainer(config)
    try:
        return trainer.run()
    finally:
        trainer.dist.close()
