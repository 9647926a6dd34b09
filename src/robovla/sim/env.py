"""The tabletop environment: Gymnasium-style reset/step over a MuJoCo scene with a mocap gripper.

Action (7 floats, clipped): dx, dy, dz, droll, dpitch, dyaw in [-1, 1], scaled by the embodiment's `pos_step`
(metres) and `rot_step` (radians), then the absolute gripper command in [0, 1] (1 = open, 0 = closed).
Observation: {"image": front RGB, "wrist_image" (optional), "proprio": [x, y, z, roll, pitch, yaw, opening]}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium
import mujoco
import numpy as np

from robovla.sim import variations as V
from robovla.sim.embodiments import Embodiment, get_embodiment
from robovla.sim.render import OffscreenRenderer
from robovla.sim.scene import GRIPPER_START, TIMESTEP, build_mjcf
from robovla.errors import RobovlaError
from robovla.sim.rewrites import AUGMENTED, REWRITE_FAMILIES, augmented, rewritten
from robovla.sim.tasks import (INSTRUCTION_SETS, LIFTED, EpisodeSpec, ObjectSpec, WorldState, failure_reason, first_handled,
                               is_success, paraphrased, sample_episode)

ACTION_LOW = np.array([-1, -1, -1, -1, -1, -1, 0], dtype=np.float32)
ACTION_HIGH = np.ones(7, dtype=np.float32)
TCP_LOW = np.array([-0.28, -0.21, 0.012])
TCP_HIGH = np.array([0.28, 0.21, 0.30])
TILT_LIMIT = 0.5  # radians of roll/pitch; the grippers only need yaw, but the action space is the full 6-DoF
MOCAP_UPDATES = 5  # mocap targets interpolated this many times per env step so contacts stay gentle


def euler_to_quat(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """MuJoCo (w, x, y, z) quaternion of intrinsic z-y-x (yaw, pitch, roll) angles."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def quat_to_euler(q: np.ndarray) -> tuple[float, float, float]:
    """Roll, pitch, yaw of a MuJoCo (w, x, y, z) quaternion; inverse of `euler_to_quat`."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


@dataclass(frozen=True)
class EnvConfig:
    """What `make_env` was asked for."""

    suite: str = "tabletop-train"
    embodiment: str = "default"
    image_size: int = 224
    wrist_camera: bool = False
    task: str | None = None  # restrict to one task family
    # "paraphrase": rewrite each instruction with a template no suite uses; a rewrite family (punctuation, polite,
    # synonym, order: robovla.sim.rewrites) rewrites it in that family alone; "augmented": training rewrites
    instructions: str = "suite"


class TabletopEnv(gymnasium.Env):
    """A tabletop manipulation episode per `reset`; the scene is re-sampled from the suite each time."""

    metadata = {"render_modes": ["rgb_array"]}
    has_grounding = True  # `grounding()` gives the true target and goal positions
    action_dim = 7

    def __init__(self, config: EnvConfig, seed: int | None = None) -> None:
        self.config = config
        self.suite = V.get_suite(config.suite)
        self.task = V.check_family(config.task)
        if config.instructions not in INSTRUCTION_SETS:
            raise RobovlaError(f"unknown instruction set {config.instructions!r}; valid: {', '.join(INSTRUCTION_SETS)}")
        self.embodiment: Embodiment = get_embodiment(config.embodiment)
        self.max_episode_steps = self.embodiment.max_episode_steps
        self.render_mode = "rgb_array"
        size = config.image_size
        spaces = {
            "image": gymnasium.spaces.Box(0, 255, (size, size, 3), np.uint8),
            "proprio": gymnasium.spaces.Box(-np.inf, np.inf, (7,), np.float32),
        }
        if config.wrist_camera:
            spaces["wrist_image"] = gymnasium.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = gymnasium.spaces.Dict(spaces)
        self.action_space = gymnasium.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self._rng = np.random.default_rng(seed)
        self._renderer: OffscreenRenderer | None = None
        self._substeps = max(MOCAP_UPDATES, round(1.0 / (self.embodiment.control_hz * TIMESTEP) / MOCAP_UPDATES) * MOCAP_UPDATES)
        self.episode: EpisodeSpec | None = None
        self.expert = None  # the scripted expert of the current episode, made by `expert_action` when first asked

    # --- gymnasium API -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Sample (or take `options["episode"]`) a new episode; returns the first observation and info."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        episode = (options or {}).get("episode") or sample_episode(self._rng, self.suite, self.task)
        # rewrites are drawn after the scene: the same seed gives the same scene under every instruction set
        if self.config.instructions == "paraphrase":
            episode = paraphrased(episode, self._rng)
        elif self.config.instructions == AUGMENTED:
            episode = augmented(episode, self._rng)
        elif self.config.instructions in REWRITE_FAMILIES:
            episode = rewritten(episode, self.config.instructions, self._rng)
        self._load(episode)
        self.expert = None
        return self._observe(), self._info(False)

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ValueError(f"action must be 7 finite floats, got {action!r}")
        a = np.clip(a, ACTION_LOW, ACTION_HIGH)
        emb = self.embodiment
        start_pos, start_rpy = self._tcp.copy(), self._rpy.copy()
        self._tcp = np.clip(self._tcp + a[:3] * emb.pos_step, TCP_LOW, TCP_HIGH)
        rpy = self._rpy + a[3:6] * emb.rot_step
        rpy[:2] = np.clip(rpy[:2], -TILT_LIMIT, TILT_LIMIT)
        self._rpy = rpy
        self._data.ctrl[:] = a[6] * emb.finger_half_open
        self._gripper_cmd = float(a[6])
        for k in range(1, MOCAP_UPDATES + 1):
            f = k / MOCAP_UPDATES
            self._data.mocap_pos[self._mocap] = start_pos + f * (self._tcp - start_pos)
            self._data.mocap_quat[self._mocap] = euler_to_quat(*(start_rpy + f * (self._rpy - start_rpy)))
            mujoco.mj_step(self._model, self._data, nstep=self._substeps // MOCAP_UPDATES)
        self._rpy[2] = wrap_angle(self._rpy[2])
        self._t += 1
        state = self.world_state()
        target = self.episode.target.name
        self._target_lifted |= bool(state.positions[target][2] > self._start[target][2] + LIFTED)
        if self._handled == "none":
            self._handled = first_handled(self.episode, self._start, state)
        success = bool(is_success(self.episode, state))
        truncated = self._t >= self.max_episode_steps and not success
        info = self._info(success)
        if truncated:
            info["failure"] = failure_reason(self.episode, self._start, state, self._target_lifted)
        return self._observe(), float(success), success, truncated, info

    def render(self) -> np.ndarray:
        return self._render(self._front)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # --- state the expert and the success check read ----------------------------------------------------------
    @property
    def tcp_pos(self) -> np.ndarray:
        return self._tcp.copy()

    @property
    def tcp_rpy(self) -> np.ndarray:
        return self._rpy.copy()

    @property
    def gripper_opening(self) -> float:
        """Measured finger opening, 0 (closed) to 1 (fully open)."""
        q = self._data.qpos[self._finger_qpos]
        return float(np.sum(q) / (2 * self.embodiment.finger_half_open))

    def object_pos(self, name: str) -> np.ndarray:
        adr = self._object_qpos[name]
        return self._data.qpos[adr : adr + 3].copy()

    def object_yaw(self, name: str) -> float:
        adr = self._object_qpos[name]
        w, x, y, z = self._data.qpos[adr + 3 : adr + 7]
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def grounding(self) -> np.ndarray:
        """Where the instruction's two named things are now: [target x, y, goal x, y] in metres.

        Privileged simulator state, recorded beside demonstrations as an auxiliary label (a policy can learn to
        say where the named objects are before acting); nothing at run time reads it."""
        assert self.episode is not None
        target = self.object_pos(self.episode.target.name)
        goal = self.episode.entity(self.episode.goal)
        gx, gy = self.object_pos(goal.name)[:2] if isinstance(goal, ObjectSpec) else (goal.x, goal.y)
        return np.array([target[0], target[1], gx, gy], dtype=np.float32)

    def world_state(self) -> WorldState:
        assert self.episode is not None
        return WorldState({o.name: self.object_pos(o.name) for o in self.episode.objects}, self._gripper_cmd >= 0.5)

    # --- internals ---------------------------------------------------------------------------------------------
    def _load(self, episode: EpisodeSpec) -> None:
        size = self.config.image_size
        self._model = mujoco.MjModel.from_xml_string(build_mjcf(episode, self.embodiment, size))
        self._data = mujoco.MjData(self._model)
        if self._renderer is None:
            self._renderer = OffscreenRenderer(size)
        self._renderer.bind(self._model)
        self._mocap = int(self._model.body("gripper_target").mocapid[0])
        self._gripper_body = self._model.body("gripper").id
        self._tcp_site = self._model.site("tcp").id
        self._front = self._model.camera("front").id
        self._wrist = self._model.camera("wrist").id
        self._finger_qpos = [int(self._model.jnt_qposadr[self._model.joint(f"finger_{s}").id]) for s in "lr"]
        self._object_qpos = {
            o.name: int(self._model.jnt_qposadr[self._model.body(o.name).jntadr[0]]) for o in episode.objects
        }
        self._tcp = np.array(GRIPPER_START, dtype=np.float64)
        self._rpy = np.zeros(3)
        self._gripper_cmd = 1.0
        self._data.qpos[self._finger_qpos] = self.embodiment.finger_half_open
        self._data.ctrl[:] = self.embodiment.finger_half_open
        self._data.mocap_pos[self._mocap] = self._tcp
        self._data.mocap_quat[self._mocap] = euler_to_quat(0.0, 0.0, 0.0)
        mujoco.mj_step(self._model, self._data, nstep=self._substeps)  # let objects settle on the table
        self._t = 0
        self.episode = episode
        self._start = {o.name: self.object_pos(o.name) for o in episode.objects}  # where each object settled
        self._target_lifted = False
        self._handled = "none"  # the first object the robot moved: "target", "other" or "none" yet

    def _render(self, camera_id: int) -> np.ndarray:
        assert self._renderer is not None
        return self._renderer.render(self._model, self._data, camera_id)

    def _observe(self) -> dict:
        obs = {
            "image": self._render(self._front),
            "proprio": np.array([*self._data.site_xpos[self._tcp_site], *quat_to_euler(self._data.xquat[self._gripper_body]), self.gripper_opening], dtype=np.float32),
        }
        if self.config.wrist_camera:
            obs["wrist_image"] = self._render(self._wrist)
        return obs

    def _info(self, success: bool) -> dict:
        assert self.episode is not None
        return {
            "instruction": self.episode.instruction,
            "success": bool(success),
            "task": self.episode.family,
            "step": self._t,
            "failure": None,  # on the last step of a failed episode: why (tasks.FAILURE_REASONS)
            "handled": self._handled,  # the first object moved so far: target, other or none
        }


def make_env(
    suite: str = "tabletop-train",
    *,
    embodiment: str = "default",
    image_size: int = 224,
    wrist_camera: bool = False,
    seed: int | None = None,
    task: str | None = None,
    instructions: str = "suite",
) -> TabletopEnv:
    """A tabletop env for one suite and embodiment; `seed` makes the sequence of episodes reproducible.

    `instructions="paraphrase"` rewrites every instruction with a template that no suite uses (`PARAPHRASES`).
    A Meta-World suite ("metaworld-...") gives a `MetaWorldEnv` with the same interface."""
    from robovla.sim.metaworld_tasks import is_metaworld_suite

    if is_metaworld_suite(suite):
        check_metaworld_embodiment(suite, embodiment)
        if instructions != "suite":
            raise RobovlaError(f"{suite}: Meta-World suites have one phrasing per task; no {instructions!r} set")
        from robovla.sim.metaworld_env import MetaWorldEnv

        return MetaWorldEnv(suite, image_size, wrist_camera, seed, task)  # type: ignore[return-value]
    return TabletopEnv(EnvConfig(suite, embodiment, image_size, wrist_camera, task, instructions), seed=seed)


def check_metaworld_embodiment(suite: str, embodiment: str) -> None:
    """Meta-World suites run on Meta-World's own arm (embodiment "metaworld"), and only they do."""
    from robovla.sim.metaworld_tasks import EMBODIMENT, is_metaworld_suite

    if is_metaworld_suite(suite) != (embodiment == EMBODIMENT):
        raise RobovlaError(f"suite {suite!r} and embodiment {embodiment!r} do not go together: Meta-World suites "
                           f"run with embodiment {EMBODIMENT!r}, tabletop suites with a tabletop embodiment")


def default_embodiment(suites: list[str] | tuple[str, ...]) -> str:
    """The embodiment suites run under when none is named: Meta-World's arm for its suites, else the tabletop's."""
    from robovla.sim.metaworld_tasks import EMBODIMENT, is_metaworld_suite

    return EMBODIMENT if suites and all(is_metaworld_suite(s) for s in suites) else "default"


def embodiment_of(suite: str, embodiment: str):
    """The arm a suite runs on, after checking the two go together: a tabletop `Embodiment`, or Meta-World's Sawyer
    (`MetaWorldArm`); both give `max_episode_steps`, `control_hz`, `dataset_name`, `robot_type`, `pos_step` and
    `rot_step`."""
    from robovla.sim.metaworld_tasks import is_metaworld_suite

    check_metaworld_embodiment(suite, embodiment)
    if is_metaworld_suite(suite):
        from robovla.sim.metaworld_env import ARM

        return ARM
    return get_embodiment(embodiment)
