"""Peak training memory and step time of each fine-tuning strategy on a freshly built model (random weights).

The trainer's own step: float32 master weights (or, with --dtype bfloat16, pure bf16 weights), bf16 autocast, AdamW over the trainable parameters, a synthetic
batch made by the shared processor. On a GPU this answers the paper's hardware question at full size (which
strategy fits on one card); memory does not depend on the weights' values. A strategy that runs out of memory
is recorded as such, with the card's size.

    python benchmarks/strategies_memory.py --preset openvla-7b --device cuda --batch-size 2
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time

import numpy as np
import torch

import robovla
from robovla.experiments.limited_hardware import ARMS as STRATEGY_ARMS
from robovla.files import write_json_atomic
from robovla.train.config import TrainConfig
from robovla.train.strategies import apply_strategy

ARMS = {arm.name: arm for arm in STRATEGY_ARMS}  # the limited-hardware experiment's six strategies
STATS = {"bench": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}}


def synthetic_batch(model: robovla.VLA, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    processor = model.processor
    size = processor.image_config.image_sizes[0]
    examples = [processor.training_example(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                           "put the red cube in the blue bowl", rng.uniform(-1, 1, 7), "bench")
                for _ in range(batch_size)]
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in processor.collate(examples).items()}


def measure(preset: str, arm: str, batch_size: int, steps: int, device: torch.device, dtype: str) -> dict:
    strategy = ARMS[arm]
    if device.type == "cuda":
        gc.collect()  # the previous arm's model (or an out-of-memory arm's remains)
        torch.cuda.empty_cache()
    model = robovla.build_model(preset, device=device, dtype=dtype, norm_stats=STATS, seed=0)
    if device.type == "cuda":  # building passes through float32: the peak counted is training's alone
        torch.cuda.reset_peak_memory_stats(device)
    wrapped, report = apply_strategy(model, TrainConfig(strategy=strategy.strategy, lora_rank=strategy.lora_rank))
    optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-5)
    batch = synthetic_batch(model, batch_size, device)
    seconds = []
    for _ in range(steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = wrapped(**batch, full_logits=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    row = {"arm": arm, "trainable": report.trainable, "total": report.total,
           "step_s": round(statistics.median(seconds[1:]), 3), "loss": round(loss.item(), 3)}
    if device.type == "cuda":
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="the weights' dtype: float32 (the trainer's, with bf16 autocast) or pure bfloat16")
    parser.add_argument("--json", default="benchmarks/results/strategies_memory.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    machine = {"platform": platform.platform(), "torch": torch.__version__}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        machine.update(device=properties.name, memory_gb=round(properties.total_memory / 2**30, 1))
    rows = []
    for arm in args.arms:
        try:
            row = measure(args.preset, arm, args.batch_size, args.steps, device, args.dtype)
        except torch.OutOfMemoryError:
            row = {"arm": arm, "out_of_memory": True}
        rows.append(row)
        print(row, flush=True)
        write_json_atomic(args.json, {"machine": machine, "preset": args.preset, "batch_size": args.batch_size,
                                      "weights": args.dtype, "autocast": "bfloat16", "optimizer": "AdamW",
                                      "rows": rows})


if __name__ == "__main__":
    main()
