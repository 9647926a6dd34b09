"""`robovla experiment limited-hardware`: OpenVLA's third claim, fine-tuning and acting on little hardware.

From the shipped generalist and one fine-tuning set (`lab2-multi`, the new setup's multi-object language group),
each fine-tuning strategy trains with the same steps, batch, schedule and data in a fresh process (so its peak
memory is its own): full, last layer, frozen vision, sandwich, LoRA r=32 and r=64. Each is evaluated closed-loop
with intervals. The best one (most successes; fewer trainable parameters breaks a tie) is then evaluated and
timed with fp32, bf16, int8 and int4 weights. Beside the miniature's numbers, every strategy's trainable
parameter count on the full `openvla-7b` configuration (built on the meta device) next to the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovla.experiments.common import ExperimentScale, publish
from robovla.experiments.fine_tuning import COLLECT_SEEDS, EMBODIMENT, SELECTION, pretrained_checkpoint

NAME = "limited-hardware"
GROUP = "lab2-multi"


@dataclass(frozen=True)
class StrategyArm:
    name: str
    strategy: str
    lora_rank: int
    lr: float
    paper_trainable_millions: float  # OpenVLA's Table 1 (fine-tuning on Franka-DROID)
    paper_success: float  # its success rate there (%)


ARMS = (
    StrategyArm("full", "full", 32, 3e-4, 7188.1, 69.7),
    StrategyArm("last-layer", "last-layer", 32, 3e-4, 465.1, 30.3),
    StrategyArm("frozen-vision", "frozen-vision", 32, 3e-4, 6760.4, 47.0),
    StrategyArm("sandwich", "sandwich", 32, 3e-4, 914.2, 62.1),
    StrategyArm("lora-r32", "lora", 32, 5e-4, 97.6, 68.2),
    StrategyArm("lora-r64", "lora", 64, 5e-4, 195.2, 68.2),
)
# weights for acting: (name, dtype, quantization); the paper: bf16 71.3%, int8 58.1%, int4 71.9% (16.8/10.2/7.0 GB)
PRECISIONS = (("fp32", "float32", None), ("bf16", "bfloat16", None), ("int8", "float32", "int8"),
              ("int4", "float32", "int4"))

SCALES = {
    # full: 50 demonstrations, 200 steps of batch 32 per strategy (as fine-tuning), 50 evaluation episodes per model
    "full": ExperimentScale(demos=50, steps=200, episodes=50, timing_calls=30),
    # quick: the whole pipeline in minutes, for trying it out and for tests (its numbers mean nothing)
    "quick": ExperimentScale(demos=2, steps=2, episodes=2, timing_calls=2),
}


@dataclass
class LimitedHardwareSettings:
    scale: str = "full"
    work: Path = Path("runs/limited-hardware")
    out: Path = Path("results/limited-hardware")
    workers: int = 1


def train_config(arm: StrategyArm, demos: Path, out: Path, scale: ExperimentScale):
    from robovla.train.config import TrainConfig

    return TrainConfig(
        checkpoint=str(pretrained_checkpoint()), preset=None, datasets=[str(demos)], max_episodes=scale.demos,
        augment=False, steps=scale.steps, batch_size=32, lr=arm.lr, schedule="warmup-cosine",
        warmup_steps=max(1, scale.steps // 10), seed=0, out=str(out), save_every=max(1, min(100, scale.steps)),
        keep_checkpoints=1, log_every=max(1, min(25, scale.steps)), progress=False, strategy=arm.strategy,
        lora_rank=arm.lora_rank,
    )


def parts_of(name: str) -> str:
    """Which part of a VLA a parameter belongs to (for the count breakdowns)."""
    name = name.replace("base_model.model.", "")
    if name.startswith("vision_backbone."):
        return "vision"
    if name.startswith("projector."):
        return "projector"
    if "embed_tokens" in name:
        return "llm embeddings"
    if "lm_head" in name:
        return "llm head"
    if name.startswith("language_model."):
        return "llm layers"
    return "recipe modules"


def openvla_7b_counts() -> dict[str, Any]:
    """Trainable parameters of every strategy on `openvla-7b` (meta device: no memory, no weights), with the part
    of the model each count lies in, and the paper's count beside it."""
    import robovla
    from robovla.train.config import TrainConfig
    from robovla.train.strategies import apply_strategy

    counts: dict[str, Any] = {}
    for arm in ARMS:
        model = robovla.build_model("openvla-7b", device="meta")
        wrapped, report = apply_strategy(model, TrainConfig(strategy=arm.strategy, lora_rank=arm.lora_rank))
        parts: dict[str, int] = {}
        for name, parameter in wrapped.named_parameters():
            if parameter.requires_grad:
                parts[parts_of(name)] = parts.get(parts_of(name), 0) + parameter.numel()
        counts[arm.name] = {"trainable": report.trainable, "total": report.total, "parts": parts,
                            "paper_millions": arm.paper_trainable_millions,
                            "difference_millions": round(report.trainable / 1e6 - arm.paper_trainable_millions, 1)}
    return counts


def run(settings: LimitedHardwareSettings, command: str | None = None) -> dict[str, Any]:
    """Every stage in order, skipping what is done; returns (and writes) the results document."""
    from robovla.experiments.common import StageLog, collect_demonstrations, evaluate_checkpoint, train_and_evaluate

    scale = SCALES[settings.scale]
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog(work / "experiment.json", {"experiment": NAME, "scale": settings.scale, **vars(scale)})
    demos = work / "demos" / GROUP
    collected = log.run("demos", lambda: collect_demonstrations(
        demos, scale.demos, seed=COLLECT_SEEDS[GROUP], wrist_camera=False, suite=GROUP, embodiment=EMBODIMENT))
    strategies: dict[str, Any] = {}
    for arm in ARMS:
        config = train_config(arm, demos, work / "train" / arm.name, scale)
        trained, evaluated = train_and_evaluate(log, arm.name, config, work, (GROUP,), scale.episodes, EMBODIMENT,
                                                settings.workers, selection=SELECTION)
        strategies[arm.name] = {"strategy": arm.strategy, "lora_rank": arm.lora_rank if arm.strategy == "lora" else None,
                                "lr": arm.lr, "training": trained, "success": evaluated["conditions"][GROUP],
                                "paper_success": arm.paper_success}
    best = max(strategies, key=lambda name: (strategies[name]["success"]["successes"],
                                             -strategies[name]["training"]["trainable_parameters"]))
    checkpoint = Path(strategies[best]["training"]["checkpoint"])
    precisions: dict[str, Any] = {}
    for name, dtype, quantization in PRECISIONS:
        evaluated = log.run(f"eval/{best}-{name}", lambda: evaluate_checkpoint(
            checkpoint, work / "eval" / f"{best}-{name}", (GROUP,), scale.episodes, EMBODIMENT, settings.workers,
            selection=SELECTION, quantization=quantization, dtype=dtype))
        timed = log.run(f"timing/{best}-{name}", lambda: time_weights(checkpoint, dtype, quantization,
                                                                      scale.timing_calls))
        precisions[name] = {"dtype": dtype, "quantization": quantization, "success": evaluated["conditions"][GROUP],
                            **timed}
    counts = log.run("openvla-7b-counts", openvla_7b_counts)
    document = {
        "schema": "robovla.experiment.limited-hardware/1", "experiment": NAME, "scale": settings.scale,
        "command": command, "embodiment": EMBODIMENT, "group": GROUP, "steps": scale.steps, "batch_size": 32,
        "episodes": scale.episodes, "selection": SELECTION, "pretrained": str(pretrained_checkpoint()),
        "demonstrations": {"folder": str(demos), "used": scale.demos, **collected},
        "strategies": strategies, "best": best, "precisions": precisions,
        "openvla_7b": {k: v for k, v in counts.items() if k != "seconds"},
        "wall_seconds": log.wall_seconds(),
    }
    from robovla.experiments.limited_hardware_report import write_limited_hardware_report

    return publish(out, document, write_limited_hardware_report)


def time_weights(checkpoint: Path, dtype: str, quantization: str | None, calls: int) -> dict[str, Any]:
    """Weight memory (every parameter and buffer, and the language model's alone) and the median latency of a
    batch-1 `Policy.predict` (eager, this process's threads): actions per second = chunk / latency."""
    import statistics
    import time

    import numpy as np
    import torch

    import robovla
    from robovla.quantize import module_bytes

    policy = robovla.Policy.from_pretrained(checkpoint, unnorm_key=f"tabletop_{EMBODIMENT}", restrict_to_actions=True,
                                            dtype=dtype, quantization=quantization)
    from dataclasses import replace

    policy.model.set_recipe(replace(policy.recipe, selection=SELECTION))
    size = policy.image_size
    rng = np.random.default_rng(0)
    observation = {camera: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for camera in policy.recipe.cameras}
    observation["instruction"] = "put the red cube in the blue bowl"
    if policy.recipe.proprio:
        observation["proprio"] = np.zeros(policy.proprio_dim())
    policy.predict(observation)  # first call: allocations
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.predict(observation)
        seconds.append(time.perf_counter() - start)
    latency = statistics.median(seconds)
    return {"weight_bytes": module_bytes(policy.model), "language_model_bytes": module_bytes(policy.model.language_model),
            "latency_ms": round(1e3 * latency, 2),
            "actions_per_second": round(policy.recipe.action_chunk / latency, 1),
            "threads": torch.get_num_threads(), "calls": calls}
