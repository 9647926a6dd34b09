"""Randomized training scenes (`tabletop-diverse`): wider than the training suite, clear of everything held out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robovla.errors import RobovlaError
from robovla.sim import variations as V
from robovla.sim.randomization import MARGIN, Randomization, SceneLook, heldout_rgbs, heldout_violations
from robovla.sim.tasks import TRAIN_SHAPES, sample_episode


def test_randomized_scenes_never_draw_a_heldout_value():
    suite = V.get_suite("tabletop-diverse")
    rng = np.random.default_rng(0)
    heldout = heldout_rgbs()
    assert {"table checker rgb2", "table speckled markrgb", "table slate rgb1", "lighting dim", "lighting warm"} \
        <= set(heldout)
    counts, hues = set(), []
    for _ in range(3000):
        episode = sample_episode(rng, suite)
        look = episode.look
        assert look is not None and not heldout_violations(look)
        assert all(math.dist(look.table_rgb, rgb) >= MARGIN for name, rgb in heldout.items() if "table" in name)
        assert all(math.dist((look.light_diffuse,) * 3, V.LIGHTING[n][1]) >= MARGIN for n in V.AXES["lighting"].heldout)
        assert episode.table in V.AXES["table"].train and episode.lighting in V.AXES["lighting"].train
        assert episode.phrasing in V.AXES["phrasing"].train
        assert (episode.family, episode.target.shape) in V.TRAIN_COMBOS
        assert V.cell_of(episode.target.x, episode.target.y) in V.AXES["target_cell"].train
        lo, hi = V.AXES["target_size"].train[0]
        for obj in episode.objects:
            assert obj.color in V.TRAIN_COLORS and obj.shape in TRAIN_SHAPES and lo <= obj.size <= hi
            assert -25.0 <= math.degrees(obj.yaw) <= 25.0
        assert all(f.color in V.TRAIN_COLORS for f in episode.fixtures)
        counts.add(len(episode.objects))
        hues.append(look.table_rgb)
    assert counts == {3, 4}
    assert np.ptp(np.array(hues), axis=0).min() > 0.3  # the tables really vary, in every channel


def test_a_look_near_a_heldout_value_is_named():
    clear = SceneLook((0.3, 0.6, 0.4), (0.0, 0.0, -1.0), 0.7, 0.35, (0, 0, 0), (0, 0, 0))
    assert heldout_violations(clear) == []
    checker_square = SceneLook((0.85, 0.85, 0.84), (0.0, 0.0, -1.0), 0.7, 0.35, (0, 0, 0), (0, 0, 0))
    assert any("checker" in v for v in heldout_violations(checker_square))
    dim = SceneLook((0.3, 0.6, 0.4), (0.0, 0.0, -1.0), 0.4, 0.35, (0, 0, 0), (0, 0, 0))
    assert any("dim" in v for v in heldout_violations(dim))


def test_empty_or_impossible_ranges_are_refused():
    with pytest.raises(RobovlaError, match="table_value"):
        Randomization(table_value=(0.9, 0.6))
    with pytest.raises(RobovlaError, match="between 3"):
        Randomization(objects=(1, 3))
    with pytest.raises(RobovlaError, match="jitter"):
        Randomization(camera_jitter_m=-0.01)


@pytest.mark.parametrize("embodiment", ["default", "sideview"])
def test_diverse_scenes_render_differently_and_the_expert_solves_them(embodiment):
    from robovla.sim import make_env
    from robovla.sim.expert import scripted_expert

    env = make_env("tabletop-diverse", embodiment=embodiment, image_size=64)
    plain = make_env("tabletop-train", embodiment=embodiment, image_size=64)
    try:
        successes = 0
        for seed in range(8):
            obs, _ = env.reset(seed=seed)
            assert env.episode.look is not None
            expert = scripted_expert(env)
            for _ in range(env.max_episode_steps):
                obs, _, terminated, truncated, info = env.step(expert.act())
                if terminated or truncated:
                    break
            successes += bool(info["success"])
        assert successes >= 7
        first, _ = env.reset(seed=0)
        other, _ = plain.reset(seed=0)
        assert np.abs(first["image"].astype(int) - other["image"].astype(int)).mean() > 5
    finally:
        env.close()
        plain.close()
