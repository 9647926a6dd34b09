"""Metrics to JSONL (always), TensorBoard and Weights & Biases (optional), and a progress bar with ETA."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robovla.train.config import TrainConfig


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class MetricsLogger:
    """Writes `metrics.jsonl` (one object per logged step) and `summary.json` in the run folder (rank 0 only)."""

    def __init__(self, out: Path, config: TrainConfig, enabled: bool = True) -> None:
        self.out = out
        self.config = config
        self.enabled = enabled
        self._tensorboard = None
        self._wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self._file = open(out / "metrics.jsonl", "a", buffering=1)
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(out / "tensorboard"))
        if config.wandb:
            import wandb

            self._wandb = wandb.init(project=config.wandb_project, config=config.to_dict(), dir=str(out))

    def start(self, report, world_size: int, step: int, device: torch.device, precision: str) -> None:
        if not self.enabled:
            return
        line = (f"{report.line()}; {world_size} process(es); computing in {precision}; starting at step {step}; "
                f"peak memory so far {peak_memory_mb(device):.0f} MB")
        print(line, file=sys.stderr, flush=True)
        self._write({"event": "start", "step": step, "trainable_parameters": report.trainable,
                     "total_parameters": report.total, "world_size": world_size, "precision": precision,
                     "time": time.time()})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, **{k: round(float(v), 6) for k, v in metrics.items()}, "time": time.time()})
        if self._tensorboard is not None:
            for key, value in metrics.items():
                self._tensorboard.add_scalar(f"train/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def progress_bar(self, initial: int, total: int):
        if not self.enabled:
            return None
        from tqdm import tqdm

        interactive = sys.stderr.isatty()
        return tqdm(initial=initial, total=total, desc="train", unit="step", dynamic_ncols=True,
                    mininterval=0.5 if interactive else 30.0)

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._write({"event": "end", **summary})
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print("summary: " + ", ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr, flush=True)
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
