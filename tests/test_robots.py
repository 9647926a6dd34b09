"""Robots: one module per robot maps its observation keys and action layout to the model's."""

from __future__ import annotations

import numpy as np
import pytest

from robovla.errors import RobovlaError
from robovla.robots import get_robot, list_robots, tabletop_robot


def test_the_tabletop_robots_follow_their_embodiments():
    assert list_robots() == ["tabletop-default", "tabletop-sideview", "tabletop-lab2", "metaworld-sawyer"]
    robot = get_robot("tabletop-sideview")
    assert robot.dataset == "tabletop_sideview" and robot.action_dim == 7 and robot.state_dim == 7
    assert robot.action_names[-1] == "gripper" and robot.state_names[:3] == ("x", "y", "z")
    with pytest.raises(RobovlaError, match="unknown robot 'ur5'; known: tabletop-default, tabletop-sideview, tabletop-lab2, metaworld"):
        get_robot("ur5")


def test_a_simulator_observation_becomes_a_policy_observation():
    from robovla.sim import make_env

    env = make_env("tabletop-train", image_size=32, wrist_camera=True)
    obs, info = env.reset(seed=3)
    env.close()
    mapped = tabletop_robot().policy_observation(obs, info["instruction"])
    assert set(mapped) == {"image", "wrist_image", "instruction", "proprio"}
    assert mapped["image"] is obs["image"] and np.array_equal(mapped["proprio"], obs["proprio"])
    with pytest.raises(RobovlaError, match="tabletop-default: the observation has no 'proprio'"):
        tabletop_robot().policy_observation({"image": obs["image"]}, "push the cube")


def test_datasets_name_their_dimensions_with_the_robot(tmp_path):
    import json

    from robovla.data.collection import CollectConfig, collect

    collect(CollectConfig(episodes=1), tmp_path / "ds", workers=1, progress=False)
    features = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())["features"]
    robot = tabletop_robot()
    assert tuple(features["observation.state"]["names"]) == robot.state_names
    assert tuple(features["action"]["names"]) == robot.action_names
