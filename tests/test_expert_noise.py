"""Collection noise perturbs what is executed, never the recorded labels."""

from __future__ import annotations

import numpy as np

from robovla.sim import ScriptedExpert, make_env


def test_perturb_moves_only_position_and_yaw_and_act_stays_clean():
    env = make_env("tabletop-train", image_size=64, seed=0)
    env.reset(seed=3)
    noisy = ScriptedExpert(env, noise=0.2, rng=np.random.default_rng(0))
    clean = ScriptedExpert(env, noise=0.0)
    label = noisy.act()
    assert np.array_equal(label, clean.act())  # the label ignores the noise
    executed = noisy.perturb(label)
    assert not np.allclose(executed[[0, 1, 2, 5]], label[[0, 1, 2, 5]])
    assert np.array_equal(executed[[3, 4, 6]], label[[3, 4, 6]])
    assert np.array_equal(clean.perturb(label), label)
    env.close()


def test_collected_labels_are_noise_free(tmp_path):
    from robovla.data import CollectConfig, LeRobotDataset, collect

    result = collect(CollectConfig(suite="tabletop-train", episodes=2, image_size=64, seed=5, noise=0.2),
                     tmp_path / "d", workers=1, progress=False)
    assert result.episodes == 2
    dataset = LeRobotDataset(tmp_path / "d")
    assert np.all(dataset.actions[:, 3:5] == 0.0)  # roll and pitch labels stay exactly level
