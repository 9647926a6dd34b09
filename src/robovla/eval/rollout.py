"""Batched closed-loop rollouts: N simulated tabletops step together, one model call per step for all of them.

Episode k of an evaluation always uses seed `seed + k`, so two policies are compared on the same scenes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from robovla.model.vla import VLA
from robovla.sim.vector import VectorEnv


Actor = Callable[[VectorEnv, dict[str, np.ndarray], np.ndarray], np.ndarray]


def policy_actor(model: VLA, unnorm_key: str, restrict_to_actions: bool = True, execute: int | None = None,
                 ensemble: float | None = None, sim_grounding: bool = False) -> Actor:
    """Actions [N, 7] for the running envs (zeros for finished ones). One batched model call serves every env
    that needs a new prediction.

    A chunking model's K actions (or the first `execute` of them) are queued and executed in order before it
    asks again. With `ensemble=m` it is asked at every step instead, and the action executed at step t is the
    average of every chunk's prediction for t, the chunk predicted i steps earlier weighted by exp(-m * i)
    (ACT's temporal ensembling; m > 0 trusts the newest prediction most, m < 0 the oldest).

    With `sim_grounding`, a grounding model is given the simulator's true target and goal positions as its
    grounding tokens instead of estimating them: a diagnostic that separates seeing from acting."""
    queues: dict[int, list[np.ndarray]] = {}
    pending: dict[int, list[np.ndarray]] = {}  # env -> chunks still covering future steps, newest first

    def predict(envs: VectorEnv, obs: dict[str, np.ndarray], ask: np.ndarray) -> np.ndarray:
        grounding = np.stack([envs.envs[k].grounding() for k in ask]) if sim_grounding else None
        prediction = model.predict(list(obs["image"][ask]), [envs.instructions[k] for k in ask], unnorm_key,
                                   restrict_to_actions=restrict_to_actions, proprio=list(obs["proprio"][ask]),
                                   grounding=grounding)
        return prediction.next_actions

    def act(envs: VectorEnv, obs: dict[str, np.ndarray], running: np.ndarray) -> np.ndarray:
        actions = np.zeros((len(envs), 7), dtype=np.float32)
        if ensemble is not None:
            for k, chunk in zip(running, predict(envs, obs, running)):
                pending[k] = [chunk] + [c[1:] for c in pending.get(k, []) if len(c) > 1]
                weights = np.exp(-ensemble * np.arange(len(pending[k])))
                actions[k] = np.average([c[0] for c in pending[k]], axis=0, weights=weights)
            return actions
        ask = np.array([k for k in running if not queues.get(k)], dtype=int)
        if ask.size:
            for k, chunk in zip(ask, predict(envs, obs, ask)):
                queues[k] = list(chunk[:execute])
        for k in running:
            actions[k] = queues[k].pop(0)
        return actions

    return act


def run_episodes(envs: VectorEnv, obs: dict[str, np.ndarray], act: Actor,
                 record_frames: bool = False) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Step reset `envs` with `act` until all are done: (success [N], steps [N], frames).

    With `record_frames`, frames[t] holds every env's image [N, H, W, 3] after t steps (frames[0]: the reset), so
    env k's episode is `[f[k] for f in frames[: steps[k] + 1]]`; otherwise frames is empty."""
    success = np.zeros(len(envs), dtype=bool)
    length = np.zeros(len(envs), dtype=int)
    frames = [obs["image"]] if record_frames else []  # each step stacks fresh arrays: no copies needed
    for _ in range(envs.max_episode_steps):
        running = np.flatnonzero(~envs.done)
        if running.size == 0:
            break
        obs, _, _, _, infos = envs.step(act(envs, obs, running))
        length[running] += 1
        if record_frames:
            frames.append(obs["image"])
        for k in running:
            success[k] |= bool(infos[k].get("success", False))
    return success, length, frames


@dataclass
class EvalResult:
    suite: str
    embodiment: str
    episodes: int
    successes: int
    per_family: dict[str, list[int]] = field(default_factory=dict)  # family -> [successes, episodes]
    mean_steps: float = 0.0
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.successes / max(self.episodes, 1)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "success_rate": round(self.success_rate, 4)}

    def line(self) -> str:
        families = ", ".join(f"{k} {s}/{n}" for k, (s, n) in sorted(self.per_family.items()))
        return (f"{self.suite} ({self.embodiment}): {self.successes}/{self.episodes} = {self.success_rate:.0%} "
                f"[{families}] in {self.seconds:.0f} s")


def evaluate_policy(
    model: VLA,
    suite: str = "tabletop-train",
    episodes: int = 50,
    seed: int = 1_000_000,
    embodiment: str = "default",
    unnorm_key: str | None = None,
    num_envs: int = 25,
    restrict_to_actions: bool = True,
    progress: bool = False,
    execute: int | None = None,
    ensemble: float | None = None,
    sim_grounding: bool = False,
) -> EvalResult:
    """Success rate of `model` over `episodes` seeded episodes of `suite`."""
    from robovla.sim import get_embodiment, make_env

    key = unnorm_key or get_embodiment(embodiment).dataset_name
    image_size = model._require_processor().image_config.image_sizes[0]
    start = time.perf_counter()
    per_family: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    successes, steps_taken = 0, []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc=f"eval {suite}", unit="ep")
    for wave_start in range(0, episodes, num_envs):
        count = min(num_envs, episodes - wave_start)
        envs = VectorEnv([make_env(suite, embodiment=embodiment, image_size=image_size) for _ in range(count)])
        obs, infos = envs.reset(seeds=[seed + wave_start + k for k in range(count)])
        families = [info.get("task", "task") for info in infos]
        act = policy_actor(model, key, restrict_to_actions, execute, ensemble, sim_grounding)
        success, length, _ = run_episodes(envs, obs, act)
        envs.close()
        for family, ok, n in zip(families, success, length):
            per_family[family][0] += int(ok)
            per_family[family][1] += 1
            steps_taken.append(n)
        successes += int(success.sum())
        if bar is not None:
            bar.update(count)
            bar.set_postfix(success=f"{successes / (wave_start + count):.0%}")
    if bar is not None:
        bar.close()
    return EvalResult(suite, embodiment, episodes, successes, dict(per_family), float(np.mean(steps_taken)),
                      round(time.perf_counter() - start, 1))
