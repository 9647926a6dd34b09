"""Meta-World's Sawyer arm as a robovla robot: its 4-D action mapped explicitly onto OpenVLA's 7-D layout.

Meta-World acts with [dx, dy, dz, grip] in [-1, 1]: position deltas (times 1 cm per step inside the env) and a
gripper effort, -1 opening and +1 closing. The model's layout is [dx, dy, dz, droll, dpitch, dyaw, gripper] with
the gripper absolute, 1 open and 0 closed (OpenVLA's and the tabletop's convention). So:

    model -> Meta-World:  xyz as is; rotations dropped (the Sawyer's hand keeps its orientation); grip = 1 - 2 g
    Meta-World -> model:  xyz as is; rotations 0; g = (1 - grip) / 2

Both directions are exact inverses on [-1, 1] / [0, 1]. The state is given in the tabletop's 7-D layout too:
the hand's position, zero rotations, and the fingers' opening (Meta-World's observation[3], 1 = open), so a
policy reads Meta-World and the tabletop alike. Its data is normalised with its own statistics key.
"""

from __future__ import annotations

import numpy as np

from robovla.errors import RobovlaError
from robovla.robots.base import Robot
from robovla.robots.tabletop import ACTION_NAMES, STATE_NAMES

DATASET = "metaworld_sawyer"


def metaworld_robot() -> Robot:
    return Robot(name="metaworld-sawyer", dataset=DATASET,
                 cameras=(("image", "image"), ("wrist_image", "wrist_image")), state_key="proprio",
                 state_names=STATE_NAMES, action_names=ACTION_NAMES)


def to_metaworld_action(action: np.ndarray) -> np.ndarray:
    """A model action [..., 7] -> Meta-World's [..., 4] (float32, clipped to its [-1, 1] box)."""
    action = np.asarray(action, dtype=np.float32)
    if action.shape[-1] != len(ACTION_NAMES):
        raise RobovlaError(f"a Meta-World policy must give {len(ACTION_NAMES)}-D actions "
                           f"({', '.join(ACTION_NAMES)}); got {action.shape[-1]}-D")
    grip = 1.0 - 2.0 * np.clip(action[..., 6:7], 0.0, 1.0)
    return np.clip(np.concatenate([action[..., :3], grip], axis=-1), -1.0, 1.0).astype(np.float32)


def from_metaworld_action(action: np.ndarray) -> np.ndarray:
    """Meta-World's action [..., 4] (an expert's, say) -> the model layout [..., 7]."""
    action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
    if action.shape[-1] != 4:
        raise RobovlaError(f"Meta-World actions are 4-D (dx, dy, dz, grip); got {action.shape[-1]}-D")
    out = np.zeros((*action.shape[:-1], len(ACTION_NAMES)), dtype=np.float32)
    out[..., :3] = action[..., :3]
    out[..., 6] = (1.0 - action[..., 3]) / 2.0
    return out


def metaworld_state(observation: np.ndarray) -> np.ndarray:
    """Meta-World's 39-D observation -> the 7-D state [x, y, z, 0, 0, 0, opening]."""
    state = np.zeros(len(STATE_NAMES), dtype=np.float32)
    state[:3] = observation[:3]
    state[6] = observation[3]
    return state
