"""The fine-tuning and limited-hardware experiments: their --quick size end to end, the verdict rule, bad input,
and the strategies' trainable-parameter counts on the full openvla-7b configuration."""

from __future__ import annotations

import json

import pytest

from robovla.cli import main
from robovla.eval.stats import rate_summary
from robovla.experiments.verdicts import Claim, judge


def test_openvla_7b_trainable_counts_per_strategy():
    """Built on the meta device. last-layer equals the paper's 465.1M; the others differ where the report says
    (vision weights the paper's full/sandwich counts leave out; LoRA on every linear layer)."""
    from robovla.experiments.limited_hardware import openvla_7b_counts

    counts = openvla_7b_counts()
    trainable = {name: round(row["trainable"] / 1e6, 1) for name, row in counts.items()}
    assert trainable == {"full": 7498.2, "last-layer": 465.1, "frozen-vision": 6810.3, "sandwich": 1224.3,
                         "lora-r32": 109.0, "lora-r64": 218.0}
    assert {row["total"] for row in counts.values()} == {7_541_237_184}
    assert counts["full"]["difference_millions"] == counts["sandwich"]["difference_millions"] == 310.1
    assert set(counts["frozen-vision"]["parts"]) == {"projector", "llm embeddings", "llm layers", "llm head"}
    assert counts["lora-r64"]["parts"]["llm layers"] == 2 * counts["lora-r32"]["parts"]["llm layers"]


def test_verdicts_need_intervals_apart():
    higher = Claim("a beats b", "paper", "a", "b")
    assert judge(higher, rate_summary(40, 50), rate_summary(10, 50))["verdict"] == "agrees"
    assert judge(higher, rate_summary(10, 50), rate_summary(40, 50))["verdict"] == "disagrees"
    assert judge(higher, rate_summary(22, 50), rate_summary(18, 50))["verdict"] == "inconclusive"
    assert judge(higher, rate_summary(2, 50), rate_summary(0, 50))["verdict"] == "inconclusive"  # nothing learnt
    matches = Claim("a matches b", "paper", "a", "b", kind="matches")
    assert judge(matches, rate_summary(22, 50), rate_summary(18, 50))["verdict"] == "agrees"
    assert judge(matches, rate_summary(5, 50), rate_summary(40, 50))["verdict"] == "disagrees"


def test_bad_experiment_requests_say_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "transfer"])
    assert "invalid choice: 'transfer' (choose from 'recipes', 'fine-tuning', 'limited-hardware', 'metaworld', 'generalization')" in \
        capsys.readouterr().err
    assert main(["experiment", "fine-tuning", "--quick", "--stop-at", "5", "--work", str(tmp_path)]) == 2
    assert "--stop-at is for the recipes experiment" in capsys.readouterr().err
    work = tmp_path / "work"
    work.mkdir()
    (work / "experiment.json").write_text(json.dumps({"settings": {"experiment": "fine-tuning", "scale": "full"},
                                                      "stages": {}}))
    assert main(["experiment", "fine-tuning", "--quick", "--work", str(work), "--out", str(tmp_path / "o")]) == 2
    assert "holds a run with other settings" in capsys.readouterr().err


@pytest.mark.slow  # a few minutes on 2 cores
def test_the_fine_tuning_experiment_runs_end_to_end_and_resumes(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    argv = ["experiment", "fine-tuning", "--quick", "--work", str(work), "--out", str(out)]
    assert main(argv) == 0
    document = json.loads((out / "results.json").read_text())
    assert set(document["groups"]) == {"lab2-narrow", "lab2-multi"}
    for group in document["groups"].values():
        assert set(group["arms"]) == {"openvla-full", "openvla-lora", "scratch", "diffusion"}
        for cells in group["arms"].values():
            assert set(cells) == {str(size) for size in document["sizes"]}
            assert all(cell["success"]["n"] == document["episodes_per_cell"] for cell in cells.values())
    lora = document["groups"]["lab2-multi"]["arms"]["openvla-lora"]["1"]["training"]
    full = document["groups"]["lab2-multi"]["arms"]["openvla-full"]["1"]["training"]
    assert lora["trainable_parameters"] < full["trainable_parameters"]
    report = (out / "report.md").read_text()
    assert report.count("- **") == 4 and (out / "success.png").exists()
    stages = json.loads((work / "experiment.json").read_text())["stages"]
    assert main(argv) == 0  # a rerun finds every stage done
    assert json.loads((work / "experiment.json").read_text())["stages"] == stages


@pytest.mark.slow  # a few minutes on 2 cores
def test_the_limited_hardware_experiment_runs_end_to_end(tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    assert main(["experiment", "limited-hardware", "--quick", "--work", str(work), "--out", str(out)]) == 0
    document = json.loads((out / "results.json").read_text())
    strategies = document["strategies"]
    assert list(strategies) == ["full", "last-layer", "frozen-vision", "sandwich", "lora-r32", "lora-r64"]
    trainable = {name: arm["training"]["trainable_parameters"] for name, arm in strategies.items()}
    assert trainable["lora-r64"] > trainable["lora-r32"] and trainable["last-layer"] < trainable["full"]
    assert all(arm["training"]["peak_memory_mb"] > 0 for arm in strategies.values())
    precisions = document["precisions"]
    assert list(precisions) == ["fp32", "bf16", "int8", "int4"]
    assert precisions["int4"]["language_model_bytes"] < precisions["int8"]["language_model_bytes"] \
        < precisions["bf16"]["language_model_bytes"] < precisions["fp32"]["language_model_bytes"]
    assert all(row["actions_per_second"] > 0 for row in precisions.values())
    assert "openvla-7b" in (out / "report.md").read_text() and (out / "strategies.png").exists()
