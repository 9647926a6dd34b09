"""`VectorEnv` with its envs stepped in worker processes, so rendering runs on several cores at once.

The envs are split into contiguous slices, one per worker; each worker owns a plain `VectorEnv` over its slice and
answers one command at a time over a pipe. Which env gets which seed is decided by the caller, never by the
worker count, so a rollout gives the same result with 1 worker or 4. Workers start with the `spawn` method:
each owns its own GL context and never inherits the parent's torch threads.
"""

from __future__ import annotations

import multiprocessing
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from robovla.sim.vector import VectorEnv


def _serve(connection: Connection) -> None:
    """Worker loop: build, reset and step a `VectorEnv` on command until told to close."""
    from robovla.sim.env import make_env

    envs: VectorEnv | None = None
    while True:
        command, argument = connection.recv()
        try:
            if command == "close":
                break
            if command == "configure":
                if envs is not None:
                    envs.close()
                envs = VectorEnv([make_env(**kwargs) for kwargs in argument]) if argument else None
                reply: Any = None
            elif command == "reset":
                reply = envs.reset(seeds=argument)
            elif command == "step":
                reply = (*envs.step(argument), envs.done.copy())
            elif command == "expert_actions":
                reply = envs.expert_actions()
            elif command == "grounding":
                reply = envs.grounding()
            else:
                raise ValueError(f"unknown command {command!r}")
            connection.send(("ok", reply))
        except Exception:  # the parent re-raises it with the worker's traceback
            connection.send(("error", traceback.format_exc()))
    if envs is not None:
        envs.close()
    connection.close()


class ProcessVectorEnv:
    """The `VectorEnv` interface over `workers` processes; `configure` (re)builds the envs for the next batch."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        context = multiprocessing.get_context("spawn")
        self._connections: list[Connection] = []
        self._processes = []
        for k in range(workers):
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(child,), name=f"robovla-env-{k}", daemon=True)
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        self._slices: list[slice] = []
        self.done = np.zeros(0, dtype=bool)
        self.seeds: list[int | None] = []
        self.max_episode_steps = 0
        self._infos: list[dict] = []

    def __len__(self) -> int:
        return len(self.done)

    @property
    def instructions(self) -> list[str]:
        return [info["instruction"] for info in self._infos]

    def configure(self, env_kwargs: list[dict[str, Any]]) -> None:
        """Build one env per `make_env` keyword dict, split over the workers in order."""
        from robovla.sim.env import embodiment_of

        bounds = np.linspace(0, len(env_kwargs), len(self._connections) + 1).round().astype(int)
        self._slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
        self._call_each("configure", [env_kwargs[s] for s in self._slices])
        self.done = np.zeros(len(env_kwargs), dtype=bool)
        self.max_episode_steps = max(embodiment_of(k.get("suite", "tabletop-train"),
                                                   k.get("embodiment", "default")).max_episode_steps for k in env_kwargs)

    def reset(self, seeds: list[int | None] | None = None) -> tuple[dict[str, np.ndarray], list[dict]]:
        seeds = list(seeds) if seeds is not None else [None] * len(self)
        replies = self._call_each("reset", [seeds[s] for s in self._slices])
        self.seeds, self.done[:] = seeds, False
        self._infos = [info for _, infos in replies for info in infos]
        return _concat([obs for obs, _ in replies]), self._infos

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        actions = np.asarray(actions, dtype=np.float32).reshape(len(self), -1)
        replies = self._call_each("step", [actions[s] for s in self._slices])
        self._infos = [info for reply in replies for info in reply[4]]
        self.done = np.concatenate([reply[5] for reply in replies])
        rewards, terminated, truncated = (np.concatenate([reply[i] for reply in replies]) for i in (1, 2, 3))
        return _concat([reply[0] for reply in replies]), rewards, terminated, truncated, self._infos

    def expert_actions(self) -> np.ndarray:
        return np.concatenate(self._call_each("expert_actions", [None] * len(self._slices)))

    def grounding(self) -> np.ndarray:
        return np.concatenate(self._call_each("grounding", [None] * len(self._slices)))

    def close(self) -> None:
        """Stop the workers (they close their envs); safe to call twice."""
        for connection in self._connections:
            try:
                connection.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self._connections, self._processes = [], []

    def _call_each(self, command: str, arguments: list[Any]) -> list[Any]:
        """Send every worker its command first, then collect the replies: the workers run in parallel."""
        used = [(c, a) for c, a, s in zip(self._connections, arguments, self._slices)
                if command == "configure" or s.stop > s.start]  # a worker with no envs sits a batch out
        for connection, argument in used:
            connection.send((command, argument))
        replies = []
        for connection, _ in used:
            status, reply = connection.recv()
            if status == "error":
                raise RuntimeError(f"an environment worker failed:\n{reply}")
            replies.append(reply)
        return replies


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
