"""`robovla experiment recipes`: the reference recipe against the parallel-decoding recipe (OpenVLA-OFT's).

Both are trained from scratch on the same demonstrations with the same steps, batch and schedule on 2 CPU cores,
then evaluated on the five suites with intervals and timed per call:

- `reference`: one image, no state, one action per call of 7 tokens decoded one after another (OpenVLA).
- `parallel-tokens`: front + wrist cameras, the state through a projector, a chunk of 8 actions decoded in one
  forward pass as 256-bin tokens (OFT's parallel decoding with the discrete head).
- `parallel-l1`: the same with the continuous head trained with L1 (OFT's recipe).

Stages (demonstrations, each model's training, each evaluation, the timings) are saved as they finish; a rerun
skips what is done and resumes what was cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovla.experiments.common import ExperimentScale, publish

NAME = "recipes"
SUITES = ("tabletop-train", "tabletop-visual", "tabletop-motion", "tabletop-physical", "tabletop-semantic")
CHUNK = 8


@dataclass(frozen=True)
class RecipeArm:
    """One model of the comparison: its name, what it reads and how it says the actions."""

    name: str
    label: str
    options: dict[str, Any]  # TrainConfig recipe options


ARMS = (
    RecipeArm("reference", "1 image, autoregressive tokens, 1 action per call",
              {"proprio": False, "cameras": ["image"], "action_chunk": 1, "decoding": "autoregressive",
               "action_head": "tokens", "state_tokens": 0}),
    RecipeArm("parallel-tokens", f"2 cameras + state projector, chunk {CHUNK}, parallel decoding, 256-bin tokens",
              {"proprio": True, "cameras": ["image", "wrist_image"], "action_chunk": CHUNK, "decoding": "parallel",
               "action_head": "tokens", "state_tokens": 1}),
    RecipeArm("parallel-l1", f"2 cameras + state projector, chunk {CHUNK}, parallel decoding, L1 head",
              {"proprio": True, "cameras": ["image", "wrist_image"], "action_chunk": CHUNK, "decoding": "parallel",
               "action_head": "l1", "state_tokens": 1}),
)

SCALES = {
    # full: 1000 demonstrations (about 43k frames), a 6000-step schedule; --stop-at slices it across sessions
    "full": ExperimentScale(demos=1000, steps=6000, episodes=50, timing_calls=60),
    # quick: the whole pipeline in minutes, for trying it out and for tests (its numbers mean nothing)
    "quick": ExperimentScale(demos=12, steps=4, episodes=2, timing_calls=2),
}


def train_config(arm: RecipeArm, demos: Path, out: Path, scale: ExperimentScale, stop_at: int | None):
    """The training settings every arm shares, with its recipe options: only the recipe differs."""
    from robovla.train.config import TrainConfig

    return TrainConfig(
        preset="tabletop-cpu", datasets=[str(demos)], augment=False, steps=scale.steps, batch_size=32, lr=3e-4,
        schedule="warmup-cosine", warmup_steps=min(200, scale.steps // 10), seed=0, out=str(out),
        save_every=max(1, min(250, scale.steps)), keep_checkpoints=2, log_every=max(1, min(50, scale.steps)),
        stop_at=stop_at, progress=False, **arm.options,
    )


@dataclass
class RecipesSettings:
    scale: str = "full"
    work: Path = Path("runs/recipes")  # demonstrations, training runs, evaluation logs (large; git-ignored)
    out: Path = Path("results/recipes")  # results.json, report.md, plots (small; committed)
    stop_at: int | None = None  # train each arm up to this step of its schedule now (time-sliced runs)
    workers: int = 1  # processes stepping the evaluation envs


def run(settings: RecipesSettings, command: str | None = None) -> dict[str, Any]:
    """Every stage in order, skipping what is done; returns (and writes) the results document."""
    from robovla.experiments.common import StageLog, collect_demonstrations, train_to_end

    scale = SCALES[settings.scale]
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog(work / "experiment.json", {"experiment": NAME, "scale": settings.scale, **vars(scale)})
    demos = work / "demos"
    collected = log.run("demos", lambda: collect_demonstrations(demos, scale.demos, seed=21, wrist_camera=True))
    target = min(scale.steps, settings.stop_at or scale.steps)
    arms: dict[str, Any] = {}
    for arm in ARMS:
        config = train_config(arm, demos, work / "train" / arm.name, scale, settings.stop_at)
        trained = log.run(f"train/{arm.name}@{target}", lambda: train_to_end(config))
        checkpoint = Path(trained["checkpoint"])
        evaluated = log.run(f"eval/{arm.name}@{target}",
                            lambda: _evaluate(checkpoint, work / "eval" / f"{arm.name}@{target}", scale, settings))
        arms[arm.name] = {"label": arm.label, "recipe": _recipe_of(checkpoint), "training": trained,
                          "evaluation": evaluated, "train_settings": config.to_dict()}
    checkpoints = {name: Path(arm["training"]["checkpoint"]) for name, arm in arms.items()}
    timed = log.run(f"timing@{target}", lambda: time_policies(checkpoints, scale.timing_calls))
    for name, arm in arms.items():
        arm["timing"] = {**timed["settings"], **timed[name]}
    document = {
        "schema": "robovla.experiment.recipes/1", "experiment": NAME, "scale": settings.scale,
        "command": command, "demonstrations": {"folder": str(demos), **collected},
        "budget": {"steps_trained": target, "schedule_steps": scale.steps, "batch_size": 32,
                   "complete": target == scale.steps},
        "episodes_per_suite": scale.episodes, "suites": list(SUITES), "arms": arms,
        "wall_seconds": log.wall_seconds(),
    }
    from robovla.experiments.recipes_report import write_recipes_report

    return publish(out, document, write_recipes_report)


def _recipe_of(checkpoint: Path) -> dict[str, Any]:
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    return config.get("robovla_recipe", {})


def _evaluate(checkpoint: Path, folder: Path, scale: ExperimentScale, settings: RecipesSettings) -> dict[str, Any]:
    """The five suites on the official seeds: success with Wilson intervals per suite (episode log resumes)."""
    import robovla
    from robovla.eval import CheckpointPolicy, EvalSettings, evaluate

    policy = CheckpointPolicy(robovla.load_pretrained(checkpoint), checkpoint)
    result = evaluate(policy, EvalSettings(conditions=SUITES, episodes=scale.episodes, num_envs=min(25, scale.episodes),
                                           workers=settings.workers, progress=False), out=folder)
    return {"folder": str(folder), "overall": result["overall"],
            "conditions": {name: {k: row[k] for k in ("n", "successes", "rate", "ci95")}
                           for name, row in result["conditions"].items()},
            "episodes_per_minute": result["timing"].get("episodes_per_minute")}


def time_policies(checkpoints: dict[str, Path], calls: int, batches: tuple[int, ...] = (1, 8)) -> dict[str, Any]:
    """Median wall-clock per `Policy.predict` call of every model at each batch size, the models called in turns
    so that all see the same machine (float32, eager, this process's threads), and the actions per second it
    gives: batch x chunk / latency."""
    import statistics
    import time

    import numpy as np
    import torch

    import robovla

    policies = {name: robovla.Policy.from_pretrained(path, restrict_to_actions=True)
                for name, path in checkpoints.items()}
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {name: {} for name in policies}
    for batch in batches:
        inputs = {}
        for name, policy in policies.items():
            size = policy.image_size
            one = {camera: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for camera in policy.recipe.cameras}
            one["instruction"] = "put the red cube in the blue bowl"
            if policy.recipe.proprio:
                one["proprio"] = np.zeros(policy.proprio_dim())
            inputs[name] = [one] * batch
            policy.predict(inputs[name])  # first call: allocations
        seconds: dict[str, list[float]] = {name: [] for name in policies}
        for _ in range(calls):
            for name, policy in policies.items():
                start = time.perf_counter()
                policy.predict(inputs[name])
                seconds[name].append(time.perf_counter() - start)
        for name, policy in policies.items():
            latency = statistics.median(seconds[name])
            result[name][f"batch_{batch}"] = {
                "latency_ms": round(1e3 * latency, 2), "calls_per_second": round(1 / latency, 2),
                "actions_per_second": round(batch * policy.recipe.action_chunk / latency, 1)}
    result["settings"] = {"threads": torch.get_num_threads(), "dtype": "float32", "compiled": False, "calls": calls,
                          "in_turns": True}
    return result
