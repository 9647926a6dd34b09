"""Collect scripted-expert demonstrations from the tabletop simulator (or Meta-World) into a LeRobot v3.0 dataset.

Episodes run in worker processes; each successful one is staged as its own parquet file (written to a temp
name, then renamed) in `<out>.partial/`, failed ones leave a marker. The final dataset is assembled from the
first N successes in attempt order, so a seed gives the same dataset whatever the number of workers, and an
interrupted run resumes from the staged episodes when rerun with the same arguments. The previous dataset at
`<out>` is replaced only by a complete new one.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from robovla.errors import RobovlaError


@dataclass(frozen=True)
class CollectConfig:
    """Everything that determines the collected dataset (the staging folder must match it to resume)."""

    suite: str = "tabletop-train"
    episodes: int = 50
    embodiment: str = "default"
    image_size: int = 128
    wrist_camera: bool = False
    task: str | None = None
    seed: int = 0
    noise: float = 0.1
    # DAgger: a trained policy drives this share of the steps while the expert labels every state it visits
    policy: str | None = None
    policy_share: float = 0.5
    # each scene under this many instructions (the sampled one, then other targets/goals in the same layout)
    instructions_per_scene: int = 1
    # "augmented": half the episodes under a training rewrite of their instruction (robovla.sim.rewrites)
    instructions: str = "suite"
    # keep only each demonstration's first K frames, unchecked for success: the expert's labels are right
    # whatever comes after, and many short demos show many more distinct scenes for the same time and disk
    max_frames: int | None = None


@dataclass
class CollectResult:
    out: Path
    episodes: int
    attempts: int
    failed: int
    frames: int
    seconds: float
    per_task: dict[str, list[int]] = field(default_factory=dict)  # family -> [successes, attempts] this run

    @property
    def success_rate(self) -> float:
        return (self.attempts - self.failed) / max(1, self.attempts)


def attempt_seed(seed: int, attempt: int) -> int:
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def scene_seed(seed: int, scene: int, suite: str) -> int:
    """The env seed of a scene. A Meta-World env plays task (seed mod its number of tasks), so its scenes take the
    tasks in turn (an even share of demonstrations per task) with layouts still drawn from the hash."""
    from robovla.sim.metaworld_tasks import is_metaworld_suite, suite_tasks

    drawn = attempt_seed(seed, scene)
    if not is_metaworld_suite(suite):
        return drawn
    n = len(suite_tasks(suite))
    return drawn - drawn % n + scene % n


class EpisodeRecorder:
    """Owns one env (and its GL context) and turns attempt numbers into staged episodes."""

    def __init__(self, config: CollectConfig, staging: Path) -> None:
        from robovla.sim import make_env

        self.config = config
        self.staging = staging
        self.policy = None
        if config.policy:  # before the env: importing torch's compiler stack after an EGL context is made crashes
            import torch

            import robovla

            torch.set_num_threads(1)  # one per worker process: the workers already use the cores
            self.policy = robovla.Policy.from_pretrained(config.policy, restrict_to_actions=True)
        self.env = make_env(
            config.suite, embodiment=config.embodiment, image_size=config.image_size, wrist_camera=config.wrist_camera,
            task=config.task, instructions=config.instructions,
        )

    def _policy_action(self, obs: dict, instruction: str) -> np.ndarray:
        assert self.policy is not None
        from robovla.robots import robot_for

        observation = robot_for(self.config.embodiment).policy_observation(obs, instruction)
        return self.policy.predict(observation).first[0].astype(np.float32)

    def run(self, attempt: int) -> tuple[int, bool, bool, int, str]:
        """Roll out one attempt; stage it if it succeeded (or, under a policy, always: every visited state
        carries the expert's label). Returns (attempt, kept, success, frames, task)."""
        from robovla.data.episodes import Episode
        from robovla.data.lerobot_writer import episode_table
        from robovla.sim.expert import scripted_expert
        from robovla.sim.tasks import alternative_tasks

        scene, variant = divmod(attempt, self.config.instructions_per_scene)
        env = self.env
        obs, info = env.reset(seed=scene_seed(self.config.seed, scene, self.config.suite))
        if variant:  # the same scene under another instruction, if it has one more
            alternatives = alternative_tasks(env.episode, env.suite, np.random.default_rng([self.config.seed, scene]))
            if len(alternatives) < variant:
                (self.staging / f"failed-{attempt:07d}").touch()
                return attempt, False, False, 0, info["task"]
            obs, info = env.reset(options={"episode": alternatives[variant - 1]})
        rng = np.random.default_rng(attempt_seed(self.config.seed, attempt))
        expert = scripted_expert(env, noise=self.config.noise, rng=rng)
        images, wrist, proprio, actions, grounding = [], [], [], [], []
        success = False
        for _ in range(min(env.max_episode_steps, self.config.max_frames or env.max_episode_steps)):
            action = expert.act()
            images.append(obs["image"])
            if "wrist_image" in obs:
                wrist.append(obs["wrist_image"])
            proprio.append(obs["proprio"])
            if env.has_grounding:
                grounding.append(env.grounding())
            actions.append(action)
            if self.policy is not None and rng.random() < self.config.policy_share:
                executed = self._policy_action(obs, info["instruction"])
            else:
                executed = expert.perturb(action)
            obs, _, terminated, truncated, info = env.step(executed)
            if terminated or truncated:
                success = bool(info["success"])
                break
        name = f"ep-{attempt:07d}"
        if not success and self.policy is None and len(actions) != self.config.max_frames:
            (self.staging / f"failed-{attempt:07d}").touch()
            return attempt, False, False, len(actions), info["task"]
        cams = {"front": np.stack(images), **({"wrist": np.stack(wrist)} if wrist else {})}
        episode = Episode(info["instruction"], np.stack(actions), np.stack(proprio), cams, success=success,
                          grounding=np.stack(grounding) if grounding else None)
        table = episode_table(episode, env.embodiment.control_hz, attempt)
        tmp = self.staging / f"{name}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.replace(self.staging / f"{name}.parquet")
        return attempt, True, success, len(actions), info["task"]


_recorder: EpisodeRecorder | None = None  # one per worker process, made by the pool initializer


def _init_worker(config: CollectConfig, staging: Path) -> None:
    global _recorder
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _recorder = EpisodeRecorder(config, staging)


def _run_in_worker(attempt: int) -> tuple[int, bool, bool, int, str]:
    assert _recorder is not None
    return _recorder.run(attempt)


def _prepare_staging(config: CollectConfig, staging: Path) -> None:
    saved = staging / "config.json"
    if saved.is_file():
        previous = json.loads(saved.read_text())
        if previous != asdict(config):
            raise RobovlaError(
                f"{staging} holds an interrupted collection with other settings ({previous}); "
                "rerun with those settings to resume, or delete the folder"
            )
    staging.mkdir(parents=True, exist_ok=True)
    for stale in staging.glob("*.tmp"):
        stale.unlink()
    saved.write_text(json.dumps(asdict(config)))


def _staged(staging: Path) -> tuple[list[int], set[int]]:
    ok = sorted(int(p.name[3:10]) for p in staging.glob("ep-*.parquet"))
    failed = {int(p.name[7:14]) for p in staging.glob("failed-*")}
    return ok, failed


def collect(config: CollectConfig, out: str | Path, workers: int = 2, progress: bool = True) -> CollectResult:
    """Collect `config.episodes` successful expert episodes into a LeRobot v3.0 dataset at `out`."""
    from tqdm import tqdm

    from robovla.data.lerobot_writer import write_lerobot_dataset
    from robovla.sim import list_suites
    from robovla.sim.env import embodiment_of
    from robovla.sim.rewrites import AUGMENTED
    from robovla.sim.metaworld_tasks import check_task, is_metaworld_suite, suite_tasks
    from robovla.sim.variations import check_family

    if is_metaworld_suite(config.suite):
        suite_tasks(config.suite)
        if config.task is not None:
            check_task(config.task)
        if config.instructions_per_scene > 1 or config.instructions != "suite":
            raise RobovlaError("--instructions-per-scene and --instructions need a tabletop suite: Meta-World tasks "
                               "have one instruction")
    elif config.suite not in list_suites():
        raise RobovlaError(f"unknown suite {config.suite!r}; valid: {', '.join(list_suites())}, or a Meta-World "
                           "suite (metaworld-mt10, metaworld-mt50, metaworld-TASK, ...)")
    else:
        check_family(config.task)
    if config.instructions not in ("suite", AUGMENTED):
        raise RobovlaError(f"--instructions {config.instructions!r}: a collection takes suite or {AUGMENTED} (the "
                           "rewrite families are held out for evaluation)")
    embodiment = embodiment_of(config.suite, config.embodiment)
    if config.episodes < 1 or workers < 1 or config.instructions_per_scene < 1 or (
        config.max_frames is not None and config.max_frames < 1
    ):
        raise RobovlaError("--episodes, --workers, --instructions-per-scene and --max-frames must be >= 1")
    if config.policy is not None:
        if not (Path(config.policy) / "config.json").is_file():
            raise RobovlaError(f"--policy {config.policy}: not a checkpoint folder (no config.json)")
        if not 0.0 <= config.policy_share <= 1.0:
            raise RobovlaError(f"--policy-share must be in [0, 1], got {config.policy_share}")
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    _prepare_staging(config, staging)
    ok, failed = _staged(staging)
    done = set(ok) | failed
    limit = len(done) + 3 * max(0, config.episodes - len(ok)) + 20
    pending = [a for a in range(limit) if a not in done]
    per_task: dict[str, list[int]] = {}
    start = time.time()
    bar = tqdm(total=config.episodes, initial=min(len(ok), config.episodes), unit="ep", disable=not progress, desc="collect")
    try:
        if len(ok) < config.episodes:
            if workers == 1:
                recorder = EpisodeRecorder(config, staging)
                results = map(recorder.run, pending)
                pool = None
            else:
                pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(config, staging))
                results = pool.imap(_run_in_worker, pending)
            try:
                for attempt, kept, success, frames, task in results:
                    stats = per_task.setdefault(task, [0, 0])
                    stats[0] += success
                    stats[1] += 1
                    if kept:
                        ok.append(attempt)
                    else:
                        failed.add(attempt)
                    done.add(attempt)
                    bar.update(int(kept))
                    wins, tries = (sum(column) for column in zip(*per_task.values()))
                    bar.set_postfix(success=f"{wins / tries:.0%}", failed=len(failed))
                    if len(ok) >= config.episodes:
                        break
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
    except KeyboardInterrupt:
        bar.close()
        raise KeyboardInterrupt(f"{len(ok)} finished episodes kept in {staging}; rerun the same command to resume") from None
    bar.close()
    if len(ok) < config.episodes:
        raise RobovlaError(f"the expert succeeded in only {len(ok)} of {len(done)} attempts; staged episodes kept in {staging}")
    chosen = sorted(ok)[: config.episodes]
    tables = [pq.read_table(staging / f"ep-{a:07d}.parquet") for a in chosen]
    extra = {
        "suite": config.suite,
        "embodiment": embodiment.name,
        "task": config.task,
        "seed": config.seed,
        "expert_noise": config.noise,
        **({"instructions_per_scene": config.instructions_per_scene} if config.instructions_per_scene > 1 else {}),
        **({"max_frames": config.max_frames} if config.max_frames else {}),
        **({"instructions": config.instructions} if config.instructions != "suite" else {}),
        **({"dagger_policy": config.policy, "policy_share": config.policy_share} if config.policy else {}),
        "image_size": config.image_size,
        "action_scale": {"pos_step_m": embodiment.pos_step, "rot_step_rad": embodiment.rot_step, "gripper": "absolute, 1 = open"},
    }
    write_lerobot_dataset(out, tables, fps=embodiment.control_hz, dataset_name=embodiment.dataset_name, robot_type=embodiment.robot_type, extra_info=extra)
    attempts = sum(1 for a in done if a <= chosen[-1])
    failed_count = sum(1 for a in failed if a <= chosen[-1])
    shutil.rmtree(staging)
    return CollectResult(out, len(chosen), attempts, failed_count, sum(t.num_rows for t in tables), time.time() - start, per_task)
