"""What both wire protocols share: request validation, the batcher in front of the model, and the metadata.

REST and websocket handlers only translate their wire format to and from these calls.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import numpy as np

import robovla
from robovla.serve.batcher import BatchedAction, DynamicBatcher
from robovla.serve.config import ServerConfig
from robovla.serve.metrics import Metrics
from robovla.serve.observation import (IMAGE_KEYS, INSTRUCTION_KEYS, PROPRIO_KEYS, UNNORM_KEY, Observation,
                                      camera_keys, parse_observation)


def served_policy(model: Any, config: ServerConfig | None = None) -> Any:
    """What answers requests: a VLA's `Policy` (the dataset comes per request), or a Diffusion Policy's
    `DiffusionRunner` as it is. Both take observation dicts and give `ActionPrediction`s."""
    from robovla.diffusion.runner import DiffusionRunner
    from robovla.errors import RobovlaError
    from robovla.policy import Policy

    config = config or ServerConfig()
    if isinstance(model, DiffusionRunner):
        vla_only = [name for name, on in (("restrict_to_actions", config.restrict_to_actions),
                                          ("batch_invariant", config.batch_invariant)) if on]
        if vla_only:
            raise RobovlaError(f"{', '.join(vla_only)}: VLA serving options, but this is a Diffusion Policy")
        return model
    return Policy(model, restrict_to_actions=config.restrict_to_actions, batch_invariant=config.batch_invariant)


class PolicyService:
    def __init__(self, model: Any, config: ServerConfig, metrics: Metrics, model_name: str) -> None:
        """`model`: a `robovla.VLA` or a `robovla.diffusion.runner.DiffusionRunner`."""
        self.model = model
        self.policy = served_policy(model, config)
        self.config = config
        self.metrics = metrics
        self.prompt_limit = self.policy.prompt_token_limit()  # None: no context to fill (Diffusion Policy)
        self.body_limit = config.body_limit(len(self.policy.cameras))  # refuses a limit too small for one observation
        self.metadata = build_metadata(model, config, model_name)
        self._batcher: DynamicBatcher | None = None

    async def start(self) -> None:
        """Called from the server's event loop (the batcher's queue and worker live there)."""
        c = self.config
        self._batcher = DynamicBatcher(self._predict, c.max_batch_size, c.max_wait_ms, c.max_queue,
                                       c.retry_after_s, self.metrics)
        await self._batcher.start()

    async def stop(self) -> None:
        if self._batcher is not None:
            await self._batcher.stop()

    def parse(self, payload: Any, where: str = "") -> Observation:
        return parse_observation(payload, self.model.norm_stats, self.config.max_image_side, where,
                                 self.model.processor, self.prompt_limit)

    async def act(self, observations: Sequence[Observation]) -> list[BatchedAction]:
        """Queue the observations and wait for their actions; cancelling this drops them from the queue."""
        assert self._batcher is not None, "PolicyService.start() was not called"
        return list(await asyncio.gather(*self._batcher.submit(observations)))

    def _predict(self, observations: Sequence[Observation]) -> np.ndarray:
        """[B, horizon, action_dim]; runs in the batcher's worker thread; all observations share one unnorm_key."""
        batch = [{**o.images, "instruction": o.instruction, "proprio": o.proprio} for o in observations]
        return self.policy.predict(batch, unnorm_key=observations[0].unnorm_key).actions

    def reply_actions(self, result: BatchedAction) -> np.ndarray:
        """What REST answers: a chunking model's whole chunk [horizon, action_dim], else the action [action_dim]
        (the reference OpenVLA reply)."""
        return result.chunk if self.policy.action_chunk > 1 else result.action


def build_metadata(model: Any, config: ServerConfig, model_name: str) -> dict[str, Any]:
    """`GET /metadata` and the websocket's first frame: what a client needs to build valid observations."""
    from robovla.diffusion.runner import DiffusionRunner

    policy = served_policy(model)  # what the model reads, per dataset
    diffusion = isinstance(model, DiffusionRunner)
    keys = sorted(model.norm_stats)
    dims = {key: policy.action_dim(key) for key in keys}
    size = policy.image_size
    proprio_dims = {key: policy.proprio_dim(key) for key in keys} if policy.reads_proprio else {}
    return {
        "model": model_name,
        "policy_type": "diffusion" if diffusion else "vla",
        "robovla_version": robovla.__version__,
        "action_dim": dims[keys[0]] if len(set(dims.values())) == 1 else None,
        "action_dims": dims,
        "unnorm_keys": keys,
        "unnorm_key_required": len(keys) > 1,
        "proprio_required": policy.reads_proprio,
        "image_size": [size, size],
        "image_format": "HxWx3 uint8 RGB, any size up to max_image_side (the server resizes)",
        "max_image_side": config.max_image_side,
        "max_body_bytes": config.body_limit(len(policy.cameras)),
        "batch_invariant": config.batch_invariant,  # each observation in its own model call
        "observation_keys": {"image": list(IMAGE_KEYS), "instruction": list(INSTRUCTION_KEYS),
                             "unnorm_key": [UNNORM_KEY], "proprio": list(PROPRIO_KEYS)},
        "image_keys": list(IMAGE_KEYS),
        "cameras": {camera: list(camera_keys(camera)) for camera in policy.cameras},  # each one required
        "proprio_keys": list(PROPRIO_KEYS),
        # the robot state's length (None: the model reads no state); per dataset in proprio_dims
        "proprio_dim": next(iter(set(proprio_dims.values()))) if len(set(proprio_dims.values())) == 1 else None,
        "proprio_dims": proprio_dims,
        "action_horizon": policy.action_chunk,  # actions per reply: REST /act and the websocket send them all
        "restrict_to_actions": config.restrict_to_actions,  # greedy over the 256 action tokens only
        # whether the model first says where the named objects are, and how: its pointer or its own tokens
        "grounding": None if diffusion or not model.recipe.grounding else policy.grounding.name,
        "max_prompt_tokens": policy.prompt_token_limit(),  # longer instructions are refused (400); None: no limit
        "max_batch_size": config.max_batch_size,
        "max_batch_request": config.max_batch_request,
        "auth_required": config.api_key is not None,
    }
