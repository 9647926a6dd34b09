"""What evaluation can roll out: a checkpoint, the scripted expert, a random policy, or a running policy server.

Each is an `EvalPolicy`: it says what it needs of the simulator (image size), checks that a suite's embodiment
gives it that (an error names both sides), describes itself for results.json, and makes a fresh `Actor` for
each batch of episodes. Baselines plug in here with the same four methods (Diffusion Policy does).
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from robovla.errors import RobovlaError
from robovla.eval.rollout import Actor, Envs, chunk_actor, policy_actor

POLICY_KINDS = ("checkpoint", "expert", "random", "server")


class EvalPolicy(abc.ABC):
    kind: str = ""
    image_size: int = 128  # the simulator renders at this size
    wrist_camera: bool = False  # the simulator also renders the wrist camera (a policy that reads it)
    # True when one env's actions never depend on which other envs share its batch (so a resumed run may
    # batch the remaining episodes differently and still give the same results)
    batch_invariant: bool = False

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What this policy is, for results.json and for telling a rerun with other settings apart."""

    def check(self, embodiment: str) -> None:
        """Raise a RobovlaError naming both sides when this policy cannot act in `embodiment`'s suites."""

    @abc.abstractmethod
    def actor(self, embodiment: str) -> Actor:
        """A fresh actor for one batch of episodes of `embodiment`'s suites."""

    def close(self) -> None:
        pass


class ExpertPolicy(EvalPolicy):
    """The simulator's scripted expert: it reads the true state, so it sets the ceiling of every suite."""

    kind = "expert"
    batch_invariant = True

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": "scripted-expert"}

    def actor(self, embodiment: str) -> Actor:
        return lambda envs, obs, running: envs.expert_actions()


class RandomPolicy(EvalPolicy):
    """Uniform random actions, seeded per episode: the floor every suite's success rate should clear."""

    kind = "random"
    batch_invariant = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": "uniform-random", "seed": self.seed}

    def actor(self, embodiment: str) -> Actor:
        from robovla.sim.env import ACTION_HIGH, ACTION_LOW

        generators: dict[int, np.random.Generator] = {}

        def act(envs: Envs, obs: dict[str, np.ndarray], running: np.ndarray) -> np.ndarray:
            actions = np.zeros((len(envs), len(ACTION_LOW)), dtype=np.float32)
            for k in running:
                rng = generators.setdefault(int(k), np.random.default_rng([int(envs.seeds[k]), self.seed]))
                actions[k] = rng.uniform(ACTION_LOW, ACTION_HIGH)
            return actions

        return act


def _dataset_key(unnorm_key: str | None, embodiment: str) -> str:
    from robovla.robots import robot_for

    return unnorm_key or robot_for(embodiment).dataset


def _check_fit(who: str, keys: list[str], key: str, embodiment: str, action_dim: int | None,
               proprio_dim: int | None) -> None:
    """The checks shared by an in-process checkpoint and a served one."""
    from robovla.robots import robot_for

    robot = robot_for(embodiment)
    if key not in keys:
        raise RobovlaError(f"{who} knows the datasets {keys}, but the {embodiment!r} embodiment's suites need "
                           f"{key!r}: pass --unnorm-key to choose one of the checkpoint's")
    if action_dim is not None and action_dim != robot.action_dim:
        raise RobovlaError(f"{who} predicts {action_dim}-D actions for {key!r}, but {robot.name} takes "
                           f"{robot.action_dim}-D actions")
    if proprio_dim is not None and proprio_dim != robot.state_dim:
        raise RobovlaError(f"{who} reads a {proprio_dim}-D robot state for {key!r}, but {robot.name} gives a "
                           f"{robot.state_dim}-D one")


class CheckpointPolicy(EvalPolicy):
    """A VLA in this process: one batched `predict` per step for every env that needs a new chunk."""

    kind = "checkpoint"

    def __init__(self, model: Any, checkpoint: str | Path | None = None, unnorm_key: str | None = None,
                 restrict_to_actions: bool = True, execute: int | None = None, ensemble: float | None = None,
                 grounding: str | None = None, options: dict[str, Any] | None = None) -> None:
        if execute is not None and ensemble is not None:
            raise RobovlaError("--ensemble asks at every step; it cannot be combined with --execute")
        if ensemble is not None and model.recipe.action_chunk == 1:
            raise RobovlaError("temporal ensembling needs a model that predicts action chunks; this one predicts "
                               "one action per call (action_chunk 1)")
        if grounding == "given" and not model.recipe.grounding:
            raise RobovlaError("--sim-grounding needs a model with grounding tokens (trained with --grounding)")
        self.model = model
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.unnorm_key = unnorm_key
        self.restrict_to_actions = restrict_to_actions
        self.execute = execute
        self.ensemble = ensemble
        self.grounding = grounding  # None: the recipe's source; "given": the simulator's true positions
        self._check_grounding()
        self.options = options or {}
        self.image_size = model.processor.image_config.image_sizes[0]
        self.wrist_camera = "wrist_image" in model.recipe.cameras
        self._description: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._description is None:
            from robovla.files import folder_sha256
            from robovla.model.factory import parameter_counts

            recipe = self.model.recipe
            self._description = {
                "kind": self.kind,
                "name": self.checkpoint.name if self.checkpoint else "in-memory",
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "checkpoint_sha256": folder_sha256(self.checkpoint) if self.checkpoint else None,
                "parameters": int(parameter_counts(self.model)["total"]),
                "unnorm_key": self.unnorm_key,
                "restrict_to_actions": self.restrict_to_actions,
                "selection": recipe.selection,
                "action_chunk": recipe.action_chunk,
                "execute": self.execute,
                "ensemble": self.ensemble,
                "grounding": None if not recipe.grounding else "simulator" if self.grounding == "given" else
                             self.grounding or recipe.grounding_source,
                **self.options,
            }
        return self._description

    def check(self, embodiment: str) -> None:
        key = _dataset_key(self.unnorm_key, embodiment)
        keys = sorted(self.model.norm_stats)
        policy = self._policy(key) if key in keys else None
        _check_fit(f"checkpoint {self.describe()['name']!r}", keys, key, embodiment,
                   policy and policy.action_dim(), policy and policy.proprio_dim())

    def actor(self, embodiment: str) -> Actor:
        from robovla.robots import robot_for

        return policy_actor(self._policy(_dataset_key(self.unnorm_key, embodiment)), self.execute, self.ensemble,
                            self.grounding == "given", robot_for(embodiment))

    def _policy(self, unnorm_key: str) -> Any:
        from robovla.policy import Policy

        return Policy(self.model, unnorm_key, self.restrict_to_actions, self.grounding)

    def _check_grounding(self) -> None:
        from robovla.grounding import grounding_source

        grounding_source(self.model, self.grounding)  # an unknown or impossible source fails before any episode


class DiffusionCheckpointPolicy(EvalPolicy):
    """A Diffusion Policy checkpoint in this process: each plan's first `n_action_steps` actions run before the
    env asks again (`execute` overrides how many). Each batch of episodes draws its noise from a generator seeded
    with `seed`, so a batch reruns identically; the noise a row gets depends on the batch it shares."""

    kind = "checkpoint"

    def __init__(self, runner: Any, checkpoint: str | Path | None = None, execute: int | None = None) -> None:
        if execute is not None and not 1 <= execute <= runner.action_chunk:
            raise RobovlaError(f"--execute {execute}: this Diffusion Policy answers {runner.action_chunk} actions "
                               "per call")
        self.runner = runner
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.execute = execute
        self.image_size = runner.image_size
        self.wrist_camera = "wrist_image" in runner.cameras
        self._description: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        if self._description is None:
            from robovla.files import folder_sha256

            config = self.runner.config
            self._description = {
                "kind": self.kind, "policy_type": "diffusion",
                "name": self.checkpoint.name if self.checkpoint else "in-memory",
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "checkpoint_sha256": folder_sha256(self.checkpoint) if self.checkpoint else None,
                "parameters": sum(p.numel() for p in self.runner.policy.parameters()),
                "unnorm_key": self.runner.unnorm_key, "horizon": config.horizon,
                "action_chunk": config.n_action_steps, "execute": self.execute,
                "inference_steps": config.inference_steps, "seed": self.runner.seed,
            }
        return self._description

    def check(self, embodiment: str) -> None:
        key = _dataset_key(self.runner.unnorm_key, embodiment)
        _check_fit(f"checkpoint {self.describe()['name']!r}", sorted(self.runner.norm_stats), key, embodiment,
                   self.runner.action_dim(), self.runner.proprio_dim())

    def actor(self, embodiment: str) -> Actor:
        import torch

        from robovla.robots import robot_for

        key, robot = _dataset_key(self.runner.unnorm_key, embodiment), robot_for(embodiment)
        generator = torch.Generator().manual_seed(self.runner.seed)

        def predict(envs: Envs, obs: dict[str, np.ndarray], ask: np.ndarray) -> np.ndarray:
            observations = [robot.policy_observation({name: value[k] for name, value in obs.items()},
                                                     envs.instructions[k]) for k in ask]
            return self.runner.predict(observations, key, generator).actions

        return chunk_actor(predict, self.execute)


class ServerPolicy(EvalPolicy):
    """A running `robovla serve`, driven with the project's own client: the wire path is what gets measured.

    `http://` URLs speak REST (one `/act/batch` request per step for every env that needs a chunk, so the
    server's batch is the one an in-process run makes); `ws://` URLs speak the openpi websocket protocol, one
    observation per frame."""

    kind = "server"

    def __init__(self, url: str, api_key: str | None = None, unnorm_key: str | None = None,
                 execute: int | None = None, ensemble: float | None = None, timeout: float = 60.0) -> None:
        from robovla import client

        if execute is not None and ensemble is not None:
            raise RobovlaError("--ensemble asks at every step; it cannot be combined with --execute")
        self.url, self.unnorm_key, self.execute, self.ensemble = url, unnorm_key, execute, ensemble
        self.protocol = "websocket" if url.startswith(("ws://", "wss://")) else "rest"
        if not url.startswith(("http://", "https://", "ws://", "wss://")):
            raise RobovlaError(f"--server takes an http:// (REST) or ws:// (websocket) URL, got {url!r}")
        try:
            if self.protocol == "rest":
                self._client: Any = client.PolicyClient(url, api_key=api_key, timeout=timeout)
                self.metadata = self._client.metadata()
            else:
                self._client = client.WebsocketPolicyClient(url, api_key=api_key, timeout=timeout)
                self.metadata = self._client.metadata
        except client.PolicyServerError as error:
            raise RobovlaError(f"the policy server at {url} refused the connection: {error}") from None
        except (OSError, TimeoutError) as error:  # refused, unreachable, DNS, time-outs (urllib and websockets)
            raise RobovlaError(f"cannot reach a policy server at {url}: {getattr(error, 'reason', error)}") from None
        self.image_size = int(self.metadata["image_size"][0])
        self.wrist_camera = "wrist_image" in self.metadata.get("cameras", {})
        self.proprio = bool(self.metadata.get("proprio_required"))
        if ensemble is not None and int(self.metadata.get("action_horizon") or 1) == 1:
            raise RobovlaError("temporal ensembling needs a model that predicts action chunks; the served model "
                               "predicts one action per call (action_horizon 1)")

    def describe(self) -> dict[str, Any]:
        m = self.metadata
        return {"kind": self.kind, "name": m.get("model"), "url": self.url, "protocol": self.protocol,
                "unnorm_key": self.unnorm_key, "restrict_to_actions": m.get("restrict_to_actions"),
                "action_chunk": m.get("action_horizon"), "grounding": m.get("grounding"),
                "execute": self.execute, "ensemble": self.ensemble}

    def check(self, embodiment: str) -> None:
        key = _dataset_key(self.unnorm_key, embodiment)
        m = self.metadata
        _check_fit(f"the served model {m.get('model')!r}", list(m["unnorm_keys"]), key, embodiment,
                   (m.get("action_dims") or {}).get(key), m.get("proprio_dim") if self.proprio else None)

    def actor(self, embodiment: str) -> Actor:
        from robovla.robots import robot_for

        key, robot = _dataset_key(self.unnorm_key, embodiment), robot_for(embodiment)

        def predict(envs: Envs, obs: dict[str, np.ndarray], ask: np.ndarray) -> np.ndarray:
            observations = []
            for k in ask:
                observation = robot.policy_observation({name: value[k] for name, value in obs.items()},
                                                       envs.instructions[k])
                observation["unnorm_key"] = key
                if not self.proprio:
                    del observation["proprio"]
                observations.append(observation)
            if self.protocol == "rest":
                return np.stack(self._client.act_chunk_batch(observations))
            return np.stack([np.atleast_2d(np.asarray(self._client.infer(o)["actions"])) for o in observations])

        return chunk_actor(predict, self.execute, self.ensemble)

    def close(self) -> None:
        if self.protocol == "websocket":
            self._client.close()
