"""Step N tabletop envs together so a batched policy sees one stacked observation per step.

Envs run in this process one after another (rendering dominates and each env owns its GL context); an env
whose episode ended is not stepped again until the next `reset`, and its last observation is repeated.
"""

from __future__ import annotations

import numpy as np

from robovla.sim.env import TabletopEnv, make_env
from robovla.sim.expert import expert_action


class VectorEnv:
    """A batch of envs with stacked observations and a `done` mask."""

    def __init__(self, envs: list[TabletopEnv]) -> None:
        if not envs:
            raise ValueError("VectorEnv needs at least one env")
        self.envs = envs
        self.done = np.zeros(len(envs), dtype=bool)
        self.seeds: list[int | None] = [None] * len(envs)  # each env's seed at the last reset
        self._last: list[tuple[dict, dict]] = []

    def __len__(self) -> int:
        return len(self.envs)

    @property
    def max_episode_steps(self) -> int:
        return max(env.max_episode_steps for env in self.envs)

    @property
    def instructions(self) -> list[str]:
        return [info["instruction"] for _, info in self._last]

    def reset(self, seeds: list[int] | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
        """Start a new episode in every env (optionally reseeding each)."""
        seeds = seeds if seeds is not None else [None] * len(self.envs)
        self.seeds = list(seeds)
        self._last = [env.reset(seed=s) for env, s in zip(self.envs, seeds, strict=True)]
        self.done[:] = False
        return self._stack([o for o, _ in self._last]), [i for _, i in self._last]

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """Step the envs that are still running; rows of finished envs are ignored."""
        actions = np.asarray(actions, dtype=np.float32).reshape(len(self.envs), -1)
        rewards = np.zeros(len(self.envs), dtype=np.float32)
        terminated = np.zeros(len(self.envs), dtype=bool)
        truncated = np.zeros(len(self.envs), dtype=bool)
        for k, env in enumerate(self.envs):
            if self.done[k]:
                continue
            obs, rewards[k], terminated[k], truncated[k], info = env.step(actions[k])
            self._last[k] = (obs, info)
            self.done[k] = terminated[k] or truncated[k]
        return self._stack([o for o, _ in self._last]), rewards, terminated, truncated, [i for _, i in self._last]

    def expert_actions(self) -> np.ndarray:
        """The scripted expert's next action for every env (zeros with an open gripper for finished ones)."""
        idle = np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32)
        return np.stack([idle if self.done[k] else expert_action(env) for k, env in enumerate(self.envs)])

    def grounding(self) -> np.ndarray:
        """[N, 4]: every env's true target and goal positions (privileged state, `TabletopEnv.grounding`)."""
        return np.stack([env.grounding() for env in self.envs])

    def close(self) -> None:
        for env in self.envs:
            env.close()

    @staticmethod
    def _stack(observations: list[dict]) -> dict[str, np.ndarray]:
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}


def make_vector_env(num_envs: int, suite: str = "tabletop-train", *, seed: int | None = None, **env_kwargs) -> VectorEnv:
    """`num_envs` envs of one suite (`env_kwargs` as for `make_env`); each gets its own seed stream from `seed`."""
    seeds = np.random.SeedSequence(seed).spawn(num_envs)
    return VectorEnv([make_env(suite, seed=int(s.generate_state(1)[0]), **env_kwargs) for s in seeds])
