"""`robovla experiment metaworld`: robovla on Meta-World's MT10, so its numbers sit beside published ones.

Scripted-expert demonstrations of the ten MT10 tasks (execution noise, clean actions recorded) train two policies
from scratch, multi-task, with about the same wall-clock each:

- `vla`: robovla's VLA with OpenVLA-OFT's recipe (front + wrist cameras, the state through a projector, a chunk
  of 8 actions decoded in one pass, L1 head), at the CPU preset's size;
- `diffusion`: Diffusion Policy (the CPU preset) reading the same cameras and state.

Both, and the scripted experts that made the data, are evaluated closed-loop on MT10's official seeds (the
same episodes for all three: task, object and goal positions), per task and per difficulty group, with
intervals and filmed episodes. Last, the scripted experts run on all 50 tasks (MT50), beside Meta-World's own
figures for them. The report sets our rows beside the published Meta-World rows and says what differs. Each
stage is saved when done and a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovla.experiments.common import ExperimentScale, publish
from robovla.sim.metaworld_tasks import EMBODIMENT

NAME = "metaworld"
SUITE = "metaworld-mt10"
COLLECT_SEED = 2201  # demonstrations: seeds 2201.. (evaluation uses the official seeds 1000000..)
CAMERAS = ("image", "wrist_image")


@dataclass(frozen=True)
class MetaWorldArm:
    name: str
    label: str
    options: dict[str, Any]  # TrainConfig options that make this model
    lr: float
    step_factor: int = 1  # steps = this x the scale's steps


ARMS = (
    MetaWorldArm("vla", "robovla VLA, OFT recipe (2 cameras + state, chunk 8, parallel decoding, L1 head)",
                 {"preset": "tabletop-cpu", "cameras": list(CAMERAS), "proprio": True, "action_chunk": 8,
                  "decoding": "parallel", "action_head": "l1", "state_tokens": 1}, 3e-4),
    # a Diffusion Policy step costs about a third of a VLA step here (2 cores, batch 32, two cameras), so 3x the
    # steps is about the same wall-clock
    MetaWorldArm("diffusion", "Diffusion Policy (2 cameras + state), 3x the steps (about the same wall-clock)",
                 {"policy": "diffusion", "preset": "diffusion-cpu", "cameras": list(CAMERAS), "precision": "fp32"},
                 1e-4, step_factor=3),
)

@dataclass(frozen=True)
class MetaWorldScale(ExperimentScale):
    expert_mt50_episodes: int = 500  # the scripted experts on all 50 tasks (after the MT10 stages)


SCALES = {
    # full: 30 demonstrations per MT10 task (about 8 min to collect on 2 cores), 2000 VLA steps of batch 32 (about
    # 0.8 s each), 10 evaluation episodes per MT10 task (a failed one runs 500 steps); then the experts on MT50,
    # 10 episodes per task
    "full": MetaWorldScale(demos=300, steps=2000, episodes=100, timing_calls=0, expert_mt50_episodes=500),
    # quick: the whole pipeline in minutes, for trying it out and for tests (its numbers mean nothing)
    "quick": MetaWorldScale(demos=2, steps=2, episodes=2, timing_calls=0, expert_mt50_episodes=2),
}
MT50 = "metaworld-mt50"
EXPERT_FILES = ("results.json", "report.md", "success.png", "tasks.png")  # what results/ keeps of the MT50 run


@dataclass
class MetaWorldSettings:
    scale: str = "full"
    work: Path = Path("runs/metaworld")  # demonstrations, training runs, evaluation logs (large; git-ignored)
    out: Path = Path("results/metaworld")  # results.json, report.md, plots (small; committed)
    workers: int = 1  # processes stepping the evaluation envs


def train_config(arm: MetaWorldArm, demos: Path, out: Path, scale: ExperimentScale):
    """What both arms share (data, batch, schedule, seed) with the arm's model and learning rate."""
    from robovla.train.config import TrainConfig

    steps = scale.steps * arm.step_factor
    return TrainConfig(
        datasets=[str(demos)], augment=False, steps=steps, batch_size=32, lr=arm.lr, schedule="warmup-cosine",
        warmup_steps=max(1, steps // 20), seed=0, out=str(out), save_every=max(1, min(250, steps)),
        keep_checkpoints=1, log_every=max(1, min(50, steps)), progress=False, **arm.options,
    )


def run(settings: MetaWorldSettings, command: str | None = None) -> dict[str, Any]:
    """Every stage in order, skipping what is done; returns (and writes) the results document."""
    from robovla.eval.policies import ExpertPolicy
    from robovla.experiments.common import StageLog, collect_demonstrations, evaluate_policy, train_and_evaluate
    from robovla.eval.harness import simulator_versions
    from robovla.sim.metaworld_env import import_metaworld

    import_metaworld()  # a missing extra or a MuJoCo clash says so before any stage runs
    scale = SCALES[settings.scale]
    work, out = Path(settings.work), Path(settings.out)
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog(work / "experiment.json", {"experiment": NAME, "scale": settings.scale, **vars(scale)})
    demos = work / "demos"
    collected = log.run("demos", lambda: collect_demonstrations(
        demos, scale.demos, seed=COLLECT_SEED, wrist_camera=True, suite=SUITE, noise=0.1, embodiment=EMBODIMENT))
    videos = 1 if settings.scale == "quick" else 2
    policies: dict[str, Any] = {"expert": {"label": "the scripted experts that made the demonstrations",
                                           "evaluation": log.run("eval/expert", lambda: evaluate_policy(
                                               ExpertPolicy(), work / "eval" / "expert", (SUITE,), scale.episodes,
                                               EMBODIMENT, settings.workers, videos))}}
    for arm in ARMS:
        config = train_config(arm, demos, work / "train" / arm.name, scale)
        trained, evaluated = train_and_evaluate(log, arm.name, config, work, (SUITE,), scale.episodes, EMBODIMENT,
                                                settings.workers, videos=videos)
        policies[arm.name] = {"label": arm.label, "lr": arm.lr, "steps": config.steps, "training": trained,
                              "evaluation": evaluated}
    experts_mt50 = log.run("eval/expert-mt50", lambda: evaluate_policy(
        ExpertPolicy(), work / "eval" / "expert-mt50", (MT50,), scale.expert_mt50_episodes, EMBODIMENT,
        settings.workers))
    document = {
        "schema": "robovla.experiment.metaworld/1", "experiment": NAME, "scale": settings.scale, "command": command,
        "suite": SUITE, "embodiment": EMBODIMENT, "cameras": list(CAMERAS), "image_size": 128, "batch_size": 32,
        "episodes": scale.episodes, "demonstrations": {"folder": str(demos), "seed": COLLECT_SEED, "noise": 0.1,
                                                       **collected},
        "simulator": simulator_versions((SUITE,)),
        "policies": {name: {**policy, "success": policy["evaluation"]["conditions"][SUITE]}
                     for name, policy in policies.items()},
        "experts_mt50": {"folder": "experts-mt50", "episodes": scale.expert_mt50_episodes,
                         "success": experts_mt50["conditions"][MT50]},
        "wall_seconds": log.wall_seconds(),
    }
    from robovla.experiments.metaworld_report import write_metaworld_report

    keep_files(work / "eval" / "expert-mt50", out / "experts-mt50", EXPERT_FILES)
    return publish(out, document, write_metaworld_report)


def keep_files(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Copy an evaluation's small files (not its episode log or videos) where results are committed."""
    from robovla.files import write_atomic

    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).exists():
            write_atomic(target / name, (source / name).read_bytes())
