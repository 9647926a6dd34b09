"""`robovla experiment fine-tuning`: OpenVLA's second claim on a robot setup it has never seen.

The shipped generalist was trained on the default tabletop robot only. The new setup is the `lab2` embodiment
(another camera pose, longer orange fingers, a faster controller, a slate table) with two task groups:
`lab2-narrow` (one instruction, one object set) and `lab2-multi` (three objects, two containers, the instruction
says which goes where). For 10, 50 and 150 demonstrations of each group, each arm trains on that group alone
with the same steps, batch and schedule, and is evaluated closed-loop on the group's official seeds:

- `openvla-full`: the pretrained generalist, every weight fine-tuned;
- `openvla-lora`: the pretrained generalist with LoRA r=32 (OpenVLA's default fine-tuning);
- `scratch`: the same architecture and recipe from random weights;
- `diffusion`: Diffusion Policy (the CPU preset, about the VLA's size) from scratch.

The generalist without fine-tuning is evaluated too (0 demonstrations; the default robot's action statistics),
the floor every arm should clear. Demonstrations are collected once per group (150, on seeds no evaluation
uses); the smaller sets are the first 10 and 50 of them. Each cell is saved when done and a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovla.experiments.common import ExperimentScale, publish

NAME = "fine-tuning"
EMBODIMENT = "lab2"
GROUPS = ("lab2-narrow", "lab2-multi")
SELECTION = "median"  # the shipped policy's decoding, used by every VLA arm
COLLECT_SEEDS = {"lab2-narrow": 1901, "lab2-multi": 1902}


@dataclass(frozen=True)
class FineTuningArm:
    name: str
    label: str
    policy: str  # vla | diffusion
    pretrained: bool  # starts from the shipped generalist
    strategy: str
    lr: float
    step_factor: int = 1  # steps = this x the scale's steps


ARMS = (
    FineTuningArm("openvla-full", "pretrained generalist, full fine-tuning", "vla", True, "full", 3e-4),
    FineTuningArm("openvla-lora", "pretrained generalist, LoRA r=32", "vla", True, "lora", 5e-4),
    FineTuningArm("scratch", "the same VLA from scratch", "vla", False, "full", 3e-4),
    # one compute budget per cell: a Diffusion Policy step took 0.16 s against a VLA fine-tuning step's 1.15 s
    # (2 cores, batch 32), so 7x the steps is about a VLA cell's wall-clock (Diffusion Policy is usually trained far
    # longer than a VLA is fine-tuned)
    FineTuningArm("diffusion", "Diffusion Policy from scratch, 7x the steps (about the same wall-clock)",
                  "diffusion", False, "full", 1e-4, step_factor=7),
)


@dataclass(frozen=True)
class FineTuningScale(ExperimentScale):
    sizes: tuple[int, ...] = (10, 50, 150)  # demonstrations per group


SCALES = {
    # full: 150 demonstrations per group, 200 steps of batch 32 per cell (a VLA step takes ~1.1 s on 2 cores),
    # 50 evaluation episodes per cell: about 110 min in all
    "full": FineTuningScale(demos=150, steps=200, episodes=50, timing_calls=0, sizes=(10, 50, 150)),
    # quick: the whole pipeline in minutes, for trying it out and for tests (its numbers mean nothing)
    "quick": FineTuningScale(demos=2, steps=2, episodes=2, timing_calls=0, sizes=(1, 2)),
}


@dataclass
class FineTuningSettings:
    scale: str = "full"
    work: Path = Path("runs/fine-tuning")  # demonstrations, training runs, evaluation logs (large; git-ignored)
    out: Path = Path("results/fine-tuning")  # results.json, report.md, plots (small; committed)
    workers: int = 1  # processes stepping the evaluation envs


def pretrained_checkpoint() -> Path:
    from robovla.demo import shipped_policy_path

    return shipped_policy_path()


def train_config(arm: FineTuningArm, demos: Path, size: int, out: Path, scale: FineTuningScale):
    """What every cell shares (steps, batch, schedule, seed, data) with its arm's model, strategy and lr."""
    from robovla.train.config import TrainConfig

    if arm.pretrained:
        model: dict[str, Any] = {"checkpoint": str(pretrained_checkpoint()), "preset": None}
    elif arm.policy == "vla":  # the generalist's architecture and recipe, from random weights
        model = {"preset": "tabletop-fine", "proprio": True, "action_chunk": 4, "grounding": True}
    else:
        model = {"policy": "diffusion", "preset": "diffusion-cpu", "precision": "fp32"}
    steps = scale.steps * arm.step_factor
    return TrainConfig(
        datasets=[str(demos)], max_episodes=size, augment=False, steps=steps, batch_size=32, lr=arm.lr,
        schedule="warmup-cosine", warmup_steps=max(1, steps // 10), seed=0, out=str(out),
        save_every=max(1, min(100, steps)), keep_checkpoints=1, log_every=max(1, min(25, steps)),
        progress=False, strategy=arm.strategy, lora_rank=32, **model,
    )


def run(settings: FineTuningSettings, command: str | None = None) -> dict[str, Any]:
    """Every stage in order, skipping what is done; returns (and writes) the results document."""
    from robovla.experiments.common import StageLog, collect_demonstrations, evaluate_checkpoint, train_and_evaluate

    scale = SCALES[settings.scale]
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog(work / "experiment.json", {"experiment": NAME, "scale": settings.scale, **vars(scale)})
    groups: dict[str, Any] = {}
    for group in GROUPS:
        demos = work / "demos" / group
        collected = log.run(f"demos/{group}", lambda: collect_demonstrations(
            demos, scale.demos, seed=COLLECT_SEEDS[group], wrist_camera=False, suite=group, embodiment=EMBODIMENT))
        zero_shot = log.run(f"eval/zero-shot/{group}", lambda: evaluate_checkpoint(
            pretrained_checkpoint(), work / "eval" / "zero-shot" / group, (group,), scale.episodes, EMBODIMENT,
            settings.workers, unnorm_key="tabletop_default", selection=SELECTION))
        cells: dict[str, dict[str, Any]] = {arm.name: {} for arm in ARMS}
        for size in scale.sizes:
            for arm in ARMS:
                cell = f"{group}/{arm.name}@{size}"
                config = train_config(arm, demos, size, work / "train" / cell, scale)
                trained, evaluated = train_and_evaluate(
                    log, cell, config, work, (group,), scale.episodes, EMBODIMENT, settings.workers,
                    selection=SELECTION if arm.policy == "vla" else None)
                cells[arm.name][str(size)] = {"training": trained, "success": evaluated["conditions"][group],
                                              "evaluation_folder": evaluated["folder"]}
        groups[group] = {"demonstrations": {"folder": str(demos), **collected},
                         "zero_shot": zero_shot["conditions"][group], "arms": cells}
    document = {
        "schema": "robovla.experiment.fine-tuning/1", "experiment": NAME, "scale": settings.scale,
        "command": command, "embodiment": EMBODIMENT, "sizes": list(scale.sizes), "steps": scale.steps,
        "batch_size": 32, "episodes_per_cell": scale.episodes, "selection": SELECTION,
        "pretrained": str(pretrained_checkpoint()),
        "arms": {arm.name: {"label": arm.label, "policy": arm.policy, "pretrained": arm.pretrained,
                            "strategy": arm.strategy, "lr": arm.lr, "steps": scale.steps * arm.step_factor}
                 for arm in ARMS},
        "groups": groups,
        "wall_seconds": log.wall_seconds(),
    }
    from robovla.experiments.fine_tuning_report import write_fine_tuning_report

    return publish(out, document, write_fine_tuning_report)
