"""Task families: scene sampling, grounded instructions and success predicates.

An episode is fully described by an `EpisodeSpec` drawn from a suite with a seeded RNG; the scene builder,
the expert and the success check all read the same spec, so a seed reproduces the episode exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robovla.sim import variations as V

TRAIN_SHAPES = ("cube", "cylinder")
OBJECT_COUNT = 3  # graspable objects per scene: the target plus context/distractors
FIXTURE_RADIUS = {"bowl": 0.075, "plate": 0.075, "pad": 0.055}
FIXTURE_TOP = {"bowl": 0.008, "plate": 0.010, "pad": 0.002}  # z of the surface an object rests on
MOVE_NEAR_DISTANCE = 0.09
MOVE_NEAR_SUCCESS = 0.12

TEMPLATES: dict[str, dict[str, str]] = {
    "pick_place": {
        "train-0": "put the {target} {prep} the {goal}",
        "train-1": "place the {target} {prep} the {goal}",
        "heldout-0": "drop the {target} {prep} the {goal}",
        "heldout-1": "get the {target} {prep} the {goal}",
    },
    "stack": {
        "train-0": "stack the {target} on the {goal}",
        "train-1": "put the {target} on top of the {goal}",
        "heldout-0": "place the {target} onto the {goal}",
        "heldout-1": "set the {target} on the {goal}",
    },
    "move_near": {
        "train-0": "move the {target} next to the {goal}",
        "train-1": "put the {target} near the {goal}",
        "heldout-0": "bring the {target} close to the {goal}",
        "heldout-1": "place the {target} beside the {goal}",
    },
    "push": {
        "train-0": "push the {target} to the {goal}",
        "train-1": "slide the {target} onto the {goal}",
        "heldout-0": "shove the {target} onto the {goal}",
        "heldout-1": "nudge the {target} to the {goal}",
    },
}
NOUNS = {"cube": "cube", "cylinder": "cylinder", "ball": "ball", "disc": "disc", "bowl": "bowl", "plate": "plate", "pad": "square"}


@dataclass(frozen=True)
class ObjectSpec:
    """A free, graspable object."""

    name: str
    shape: str
    color: str
    size: float  # metres: cube edge / cylinder and ball diameter
    x: float
    y: float
    yaw: float  # radians

    @property
    def phrase(self) -> str:
        return f"{self.color} {NOUNS[self.shape]}"

    @property
    def half_height(self) -> float:
        return self.size * (0.25 if self.shape == "disc" else 0.5)


@dataclass(frozen=True)
class FixtureSpec:
    """A static container or target pad."""

    name: str
    kind: str  # bowl | plate | pad
    color: str
    x: float
    y: float

    @property
    def phrase(self) -> str:
        return f"{self.color} {NOUNS[self.kind]}"


@dataclass(frozen=True)
class EpisodeSpec:
    """One sampled episode: the scene, the task and its instruction."""

    family: str
    objects: tuple[ObjectSpec, ...]  # objects[0] is the target
    fixtures: tuple[FixtureSpec, ...]
    goal: str  # name of the goal fixture or object
    instruction: str
    phrasing: str
    table: str
    lighting: str
    place_offset: tuple[float, float] = (0.0, 0.0)  # move_near: where the expert puts the target, relative to the goal

    @property
    def target(self) -> ObjectSpec:
        return self.objects[0]

    def entity(self, name: str) -> ObjectSpec | FixtureSpec:
        for item in (*self.objects, *self.fixtures):
            if item.name == name:
                return item
        raise KeyError(name)


def _uniform_in(rng: np.random.Generator, intervals: tuple) -> float:
    lo, hi = intervals[int(rng.integers(len(intervals)))]
    return float(rng.uniform(lo, hi))


def _combos(suite: V.Suite, family: str | None) -> list[tuple[str, str]]:
    """(family, target shape) pairs a suite may draw."""
    if "task_combo" in suite.heldout_axes:
        pairs = list(V.HELDOUT_COMBOS)
    else:
        pairs = [p for p in V.TRAIN_COMBOS if p[1] in suite.pool("target_shape")]
        # unseen shapes (physical suite) go with every family but stacking, which needs a flat top
        pairs += [(f, s) for s in suite.pool("target_shape") if s not in TRAIN_SHAPES for f in V.FAMILIES if f != "stack"]
    return [p for p in pairs if family is None or p[0] == family]


def _far(x: float, y: float, others: list[tuple[float, float, float]]) -> bool:
    return all(math.hypot(x - ox, y - oy) >= d for ox, oy, d in others)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(float(np.dot(ab, ab)), 1e-9), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def sample_episode(rng: np.random.Generator, suite: V.Suite, family: str | None = None) -> EpisodeSpec:
    """Draw one episode of `suite` (optionally one task family) from `rng`."""
    pairs = _combos(suite, family)
    if not pairs:
        raise ValueError(f"suite {suite.name} has no episodes of task {family}")
    families = sorted({f for f, _ in pairs}, key=V.FAMILIES.index)
    family = families[int(rng.integers(len(families)))]  # families equally likely, then a shape for it
    shapes = [s for f, s in pairs if f == family]
    shape = shapes[int(rng.integers(len(shapes)))]
    for _ in range(500):
        spec = _try_sample(rng, suite, family, shape)
        if spec is not None:
            return spec
    raise RuntimeError("could not place the scene; the workspace is too crowded")


def _try_sample(rng: np.random.Generator, suite: V.Suite, family: str, shape: str) -> EpisodeSpec | None:
    """One attempt at placing a scene for `family` with a `shape` target; None if it does not fit."""
    yaw_pool = suite.pool("object_yaw")

    def yaw() -> float:
        return math.radians(_uniform_in(rng, yaw_pool))

    def pick(pool, used: set[str]) -> str:
        free = [c for c in pool if c not in used]
        return free[int(rng.integers(len(free)))]

    (x0, x1), (y0, y1) = V.cell_bounds(suite.pool("target_cell")[int(rng.integers(len(suite.pool("target_cell"))))])
    tx, ty = float(rng.uniform(x0 + 0.01, x1 - 0.01)), float(rng.uniform(y0 + 0.01, y1 - 0.01))
    target = ObjectSpec("obj0", shape, pick(suite.pool("target_color"), set()), _uniform_in(rng, suite.pool("target_size")), tx, ty, yaw())
    used_colors = {target.color}
    objects = [target]
    taken: list[tuple[float, float, float]] = [(tx, ty, 0.1)]

    def free_point(clearance: float, extra=lambda x, y: True) -> tuple[float, float] | None:
        for _ in range(60):
            x = float(rng.uniform(*V.WORKSPACE_X))
            y = float(rng.uniform(*V.WORKSPACE_Y))
            if _far(x, y, [(ox, oy, max(d, clearance)) for ox, oy, d in taken]) and extra(x, y):
                return x, y
        return None

    fixtures: list[FixtureSpec] = []
    if family in ("pick_place", "push"):
        kinds = ["pad", "pad"] if family == "push" else [("bowl", "plate")[int(rng.integers(2))] for _ in range(2)]
        fixture_colors: set[str] = {target.color}
        for k, kind in enumerate(kinds):
            if family == "push" and k == 0:
                point = free_point(0.16, lambda x, y: 0.12 <= math.hypot(x - tx, y - ty) <= 0.22)
            else:
                point = free_point(0.17)
            if point is None:
                return None
            color = pick(V.TRAIN_COLORS, fixture_colors)
            fixture_colors.add(color)
            fixtures.append(FixtureSpec(f"fix{k}", kind, color, *point))
            taken.append((*point, 0.17))
        goal = "fix0"
    else:
        goal = "obj1"
    while len(objects) < OBJECT_COUNT:
        is_goal = family in ("stack", "move_near") and len(objects) == 1
        pool = V.TRAIN_COLORS if is_goal else suite.pool("distractor_color")
        obj_shape = "cube" if (is_goal and family == "stack") else TRAIN_SHAPES[int(rng.integers(2))]

        def clear_of_push_path(x: float, y: float) -> bool:
            if family != "push":
                return True
            a, b = np.array([tx, ty]), np.array([fixtures[0].x, fixtures[0].y])
            behind = a - (b - a) / np.linalg.norm(b - a) * 0.08
            return _segment_distance(np.array([x, y]), behind, b) >= 0.09

        def far_from_target(x: float, y: float) -> bool:  # move_near must not start out solved
            return not is_goal or family != "move_near" or math.hypot(x - tx, y - ty) > MOVE_NEAR_SUCCESS + 0.04

        point = free_point(0.12 if fixtures else 0.1, lambda x, y: clear_of_push_path(x, y) and far_from_target(x, y))
        if point is None:
            return None
        color = pick(pool, used_colors)
        used_colors.add(color)
        objects.append(ObjectSpec(f"obj{len(objects)}", obj_shape, color, float(rng.uniform(0.055, 0.065)), *point, yaw()))
        taken.append((*point, 0.1))

    place_offset = (0.0, 0.0)
    if family == "move_near":
        ref = objects[1]
        directions = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
        order = rng.permutation(len(directions))
        others = [(o.x, o.y, 0.095) for o in objects[2:]]
        for k in order:
            dx, dy = directions[int(k)]
            px, py = ref.x + dx * MOVE_NEAR_DISTANCE, ref.y + dy * MOVE_NEAR_DISTANCE
            inside = V.WORKSPACE_X[0] <= px <= V.WORKSPACE_X[1] and V.WORKSPACE_Y[0] <= py <= V.WORKSPACE_Y[1]
            if inside and _far(px, py, others):
                place_offset = (dx * MOVE_NEAR_DISTANCE, dy * MOVE_NEAR_DISTANCE)
                break
        else:
            return None

    phrasing = suite.pool("phrasing")[int(rng.integers(len(suite.pool("phrasing"))))]
    goal_item = fixtures[0] if fixtures else objects[1]
    prep = "in" if getattr(goal_item, "kind", "") == "bowl" else "on"
    instruction = TEMPLATES[family][phrasing].format(target=target.phrase, goal=goal_item.phrase, prep=prep)
    table = suite.pool("table")[int(rng.integers(len(suite.pool("table"))))]
    lighting = suite.pool("lighting")[int(rng.integers(len(suite.pool("lighting"))))]
    return EpisodeSpec(family, tuple(objects), tuple(fixtures), goal, instruction, phrasing, table, lighting, place_offset)


@dataclass(frozen=True)
class WorldState:
    """What the success predicates look at: object centres, fixtures, and whether the gripper let go."""

    positions: dict[str, np.ndarray]  # object name -> xyz centre
    gripper_open: bool


def is_success(spec: EpisodeSpec, state: WorldState) -> bool:
    """The task's success predicate; the pick-based families also require the gripper to have let go."""
    if spec.family != "push" and not state.gripper_open:
        return False
    target = spec.target
    p = state.positions[target.name]
    goal = spec.entity(spec.goal)
    if spec.family in ("pick_place", "push"):
        assert isinstance(goal, FixtureSpec)
        dx, dy = abs(p[0] - goal.x), abs(p[1] - goal.y)
        resting = p[2] < FIXTURE_TOP[goal.kind] + target.half_height + 0.02
        if goal.kind == "pad":
            return resting and max(dx, dy) < FIXTURE_RADIUS["pad"] - 0.01
        return resting and math.hypot(dx, dy) < FIXTURE_RADIUS[goal.kind] - 0.025
    g = state.positions[goal.name]
    assert isinstance(goal, ObjectSpec)
    if spec.family == "stack":
        on_top = g[2] + goal.half_height + target.half_height
        return math.hypot(p[0] - g[0], p[1] - g[1]) < goal.size * 0.35 and abs(p[2] - on_top) < 0.015
    if spec.family == "move_near":
        return math.hypot(p[0] - g[0], p[1] - g[1]) < MOVE_NEAR_SUCCESS and p[2] < target.half_height + 0.015
    raise ValueError(spec.family)
