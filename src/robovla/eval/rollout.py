"""Batched closed-loop rollouts: N simulated tabletops step together, one policy call per step for all of them.

An actor maps (envs, stacked observation, indices of the running envs) to actions [N, 7]; `run_episodes` steps
the envs with it until every episode has ended, telling the caller about each episode as it finishes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from robovla.policy import Policy
    from robovla.robots import Robot


class Envs(Protocol):
    """What rollouts need of a batch of envs: `VectorEnv` in this process, `ProcessVectorEnv` in workers."""

    done: np.ndarray
    seeds: list
    max_episode_steps: int

    def __len__(self) -> int: ...
    @property
    def instructions(self) -> list[str]: ...
    def step(self, actions: np.ndarray) -> tuple: ...
    def expert_actions(self) -> np.ndarray: ...
    def grounding(self) -> np.ndarray: ...


Actor = Callable[[Envs, dict[str, np.ndarray], np.ndarray], np.ndarray]
# (envs, observation, indices asking) -> the next actions of each asking env, [len(indices), K, 7]
ChunkPredictor = Callable[[Envs, dict[str, np.ndarray], np.ndarray], np.ndarray]
# (env index, success, steps taken, the env's last info, its frames if recorded) of an episode that just ended
FinishCallback = Callable[[int, bool, int, dict, "list[np.ndarray] | None"], None]


def chunk_actor(predict: ChunkPredictor, execute: int | None = None, ensemble: float | None = None) -> Actor:
    """Actions [N, 7] for the running envs (zeros for finished ones) from a policy that predicts chunks.

    Each env has a `robovla.client.ChunkExecutor`: a chunk's K actions (or the first `execute` of them) run in
    order before the policy is asked again, or with `ensemble=m` it is asked at every step and the overlapping
    predictions are averaged. One batched call serves every env that wants a new chunk. Make one actor per batch
    of episodes: it keeps each env's executor."""
    from robovla.client import ChunkExecutor

    executors: dict[int, ChunkExecutor] = {}

    def act(envs: Envs, obs: dict[str, np.ndarray], running: np.ndarray) -> np.ndarray:
        actions = np.zeros((len(envs), 7), dtype=np.float32)
        for k in running:
            executors.setdefault(int(k), ChunkExecutor(execute=execute, ensemble=ensemble))
        ask = np.array([k for k in running if executors[int(k)].wants_chunk()], dtype=int)
        if ask.size:
            for k, chunk in zip(ask, predict(envs, obs, ask)):
                executors[int(k)].give(chunk)
        for k in running:
            actions[k] = executors[int(k)].next_action()
        return actions

    return act


def policy_chunks(policy: Policy, robot: Robot, sim_grounding: bool = False) -> ChunkPredictor:
    """A `Policy` as a chunk predictor: one batched `predict` for the asking envs, whose observations `robot`
    maps to the policy's.

    With `sim_grounding`, each observation carries the simulator's true target and goal positions under
    "grounding" (for a policy whose grounding source is "given"): a diagnostic that separates seeing from acting."""

    def predict(envs: Envs, obs: dict[str, np.ndarray], ask: np.ndarray) -> np.ndarray:
        observations = [robot.policy_observation({key: value[k] for key, value in obs.items()},
                                                 envs.instructions[k]) for k in ask]
        if sim_grounding:
            for observation, truth in zip(observations, envs.grounding()[ask]):
                observation["grounding"] = truth
        return policy.predict(observations).actions

    return predict


def policy_actor(policy: Policy, execute: int | None = None, ensemble: float | None = None,
                 sim_grounding: bool = False, robot: Robot | None = None) -> Actor:
    """`chunk_actor` over a `Policy` (see `policy_chunks`) driving `robot` (default: the tabletop's default)."""
    from robovla.robots import tabletop_robot

    return chunk_actor(policy_chunks(policy, robot or tabletop_robot(), sim_grounding), execute, ensemble)


def run_episodes(envs: Envs, obs: dict[str, np.ndarray], act: Actor, record: Sequence[int] = (),
                 on_finish: FinishCallback | None = None) -> tuple[np.ndarray, np.ndarray, dict[int, list[np.ndarray]]]:
    """Step reset `envs` with `act` until all are done: (success [N], steps [N], frames).

    frames[k] holds env k's images from the reset to its last step for every k in `record`. `on_finish` is
    called once per episode, on the step it ends, so a caller can save it before the others are done."""
    success = np.zeros(len(envs), dtype=bool)
    length = np.zeros(len(envs), dtype=int)
    frames = {int(k): [obs["image"][k]] for k in record}  # each step stacks fresh arrays: no copies needed
    for _ in range(envs.max_episode_steps):
        running = np.flatnonzero(~envs.done)
        if running.size == 0:
            break
        obs, _, _, _, infos = envs.step(act(envs, obs, running))
        length[running] += 1
        for k in running:
            success[k] |= bool(infos[k].get("success", False))
            if k in frames:
                frames[k].append(obs["image"][k])
            if envs.done[k] and on_finish is not None:
                on_finish(int(k), bool(success[k]), int(length[k]), infos[k], frames.get(int(k)))
    return success, length, frames
