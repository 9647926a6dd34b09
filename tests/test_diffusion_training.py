"""`robovla train --policy diffusion`, resuming it exactly, and `robovla eval` of its checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import make_dataset

import robovla
from robovla.cli import main
from robovla.diffusion.runner import DiffusionRunner

STEPS = ["--steps", "4", "--batch-size", "4", "--save-every", "2", "--log-every", "1", "--no-progress",
         "--precision", "fp32"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # named like the default embodiment's data, with its 7-D state, so the simulator can run the result
    return make_dataset(tmp_path_factory.mktemp("data") / "tabletop", name="tabletop_default", episodes=4,
                        frames=20, size=64)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert main(["train", "--policy", "diffusion", "--datasets", str(dataset), "--out", str(out), *STEPS]) == 0
    return out / "checkpoints" / "step-000004"


def test_a_run_cut_short_resumes_to_the_weights_of_one_run(dataset, trained, tmp_path):
    out = tmp_path / "sliced"
    base = ["train", "--policy", "diffusion", "--datasets", str(dataset), "--out", str(out), *STEPS]
    assert main([*base, "--stop-at", "2"]) == 0
    assert main([*base, "--resume"]) == 0
    for name in ("model.safetensors", "training_state/trainable.safetensors", "training_state/ema.safetensors"):
        one, two = load_file(str(trained / name)), load_file(str(out / "checkpoints/step-000004" / name))
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(one[key], two[key], rtol=0, atol=0)
    # the EMA weights are what it acts with, and they are not the raw weights
    raw, acting = load_file(str(trained / "training_state/trainable.safetensors")), load_file(str(trained / "model.safetensors"))
    assert any(not torch.equal(raw[k], acting[k]) for k in raw if k.startswith("unet"))
    config = json.loads((trained / "config.json").read_text())
    assert config["policy_type"] == "diffusion" and config["state_dim"] == 7 and config["cameras"] == ["image"]
    assert json.loads((trained / "training_config.json").read_text())["policy"] == "diffusion"


def test_the_checkpoint_acts_through_the_runner(trained):
    runner = DiffusionRunner.from_pretrained(trained)
    observation = {"image": np.zeros((128, 128, 3), np.uint8), "instruction": "pick up the red cube",
                   "proprio": np.zeros(7)}
    first = runner.predict([observation, observation], generator=torch.Generator().manual_seed(3))
    again = runner.predict([observation, observation], generator=torch.Generator().manual_seed(3))
    assert first.actions.shape == (2, 8, 7) and first.token_ids is None
    np.testing.assert_array_equal(first.actions, again.actions)
    with pytest.raises(robovla.RobovlaError, match="observation 0 has no 'proprio'"):
        runner.predict({"image": observation["image"], "instruction": "go"})
    with pytest.raises(robovla.RobovlaError, match="holds a Diffusion Policy, not a VLA"):
        robovla.load_pretrained(trained)


def test_eval_runs_a_diffusion_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(trained), "--episodes", "2", "--num-envs", "2", "--out", str(out),
                 "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["n"] == 2
    assert results["policy"]["policy_type"] == "diffusion" and results["policy"]["action_chunk"] == 8
    assert main(["eval", "--checkpoint", str(trained), "--episodes", "1", "--ensemble", "0"]) == 2
    assert "--ensemble: VLA options, but" in capsys.readouterr().err


def test_vla_options_are_refused_for_a_diffusion_policy(dataset, tmp_path, capsys):
    base = ["train", "--policy", "diffusion", "--datasets", str(dataset), "--out", str(tmp_path / "x"), *STEPS]
    assert main([*base, "--strategy", "lora"]) == 2
    assert "a Diffusion Policy trains all its weights" in capsys.readouterr().err
    assert main([*base, "--action-chunk", "4", "--decoding", "parallel"]) == 2
    assert "--action-chunk, --decoding: VLA recipe options" in capsys.readouterr().err
    assert main([*base, "--policy", "transformer"]) == 2
    assert "unknown policy 'transformer'; valid: vla, diffusion" in capsys.readouterr().err


def test_serve_runs_a_diffusion_checkpoint(trained, capsys):
    """The same server (REST and openpi websocket) answers with the plan's executed actions; the metadata says
    what the policy reads; VLA-only serving options are refused."""
    from robovla.client import PolicyClient, WebsocketPolicyClient
    from robovla.serve import BackgroundServer, ServerConfig, create_app

    runner = DiffusionRunner.from_pretrained(trained)
    frame, state = np.zeros((96, 96, 3), np.uint8), np.zeros(7)
    with BackgroundServer(create_app(runner, ServerConfig(), "dp")) as server:
        client = PolicyClient(server.url)
        metadata = client.metadata()
        assert metadata["policy_type"] == "diffusion" and metadata["action_horizon"] == 8
        assert metadata["proprio_required"] and metadata["proprio_dim"] == 7 and metadata["max_prompt_tokens"] is None
        chunk = client.act_chunk(frame, "pick up the red cube", proprio=state)
        assert chunk.shape == (8, 7) and np.isfinite(chunk).all()
        with pytest.raises(Exception, match="proprio has 3 numbers, this policy reads 7"):
            client.act(frame, "pick up the red cube", proprio=np.zeros(3))
        with WebsocketPolicyClient(server.url.replace("http", "ws")) as socket_client:
            assert np.asarray(socket_client.act_chunk(frame, "pick up the red cube", proprio=state)).shape == (8, 7)
    with pytest.raises(robovla.RobovlaError, match="batch_invariant: VLA serving options"):
        create_app(runner, ServerConfig(batch_invariant=True))
    assert main(["serve", "--checkpoint", str(trained), "--compile"]) == 2
    assert "--compile: VLA options, but" in capsys.readouterr().err
