"""The resumable part of a checkpoint: trainable weights, optimizer, scheduler, step and sampler position.

Stored in `training_state/` inside the checkpoint folder, so it is written atomically with it. Tensors go to
safetensors; the optimizer state (nested tensors) is read back with `torch.load(weights_only=True)`, which
refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

TRAINING_CONFIG_FILE = "training_config.json"
STATE_DIR = "training_state"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def write_training_state(
    folder: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    sampler_state: dict[str, Any],
    adapter_model: nn.Module | None = None,
) -> None:
    from safetensors.torch import save_file

    state_dir = folder / STATE_DIR
    state_dir.mkdir()
    save_file({k: v.contiguous() for k, v in trainable.items()}, str(state_dir / "trainable.safetensors"))
    torch.save(optimizer_state, state_dir / "optimizer.pt")
    (state_dir / "state.json").write_text(
        json.dumps({"step": step, "scheduler": scheduler_state, "sampler": sampler_state}, indent=2)
    )
    if adapter_model is not None:  # the LoRA adapter alone, in peft's own format (safetensors)
        adapter_model.save_pretrained(str(folder / "adapter"))


def load_training_state(folder: Path, model: nn.Module, optimizer, scheduler, sampler) -> int:
    """Restore a run from `folder`; returns the step it had reached. Works for plain, DDP and FSDP2 models."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    state_dir = folder / STATE_DIR
    inner = getattr(model, "module", model)
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(inner, load_file(str(state_dir / "trainable.safetensors")), options=options)
    optimizer_state = torch.load(state_dir / "optimizer.pt", weights_only=True, map_location="cpu")
    set_optimizer_state_dict(inner, optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True))
    meta = json.loads((state_dir / "state.json").read_text())
    scheduler.load_state_dict(meta["scheduler"])
    sampler.load_state_dict(meta["sampler"])
    return int(meta["step"])


def step_checkpoints(out: Path) -> list[Path]:
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE_DIR / "state.json").exists()]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(out: Path) -> Path | None:
    found = step_checkpoints(out)
    return found[-1] if found else None


def prune_checkpoints(out: Path, keep: int) -> None:
    for old in step_checkpoints(out)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
