"""The built-in tabletop simulator's robots: a mocap gripper per embodiment (robovla.sim.embodiments).

Observation: "image" (front camera), "wrist_image" (when the env renders it), "proprio" [x, y, z, roll, pitch,
yaw, opening]. Action: OpenVLA's 7-D layout, deltas of position and orientation then the absolute gripper
(1 = open). Each embodiment's data has its own statistics key, `tabletop_<embodiment>`.
"""

from __future__ import annotations

from robovla.robots.base import Robot

STATE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")


def tabletop_robot(embodiment: str = "default") -> Robot:
    from robovla.sim.embodiments import get_embodiment

    return Robot(name=f"tabletop-{embodiment}", dataset=get_embodiment(embodiment).dataset_name,
                 cameras=(("image", "image"), ("wrist_image", "wrist_image")), state_key="proprio",
                 state_names=STATE_NAMES, action_names=ACTION_NAMES)
