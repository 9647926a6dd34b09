"""torchrun integration: process group, DDP or FSDP2 wrapping, and cross-rank reductions.

Nothing home-made: torchrun sets RANK/WORLD_SIZE/MASTER_ADDR, torch.distributed does the rest (gloo on CPU,
nccl on CUDA). A plain `python -m robovla.train` run is world size 1 and skips all of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from robovla.errors import RobovlaError


@dataclass
class Distributed:
    mode: str  # none | ddp | fsdp
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, requested: str) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            mode = "none" if requested in ("auto", "none") else requested
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            if mode != "none":
                # A one-process group keeps the same code path (useful for tests and single-GPU FSDP).
                _init_group(device)
            return cls(mode, 0, 1, device)
        if requested == "none":
            raise RobovlaError("--distributed none under torchrun with several processes: use ddp or fsdp")
        mode = "ddp" if requested == "auto" else requested
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        _init_group(device)
        return cls(mode, torch.distributed.get_rank(), torch.distributed.get_world_size(), device)

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.mode == "fsdp":
            return shard_fsdp2(model)
        return model

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _init_group(device: torch.device) -> None:
    if torch.distributed.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:  # a single process outside torchrun
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def shard_fsdp2(model: nn.Module) -> nn.Module:
    """FSDP2: shard every ViT block and Llama decoder layer, then the rest at the root."""
    from torch.distributed.fsdp import fully_shard

    from robovla.train.strategies import unwrap

    vla = unwrap(model)
    for tower in vla.vision_backbone.towers:
        for block in tower.blocks:
            fully_shard(block)
    for layer in vla.language_model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model
