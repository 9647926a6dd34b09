"""Task families: scene sampling, grounded instructions and success predicates.

An episode is fully described by an `EpisodeSpec` drawn from a suite with a seeded RNG; the scene builder,
the expert and the success check all read the same spec, so a seed reproduces the episode exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from robovla.sim import variations as V
from robovla.sim.randomization import SceneLook, draw_look

TRAIN_SHAPES = ("cube", "cylinder")
OBJECT_COUNT = 3  # graspable objects per scene: the target plus context/distractors
FIXTURE_RADIUS = {"bowl": 0.075, "bin": 0.07, "plate": 0.075, "pad": 0.055}  # half-size of bins and pads
FIXTURE_TOP = {"bowl": 0.008, "bin": 0.008, "plate": 0.010, "pad": 0.002}  # z of the surface an object rests on
CONTAINERS = ("bowl", "bin", "plate")
MOVE_NEAR_DISTANCE = 0.09
MOVE_NEAR_SUCCESS = 0.12
MOVE_NEAR_START = MOVE_NEAR_SUCCESS + 0.04  # a move-near pair starts further apart than this: not already solved
PUSH_DISTANCE = (0.12, 0.22)  # metres from the target to its pad: a short push
PUSH_PATH_CLEARANCE = 0.09  # other objects keep this far from the push path

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
# Instruction sets a policy can be evaluated under (`robovla eval --instructions`): "suite" keeps each suite's own
# phrasings; "paraphrase" rewrites the instruction with one of these templates, which no suite and no collection
# ever uses (capitals and punctuation, a polite opening, other verbs and word order), to measure language robustness.
INSTRUCTION_SETS = ("suite", "paraphrase", "punctuation", "polite", "synonym", "order", "augmented")  # rewrites.py
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "pick_place": (
        "Could you put the {target} {prep} the {goal}?",
        "pick up the {target} and leave it {prep} the {goal}",
        "the {target} goes {prep} the {goal}",
    ),
    "stack": (
        "Please stack the {target} on the {goal}.",
        "pick up the {target} and set it down on top of the {goal}",
        "the {target} goes on top of the {goal}",
    ),
    "move_near": (
        "Please move the {target} next to the {goal}.",
        "take the {target} over to the {goal}",
        "the {target} should end up next to the {goal}",
    ),
    "push": (
        "Please push the {target} to the {goal}.",
        "push the {target} until it is on the {goal}",
        "the {target} has to be pushed onto the {goal}",
    ),
}
NOUNS = {"cube": "cube", "cylinder": "cylinder", "ball": "ball", "disc": "disc", "bowl": "bowl", "plate": "plate", "bin": "bin", "pad": "square"}


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
    look: SceneLook | None = None  # a randomized scene's table colour, light and camera (else the named ones)

    @property
    def target(self) -> ObjectSpec:
        return self.objects[0]

    def entity(self, name: str) -> ObjectSpec | FixtureSpec:
        for item in (*self.objects, *self.fixtures):
            if item.name == name:
                return item
        raise KeyError(name)


def preposition(goal: ObjectSpec | FixtureSpec) -> str:
    """"in the bowl/bin", "on the plate/square/cube"."""
    return "in" if getattr(goal, "kind", "") in ("bowl", "bin") else "on"


def _uniform_in(rng: np.random.Generator, intervals: tuple) -> float:
    lo, hi = _choice(rng, intervals)
    return float(rng.uniform(lo, hi))


def _choice(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


def _combos(suite: V.Suite, family: str | None) -> list[tuple[str, str]]:
    """(family, target shape) pairs a suite may draw."""
    if "task_combo" in suite.heldout_axes:
        pairs = list(V.HELDOUT_COMBOS)
    else:
        pairs = [p for p in V.TRAIN_COMBOS if p[1] in suite.pool("target_shape")]
        # unseen shapes (physical suite) go with every family but stacking, which needs a flat top
        pairs += [(f, s) for s in suite.pool("target_shape") if s not in TRAIN_SHAPES for f in V.FAMILIES if f != "stack"]
    return [p for p in pairs if (family is None or p[0] == family) and p[0] in suite.families]


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
    family = _choice(rng, sorted({f for f, _ in pairs}, key=V.FAMILIES.index))  # families equally likely
    shape = _choice(rng, [s for f, s in pairs if f == family])
    for _ in range(500):
        spec = _try_sample(rng, suite, family, shape)
        if spec is not None:
            return spec
    raise RuntimeError("could not place the scene; the workspace is too crowded")


class _Layout:
    """Rejection sampling of free spots in the workspace, keeping clear of what is already placed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.taken: list[tuple[float, float, float]] = []  # x, y, clearance

    def free_point(self, clearance: float, accept=lambda x, y: True) -> tuple[float, float] | None:
        for _ in range(60):
            x, y = float(self.rng.uniform(*V.WORKSPACE_X)), float(self.rng.uniform(*V.WORKSPACE_Y))
            if _far(x, y, [(ox, oy, max(d, clearance)) for ox, oy, d in self.taken]) and accept(x, y):
                return x, y
        return None


def _try_sample(rng: np.random.Generator, suite: V.Suite, family: str, shape: str) -> EpisodeSpec | None:
    """One attempt at placing a scene for `family` with a `shape` target; None if it does not fit."""

    def yaw() -> float:
        return math.radians(_uniform_in(rng, suite.pool("object_yaw")))

    (x0, x1), (y0, y1) = V.cell_bounds(_choice(rng, suite.pool("target_cell")))
    tx, ty = float(rng.uniform(x0 + 0.01, x1 - 0.01)), float(rng.uniform(y0 + 0.01, y1 - 0.01))
    target = ObjectSpec("obj0", shape, _choice(rng, suite.pool("target_color")), _uniform_in(rng, suite.pool("target_size")), tx, ty, yaw())
    layout = _Layout(rng)
    layout.taken.append((tx, ty, 0.1))

    fixtures: list[FixtureSpec] = []
    if family in ("pick_place", "push"):
        kinds = ["pad", "pad"] if family == "push" else [_choice(rng, CONTAINERS) for _ in range(2)]
        colors = [c for c in V.TRAIN_COLORS if c != target.color]
        for k, kind in enumerate(kinds):
            if family == "push" and k == 0:  # the target pad: a short push away
                point = layout.free_point(0.16, lambda x, y: PUSH_DISTANCE[0] <= math.hypot(x - tx, y - ty) <= PUSH_DISTANCE[1])
            else:
                point = layout.free_point(0.17)
            if point is None:
                return None
            if k == 0 and suite.fixes("goal_color"):  # a task group's goal: its own colour
                color = _choice(rng, [c for c in suite.pool("goal_color") if c in colors])
                colors.remove(color)
            else:
                color = colors.pop(int(rng.integers(len(colors))))
            fixtures.append(FixtureSpec(f"fix{k}", kind, color, *point))
            layout.taken.append((*point, 0.17))

    def clear_of_push_path(x: float, y: float) -> bool:
        return _push_path_distance((tx, ty), (fixtures[0].x, fixtures[0].y), (x, y)) >= PUSH_PATH_CLEARANCE

    objects = [target]
    used_colors = {target.color}
    count = OBJECT_COUNT if suite.randomization is None else int(rng.integers(suite.randomization.objects[0],
                                                                             suite.randomization.objects[1] + 1))
    while len(objects) < count:
        is_goal = family in ("stack", "move_near") and len(objects) == 1
        if is_goal and family == "move_near":  # must not start out solved
            accept = lambda x, y: math.hypot(x - tx, y - ty) > MOVE_NEAR_START  # noqa: E731
        elif family == "push":
            accept = clear_of_push_path
        else:
            accept = lambda x, y: True  # noqa: E731
        point = layout.free_point(0.12 if fixtures else 0.1, accept)
        if point is None:
            return None
        color = _choice(rng, [c for c in (V.TRAIN_COLORS if is_goal else suite.pool("distractor_color")) if c not in used_colors])
        used_colors.add(color)
        obj_shape = "cube" if (is_goal and family == "stack") else _choice(rng, TRAIN_SHAPES)
        objects.append(ObjectSpec(f"obj{len(objects)}", obj_shape, color, _uniform_in(rng, V.AXES["target_size"].train), *point, yaw()))
        layout.taken.append((*point, 0.1))

    place_offset = _move_near_offset(rng, objects) if family == "move_near" else (0.0, 0.0)
    if place_offset is None:
        return None
    phrasing = _choice(rng, suite.pool("phrasing"))
    goal_item = fixtures[0] if fixtures else objects[1]
    instruction = TEMPLATES[family][phrasing].format(target=target.phrase, goal=goal_item.phrase, prep=preposition(goal_item))
    return EpisodeSpec(
        family, tuple(objects), tuple(fixtures), goal_item.name, instruction, phrasing,
        _choice(rng, suite.pool("table")), _choice(rng, suite.pool("lighting")), place_offset,
        None if suite.randomization is None else draw_look(rng, suite.randomization),
    )


def alternative_tasks(spec: EpisodeSpec, suite: V.Suite, rng: np.random.Generator) -> list[EpisodeSpec]:
    """Every other valid task in the same scene, in an order drawn from `rng`: other things in the instruction's
    roles (another target and/or goal), same family and phrasing, each role's colour and the target's shape and
    cell within `suite`'s pools.

    With one instruction per scene, a policy can learn where the answer lies from the layout alone and ignore the
    words; demonstrations of one scene under several instructions leave the words as the only way to tell them
    apart (`robovla collect --instructions-per-scene`)."""
    shapes = {shape for _, shape in _combos(suite, spec.family)}
    pairs = []
    for target in spec.objects:
        if target.shape not in shapes or target.color not in suite.pool("target_color"):
            continue
        if V.cell_of(target.x, target.y) not in suite.pool("target_cell"):
            continue
        if not any(lo <= target.size <= hi for lo, hi in suite.pool("target_size")):
            continue
        goals = spec.fixtures if spec.family in ("pick_place", "push") else [o for o in spec.objects if o is not target]
        if suite.fixes("goal_color"):
            goals = [goal for goal in goals if goal.color in suite.pool("goal_color")]
        pairs += [(target, goal) for goal in goals if (target.name, goal.name) != (spec.target.name, spec.goal)]
    tasks = []
    for k in rng.permutation(len(pairs)):
        task = _with_roles(spec, suite, *pairs[int(k)], rng)
        if task is not None:
            tasks.append(task)
    return tasks


def _with_roles(spec: EpisodeSpec, suite: V.Suite, target: ObjectSpec, goal: ObjectSpec | FixtureSpec,
                rng: np.random.Generator) -> EpisodeSpec | None:
    """`spec`'s scene with `target` and `goal` in the instruction's roles; None if that task is not valid there."""
    others = [o for o in spec.objects if o is not target and o is not goal]
    if any(o.color not in suite.pool("distractor_color") for o in others):
        return None
    if isinstance(goal, ObjectSpec) and goal.color not in V.TRAIN_COLORS:
        return None  # goal objects take training colours in every suite
    if spec.family == "stack" and goal.shape != "cube":
        return None
    if spec.family == "push" and not _push_is_clear(target, goal, others):
        return None
    objects = (target, goal, *others) if isinstance(goal, ObjectSpec) else (target, *others)
    offset = (0.0, 0.0)
    if spec.family == "move_near":
        if math.hypot(target.x - goal.x, target.y - goal.y) <= MOVE_NEAR_START:
            return None
        offset = _move_near_offset(rng, list(objects))
        if offset is None:
            return None
    instruction = TEMPLATES[spec.family][spec.phrasing].format(target=target.phrase, goal=goal.phrase, prep=preposition(goal))
    return EpisodeSpec(spec.family, objects, spec.fixtures, goal.name, instruction, spec.phrasing, spec.table,
                       spec.lighting, offset, spec.look)


def paraphrased(spec: EpisodeSpec, rng: np.random.Generator) -> EpisodeSpec:
    """`spec` with its instruction rewritten by one of its family's `PARAPHRASES` (same scene, same task)."""
    template = _choice(rng, PARAPHRASES[spec.family])
    goal = spec.entity(spec.goal)
    instruction = template.format(target=spec.target.phrase, goal=goal.phrase, prep=preposition(goal))
    return replace(spec, instruction=instruction, phrasing="paraphrase")


def _push_is_clear(target: ObjectSpec, pad: FixtureSpec, others: list[ObjectSpec]) -> bool:
    """A push the expert can make: the pad a short push away, nothing on the path from behind the target."""
    if not PUSH_DISTANCE[0] <= math.hypot(pad.x - target.x, pad.y - target.y) <= PUSH_DISTANCE[1]:
        return False
    path = ((target.x, target.y), (pad.x, pad.y))
    return all(_push_path_distance(*path, (o.x, o.y)) >= PUSH_PATH_CLEARANCE for o in others)


def _push_path_distance(start: tuple[float, float], pad: tuple[float, float], point: tuple[float, float]) -> float:
    """How far `point` is from the push path: from 8 cm behind the target's start to the pad."""
    a, b = np.array(start), np.array(pad)
    behind = a - (b - a) / np.linalg.norm(b - a) * 0.08
    return _segment_distance(np.array(point), behind, b)


def _move_near_offset(rng: np.random.Generator, objects: list[ObjectSpec]) -> tuple[float, float] | None:
    """A free spot beside the reference object (objects[1]) where the expert will put the target."""
    ref = objects[1]
    directions = [(1.0, 0.0), (-1.0, 0.0), (0.0, 1.0), (0.0, -1.0)]
    others = [(o.x, o.y, 0.095) for o in objects[2:]]
    for k in rng.permutation(len(directions)):
        dx, dy = directions[int(k)]
        px, py = ref.x + dx * MOVE_NEAR_DISTANCE, ref.y + dy * MOVE_NEAR_DISTANCE
        inside = V.WORKSPACE_X[0] <= px <= V.WORKSPACE_X[1] and V.WORKSPACE_Y[0] <= py <= V.WORKSPACE_Y[1]
        if inside and _far(px, py, others):
            return dx * MOVE_NEAR_DISTANCE, dy * MOVE_NEAR_DISTANCE
    return None


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
        if goal.kind in ("pad", "bin"):  # square fixtures
            return resting and max(dx, dy) < FIXTURE_RADIUS[goal.kind] - (0.01 if goal.kind == "pad" else 0.025)
        return resting and math.hypot(dx, dy) < FIXTURE_RADIUS[goal.kind] - 0.025
    g = state.positions[goal.name]
    assert isinstance(goal, ObjectSpec)
    if spec.family == "stack":
        on_top = g[2] + goal.half_height + target.half_height
        return math.hypot(p[0] - g[0], p[1] - g[1]) < goal.size * 0.35 and abs(p[2] - on_top) < 0.015
    if spec.family == "move_near":
        return math.hypot(p[0] - g[0], p[1] - g[1]) < MOVE_NEAR_SUCCESS and p[2] < target.half_height + 0.015
    raise ValueError(spec.family)


FAILURE_REASONS = {
    "wrong_object": "the target never moved, but another object did: the policy handled the wrong object",
    "dropped": "the target was lifted, then let go of away from the goal",
    "timeout": "the step limit came first (the target was still held, pushed short, or never reached)",
}
MOVED = 0.03  # metres an object must travel (or rise) to count as handled
LIFTED = 0.03  # metres above its start height at which the target counts as lifted


def first_handled(spec: EpisodeSpec, start: dict[str, np.ndarray], state: WorldState) -> str:
    """Which object the robot has moved (or lifted) so far: "target", "other" (another object, not the target) or
    "none". Called each step until it says something, it tells which object a policy went for first."""

    def moved(name: str) -> bool:
        delta = state.positions[name] - start[name]
        return math.hypot(delta[0], delta[1]) > MOVED or delta[2] > MOVED

    if moved(spec.target.name):
        return "target"
    return "other" if any(moved(o.name) for o in spec.objects if o.name != spec.target.name) else "none"


def failure_reason(spec: EpisodeSpec, start: dict[str, np.ndarray], state: WorldState, target_lifted: bool) -> str:
    """Why an episode that ran out of steps failed, as far as the simulator can tell (`FAILURE_REASONS`)."""
    if first_handled(spec, start, state) == "other":  # the target never moved, another object did
        return "wrong_object"
    target = spec.target.name
    resting = state.positions[target][2] < start[target][2] + LIFTED
    if target_lifted and resting:
        return "dropped"
    return "timeout"
