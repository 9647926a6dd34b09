"""`Robot`: the mapping between one robot's observation and action layout and a model's inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from robovla.errors import RobovlaError


@dataclass(frozen=True)
class Robot:
    name: str
    dataset: str  # the statistics key (unnorm_key) its data is normalised with
    cameras: tuple[tuple[str, str], ...]  # (the robot's image key, the model camera it feeds), in order
    state_key: str  # the robot's observation key of its state
    state_names: tuple[str, ...]  # what each state dimension is
    action_names: tuple[str, ...]  # what each action dimension is, in the model's action layout

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    def policy_observation(self, observation: Mapping[str, Any], instruction: str) -> dict[str, Any]:
        """The robot's observation -> a `Policy` observation: the model's camera names, the instruction and the
        state under "proprio". Cameras the robot has but did not send are left out (the policy names what it
        needs); a missing state is an error naming the robot's key."""
        if self.state_key not in observation:
            raise RobovlaError(f"{self.name}: the observation has no {self.state_key!r} (its state)")
        mapped = {camera: observation[key] for key, camera in self.cameras if key in observation}
        return {**mapped, "instruction": instruction, "proprio": observation[self.state_key]}
