"""Variation axes and named suites: which values a suite may draw, per axis.

Every axis has a training pool and a held-out pool with no value in common. A suite is the training pools with
some axes switched to their held-out pool; the axes map to the paper's generalization categories (visual,
motion, physical, semantic). Continuous axes hold intervals, discrete axes hold names.
"""

from __future__ import annotations

from dataclasses import dataclass

from robovla.errors import RobovlaError
from robovla.sim.randomization import Randomization

FAMILIES = ("pick_place", "stack", "move_near", "push")

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.08, 0.08),
    "green": (0.1, 0.72, 0.12),
    "blue": (0.1, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.05),
    "orange": (1.0, 0.5, 0.0),
    "purple": (0.55, 0.12, 0.8),
    "cyan": (0.05, 0.85, 0.9),
    "pink": (1.0, 0.45, 0.72),
}
TRAIN_COLORS = ("red", "green", "blue", "yellow")
HELDOUT_COLORS = ("orange", "purple", "cyan", "pink")

# table name -> MJCF texture attributes (MuJoCo builtin textures, nothing downloaded)
TABLES: dict[str, str] = {
    "beige": 'builtin="flat" rgb1="0.78 0.70 0.58" rgb2="0.78 0.70 0.58"',
    "lightgray": 'builtin="flat" rgb1="0.72 0.72 0.74" rgb2="0.72 0.72 0.74"',
    "checker": 'builtin="checker" rgb1="0.55 0.55 0.55" rgb2="0.85 0.85 0.85"',
    "speckled": 'builtin="flat" rgb1="0.62 0.55 0.45" rgb2="0.62 0.55 0.45" mark="random" random="0.08" markrgb="0.2 0.15 0.1"',
    # the fine-tuning lab's table (lab2 suites): in neither pool of the table axis
    "slate": 'builtin="flat" rgb1="0.42 0.47 0.52" rgb2="0.42 0.47 0.52"',
}

# lighting name -> (direction, diffuse rgb, ambient rgb)
LIGHTING: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = {
    "overhead": ((0.0, 0.0, -1.0), (0.75, 0.75, 0.75), (0.35, 0.35, 0.35)),
    "front": ((0.0, 0.6, -0.8), (0.7, 0.7, 0.7), (0.4, 0.4, 0.4)),
    "dim": ((0.0, 0.0, -1.0), (0.38, 0.38, 0.38), (0.2, 0.2, 0.2)),
    "warm": ((0.7, 0.2, -0.7), (0.85, 0.65, 0.45), (0.3, 0.25, 0.2)),
}

# workspace of object centres (metres) and its grid of cells for the motion axis
WORKSPACE_X = (-0.2, 0.2)
WORKSPACE_Y = (-0.13, 0.13)
GRID = (4, 3)  # columns along x, rows along y
ALL_CELLS = tuple((i, j) for i in range(GRID[0]) for j in range(GRID[1]))
HELDOUT_CELLS = ((0, 2), (1, 0), (2, 2), (3, 0))

# (family, target shape) pairs: cylinders are seen in training, but never pushed or stacked
TRAIN_COMBOS = tuple((f, "cube") for f in FAMILIES) + (("pick_place", "cylinder"), ("move_near", "cylinder"))
HELDOUT_COMBOS = (("push", "cylinder"), ("stack", "cylinder"))


@dataclass(frozen=True)
class Axis:
    """One variation axis: disjoint training and held-out pools (names, or (lo, hi) intervals)."""

    category: str  # visual | motion | physical | semantic
    train: tuple
    heldout: tuple
    continuous: bool = False


AXES: dict[str, Axis] = {
    "table": Axis("visual", ("beige", "lightgray"), ("checker", "speckled")),
    "lighting": Axis("visual", ("overhead", "front"), ("dim", "warm")),
    "distractor_color": Axis("visual", TRAIN_COLORS, HELDOUT_COLORS),
    "target_cell": Axis("motion", tuple(c for c in ALL_CELLS if c not in HELDOUT_CELLS), HELDOUT_CELLS),
    "object_yaw": Axis("motion", ((-25.0, 25.0),), ((-45.0, -30.0), (30.0, 45.0)), continuous=True),
    "target_size": Axis("physical", ((0.055, 0.065),), ((0.045, 0.05), (0.07, 0.075)), continuous=True),
    "target_shape": Axis("physical", ("cube", "cylinder"), ("ball", "disc")),
    "target_color": Axis("semantic", TRAIN_COLORS, HELDOUT_COLORS),
    "phrasing": Axis("semantic", ("train-0", "train-1"), ("heldout-0", "heldout-1")),
    "task_combo": Axis("semantic", TRAIN_COMBOS, HELDOUT_COMBOS),
}


@dataclass(frozen=True)
class Suite:
    """A named benchmark split: the axes listed in `heldout_axes` draw from their held-out pools.

    A task group (a fine-tuning setup's suite) narrows it further: only `families`, and `pools` replaces the
    values of some axes (and "goal_color", the colour of the pad or container the instruction names)."""

    name: str
    description: str
    heldout_axes: tuple[str, ...] = ()
    families: tuple[str, ...] = FAMILIES
    pools: tuple[tuple[str, tuple], ...] = ()
    randomization: Randomization | None = None  # a training suite's wider scenes (robovla.sim.randomization)

    def pool(self, axis: str) -> tuple:
        """The values this suite may draw on `axis`."""
        overrides = dict(self.pools)
        if axis in overrides:
            return overrides[axis]
        spec = AXES[axis]
        return spec.heldout if axis in self.heldout_axes else spec.train

    def fixes(self, axis: str) -> bool:
        return axis in dict(self.pools)


DIVERSE = Randomization()  # the generalist's training scenes (`tabletop-diverse`): the ranges' defaults

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("tabletop-train", "training distribution: every axis at its training values"),
        Suite("tabletop-diverse", "the training values in randomized scenes: any flat table colour, light direction "
              "and level, a jittered camera, 3-4 objects (clear of every held-out value)", randomization=DIVERSE),
        Suite("tabletop-visual", "unseen table textures, lighting and distractor colours", ("table", "lighting", "distractor_color")),
        # the visual suite one axis at a time: which of its changes a policy breaks on
        Suite("tabletop-visual-table", "unseen table textures only (checker, speckled)", ("table",)),
        Suite("tabletop-visual-lighting", "unseen lighting only (dim, warm)", ("lighting",)),
        Suite("tabletop-visual-distractors", "unseen distractor colours only", ("distractor_color",)),
        Suite("tabletop-motion", "unseen target positions and object orientations", ("target_cell", "object_yaw")),
        Suite("tabletop-physical", "unseen target sizes and shapes", ("target_size", "target_shape")),
        Suite("tabletop-semantic", "unseen target colours (words), phrasings and task/object combinations", ("target_color", "phrasing", "task_combo")),
        # the fine-tuning lab (use with the lab2 embodiment): its own table, one light, two task groups
        Suite("lab2-narrow", "one instruction and one object set: push the red cube onto the green pad",
              families=("push",), pools=(("table", ("slate",)), ("lighting", ("overhead",)),
                                         ("target_color", ("red",)), ("target_shape", ("cube",)),
                                         ("goal_color", ("green",)), ("distractor_color", ("blue", "yellow")),
                                         ("phrasing", ("train-0",)))),
        Suite("lab2-multi", "three objects and two containers: the instruction says which object goes where",
              families=("pick_place",), pools=(("table", ("slate",)), ("lighting", ("overhead",)))),
    )
}
# the generalization benchmark: the training suite and one per category of the paper (`--suite all`)
BENCHMARK_SUITES = ("tabletop-train", "tabletop-visual", "tabletop-motion", "tabletop-physical", "tabletop-semantic")
TASK_GROUPS = ("lab2-narrow", "lab2-multi")  # the fine-tuning setup's suites
VISUAL_AXIS_SUITES = ("tabletop-visual-table", "tabletop-visual-lighting", "tabletop-visual-distractors")


def list_suites() -> list[str]:
    """Names of the built-in suites, training suite first."""
    return list(SUITES)


def get_suite(name: str) -> Suite:
    """Look a suite up by name, listing the valid ones on a miss."""
    try:
        return SUITES[name]
    except KeyError:
        raise RobovlaError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}") from None


def check_family(name: str | None) -> str | None:
    """Validate an optional task-family filter."""
    if name is not None and name not in FAMILIES:
        raise RobovlaError(f"unknown task {name!r}; valid: {', '.join(FAMILIES)}")
    return name


def cell_bounds(cell: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """x and y interval of one motion-grid cell."""
    wx = (WORKSPACE_X[1] - WORKSPACE_X[0]) / GRID[0]
    wy = (WORKSPACE_Y[1] - WORKSPACE_Y[0]) / GRID[1]
    x0 = WORKSPACE_X[0] + cell[0] * wx
    y0 = WORKSPACE_Y[0] + cell[1] * wy
    return (x0, x0 + wx), (y0, y0 + wy)


def cell_of(x: float, y: float) -> tuple[int, int]:
    """The motion-grid cell that contains a point of the workspace."""
    wx = (WORKSPACE_X[1] - WORKSPACE_X[0]) / GRID[0]
    wy = (WORKSPACE_Y[1] - WORKSPACE_Y[0]) / GRID[1]
    i = min(GRID[0] - 1, max(0, int((x - WORKSPACE_X[0]) // wx)))
    j = min(GRID[1] - 1, max(0, int((y - WORKSPACE_Y[0]) // wy)))
    return i, j
