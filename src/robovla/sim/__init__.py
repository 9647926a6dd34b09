"""Built-in tabletop benchmark: MuJoCo scenes, language tasks, variation suites and scripted experts.

`MUJOCO_GL` defaults to EGL (headless software or GPU GL) and must be set before mujoco is imported.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from robovla.sim.variations import AXES, FAMILIES, SUITES, list_suites  # noqa: E402
from robovla.sim.embodiments import EMBODIMENTS, Embodiment, get_embodiment  # noqa: E402
from robovla.sim.env import EnvConfig, TabletopEnv, make_env  # noqa: E402
from robovla.sim.expert import ScriptedExpert, expert_action  # noqa: E402
from robovla.sim.vector import VectorEnv, make_vector_env  # noqa: E402

__all__ = [
    "AXES",
    "EMBODIMENTS",
    "FAMILIES",
    "SUITES",
    "EnvConfig",
    "Embodiment",
    "ScriptedExpert",
    "TabletopEnv",
    "VectorEnv",
    "expert_action",
    "get_embodiment",
    "list_suites",
    "make_env",
    "make_vector_env",
]
