"""The fine-tuning setup: the lab2 embodiment and its two task groups (narrow, multi-object language)."""

from __future__ import annotations

import json

import numpy as np

from robovla.data.mixtures import MIXTURES
from robovla.demo import shipped_policy_path
from robovla.eval.harness import expand_conditions
from robovla.sim import variations as V
from robovla.sim.tasks import alternative_tasks, sample_episode


def episodes(suite: str, count: int = 40):
    rng = np.random.default_rng(0)
    return [sample_episode(rng, V.get_suite(suite)) for _ in range(count)]


def test_the_narrow_group_is_one_instruction_and_one_object_set():
    drawn = episodes("lab2-narrow")
    assert {e.instruction for e in drawn} == {"push the red cube to the green square"}
    assert {frozenset(o.color for o in e.objects) for e in drawn} == {frozenset({"red", "blue", "yellow"})}
    assert {e.table for e in drawn} == {"slate"} and {e.family for e in drawn} == {"push"}
    positions = np.array([(e.target.x, e.target.y) for e in drawn])
    assert positions.std(axis=0).min() > 0.03  # only where things are changes
    rng = np.random.default_rng(0)  # and no scene has a second task (no other instruction to collect)
    assert not any(alternative_tasks(e, V.get_suite("lab2-narrow"), rng) for e in drawn)


def test_the_multi_object_group_names_which_object_goes_where():
    drawn = episodes("lab2-multi")
    assert {e.family for e in drawn} == {"pick_place"}
    assert all(len(e.objects) >= 3 and len(e.fixtures) == 2 for e in drawn)
    assert len({e.instruction for e in drawn}) > 15
    for e in drawn:  # the instruction names the target's colour and the goal's, which tell them apart
        goal = e.entity(e.goal)
        assert e.target.color in e.instruction and goal.color in e.instruction


def test_the_new_setup_is_in_no_pretraining_data():
    assert "slate" not in V.AXES["table"].train + V.AXES["table"].heldout
    assert all("tabletop_lab2" not in table for table in MIXTURES.values())
    stats = json.loads((shipped_policy_path() / "dataset_statistics.json").read_text())
    assert "tabletop_lab2" not in stats
    assert expand_conditions(["all"]) == V.BENCHMARK_SUITES  # --suite all stays the generalization benchmark


def test_the_expert_solves_both_groups_on_the_new_embodiment(tmp_path):
    from robovla.cli import main

    for suite in V.TASK_GROUPS:
        out = tmp_path / suite
        assert main(["eval", "--policy", "expert", "--suite", suite, "--embodiment", "lab2", "--episodes", "10",
                     "--num-envs", "10", "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "results.json").read_text())["overall"]["successes"] >= 9
