"""The precision a training run computes in. `auto` takes bf16 autocast only where the hardware multiplies bfloat16
natively: a CPU without bfloat16 instructions emulates it, and one 2-core AVX2 machine trained the shipped policy
at 113 s a step under bf16 autocast against 8 s in fp32 (its GEMMs: 1.5 against 47 GFLOP/s)."""

from __future__ import annotations

from pathlib import Path

import torch

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that multiply bfloat16 in hardware


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware, read from `/proc/cpuinfo`'s flags (or `cpuinfo`, its text).
    Where the flags cannot be read (not Linux), no: fp32 is never the slow choice on a CPU."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.exists():
            return False
        cpuinfo = path.read_text(errors="replace")
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`bf16` or `fp32` for a run asked for `precision` (`auto`, `bf16` or `fp32`) on `device`."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"
