"""What every `robovla experiment` shares: scales, stages that resume, and the record of what ran.

An experiment is a chain of stages (collect demonstrations, train each model, evaluate each, time each). Each stage
writes its result atomically where the next rerun finds it: a finished stage is skipped, a training run cut short
resumes from its newest checkpoint, an evaluation from its episode log. `experiment.json` in the work folder
records each stage's wall-clock and command, so the report can say what the numbers cost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from robovla.errors import RobovlaError
from robovla.files import write_json_atomic

logger = logging.getLogger("robovla.experiment")


@dataclass(frozen=True)
class ExperimentScale:
    """How big a run is: demonstrations to collect, training steps (the schedule's length), evaluation episodes
    per suite, and timed calls per measurement."""

    demos: int
    steps: int
    episodes: int
    timing_calls: int


class StageLog:
    """`experiment.json`: each finished stage's wall-clock seconds and details, kept across reruns."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        settings = json.loads(json.dumps(settings))  # as it reads back (tuples become lists)
        previous = json.loads(path.read_text()) if path.exists() else {}
        if previous and previous.get("settings") != settings:
            changed = sorted(k for k in set(settings) | set(previous["settings"])
                             if settings.get(k) != previous["settings"].get(k))
            raise RobovlaError(f"{path.parent} holds a run with other settings ({', '.join(changed)}): choose "
                               f"another --work folder, or rerun with the same settings to resume it")
        self.data = previous or {"settings": settings, "stages": {}}

    def note_machine(self, machine: dict[str, Any]) -> None:
        """Record the machine this (re)run works on: a run resumed elsewhere has stages timed on each."""
        self.data.setdefault("machines", []).append(machine)
        write_json_atomic(self.path, self.data)

    def machines(self) -> list[dict[str, Any]]:
        return self.data.get("machines", [])

    def done(self, name: str) -> dict[str, Any] | None:
        return self.data["stages"].get(name)

    def wall_seconds(self) -> dict[str, float]:
        """Each finished stage's wall-clock seconds (what every results document reports)."""
        return {name: stage["seconds"] for name, stage in self.data["stages"].items()}

    def run(self, name: str, work: Callable[[], dict[str, Any] | None], redo: bool = False) -> dict[str, Any]:
        """Run `work` unless the stage is recorded as finished; record its wall-clock and what it returns."""
        if not redo and (finished := self.done(name)) is not None:
            logger.info("%s: done earlier (%.0f s)", name, finished["seconds"])
            return finished
        logger.info("%s: running", name)
        start = time.perf_counter()
        details = work() or {}
        record = {"seconds": round(time.perf_counter() - start, 1), **details}
        self.data["stages"][name] = record
        write_json_atomic(self.path, self.data)
        logger.info("%s: finished in %.0f s", name, record["seconds"])
        return record


def machine_speed(seconds: float = 0.5) -> dict[str, Any]:
    """This machine as a wall-clock depends on it: CPUs, torch threads and the float32 GEMM rate (1024 x 1024
    products, the fastest in `seconds`). Training and feature passes are GEMM-bound, so the rate says how a
    wall-clock carries over: the same 2-core budget is 5x longer at 40 GFLOP/s than at 200."""
    import platform

    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "gemm_gflops_float32": round(2 * 1024**3 / best / 1e9, 1), "time": round(time.time())}


def publish(out: Path, document: dict[str, Any],
            write_report: Callable[[Path, dict[str, Any]], Any]) -> dict[str, Any]:
    """An experiment's results.json and report (plots too) in `out`, made if missing; returns `document`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", document)
    write_report(out, document)
    return document


def collect_demonstrations(out: Path, episodes: int, seed: int, wrist_camera: bool, suite: str = "tabletop-train",
                           noise: float = 0.3, workers: int = 2, embodiment: str = "default",
                           instructions: str = "suite", instructions_per_scene: int = 1,
                           max_frames: int | None = None) -> dict[str, Any]:
    """Scripted-expert demonstrations as a LeRobot dataset (the folder appears only when complete)."""
    from robovla.data.collection import CollectConfig, collect

    if (out / "meta" / "info.json").exists():
        info = json.loads((out / "meta" / "info.json").read_text())
        return {"episodes": info["total_episodes"], "frames": info["total_frames"]}
    config = CollectConfig(suite=suite, episodes=episodes, embodiment=embodiment, image_size=128,
                           wrist_camera=wrist_camera, seed=seed, noise=noise, instructions=instructions,
                           instructions_per_scene=instructions_per_scene, max_frames=max_frames)
    result = collect(config, out, workers=workers, progress=False)
    return {"episodes": result.episodes, "frames": result.frames, "expert_success": round(result.success_rate, 3)}


def train_to_end(config: Any) -> dict[str, Any]:
    """Train (or resume) a run to `config.stop_at or config.steps`; returns its final checkpoint and what its
    sessions cost (`run_summary`)."""
    from robovla.train import train

    if needs_training(config):
        train(config)
    return run_summary(Path(config.out))


def needs_training(config: Any) -> bool:
    """Whether a run still has steps to train up to `config.stop_at or config.steps`; sets `config.resume` when it
    continues from a checkpoint of its own."""
    from robovla.train.state import latest_checkpoint

    latest = latest_checkpoint(Path(config.out))
    target = min(config.steps, config.stop_at or config.steps)
    if latest is not None and int(latest.name.split("-")[-1]) >= target:
        return False
    config.resume = latest is not None
    return True


def run_summary(out: Path) -> dict[str, Any]:
    """A training run's newest checkpoint and, from `metrics.jsonl`, its wall-clock summed over every session
    (a run resumed across sessions has one "end" record per session) and its last session's figures."""
    from robovla.train.state import latest_checkpoint

    ends = [record for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if record.get("event") == "end"]
    if not ends:
        raise RobovlaError(f"{out}: no finished training session in metrics.jsonl")
    last, checkpoint = ends[-1], latest_checkpoint(out)
    return {"checkpoint": str(checkpoint), "steps": int(checkpoint.name.split("-")[-1]),
            "train_seconds": round(sum(e["wall_seconds"] for e in ends), 1), "sessions": len(ends),
            "samples_per_second": last["samples_per_second"], "final_loss": last["final_loss"],
            "parameters": last["total_parameters"], "trainable_parameters": last["trainable_parameters"],
            "peak_memory_mb": last["peak_memory_mb"]}


def evaluate_checkpoint(checkpoint: Path, folder: Path, conditions: tuple[str, ...], episodes: int,
                        embodiment: str = "default", workers: int = 1, unnorm_key: str | None = None,
                        selection: str | None = None, quantization: str | None = None,
                        dtype: str = "float32", videos: int = 0, seed: int | None = None) -> dict[str, Any]:
    """A VLA or Diffusion Policy checkpoint on `conditions` (`evaluate_policy`; `seed`: the first episode's, the
    official seeds' when None). `selection` sets a VLA's decoding
    (one for every arm of a comparison); `dtype` and `quantization` (int8/int4 language-model weights) say how a
    VLA is loaded."""
    import robovla
    from robovla.diffusion.runner import DiffusionRunner, is_diffusion_checkpoint
    from robovla.eval import CheckpointPolicy
    from robovla.eval.policies import DiffusionCheckpointPolicy

    if is_diffusion_checkpoint(checkpoint):
        policy: Any = DiffusionCheckpointPolicy(DiffusionRunner.from_pretrained(checkpoint, unnorm_key), checkpoint)
    else:
        model = robovla.load_pretrained(checkpoint, dtype=dtype, quantization=quantization)
        if selection is not None:
            from dataclasses import replace

            model.set_recipe(replace(model.recipe, selection=selection))
        policy = CheckpointPolicy(model, checkpoint, unnorm_key, options={"dtype": dtype, "quantization": quantization})
    return evaluate_policy(policy, folder, conditions, episodes, embodiment, workers, videos, seed)


def evaluate_policy(policy: Any, folder: Path, conditions: tuple[str, ...], episodes: int, embodiment: str = "default",
                    workers: int = 1, videos: int = 0, seed: int | None = None) -> dict[str, Any]:
    """Any `EvalPolicy` (a checkpoint's, the scripted expert) on `conditions`, official seeds (or from `seed`),
    episode log that resumes: success with Wilson intervals per condition (with its per-task breakdowns) and overall; the first
    `videos` episodes of each condition are filmed into `folder`/videos."""
    from robovla.eval import EvalSettings, evaluate
    from robovla.eval.harness import OFFICIAL_SEED

    result = evaluate(policy, EvalSettings(conditions=conditions, episodes=episodes, embodiment=embodiment,
                                           num_envs=min(25, episodes), workers=workers, videos=videos,
                                           progress=False, seed=OFFICIAL_SEED if seed is None else seed),
                      out=folder)
    kept = ("n", "successes", "rate", "ci95", "families", "difficulties")
    return {"folder": str(folder), "overall": result["overall"],
            "conditions": {name: {k: row[k] for k in kept if k in row} for name, row in result["conditions"].items()},
            "episodes_per_minute": result["timing"].get("episodes_per_minute")}


def train_and_evaluate(log: StageLog, name: str, config: Any, work: Path, conditions: tuple[str, ...], episodes: int,
                       embodiment: str, workers: int, **options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One arm's two stages: `train/NAME` (in a fresh process, its output in `work`/train/NAME.log) and
    `eval/NAME` (its final checkpoint on `conditions`, episode log in `work`/eval/NAME; `options` go to
    `evaluate_checkpoint`). Returns both stages' records."""
    trained = log.run(f"train/{name}", lambda: train_in_subprocess(config, work / "train" / f"{name}.log"))
    evaluated = log.run(f"eval/{name}", lambda: evaluate_checkpoint(
        Path(trained["checkpoint"]), work / "eval" / name, conditions, episodes, embodiment, workers, **options))
    return trained, evaluated


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Success counts summed over evaluations (e.g. over demonstration counts), with their Wilson interval."""
    from robovla.eval.stats import rate_summary

    return rate_summary(sum(r["successes"] for r in rows), sum(r["n"] for r in rows))


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """"higher", "lower" or "overlap": whether a's 95% interval lies above b's, below it, or they overlap."""
    if a["ci95"][0] > b["ci95"][1]:
        return "higher"
    if a["ci95"][1] < b["ci95"][0]:
        return "lower"
    return "overlap"


def train_in_subprocess(config: Any, log: Path) -> dict[str, Any]:
    """`train_to_end` in a fresh process (`python -m robovla.train --config ...`), so that its peak memory is
    its own (the resident set size of one process only grows); its output goes to `log`."""
    import subprocess
    import sys

    out = Path(config.out)
    if needs_training(config):
        out.mkdir(parents=True, exist_ok=True)
        options = out / "experiment_train_config.json"
        write_json_atomic(options, config.to_dict())
        with open(log, "a") as handle:
            done = subprocess.run([sys.executable, "-m", "robovla.train", "--config", str(options)],
                                  stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RobovlaError(f"training {out} failed (exit {done.returncode}); its output is in {log}")
    return run_summary(out)
