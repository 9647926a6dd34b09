"""Meta-World as robovla suites: the action mapping, the task tables, the env, and collect -> train -> eval."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from robovla.errors import RobovlaError
from robovla.robots import robot_for
from robovla.robots.metaworld import from_metaworld_action, metaworld_state, to_metaworld_action
from robovla.sim.metaworld_tasks import (DIFFICULTY, INSTRUCTIONS, MT10, TASKS, check_task, difficulty_of, env_name,
                                         suite_tasks)


# ----------------------------------------------------------------------------------- no metaworld needed
def test_the_action_mapping_round_trips_and_keeps_the_gripper_convention():
    rng = np.random.default_rng(0)
    native = rng.uniform(-1, 1, (100, 4)).astype(np.float32)
    model = from_metaworld_action(native)
    assert model.shape == (100, 7) and np.all(model[:, 3:6] == 0) and np.all((0 <= model[:, 6]) & (model[:, 6] <= 1))
    np.testing.assert_allclose(to_metaworld_action(model), native, atol=1e-6)
    model = np.concatenate([rng.uniform(-1, 1, (100, 3)), np.zeros((100, 3)), rng.uniform(0, 1, (100, 1))], axis=1)
    np.testing.assert_allclose(from_metaworld_action(to_metaworld_action(model)), model, atol=1e-6)
    # the model's 1 = open is Meta-World's -1 (open); 0 = closed is +1 (close)
    assert to_metaworld_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))[3] == -1
    assert to_metaworld_action(np.array([0, 0, 0, 0, 0, 0, 0.0]))[3] == 1
    with pytest.raises(RobovlaError, match="7-D"):
        to_metaworld_action(np.zeros(4))
    with pytest.raises(RobovlaError, match="4-D"):
        from_metaworld_action(np.zeros(7))
    state = metaworld_state(np.arange(39, dtype=np.float64))
    assert state.tolist() == [0, 1, 2, 0, 0, 0, 3]
    assert robot_for("metaworld").dataset == "metaworld_sawyer" and robot_for("default").dataset == "tabletop_default"


def test_the_task_tables_name_fifty_tasks_in_four_difficulty_groups():
    assert len(TASKS) == 50 and len(set(INSTRUCTIONS.values())) == 50
    assert sorted(t for group in DIFFICULTY.values() for t in group) == sorted(TASKS)  # a partition
    assert {g: len(t) for g, t in DIFFICULTY.items()} == {"easy": 28, "medium": 11, "hard": 6, "very-hard": 5}
    assert set(MT10) <= set(TASKS) and difficulty_of("pick-place") == "hard" and env_name("push") == "push-v3"
    assert suite_tasks("metaworld-mt10") == MT10 and suite_tasks("metaworld-push-v3") == ("push",)
    assert check_task("stick-pull-v3") == "stick-pull"
    with pytest.raises(RobovlaError, match="did you mean pick-place"):
        suite_tasks("metaworld-pick-plac")
    with pytest.raises(RobovlaError, match="not a Meta-World suite"):
        suite_tasks("tabletop-train")


def test_suites_and_embodiments_must_go_together():
    from robovla.eval.harness import EvalSettings
    from robovla.sim.env import default_embodiment

    assert default_embodiment(("metaworld-mt10", "metaworld-hard")) == "metaworld"
    assert default_embodiment(("metaworld-mt10", "tabletop-train")) == "default"
    with pytest.raises(RobovlaError, match="do not go together"):
        EvalSettings(("metaworld-mt10",), embodiment="default").validate()
    with pytest.raises(RobovlaError, match="do not go together"):
        EvalSettings(("tabletop-train",), embodiment="metaworld").validate()
    with pytest.raises(RobovlaError, match="one phrasing per task"):
        EvalSettings(("metaworld-mt10:paraphrase",), embodiment="metaworld").validate()
    EvalSettings(("metaworld-mt50",), embodiment="metaworld").validate()


def test_a_missing_extra_or_a_mujoco_clash_is_one_line_saying_the_fix(monkeypatch):
    from robovla.sim.metaworld_env import MUJOCO_VERSION, import_metaworld

    monkeypatch.setitem(sys.modules, "metaworld", None)  # what an uninstalled package looks like to import
    with pytest.raises(RobovlaError, match=r"pip install -e '\.\[metaworld\]'"):
        import_metaworld()
    monkeypatch.undo()
    pytest.importorskip("metaworld")
    import mujoco

    monkeypatch.setattr(mujoco, "__version__", "9.9.9")
    with pytest.raises(RobovlaError, match=f"mujoco 9.9.9 is installed; fix: pip install mujoco=={MUJOCO_VERSION}"):
        import_metaworld()


# -------------------------------------------------------------------------------------- with metaworld
def test_the_instruction_table_covers_every_metaworld_task():
    env_dict = pytest.importorskip("metaworld.env_dict")
    assert sorted(env_dict.ALL_V3_ENVIRONMENTS) == sorted(env_name(t) for t in TASKS)
    assert list(env_dict.MT10_V3) == [env_name(t) for t in MT10]


def test_seeds_replay_spread_over_the_tasks_and_the_expert_succeeds():
    pytest.importorskip("metaworld")
    from robovla.sim import make_env

    env = make_env("metaworld-mt10", embodiment="metaworld", image_size=64, wrist_camera=True)
    try:
        first, info = env.reset(seed=1)
        again, _ = env.reset(seed=1)
        assert info["task"] == MT10[1] and info["instruction"] == INSTRUCTIONS[MT10[1]]
        assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["proprio"], again["proprio"])
        assert first["image"].shape == (64, 64, 3) and first["wrist_image"].shape == (64, 64, 3)
        other, _ = env.reset(seed=11)  # the same task, another layout
        assert not np.array_equal(first["proprio"], other["proprio"]) or not np.array_equal(first["image"], other["image"])
        obs, info = env.reset(seed=0)  # reach
        for step in range(env.max_episode_steps):
            obs, reward, terminated, truncated, info = env.step(env.expert_action())
            if terminated or truncated:
                break
        assert info["success"] and terminated and not truncated and info["difficulty"] == "easy"
    finally:
        env.close()


def test_collect_train_and_evaluate_on_one_task(tmp_path):
    pytest.importorskip("metaworld")
    import robovla
    from robovla.cli import main
    from robovla.data.collection import CollectConfig, collect
    from robovla.eval import CheckpointPolicy, EvalSettings, evaluate
    from robovla.train.config import TrainConfig
    from robovla.train.loop import train

    data = tmp_path / "reach"
    result = collect(CollectConfig(suite="metaworld-reach", episodes=2, embodiment="metaworld", image_size=64),
                     data, workers=1, progress=False)
    assert result.episodes == 2
    info = json.loads((data / "meta" / "info.json").read_text())
    assert info["robot_type"] == "metaworld_sawyer" and info["fps"] == 80.0
    stats = json.loads((data / "dataset_statistics.json").read_text())
    assert list(stats) == ["metaworld_sawyer"]

    out = tmp_path / "run"
    train(TrainConfig(datasets=[str(data)], out=str(out), steps=2, batch_size=4, precision="fp32", save_every=0,
                      progress=False, log_every=1, action_chunk=8, decoding="parallel"))  # 500 steps in 63 passes
    checkpoint = next(p for p in sorted((out / "checkpoints").iterdir()) if (p / "config.json").is_file())
    model = robovla.load_pretrained(checkpoint)
    results = evaluate(CheckpointPolicy(model, checkpoint), EvalSettings(("metaworld-reach",), episodes=1, num_envs=1,
                                                                           embodiment="metaworld", progress=False))
    assert results["conditions"]["metaworld-reach"]["n"] == 1
    # the CLI picks the embodiment from the suite; the expert sets the ceiling
    assert main(["eval", "--policy", "expert", "--suite", "metaworld-reach", "--episodes", "2", "--num-envs", "2",
                 "--out", str(tmp_path / "expert"), "--quiet"]) == 0
    expert = json.loads((tmp_path / "expert" / "results.json").read_text())
    assert expert["conditions"]["metaworld-reach"]["successes"] == 2
