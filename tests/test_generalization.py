"""`robovla experiment generalization`: the report's judgements from a results document, the colour-word chance
rate, the mixture's weights, and the --quick run end to end (slow)."""

from __future__ import annotations

import json

import pytest

from robovla.errors import RobovlaError
from robovla.eval.stats import rate_summary
from robovla.experiments.generalization import CONDITIONS, chance_of_target, choose, starting_point
from robovla.experiments.generalization_report import followed, rewrite_losses, target_check


def arm(successes: dict[str, int], handled=(10, 20, 5), n: int = 50) -> dict:
    rows = {c: rate_summary(successes.get(c, 0), n) for c in CONDITIONS}
    target, other, none = handled
    counts = {"target": target, "other": other, "none": none}
    return {"success": rows, "evaluation": {"handled": {"tabletop-semantic": counts, "tabletop-train": counts}}}


def test_targets_are_judged_against_the_training_suite_and_the_trained_phrasings():
    good = arm({"tabletop-train": 45, "tabletop-visual": 40, "tabletop-motion": 38, "tabletop-physical": 36,
                "tabletop-semantic": 26, "tabletop-train:punctuation": 45, "tabletop-train:polite": 42,
                "tabletop-train:synonym": 41, "tabletop-train:order": 44})
    assert [met for _, met, _ in target_check(good)] == [True, True, True, True]
    assert rewrite_losses(good) == pytest.approx({"punctuation": 0, "polite": 6, "synonym": 8, "order": 2})
    weak = arm({"tabletop-train": 40, "tabletop-visual": 2, "tabletop-motion": 35, "tabletop-physical": 35,
                "tabletop-semantic": 10, "tabletop-train:punctuation": 40, "tabletop-train:polite": 20,
                "tabletop-train:synonym": 40, "tabletop-train:order": 40})
    checks = {target.split()[0]: (met, measured) for target, met, measured in target_check(weak)}
    assert checks["training"] == (True, "80%")
    assert checks["visual,"] == (False, "visual -76, motion -10, physical -10")
    assert checks["semantic"] == (False, "20%")
    assert checks["rewrites"] == (False, "worst: polite -40")


def test_the_wall_clock_counts_every_stage_once():
    from robovla.experiments.generalization_report import time_spent

    stages = {"demos/narrow": 60.0, "pointer-scenes/narrow": 30.0, "vl-corpus": 10.0, "train/narrow": 600.0,
              "pointer/narrow": 300.0, "eval/narrow": 200.0, "validate/narrow": 50.0, "generalist": 1.0}
    assert time_spent(stages) == {"collecting": 100.0, "training": 600.0, "fitting pointers": 300.0,
                                  "evaluating": 250.0, "other": 1.0}
    from robovla.experiments.generalization_report import budget_text

    assert budget_text(sum(stages.values())) == "21 min in all, within the 2-hour budget"
    assert budget_text(180 * 60) == "180 min in all, over the 2-hour budget by 60 min"


def test_the_generalist_is_chosen_on_validation_successes_first_listed_on_a_tie():
    def result(*successes: int) -> dict:
        return {"conditions": {f"suite{k}": rate_summary(n, 20) for k, n in enumerate(successes)}}

    assert choose({"narrow": result(10, 2), "diverse": result(9, 4), "diverse-vl": result(8, 3)}) == "diverse"
    assert choose({"narrow": result(5, 5), "diverse": result(6, 4)}) == "narrow"


def test_the_colour_word_rate_counts_only_episodes_that_moved_something():
    row = followed(arm({}, handled=(12, 8, 30)))
    assert (row["successes"], row["n"], row["none"]) == (12, 20, 30)
    assert 1 / 4 <= chance_of_target(50) <= 1 / 2  # three or four graspable objects per semantic scene


def test_the_generalist_mixture_names_both_robots_and_the_corpus():
    from robovla.data.mixtures import get_mixture

    assert set(get_mixture("tabletop_generalist")) == {"tabletop_default", "tabletop_sideview", "vision_language"}


def test_the_report_names_the_machines_the_wall_clock_was_measured_on():
    from robovla.experiments.common import machine_speed
    from robovla.experiments.generalization_report import machines_text

    machine = machine_speed(seconds=0.05)
    assert machine["gemm_gflops_float32"] > 0 and machine["cpus"] >= 1
    assert machines_text([]) == ""  # results from before machines were recorded
    two = machines_text([{**machine, "gemm_gflops_float32": 206.0}, {**machine, "gemm_gflops_float32": 38.4}])
    assert "GEMM rate of 38 to 206 GFLOP/s (2 start(s))" in two


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 25 min on a 2-core machine multiplying at 47 GFLOP/s: mostly each arm's training start
def test_quick_generalization_experiment_runs_end_to_end_and_resumes(tmp_path):
    from robovla.cli import main

    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["experiment", "generalization", "--quick", "--work", str(work), "--out", str(out)]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert list(document["arms"]) == ["shipped", "narrow", "diverse", "diverse-vl"]
    for name, result in document["arms"].items():
        assert set(result["success"]) == set(CONDITIONS), name
    history = json.loads((work / "pointer" / "diverse-vl" / "config.json").read_text())["robovla_data_seen"]
    assert history[-1]["stage"] == "cotrain" and "vision_language" in history[-1]["samples"]
    records = [json.loads(line) for line in (work / "eval" / "diverse" / "episodes.jsonl").read_text().splitlines()]
    assert {r["handled"] for r in records} <= {"target", "other", "none"}
    assert any(r["instructions"] == "synonym" for r in records)
    report = (out / "report.md").read_text()
    for heading in ("Zero-shot success per axis", "What each step buys", "reads as the same",
                    "Colour words learnt only from vision-language data", "shipped generalist's targets"):
        assert heading in report
    assert (out / "success.png").stat().st_size > 0
    assert document["generalist"]["arm"] in ("narrow", "diverse", "diverse-vl")
    assert (work / "generalist" / "config.json").exists() and (work / "generalist" / "pointer_fit.json").exists()
    assert set(document["validation"]["success"]) == {"shipped", "narrow", "diverse", "diverse-vl"}
    assert isinstance(document["generalist"]["beats_starting_point"], bool)  # what decides shipping it
    for arm, scenes in (("narrow", "narrow"), ("diverse-vl", "diverse")):  # each pointer sees its arm's scenes
        fit = json.loads((work / "pointer" / arm / "pointer_fit.json").read_text())["config"]
        assert fit["datasets"] == [str(work / "pointer-scenes" / scenes), str(work / "demos" / scenes)]
    # only the vision-language arm's pointer learns words from the corpus's referring questions
    fits = {arm: json.loads((work / "pointer" / arm / "pointer_fit.json").read_text())
            for arm in ("diverse", "diverse-vl")}
    assert fits["diverse"]["config"]["vl_corpus"] is None and fits["diverse"]["report"]["vl_questions"] == 0
    # every arm trains on colour-jittered, uncropped frames, and its pointer reads jittered frames too
    for arm in ("narrow", "diverse", "diverse-vl"):
        trained = json.loads((work / "train" / arm / "experiment_train_config.json").read_text())
        assert trained["augment"] is True and trained["augment_crop"] is False, arm
        fit = json.loads((work / "pointer" / arm / "pointer_fit.json").read_text())["config"]
        assert fit["augment"] is True
        assert fit["init_pointer"] == str(starting_point())  # each pointer starts from the starting point's
    assert fits["diverse-vl"]["config"]["vl_corpus"] == str(work / "vl-corpus")
    assert document["arms"]["diverse-vl"]["pointer"]["vl_questions"] == fits["diverse-vl"]["report"]["vl_questions"] > 0
    assert f"and on {fits['diverse-vl']['report']['vl_questions']} corpus questions about one thing" in report
    assert document["data"]["scenes-diverse"]["instructions_per_scene"] == 3
    assert len(document["machines"]) == 1 and "GFLOP/s (1 start(s))" in report
    assert f"refits its grounding pointer for {document['pointer_steps']} steps" in report and "2-hour budget" in report
    assert "Tried against the missed targets" in report  # misses come with what was tried
    stages = json.loads((work / "experiment.json").read_text())["stages"]
    assert main(argv) == 0  # a rerun resumes: every stage done, nothing redone
    again = json.loads((work / "experiment.json").read_text())
    assert again["stages"] == stages and len(again["machines"]) == 2  # each start notes its machine


def test_a_work_folder_made_without_colour_jitter_is_not_resumed_with_it(tmp_path, capsys):
    """Stages trained before the arms took the jitter must not be mixed with stages trained after it."""
    from dataclasses import asdict

    from robovla.cli import main
    from robovla.experiments.generalization import NAME, SCALES

    work = tmp_path / "work"
    work.mkdir()
    old = {"settings": {"experiment": NAME, "scale": "quick", **asdict(SCALES["quick"])},
           "stages": {"train/narrow": {"seconds": 1.0}}}
    (work / "experiment.json").write_text(json.dumps(old))
    argv = ["experiment", "generalization", "--quick", "--work", str(work), "--out", str(tmp_path / "out")]
    assert main(argv) == 2 and "colour_jitter" in capsys.readouterr().err
    assert json.loads((work / "experiment.json").read_text()) == old  # nothing of the old run lost


def test_the_generalist_ships_only_when_it_beats_the_start_and_replaces_an_earlier_copy_whole(tmp_path, capsys):
    from robovla.cli import main
    from robovla.experiments.generalization import ship_generalist

    chosen = tmp_path / "work" / "generalist"
    chosen.mkdir(parents=True)
    (chosen / "model.safetensors").write_bytes(b"new weights")
    (chosen / "training_state").mkdir()
    target = tmp_path / "assets" / "tabletop-generalist"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"old weights")
    (target / "stale.json").write_text("{}")
    losing = {"generalist": {"arm": "narrow", "checkpoint": str(chosen), "beats_starting_point": False}}
    assert "nothing shipped" in ship_generalist(losing, target)
    assert (target / "model.safetensors").read_bytes() == b"old weights"
    winning = {"generalist": {**losing["generalist"], "beats_starting_point": True}}
    assert "shipped the narrow arm" in ship_generalist(winning, target)
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]  # no training state, nothing stale
    assert target.stat().st_mode & 0o777 == 0o755
    assert (target / "model.safetensors").read_bytes() == b"new weights"
    gone = {"generalist": {**winning["generalist"], "checkpoint": str(tmp_path / "missing")}}
    with pytest.raises(RobovlaError, match="rerun the experiment"):
        ship_generalist(gone, target)
    assert (target / "model.safetensors").read_bytes() == b"new weights"
    assert main(["experiment", "recipes", "--quick", "--ship"]) == 2
    assert "--ship is for the generalization experiment" in capsys.readouterr().err
