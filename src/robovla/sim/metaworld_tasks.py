"""Meta-World's 50 tasks as robovla suites: names, instructions, the MT10/MT50 sets and the difficulty groups.

Pure data (importing it needs no `metaworld`), so suites can be listed and checked anywhere. Task names are
Meta-World's without the version suffix ("pick-place" for `pick-place-v3`). The instructions are robovla's
own one-line English for each task, in the imperative like the tabletop suites'. The difficulty groups are
the ones the VLA literature reports by (Seo et al. 2022, "Masked World Models for Visual Control"; used by
LeRobot's and SmolVLA's Meta-World evaluations): 28 easy, 11 medium, 6 hard, 5 very hard.
"""

from __future__ import annotations

import difflib

from robovla.errors import RobovlaError

VERSION = "v3"  # the task versions of metaworld 3.x

INSTRUCTIONS: dict[str, str] = {
    "assembly": "put the ring onto the peg",
    "basketball": "put the ball into the hoop",
    "bin-picking": "move the block from one bin into the other",
    "box-close": "put the lid on the box",
    "button-press-topdown": "press the button down from above",
    "button-press-topdown-wall": "press the button down from above, reaching over the wall",
    "button-press": "push the button in",
    "button-press-wall": "push the button in, reaching past the wall",
    "coffee-button": "press the button on the coffee machine",
    "coffee-pull": "pull the mug out from under the coffee machine",
    "coffee-push": "push the mug under the coffee machine",
    "dial-turn": "turn the dial",
    "disassemble": "lift the ring off the peg",
    "door-close": "close the door",
    "door-lock": "lock the door by turning the lock down",
    "door-open": "open the door",
    "door-unlock": "unlock the door by turning the lock up",
    "drawer-close": "close the drawer",
    "drawer-open": "open the drawer",
    "faucet-close": "turn the faucet handle to close it",
    "faucet-open": "turn the faucet handle to open it",
    "hammer": "hammer the nail into the wall",
    "hand-insert": "put the block into the hole in the table",
    "handle-press-side": "press the handle down from the side",
    "handle-press": "press the handle down",
    "handle-pull-side": "pull the handle up from the side",
    "handle-pull": "pull the handle up",
    "lever-pull": "pull the lever up",
    "peg-insert-side": "insert the peg into the hole from the side",
    "peg-unplug-side": "pull the peg out of the hole",
    "pick-out-of-hole": "pick the block up out of the hole",
    "pick-place": "pick up the puck and put it on the goal",
    "pick-place-wall": "pick up the puck and put it on the goal behind the wall",
    "plate-slide-back-side": "slide the plate out of the cabinet sideways",
    "plate-slide-back": "slide the plate out of the cabinet",
    "plate-slide-side": "slide the plate into the cabinet sideways",
    "plate-slide": "slide the plate into the cabinet",
    "push-back": "pull the puck back to the goal",
    "push": "push the puck to the goal",
    "push-wall": "push the puck around the wall to the goal",
    "reach": "move the gripper to the goal",
    "reach-wall": "move the gripper to the goal over the wall",
    "shelf-place": "put the block on the shelf",
    "soccer": "kick the ball into the goal",
    "stick-pull": "grab the stick and pull the box with it",
    "stick-push": "grab the stick and push the box with it",
    "sweep-into": "sweep the puck into the hole",
    "sweep": "sweep the puck off the table",
    "window-close": "close the window",
    "window-open": "open the window",
}
TASKS: tuple[str, ...] = tuple(sorted(INSTRUCTIONS))  # MT50

# Meta-World's MT10, in its own order.
MT10: tuple[str, ...] = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close",
                         "button-press-topdown", "peg-insert-side", "window-open", "window-close")

DIFFICULTY: dict[str, tuple[str, ...]] = {
    "medium": ("basketball", "bin-picking", "box-close", "coffee-pull", "coffee-push", "hammer", "peg-insert-side",
               "push-wall", "soccer", "sweep", "sweep-into"),
    "hard": ("assembly", "hand-insert", "pick-out-of-hole", "pick-place", "push", "push-back"),
    "very-hard": ("shelf-place", "disassemble", "stick-pull", "stick-push", "pick-place-wall"),
}
DIFFICULTY = {"easy": tuple(t for t in TASKS if not any(t in group for group in DIFFICULTY.values())), **DIFFICULTY}

PREFIX = "metaworld-"
EMBODIMENT = "metaworld"  # the embodiment name Meta-World suites run under (its Sawyer arm and cameras)
# Suite name -> its tasks: the two multi-task sets, the four difficulty groups, and each task alone.
SUITES: dict[str, tuple[str, ...]] = {
    f"{PREFIX}mt10": MT10,
    f"{PREFIX}mt50": TASKS,
    **{f"{PREFIX}{group}": tasks for group, tasks in DIFFICULTY.items()},
    **{f"{PREFIX}{task}": (task,) for task in TASKS},
}


def is_metaworld_suite(name: str) -> bool:
    return name.startswith(PREFIX)


def difficulty_of(task: str) -> str:
    return next(group for group, tasks in DIFFICULTY.items() if task in tasks)


def by_difficulty(tasks) -> list[str]:
    """Tasks sorted by difficulty group (easy first), then by name: the order Meta-World tables list them in."""
    groups = list(DIFFICULTY)
    return sorted(tasks, key=lambda t: (groups.index(difficulty_of(t)), t))


def env_name(task: str) -> str:
    """robovla's task name -> Meta-World's environment name ("push" -> "push-v3")."""
    return f"{task}-{VERSION}"


def check_task(task: str) -> str:
    """The task name if Meta-World has it (a "-v3" suffix is accepted), else an error naming the close ones."""
    name = task.removesuffix(f"-{VERSION}")
    if name in INSTRUCTIONS:
        return name
    close = difflib.get_close_matches(name, TASKS, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; the tasks: {', '.join(TASKS)}"
    raise RobovlaError(f"Meta-World has no task {task!r}{hint}")


def suite_tasks(suite: str) -> tuple[str, ...]:
    """The tasks of a Meta-World suite ("metaworld-mt10", "metaworld-hard", "metaworld-push", ...)."""
    if suite in SUITES:
        return SUITES[suite]
    if not is_metaworld_suite(suite):
        raise RobovlaError(f"{suite!r} is not a Meta-World suite (they start with {PREFIX!r})")
    groups = ", ".join(s for s in SUITES if s.removeprefix(PREFIX) in ("mt10", "mt50", *DIFFICULTY))
    try:
        task = check_task(suite.removeprefix(PREFIX))
    except RobovlaError as error:
        raise RobovlaError(f"unknown Meta-World suite {suite!r}: {error}; or a group: {groups}") from None
    return SUITES[f"{PREFIX}{task}"]
