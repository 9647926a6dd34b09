"""Scene randomization for training collections: a wider training world that still holds nothing held out.

OpenVLA generalizes partly because its robot data is diverse. A `Randomization` widens the tabletop's training
scenes beyond their named values: a flat table of any hue and brightness, light from another direction at
another grey level, a camera moved and turned a little, and more or fewer objects on the table. Each range is
chosen to stay clear of every held-out value of the five suites (the textured `checker` and `speckled`
tables, the `dim` and `warm` lights) and of the fine-tuning lab's `slate` table, by at least `MARGIN` in RGB:
`heldout_violations` checks a drawn scene against them, and the tests draw thousands. Object colours, shapes,
sizes, positions and phrasings keep their training pools (the suite's), so no held-out colour word, shape or
cell appears either.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from robovla.errors import RobovlaError

MARGIN = 0.1  # least RGB distance (Euclidean, 0-1 channels) between a drawn colour and a held-out one


@dataclass(frozen=True)
class SceneLook:
    """What a randomized scene sets beyond the suite's named table and lighting."""

    table_rgb: tuple[float, float, float]  # a flat table colour
    light_dir: tuple[float, float, float]  # unit vector the directional light shines along
    light_diffuse: float  # its grey level
    ambient: float  # the headlight's ambient grey level
    camera_offset: tuple[float, float, float]  # metres added to the embodiment's front-camera position
    target_offset: tuple[float, float, float]  # metres added to the point it looks at


@dataclass(frozen=True)
class Randomization:
    """The ranges a randomized training scene draws from (uniformly)."""

    table_hue: tuple[float, float] = (0.0, 1.0)
    table_saturation: tuple[float, float] = (0.0, 0.35)
    table_value: tuple[float, float] = (0.6, 0.9)  # slate is 0.52 at its brightest channel
    light_tilt_deg: tuple[float, float] = (0.0, 40.0)  # from straight down, towards any side
    light_diffuse: tuple[float, float] = (0.55, 0.85)  # grey: `dim` is 0.38, `warm` is tinted
    ambient: tuple[float, float] = (0.3, 0.45)
    camera_jitter_m: float = 0.02  # each camera-position coordinate moves up to this far
    target_jitter_m: float = 0.02  # and each coordinate of the point it looks at
    objects: tuple[int, int] = (3, 4)  # graspable objects per scene, target included (4 training colours, each once)

    def __post_init__(self) -> None:
        for name in ("table_hue", "table_saturation", "table_value", "light_tilt_deg", "light_diffuse", "ambient",
                     "objects"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise RobovlaError(f"randomization {name}: the range ({lo}, {hi}) is empty")
        from robovla.sim.variations import TRAIN_COLORS

        if not 3 <= self.objects[0] <= self.objects[1] <= len(TRAIN_COLORS):
            raise RobovlaError(f"randomization objects: between 3 (a target, its context, a distractor) and "
                               f"{len(TRAIN_COLORS)} (each training colour once) per scene, got {self.objects}")
        if self.camera_jitter_m < 0 or self.target_jitter_m < 0:
            raise RobovlaError("randomization: camera jitter must be >= 0")


def draw_look(rng: np.random.Generator, randomization: Randomization) -> SceneLook:
    """One scene's look, redrawn until no colour comes within `MARGIN` of a held-out one."""
    r = randomization
    for _ in range(100):
        table = colorsys.hsv_to_rgb(float(rng.uniform(*r.table_hue)), float(rng.uniform(*r.table_saturation)),
                                    float(rng.uniform(*r.table_value)))
        tilt, azimuth = math.radians(float(rng.uniform(*r.light_tilt_deg))), float(rng.uniform(0, 2 * math.pi))
        direction = (math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), -math.cos(tilt))

        def jitter(size: float) -> tuple[float, float, float]:
            return tuple(round(float(v), 4) for v in rng.uniform(-size, size, 3))  # type: ignore[return-value]

        look = SceneLook(tuple(round(c, 4) for c in table), tuple(round(v, 4) for v in direction),  # type: ignore[arg-type]
                         round(float(rng.uniform(*r.light_diffuse)), 4), round(float(rng.uniform(*r.ambient)), 4),
                         jitter(r.camera_jitter_m), jitter(r.target_jitter_m))
        if not heldout_violations(look):
            return look
    raise RobovlaError("randomization: 100 draws in a row came too close to held-out values; widen the ranges")


def heldout_rgbs() -> dict[str, tuple[float, float, float]]:
    """Every named table and light colour a randomized scene must stay clear of: the visual suite's held-out
    tables and lights, and the fine-tuning lab's table (a setup in no pretraining data)."""
    from robovla.sim.variations import AXES, LIGHTING, TABLES

    colours: dict[str, tuple[float, float, float]] = {}
    for name in (*AXES["table"].heldout, "slate"):
        for key in ("rgb1", "rgb2", "markrgb"):  # a textured table's colours, each
            value = _attribute(TABLES[name], key)
            if value is not None:
                colours[f"table {name} {key}"] = value
    for name in AXES["lighting"].heldout:
        colours[f"lighting {name}"] = LIGHTING[name][1]
    return colours


def heldout_violations(look: SceneLook) -> list[str]:
    """The held-out values `look` comes within `MARGIN` of (empty when it is clear of all)."""
    light = (look.light_diffuse,) * 3
    near = []
    for name, rgb in heldout_rgbs().items():
        mine = look.table_rgb if name.startswith("table") else light
        if math.dist(mine, rgb) < MARGIN:
            near.append(f"{name} {rgb}")
    return near


def _attribute(mjcf: str, key: str) -> tuple[float, float, float] | None:
    """`key="r g b"` out of an MJCF attribute string."""
    marker = f'{key}="'
    if marker not in mjcf:
        return None
    r, g, b = (float(v) for v in mjcf.split(marker, 1)[1].split('"', 1)[0].split())
    return r, g, b
