"""`robovla collect`: a valid LeRobot v3.0 dataset, worker-independent content, bad input, Ctrl-C + resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mujoco")

import robovla.model.vla  # noqa: E402,F401  (torch's compiler stack must load before any EGL context)
from robovla.cli import main  # noqa: E402
from robovla.data import LeRobotDataset  # noqa: E402
from robovla.data.collection import CollectConfig, EpisodeRecorder, attempt_seed, collect  # noqa: E402
from robovla.errors import RobovlaError  # noqa: E402


def test_collect_writes_a_lerobot_v3_dataset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["collect", "--episodes", "6", "--out", str(out), "--workers", "2", "--image-size", "32", "--quiet", "--wrist-camera"]) == 0
    assert "wrote 6 episodes" in capsys.readouterr().out
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 6 and info["fps"] == 10.0
    assert info["robovla"]["dataset_name"] == "tabletop_default" and info["robovla"]["action_scale"]["pos_step_m"] == 0.03
    assert "tabletop_default" in json.loads((out / "dataset_statistics.json").read_text())
    assert (out / "meta/stats.json").is_file() and not (tmp_path / "demo.partial").exists()
    ds = LeRobotDataset(out)
    item = ds[0]
    assert item["image"].shape == (32, 32, 3) and item["wrist_image"].shape == (32, 32, 3)
    assert ds.num_episodes == 6 and item["instruction"] and ds.dataset_name == "tabletop_default"
    assert ds.grounding.shape == (len(ds), 4) and item["grounding"].shape == (4,)  # where the named objects are
    assert len(json.loads((out / "dataset_statistics.json").read_text())["tabletop_default"]["grounding"]["q99"]) == 4
    serial = tmp_path / "serial"
    assert main(["collect", "--episodes", "6", "--out", str(serial), "--workers", "1", "--image-size", "32", "--quiet", "--wrist-camera"]) == 0
    assert np.array_equal(LeRobotDataset(serial).actions, ds.actions)  # same seed, same data, whatever the workers


def test_bad_names_exit_2_with_valid_choices(tmp_path, capsys):
    assert main(["collect", "--suite", "tabletop-nope", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    assert "valid: tabletop-train" in capsys.readouterr().err
    assert main(["collect", "--task", "juggle", "--episodes", "1", "--out", str(tmp_path / "x")]) == 2
    assert "pick_place" in capsys.readouterr().err


def test_interrupt_keeps_previous_dataset_and_resumes(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    small = CollectConfig(episodes=2, image_size=24)
    collect(small, out, workers=1, progress=False)
    config = CollectConfig(episodes=4, image_size=24, seed=7)
    real_run = EpisodeRecorder.run
    calls = {"n": 0}

    def interrupted(self, attempt):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_run(self, attempt)

    monkeypatch.setattr(EpisodeRecorder, "run", interrupted)
    with pytest.raises(KeyboardInterrupt, match="rerun the same command to resume"):
        collect(config, out, workers=1, progress=False)
    assert LeRobotDataset(out).num_episodes == 2  # the previous dataset is untouched
    staging = tmp_path / "ds.partial"
    assert len(list(staging.glob("ep-*.parquet"))) + len(list(staging.glob("failed-*"))) == 2
    assert not list(staging.glob("*.tmp"))
    monkeypatch.setattr(EpisodeRecorder, "run", real_run)
    result = collect(config, out, workers=1, progress=False)
    assert result.episodes == 4 and not staging.exists()
    fresh = tmp_path / "fresh"
    collect(config, fresh, workers=1, progress=False)
    assert np.array_equal(LeRobotDataset(out).actions, LeRobotDataset(fresh).actions)


def test_dagger_keeps_policy_driven_episodes_with_expert_labels(tmp_path):
    import robovla
    from robovla.sim import ScriptedExpert
    from robovla.sim.env import make_env

    expert_only = collect(CollectConfig(episodes=2, image_size=24, seed=5, noise=0.0), tmp_path / "expert",
                          workers=1, progress=False)
    stats = json.loads((expert_only.out / "dataset_statistics.json").read_text())
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True)
    policy = robovla.save_pretrained(robovla.build_model(config, norm_stats=stats, seed=1), tmp_path / "policy")
    dagger = CollectConfig(episodes=2, image_size=24, seed=5, noise=0.0, policy=str(policy), policy_share=1.0)
    result = collect(dagger, tmp_path / "dagger", workers=1, progress=False)
    data = LeRobotDataset(result.out)
    assert data.num_episodes == 2 and result.failed == 0  # an untrained policy fails, and its states are kept
    assert json.loads((result.out / "meta/info.json").read_text())["robovla"]["policy_share"] == 1.0
    expert_data = LeRobotDataset(expert_only.out)
    # the same first scene and state, then the policy's moves take the episode elsewhere
    assert np.array_equal(data.proprio[0], expert_data.proprio[0])
    assert not np.allclose(data.proprio[1], expert_data.proprio[1])
    # the label is what the expert says in the visited state, not what was executed
    env = make_env("tabletop-train", image_size=24)
    env.reset(seed=attempt_seed(5, 0))
    assert np.allclose(data.actions[0], ScriptedExpert(env).act())
    with pytest.raises(RobovlaError, match="not a checkpoint folder"):
        collect(CollectConfig(episodes=1, policy=str(tmp_path / "nowhere")), tmp_path / "x", workers=1, progress=False)


def test_instructions_per_scene_demonstrates_one_scene_under_several_instructions(tmp_path):
    config = CollectConfig(episodes=3, image_size=32, seed=23, instructions_per_scene=3)
    data = LeRobotDataset(collect(config, tmp_path / "ds", workers=1, progress=False).out)
    firsts = [int(np.flatnonzero(data.episode_index == e)[0]) for e in range(data.num_episodes)]
    frames = [data[i] for i in firsts]
    assert len({f["instruction"] for f in frames}) == 3  # three tasks ...
    for f in frames[1:]:  # ... in one scene: the same first frame, up to the odd pixel
        assert np.mean(f["image"] != frames[0]["image"]) < 0.01 and np.array_equal(f["proprio"], frames[0]["proprio"])
    assert not np.allclose(data.grounding[firsts[0]], data.grounding[firsts[1]])  # the words name other objects
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["robovla"]["instructions_per_scene"] == 3
    single = LeRobotDataset(collect(CollectConfig(episodes=1, image_size=32, seed=23), tmp_path / "one", workers=1,
                                    progress=False).out)
    assert np.array_equal(single[0]["image"], frames[0]["image"])  # the first instruction is the sampled one
    with pytest.raises(RobovlaError, match="instructions-per-scene"):
        collect(CollectConfig(instructions_per_scene=0), tmp_path / "x", workers=1, progress=False)


def test_max_frames_keeps_the_first_frames_of_each_demonstration(tmp_path):
    whole = LeRobotDataset(collect(CollectConfig(episodes=1, image_size=32, seed=23), tmp_path / "whole", workers=1,
                                   progress=False).out)
    config = CollectConfig(episodes=2, image_size=32, seed=23, max_frames=3)
    short = LeRobotDataset(collect(config, tmp_path / "short", workers=1, progress=False).out)
    assert short.num_episodes == 2 and len(short) == 6  # kept although no demonstration got to succeed
    assert np.array_equal(short.actions[:3], whole.actions[:3])  # the same start as the full demonstration
    assert np.array_equal(short[2]["image"], whole[2]["image"])
    info = json.loads((tmp_path / "short" / "meta" / "info.json").read_text())
    assert info["robovla"]["max_frames"] == 3
    with pytest.raises(RobovlaError, match="max-frames"):
        collect(CollectConfig(max_frames=0), tmp_path / "x", workers=1, progress=False)
