"""Embodiment variants of the tabletop robot.

Two embodiments differ in camera pose, gripper geometry, control rate and action scale, so that a mixture of
their datasets is a real cross-embodiment mixture: the same normalized action means a different motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robovla.errors import RobovlaError


def camera_axes(pos: tuple[float, float, float],
                target: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, forward) unit vectors of a camera at `pos` looking at `target` with world z up: the scene's
    camera (`scene.lookat_xyaxes`) and the table geometry (`Embodiment.table_points`) share them."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return right, np.cross(-forward, right), forward


@dataclass(frozen=True)
class Embodiment:
    """Everything that changes between robots; the tasks and scenes do not."""

    name: str
    camera_pos: tuple[float, float, float]  # metres, world frame (table top at z = 0)
    camera_target: tuple[float, float, float]  # point the camera looks at
    camera_fovy: float  # degrees
    control_hz: float  # env steps per simulated second
    pos_step: float  # metres moved per unit of action[0:3]
    rot_step: float  # radians turned per unit of action[3:6]
    finger_half_open: float  # max distance (m) from the gripper centre to each finger's inner face
    finger_size: tuple[float, float, float]  # finger box half-sizes (x: closing axis, y: width, z: length)
    finger_rgba: tuple[float, float, float, float]
    max_episode_steps: int

    @property
    def dataset_name(self) -> str:
        """Statistics key (`unnorm_key`) of data collected with this embodiment."""
        return f"tabletop_{self.name}"

    @property
    def robot_type(self) -> str:
        """The `robot_type` its LeRobot datasets record."""
        return f"tabletop_{self.name}"

    def table_points(self, grid: int, height: float = 0.02) -> np.ndarray:
        """[grid * grid, 2]: where the ray through each cell centre of a grid x grid split of the front camera's
        (square) image meets the plane z = `height` (x, y in metres; cells row by row from the top left, the
        order of ViT patches). A grounding pointer turns "this patch" into a table position with it."""
        eye = np.asarray(self.camera_pos, dtype=np.float64)
        right, up, forward = camera_axes(self.camera_pos, self.camera_target)
        tan_half = math.tan(math.radians(self.camera_fovy) / 2)
        centres = (np.arange(grid) + 0.5) / grid * 2 - 1  # -1 (left / top) .. 1 (right / bottom)
        down, across = np.meshgrid(centres, centres, indexing="ij")
        rays = forward + tan_half * (across[..., None] * right - down[..., None] * up)  # [grid, grid, 3]
        if (rays[..., 2] >= 0).any():
            raise RobovlaError(f"embodiment {self.name}: part of the camera's view never meets the table")
        points = eye + ((height - eye[2]) / rays[..., 2])[..., None] * rays
        return points[..., :2].reshape(grid * grid, 2)


EMBODIMENTS: dict[str, Embodiment] = {
    "default": Embodiment(
        name="default",
        camera_pos=(0.0, -0.35, 0.50),
        camera_target=(0.0, 0.0, 0.0),
        camera_fovy=45.0,
        control_hz=10.0,
        pos_step=0.03,
        rot_step=0.15,
        finger_half_open=0.05,
        finger_size=(0.008, 0.018, 0.035),
        finger_rgba=(0.2, 0.2, 0.22, 1.0),
        max_episode_steps=80,
    ),
    "sideview": Embodiment(
        name="sideview",
        camera_pos=(-0.36, -0.36, 0.46),
        camera_target=(0.0, 0.0, 0.0),
        camera_fovy=45.0,
        control_hz=8.0,
        pos_step=0.04,
        rot_step=0.2,
        finger_half_open=0.046,
        finger_size=(0.01, 0.022, 0.032),
        finger_rgba=(0.55, 0.55, 0.6, 1.0),
        max_episode_steps=70,
    ),
    # the fine-tuning setup (issue 19's "new robot"): in no pretraining mixture. A camera high on the right, longer
    # and wider orange fingers that open further, a faster controller with smaller steps; its lab2-* suites add
    # their own table
    "lab2": Embodiment(
        name="lab2",
        camera_pos=(0.30, -0.30, 0.55),
        camera_target=(0.0, 0.02, 0.0),
        camera_fovy=50.0,
        control_hz=12.0,
        pos_step=0.025,
        rot_step=0.12,
        finger_half_open=0.055,
        finger_size=(0.009, 0.024, 0.04),
        finger_rgba=(0.95, 0.45, 0.1, 1.0),
        max_episode_steps=90,
    ),
}


def get_embodiment(name: str) -> Embodiment:
    """Look an embodiment up by name, listing the valid ones on a miss."""
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise RobovlaError(f"unknown embodiment {name!r}; valid: {', '.join(EMBODIMENTS)}") from None
