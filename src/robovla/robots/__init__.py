"""One small module per robot: how its observations and actions map to a model's inputs and outputs.

Model code never knows which robot it drives (openpi's per-robot policy files are the pattern): evaluation turns
a robot's observation into a `Policy` observation with its `Robot`, datasets name their state and action
dimensions with it, and the statistics key a robot's data is normalised with lives here too.
"""

from robovla.robots.base import Robot
from robovla.robots.metaworld import metaworld_robot
from robovla.robots.tabletop import tabletop_robot

__all__ = ["Robot", "get_robot", "list_robots", "metaworld_robot", "robot_for", "tabletop_robot"]


def list_robots() -> list[str]:
    from robovla.sim.embodiments import EMBODIMENTS

    return [tabletop_robot(name).name for name in EMBODIMENTS] + [metaworld_robot().name]


def get_robot(name: str) -> Robot:
    """A robot by name ("tabletop-default", "metaworld-sawyer", ...), listing the known ones on a miss."""
    from robovla.errors import RobovlaError

    if name not in list_robots():
        raise RobovlaError(f"unknown robot {name!r}; known: {', '.join(list_robots())}")
    return metaworld_robot() if name == metaworld_robot().name else tabletop_robot(name.removeprefix("tabletop-"))


def robot_for(embodiment: str) -> Robot:
    """The robot a simulator embodiment drives: a tabletop embodiment's gripper, or Meta-World's Sawyer."""
    from robovla.sim.metaworld_tasks import EMBODIMENT

    return metaworld_robot() if embodiment == EMBODIMENT else tabletop_robot(embodiment)
