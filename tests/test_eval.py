"""The closed-loop evaluation harness: seeded, batched, per-family accounting, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import robovla
from robovla.cli import main
from robovla.eval import evaluate_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    stats = {"tabletop_default": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0],
                                             "mask": [True] * 6 + [False]},
                                  "proprio": {"q01": [-0.2, -0.13, 0.0, -0.01, -0.01, -1.2, 0.0],
                                              "q99": [0.2, 0.13, 0.18, 0.01, 0.01, 1.2, 1.0]}}}
    model = robovla.build_model("tabletop-cpu", norm_stats=stats, seed=1)
    folder = robovla.save_pretrained(model, tmp_path_factory.mktemp("ckpt") / "policy")
    return model, folder


def test_rollouts_are_seeded_and_counted(policy):
    model, _ = policy
    a = evaluate_policy(model, episodes=3, num_envs=2, seed=11)
    b = evaluate_policy(model, episodes=3, num_envs=3, seed=11)
    assert a.episodes == 3 and sum(n for _, n in a.per_family.values()) == 3
    assert a.per_family == b.per_family and a.mean_steps == b.mean_steps  # same scenes, same actions
    assert 0 <= a.success_rate <= 1 and a.mean_steps > 0


def test_eval_cli_rejects_unknown_suite(policy, capsys):
    _, folder = policy
    assert main(["eval", "--checkpoint", str(folder), "--suite", "tabletop-mars", "--episodes", "1"]) == 2
    assert "unknown suite 'tabletop-mars'; valid: tabletop-train" in capsys.readouterr().err


def test_eval_cli_json(policy, capsys):
    import json

    _, folder = policy
    assert main(["eval", "--checkpoint", str(folder), "--episodes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 2 and result["suite"] == "tabletop-train"
    assert np.isclose(result["success_rate"], result["successes"] / 2)


def test_eval_cli_rejects_ensembling_with_execute(policy, capsys):
    _, folder = policy
    assert main(["eval", "--checkpoint", str(folder), "--episodes", "1", "--ensemble", "0", "--execute", "2"]) == 2
    assert "--ensemble asks at every step; it cannot be combined with --execute" in capsys.readouterr().err


def test_eval_cli_sim_grounding_needs_a_grounding_model(policy, capsys):
    _, folder = policy
    assert main(["eval", "--checkpoint", str(folder), "--episodes", "1", "--sim-grounding"]) == 2
    assert "--sim-grounding needs a model with grounding tokens" in capsys.readouterr().err
