"""The evaluation harness: conditions x seeded episodes -> episode log -> results.json, report.md, plots, videos.

Episode k of a condition always uses seed `settings.seed + k`, and the episodes run in fixed batches of
`num_envs` (k // num_envs), so which scene an episode sees and which episodes share a policy call never depend
on the worker count or on interruptions. Every finished episode is one line of `episodes.jsonl`; every figure
is derived from that log. A rerun of the same command continues where the last one stopped (a batch a kill
cut short runs again in full, since a batched policy's actions may depend on its batch, but only the episodes
missing from the log are added); a rerun with other settings into the same folder is refused.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import robovla
from robovla.errors import RobovlaError
from robovla.eval.log import LOG_NAME, EpisodeLog, EpisodeRecord
from robovla.eval.policies import EvalPolicy
from robovla.eval.rollout import run_episodes
from robovla.files import read_json, write_json_atomic

logger = logging.getLogger("robovla.eval")

OFFICIAL_SEED = 1_000_000  # reported figures use episodes seeded from here
VALIDATION_SEED = 2_000_000  # choices (checkpoints, settings) are made on these, never on the official ones
# instruction sets a condition may name after its suite ("tabletop-train:polite"): the paraphrase templates, and
# each held-out rewrite family alone (robovla.sim.rewrites)
EVAL_INSTRUCTIONS = ("paraphrase", "punctuation", "polite", "synonym", "order")
RUN_NAME, RESULTS_NAME = "run.json", "results.json"
RUN_SCHEMA = "robovla.eval.run/1"
# describe() keys that may change between a run and its resumption: where the same thing is found
MOVABLE = ("checkpoint", "url")


@dataclass(frozen=True)
class EvalSettings:
    """What an evaluation runs. Only the first five fields decide its results (see `fingerprint`)."""

    conditions: tuple[str, ...] = ("tabletop-train",)  # suite names, ":paraphrase" to rewrite their instructions
    episodes: int = 50  # per condition
    seed: int = OFFICIAL_SEED
    embodiment: str = "default"
    num_envs: int = 25  # episodes stepped together: one policy call serves them all
    workers: int = 1  # processes stepping the envs
    videos: int = 0  # episodes filmed per condition (the first ones)
    progress: bool = True

    def fingerprint(self) -> dict[str, Any]:
        return {"conditions": list(self.conditions), "episodes": self.episodes, "seed": self.seed,
                "embodiment": self.embodiment, "num_envs": self.num_envs}

    def validate(self) -> None:
        for name in ("episodes", "num_envs", "workers"):
            if getattr(self, name) < 1:
                raise RobovlaError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.videos < 0:
            raise RobovlaError(f"videos must be >= 0, got {self.videos}")
        if not self.conditions:
            raise RobovlaError("no suite to evaluate")
        from robovla.sim.env import embodiment_of

        for condition in self.conditions:
            embodiment_of(split_condition(condition)[0], self.embodiment)


def split_condition(condition: str) -> tuple[str, str]:
    """"tabletop-train:paraphrase" -> ("tabletop-train", "paraphrase"); a plain suite keeps its own phrasings."""
    from robovla.sim.metaworld_tasks import is_metaworld_suite, suite_tasks
    from robovla.sim.variations import get_suite

    suite, _, instructions = condition.partition(":")
    if is_metaworld_suite(suite):
        suite_tasks(suite)
        if instructions:
            raise RobovlaError(f"{condition!r}: Meta-World suites have one phrasing per task")
    else:
        get_suite(suite)
    if instructions not in ("", *EVAL_INSTRUCTIONS):
        raise RobovlaError(f"unknown instruction set {instructions!r} in {condition!r}; valid: "
                           f"{', '.join(EVAL_INSTRUCTIONS)}")
    return suite, instructions or "suite"


def expand_conditions(suites: list[str], instructions: str = "suite") -> tuple[str, ...]:
    """CLI suites ("all" = the five generalization suites) -> conditions; `instructions="paraphrase"` applies to each of them."""
    from robovla.sim.variations import BENCHMARK_SUITES

    if instructions not in ("suite", *EVAL_INSTRUCTIONS):
        raise RobovlaError(f"unknown instruction set {instructions!r}; valid: suite, {', '.join(EVAL_INSTRUCTIONS)}")
    names = [name for suite in suites for name in (BENCHMARK_SUITES if suite == "all" else [suite])]
    conditions = []
    for name in names:
        condition = f"{name}:{instructions}" if instructions != "suite" and ":" not in name else name
        split_condition(condition)
        if condition not in conditions:
            conditions.append(condition)
    return tuple(conditions)


def evaluate(policy: EvalPolicy, settings: EvalSettings, out: str | Path | None = None,
             command: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Roll `policy` out under `settings`; returns the results.json document (also written under `out`).

    With `out`, every finished episode is logged there and a rerun resumes; without it nothing is written."""
    settings.validate()
    policy.check(settings.embodiment)
    folder = _prepare_folder(Path(out)) if out is not None else None
    run = _start_run(folder, policy, settings, command, argv)
    log = EpisodeLog(folder / LOG_NAME if folder else None)
    total = len(settings.conditions) * settings.episodes
    bar = _progress_bar(settings, total, log)
    session_start = time.perf_counter()
    pool = None
    try:
        if settings.workers > 1:
            from robovla.sim.workers import ProcessVectorEnv

            pool = ProcessVectorEnv(settings.workers)
        for condition in settings.conditions:
            for start in range(0, settings.episodes, settings.num_envs):
                batch = range(start, min(start + settings.num_envs, settings.episodes))
                missing = [k for k in batch if (condition, k) not in log]
                if not missing:
                    continue
                episodes = missing if policy.batch_invariant else list(batch)
                _run_batch(policy, settings, condition, episodes, log, folder, pool, bar)
                if folder is not None:
                    _save_session(folder, run, time.perf_counter() - session_start)
                if bar is None:  # --quiet: one line per batch for logs instead of a bar
                    _log_batch(log, settings, condition, batch, time.perf_counter() - session_start)
    finally:
        if pool is not None:
            pool.close()
        if bar is not None:
            bar.close()
        policy.close()
    run["sessions"][-1]["seconds"] = round(time.perf_counter() - session_start, 2)
    results = _summarize(log, run, settings)
    if folder is not None:
        write_json_atomic(folder / RUN_NAME, run)
        write_json_atomic(folder / RESULTS_NAME, results)
        from robovla.eval.report import write_report

        write_report(folder, results, _video_entries(folder, log, settings))
    return results


def _run_batch(policy: EvalPolicy, settings: EvalSettings, condition: str, episodes: list[int], log: EpisodeLog,
               folder: Path | None, pool: Any, bar: Any) -> None:
    """Run `episodes` of `condition` side by side; log each one that is not in the log yet as it ends."""
    from robovla.sim.env import make_env
    from robovla.sim.vector import VectorEnv

    suite, instructions = split_condition(condition)
    kwargs = {"suite": suite, "embodiment": settings.embodiment, "image_size": policy.image_size,
              "wrist_camera": policy.wrist_camera, "instructions": instructions}
    if pool is not None:
        pool.configure([kwargs] * len(episodes))
        envs = pool
    else:
        envs = VectorEnv([make_env(**kwargs) for _ in episodes])
    start = time.perf_counter()
    obs, infos = envs.reset(seeds=[settings.seed + k for k in episodes])
    families = [info["task"] for info in infos]
    texts = list(envs.instructions)
    filmed = [j for j, k in enumerate(episodes) if k < settings.videos and (condition, k) not in log]

    def finished(j: int, success: bool, steps: int, info: dict, frames: list[np.ndarray] | None) -> None:
        k = episodes[j]
        if (condition, k) in log:  # run again only so that its batch is the one it had
            return
        record = EpisodeRecord(condition, suite, instructions, k, settings.seed + k, settings.embodiment,
                               families[j], texts[j], success, steps, round(time.perf_counter() - start, 3),
                               None if success else info.get("failure") or "timeout", info.get("handled"))
        if frames is not None and folder is not None:
            _film(folder, record, frames)
        log.append(record)
        if bar is not None:
            bar.update(1)
            done = list(log.records.values())
            bar.set_postfix_str(f"success {sum(r.success for r in done) / len(done):.0%} ({condition})")

    try:
        run_episodes(envs, obs, policy.actor(settings.embodiment), record=filmed, on_finish=finished)
    finally:
        if pool is None:
            envs.close()


def _log_batch(log: EpisodeLog, settings: EvalSettings, condition: str, batch: range, seconds: float) -> None:
    done = [r for c in settings.conditions for k in range(settings.episodes) if (r := log.records.get((c, k)))]
    mine = [log.records[(condition, k)] for k in batch]
    logger.info("%s episodes %d-%d: %d/%d succeeded; %d/%d episodes done, %.0f%% success so far, %.0f s",
                condition, batch.start, batch.stop - 1, sum(r.success for r in mine), len(mine), len(done),
                len(settings.conditions) * settings.episodes, 100 * sum(r.success for r in done) / len(done),
                seconds)


def video_stem(folder: Path, condition: str, episode: int) -> Path:
    return folder / "videos" / f"{condition.replace(':', '-')}_ep{episode:03d}"


def _film(folder: Path, record: EpisodeRecord, frames: list[np.ndarray]) -> None:
    """The episode as a video (and its last frame as a still for the report's grid), before it is logged."""
    from robovla.eval.video import write_episode_video
    from robovla.files import write_atomic

    stem = video_stem(folder, record.condition, record.episode)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_episode_video(frames, stem, record.instruction, _outcome(record))
    from io import BytesIO

    from PIL import Image

    still = BytesIO()
    Image.fromarray(frames[-1]).save(still, format="PNG")
    write_atomic(stem.with_suffix(".png"), still.getvalue())


def _outcome(record: EpisodeRecord) -> str:
    return f"success in {record.steps} steps" if record.success else f"failure: {record.failure}"


def _video_entries(folder: Path, log: EpisodeLog, settings: EvalSettings) -> list[dict[str, Any]]:
    """The filmed episodes found on disk, in condition and episode order, for the report."""
    entries = []
    for condition in settings.conditions:
        for k in range(min(settings.videos, settings.episodes)):
            record = log.records.get((condition, k))
            stem = video_stem(folder, condition, k)
            video = next((p for p in (stem.with_suffix(".mp4"), stem.with_suffix(".gif")) if p.exists()), None)
            if record is None or video is None:
                continue
            entries.append({**record.to_dict(), "video": video.relative_to(folder).as_posix(),
                            "still": stem.with_suffix(".png").relative_to(folder).as_posix(),
                            "outcome": _outcome(record)})
    return entries


def _prepare_folder(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise RobovlaError(f"cannot write evaluation results to {folder}: {error.strerror or error}") from None
    return folder


def _start_run(folder: Path | None, policy: EvalPolicy, settings: EvalSettings, command: str | None,
               argv: list[str] | None) -> dict[str, Any]:
    """run.json: the settings the folder's episodes were made with, the simulator versions they ran on, the
    command, and the time each session took.

    A folder made with other settings, or on another MuJoCo or Meta-World version (its episodes would not repeat),
    is refused, naming every difference."""
    fresh = {"schema": RUN_SCHEMA, "settings": settings.fingerprint(), "policy": policy.describe(),
             "simulator": simulator_versions(settings.conditions), "command": command, "argv": argv, "sessions": []}
    previous = read_json(folder / RUN_NAME) if folder is not None and (folder / RUN_NAME).exists() else None
    if previous is None and folder is not None and (folder / LOG_NAME).exists():
        raise RobovlaError(f"{folder} holds an episode log but no {RUN_NAME}: choose another --out")
    run = fresh
    if previous is not None:
        differences = _differences(previous, fresh)
        if differences:
            raise RobovlaError(f"{folder} holds an evaluation made with other settings ({'; '.join(differences)}); "
                               f"rerun its own command (robovla eval --resume --out {folder}) or choose another --out")
        run = {**previous, "policy": fresh["policy"]}
    run["sessions"] = [*run.get("sessions", []), {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                  "seconds": 0.0, "workers": settings.workers}]
    if folder is not None:
        write_json_atomic(folder / RUN_NAME, run)
    return run


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    differences = []
    for section in ("settings", "policy", "simulator"):
        before, after = old.get(section, {}), new[section]
        for key in sorted(set(before) | set(after)):
            if key not in MOVABLE and before.get(key) != after.get(key):
                differences.append(f"{section} {key}: {before.get(key)!r} before, {after.get(key)!r} now")
    return differences


def _save_session(folder: Path, run: dict[str, Any], seconds: float) -> None:
    run["sessions"][-1]["seconds"] = round(seconds, 2)
    write_json_atomic(folder / RUN_NAME, run)


def _summarize(log: EpisodeLog, run: dict[str, Any], settings: EvalSettings) -> dict[str, Any]:
    from robovla.eval.results import summarize

    wall = sum(session["seconds"] for session in run["sessions"])
    header = {
        "command": run.get("command"),
        "robovla_version": robovla.__version__,
        "git_commit": source_revision(),
        "simulator": run["simulator"],
        "policy": run["policy"],
        "settings": settings.fingerprint(),
        "conditions": list(settings.conditions),
        "timing": {"wall_clock_s": round(wall, 1),
                   "episodes_per_minute": round(len(log) / wall * 60, 2) if wall > 0 else None,
                   "sessions": len(run["sessions"]), "workers": [s["workers"] for s in run["sessions"]],
                   "cpu_count": os.cpu_count()},
    }
    wanted = {(c, k) for c in settings.conditions for k in range(settings.episodes)}
    return summarize([r.to_dict() for key, r in log.records.items() if key in wanted], header)


def simulator_versions(conditions: tuple[str, ...]) -> dict[str, str | None]:
    """The simulator packages the episodes ran on (rendered frames, and so a policy's successes, may differ across
    MuJoCo versions): mujoco, and metaworld for Meta-World suites."""
    from importlib.metadata import PackageNotFoundError, version

    from robovla.sim.metaworld_tasks import is_metaworld_suite

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    packages = ["mujoco", *(["metaworld"] if any(is_metaworld_suite(split_condition(c)[0]) for c in conditions)
                            else [])]
    return {name: installed(name) for name in packages}


def source_revision() -> str | None:
    """The git commit of the robovla source that ran, None outside git; "+dirty" when tracked files other than
    the committed results (`results/`, what evaluations write) differ from it."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results")
    return commit + ("+dirty" if changed else "")


def _progress_bar(settings: EvalSettings, total: int, log: EpisodeLog) -> Any:
    if not settings.progress:
        return None
    from tqdm import tqdm

    done = sum(1 for c in settings.conditions for k in range(settings.episodes) if (c, k) in log)
    return tqdm(total=total, initial=done, desc="eval", unit="ep", file=sys.stderr, dynamic_ncols=True)
