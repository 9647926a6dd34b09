"""Meta-World tasks behind the tabletop env's interface, so the harness, collection and the server drive them alike.

One `MetaWorldEnv` plays the tasks of one suite (`robovla.sim.metaworld_tasks`). Episode seed s plays task
s mod (number of tasks) with its object and goal positions drawn from s, so evaluating seeds 0..N-1 spreads the
episodes evenly over the tasks and any seed replays exactly. Frames come from robovla's own offscreen renderer
(shadows and reflections off, as for the tabletop): the front camera is Meta-World's `corner2`, moved to
(0.75, 0.075, 0.7) as in Seo et al. 2022 and LeRobot's Meta-World setup so the whole workspace is in view; the
wrist camera is `gripperPOV`. Episodes end on Meta-World's `success` flag or after its 500 steps.

Needs the optional `metaworld` package (`pip install -e '.[metaworld]'`, which pins mujoco 3.3.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np

from robovla.errors import RobovlaError
from robovla.robots.metaworld import DATASET, from_metaworld_action, metaworld_state, to_metaworld_action
from robovla.sim.env import ACTION_HIGH, ACTION_LOW
from robovla.sim.metaworld_tasks import INSTRUCTIONS, check_task, difficulty_of, env_name, suite_tasks
from robovla.sim.render import OffscreenRenderer

MAX_EPISODE_STEPS = 500  # Meta-World's max_path_length
FRONT_CAMERA, FRONT_CAMERA_POSITION = "corner2", (0.75, 0.075, 0.7)
WRIST_CAMERA = "gripperPOV"
METAWORLD_VERSION, MUJOCO_VERSION = "3.1.1", "3.3.0"


@dataclass(frozen=True)
class MetaWorldArm:
    """What collection and datasets need to know of Meta-World's Sawyer (the tabletop's `Embodiment` fields)."""

    name: str = "metaworld"
    dataset_name: str = DATASET
    robot_type: str = "metaworld_sawyer"
    control_hz: float = 80.0  # 5 physics steps of 2.5 ms per env step
    pos_step: float = 0.01  # metres moved per unit of action[0:3] (Meta-World's action_scale)
    rot_step: float = 0.0  # the hand does not turn
    max_episode_steps: int = MAX_EPISODE_STEPS


ARM = MetaWorldArm()


class MetaWorldExpert:
    """Meta-World's scripted policy with the tabletop expert's interface: `act` labels, `perturb` explores.

    Collection executes `perturb(act())` and records `act()` (DART-style, as on the tabletop): Gaussian noise on
    dx, dy, dz only; the gripper command stays the expert's."""

    def __init__(self, env: "MetaWorldEnv", noise: float = 0.0, rng: np.random.Generator | None = None) -> None:
        self.env, self.noise = env, noise
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def act(self) -> np.ndarray:
        return self.env.expert_action()

    def perturb(self, action: np.ndarray) -> np.ndarray:
        if self.noise <= 0:
            return action
        noisy = action.copy()
        noisy[:3] += self.rng.normal(0.0, self.noise, 3)
        return np.clip(noisy, self.env.action_space.low, self.env.action_space.high).astype(np.float32)


def import_metaworld():
    """The `metaworld` package, or one line saying how to install it (and which MuJoCo it needs)."""
    try:
        import metaworld
        import metaworld.policies
    except ImportError as error:
        raise RobovlaError(f"Meta-World suites need the metaworld package ({error}); install it with "
                           "`pip install -e '.[metaworld]'`") from None
    import mujoco

    if mujoco.__version__ != MUJOCO_VERSION:
        raise RobovlaError(f"metaworld {METAWORLD_VERSION} is built for mujoco {MUJOCO_VERSION}, but mujoco "
                           f"{mujoco.__version__} is installed; fix: pip install mujoco=={MUJOCO_VERSION}")
    return metaworld


class MetaWorldEnv(gymnasium.Env):
    """The tasks of one Meta-World suite with robovla's observation, action and info layout."""

    metadata = {"render_modes": ["rgb_array"]}
    has_grounding = False  # no grounding labels: Meta-World's targets are not the tabletop's objects and squares
    embodiment = ARM
    max_episode_steps = ARM.max_episode_steps

    def __init__(self, suite: str, image_size: int = 224, wrist_camera: bool = False, seed: int | None = None,
                 task: str | None = None) -> None:
        self._metaworld = import_metaworld()
        self.suite = suite
        self.tasks = (check_task(task),) if task else suite_tasks(suite)
        self.image_size, self.wrist_camera = image_size, wrist_camera
        self.render_mode = "rgb_array"
        image = gymnasium.spaces.Box(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        spaces = {"image": image, "proprio": gymnasium.spaces.Box(-np.inf, np.inf, (7,), dtype=np.float32)}
        if wrist_camera:
            spaces["wrist_image"] = image
        self.observation_space = gymnasium.spaces.Dict(spaces)
        self.action_space = gymnasium.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)  # rotations ignored
        self._rng = np.random.default_rng(seed)
        self._envs: dict[str, Any] = {}  # task -> its Meta-World env, made on first use
        self._renderer: OffscreenRenderer | None = None
        self._bound: str | None = None  # the task whose model the renderer is bound to
        self.task: str | None = None
        self._raw: np.ndarray | None = None
        self._expert = None
        self._t = 0

    # ----------------------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode: seed s plays task s mod len(tasks); without a seed the env's own stream picks."""
        if seed is not None:
            task, layout_seed = self.tasks[seed % len(self.tasks)], seed
        else:
            task = self.tasks[int(self._rng.integers(len(self.tasks)))]
            layout_seed = int(self._rng.integers(2**31 - 1))
        env = self._env(task)
        env.seed(layout_seed)
        self._raw, _ = env.reset()
        self.task, self._t = task, 0
        self._expert = self._metaworld.policies.ENV_POLICY_MAP[env_name(task)]()
        return self._observe(), self._info(False)

    def step(self, action) -> tuple[dict, float, bool, bool, dict]:
        if self.task is None:
            raise RobovlaError("call reset() before step()")
        self._raw, _, _, _, info = self._envs[self.task].step(to_metaworld_action(action))
        self._t += 1
        success = bool(info["success"])
        truncated = not success and self._t >= self.max_episode_steps
        return self._observe(), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        return self._front()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        for env in self._envs.values():
            env.close()
        self._envs.clear()

    # -------------------------------------------------------------------------------------- robovla's API
    @property
    def instruction(self) -> str:
        return INSTRUCTIONS[self.task] if self.task else ""

    def expert_action(self) -> np.ndarray:
        """Meta-World's scripted policy for the current task and state, in the model's 7-D layout."""
        if self._expert is None or self._raw is None:
            raise RobovlaError("call reset() before asking the expert")
        return from_metaworld_action(self._expert.get_action(self._raw))

    def scripted_expert(self, noise: float = 0.0, rng: np.random.Generator | None = None) -> MetaWorldExpert:
        return MetaWorldExpert(self, noise, rng)

    def grounding(self) -> np.ndarray:
        """NaN: there are no grounding labels here (`has_grounding`)."""
        return np.full(4, np.nan, dtype=np.float32)

    # ------------------------------------------------------------------------------------------- internals
    def _env(self, task: str):
        if task not in self._envs:
            benchmark = self._metaworld.MT1(env_name(task), seed=0)
            env = benchmark.train_classes[env_name(task)]()
            env.set_task(benchmark.train_tasks[0])
            env._freeze_rand_vec = False  # positions come from env.seed(), not the task's fixed vector
            env.seeded_rand_vec = True
            env.model.cam_pos[env.model.camera(FRONT_CAMERA).id] = FRONT_CAMERA_POSITION
            self._envs[task] = env
        return self._envs[task]

    def _render(self, camera: str) -> np.ndarray:
        env = self._envs[self.task]
        if self._renderer is None:
            self._renderer = OffscreenRenderer(self.image_size)
        if self._bound != self.task:
            self._renderer.bind(env.model)
            self._bound = self.task
        return self._renderer.render(env.model, env.data, env.model.camera(camera).id)

    def _front(self) -> np.ndarray:
        return self._render(FRONT_CAMERA)[::-1, ::-1].copy()  # corner2 looks upside down: turn it 180 degrees

    def _observe(self) -> dict:
        obs = {"image": self._front(), "proprio": metaworld_state(self._raw)}
        if self.wrist_camera:
            obs["wrist_image"] = self._render(WRIST_CAMERA)
        return obs

    def _info(self, success: bool) -> dict:
        return {"instruction": self.instruction, "success": bool(success), "task": self.task,
                "difficulty": difficulty_of(self.task), "step": self._t, "failure": None}
