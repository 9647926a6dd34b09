"""Per-dataset standardization of Open X-Embodiment (RLDS) episodes, one registry entry per dataset.

Each entry says where the primary and wrist images live, which observation keys form the proprio vector, and
how to build the 7-D action (xyz delta, rpy delta, absolute gripper with 1 = open), following the reference's
transforms. Keys are the flattened RLDS step keys without the `steps/` prefix (e.g. `observation/image`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Trajectory = dict[str, np.ndarray]  # flattened step key -> [T, ...] array


def rel2abs_gripper(actions: np.ndarray) -> np.ndarray:
    """Relative gripper commands (+1 close, -1 open, 0 keep) -> absolute (1 open, 0 closed)."""
    a = np.asarray(actions, dtype=np.float64).reshape(-1)
    thresholded = np.where(a < -0.1, 1.0, np.where(a > 0.1, -1.0, 0.0))
    nonzero = np.flatnonzero(thresholded)
    state = -thresholded[nonzero[0]] if len(nonzero) else 1.0  # before the first command the gripper is the other way
    out = np.empty_like(thresholded)
    for i, t in enumerate(thresholded):
        state = t if t != 0 else state
        out[i] = state
    return (out / 2 + 0.5).astype(np.float32)


def binarize_gripper(actions: np.ndarray) -> np.ndarray:
    """Continuous gripper commands in [0, 1] -> {0, 1}; in-between values take the next decided value."""
    a = np.asarray(actions, dtype=np.float64).reshape(-1)
    is_open, is_closed = a > 0.95, a < 0.05
    out = np.empty_like(a)
    carry = float(is_open[-1]) if len(a) else 1.0
    for i in range(len(a) - 1, -1, -1):
        if is_open[i] or is_closed[i]:
            carry = float(is_open[i])
        out[i] = carry
    return out.astype(np.float32)


def invert_gripper(actions: np.ndarray) -> np.ndarray:
    return (1.0 - np.asarray(actions, dtype=np.float32)).reshape(-1)


def _col(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).reshape(len(x), -1)


def rt1_style(gripper: Callable[[np.ndarray], np.ndarray], rotation: bool = True) -> Callable[[Trajectory], np.ndarray]:
    """world_vector + rotation_delta (or zeros) + a converted gripper_closedness_action."""

    def action(t: Trajectory) -> np.ndarray:
        wv = _col(t["action/world_vector"])
        rot = _col(t["action/rotation_delta"]) if rotation else np.zeros_like(wv)
        return np.concatenate([wv, rot, gripper(t["action/gripper_closedness_action"])[:, None]], axis=1)

    return action


def open_gripper_action(t: Trajectory) -> np.ndarray:
    return np.concatenate([_col(t["action/world_vector"]), _col(t["action/rotation_delta"]), _col(t["action/open_gripper"])], axis=1)


def flat_action(gripper: Callable[[np.ndarray], np.ndarray], key: str = "action") -> Callable[[Trajectory], np.ndarray]:
    """A flat [T, >=7] action: first six dims kept, last dim converted."""

    def action(t: Trajectory) -> np.ndarray:
        a = _col(t[key])
        return np.concatenate([a[:, :6], gripper(a[:, -1])[:, None]], axis=1)

    return action


def clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, np.float32).reshape(-1), 0, 1)


def keep(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).reshape(-1)


@dataclass(frozen=True)
class OXEEntry:
    """How one dataset maps onto (image, wrist image, proprio, 7-D action, instruction)."""

    image: str
    action: Callable[[Trajectory], np.ndarray]
    wrist: str | None = None
    proprio: tuple[tuple[str, slice], ...] = ()  # (observation key, slice of its last dim)
    drop_first: bool = False  # Bridge's first step has an all-zero action
    relabel_from_state: str | None = None  # Bridge: xyz/rpy actions from consecutive EEF states


ALL = slice(None)
OXE_DATASETS: dict[str, OXEEntry] = {
    "bridge_orig": OXEEntry("observation/image_0", flat_action(binarize_gripper), proprio=(("observation/state", ALL),), drop_first=True, relabel_from_state="observation/state"),
    "bridge_oxe": OXEEntry("observation/image", open_gripper_action, proprio=(("observation/state", ALL),), drop_first=True, relabel_from_state="observation/state"),
    "fractal20220817_data": OXEEntry("observation/image", rt1_style(rel2abs_gripper), proprio=(("observation/base_pose_tool_reached", ALL), ("observation/gripper_closed", ALL))),
    "kuka": OXEEntry("observation/image", rt1_style(rel2abs_gripper)),
    "taco_play": OXEEntry("observation/rgb_static", flat_action(clip01, "action/rel_actions_world"), wrist="observation/rgb_gripper", proprio=(("observation/robot_obs", slice(0, 6)), ("observation/robot_obs", slice(7, 8)))),
    "jaco_play": OXEEntry("observation/image", rt1_style(rel2abs_gripper, rotation=False), wrist="observation/image_wrist", proprio=(("observation/end_effector_cartesian_pos", ALL),)),
    "roboturk": OXEEntry("observation/front_rgb", rt1_style(lambda g: invert_gripper(clip01(g)))),
    "viola": OXEEntry("observation/agentview_rgb", rt1_style(lambda g: invert_gripper(clip01(g))), wrist="observation/eye_in_hand_rgb", proprio=(("observation/joint_states", ALL), ("observation/gripper_states", ALL))),
    "berkeley_autolab_ur5": OXEEntry("observation/image", rt1_style(rel2abs_gripper), wrist="observation/hand_image", proprio=(("observation/robot_state", slice(6, 14)),)),
    "toto": OXEEntry("observation/image", open_gripper_action, proprio=(("observation/state", ALL),)),
    "stanford_hydra_dataset_converted_externally_to_rlds": OXEEntry("observation/image", flat_action(invert_gripper), wrist="observation/wrist_image", proprio=(("observation/state", slice(0, 3)), ("observation/state", slice(7, 10)), ("observation/state", slice(-3, -2)))),
    "austin_buds_dataset_converted_externally_to_rlds": OXEEntry("observation/image", flat_action(lambda g: invert_gripper(clip01(g))), wrist="observation/wrist_image", proprio=(("observation/state", slice(0, 8)),)),
}
# Datasets without an entry: first image feature, `action` used as is (7-D, gripper already 1 = open).
GENERIC = OXEEntry("", flat_action(keep), proprio=(("observation/state", ALL),))


def standardize(trajectory: Trajectory, entry: OXEEntry) -> tuple[np.ndarray, np.ndarray, int]:
    """(action [T', 7], proprio [T', P], first kept step) of one trajectory under `entry`."""
    action = entry.action(trajectory).astype(np.float32)
    parts = [_col(trajectory[k])[:, s] for k, s in entry.proprio if k in trajectory]
    proprio = np.concatenate(parts, axis=1) if parts else np.zeros((len(action), 0), np.float32)
    start = 1 if entry.drop_first else 0
    action, proprio = action[start:], proprio[start:]
    if entry.relabel_from_state and entry.relabel_from_state in trajectory:
        state = _col(trajectory[entry.relabel_from_state])[start:, :6]
        action = action[:-1].copy()
        action[:, :6] = state[1:] - state[:-1]
        proprio = proprio[:-1]
    return action, proprio, start
