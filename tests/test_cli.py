"""The CLI: info and predict, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from robovla.cli import main
from conftest import CONFORMANCE, TINY_CHECKPOINT

IMAGE = str(CONFORMANCE / "images" / "case_00_scene.png")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_preset_json(capsys):
    code, out, _ = run_cli(capsys, "info", "--preset", "openvla-7b", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["parameters"]["total"] == 7_541_237_184
    assert info["fused_feature_dim"] == 2176 and info["num_patches"] == 256
    assert [v["feature_block"] for v in info["vision"]] == [22, 25]


def test_info_checkpoint(capsys):
    code, out, _ = run_cli(capsys, "info", str(TINY_CHECKPOINT))
    assert code == 0
    assert "2,531,599" in out and "bridge_orig, toy_kitchen" in out


def test_predict_json_matches_golden_case(capsys, conformance_cases):
    case = conformance_cases["cases"][0]
    code, out, _ = run_cli(capsys, "predict", "--checkpoint", str(TINY_CHECKPOINT), "--image", IMAGE,
                           "--instruction", case["instruction"], "--unnorm-key", case["unnorm_key"], "--json")
    assert code == 0
    result = json.loads(out)
    assert result["action_token_ids"] == case["generated_action_token_ids"]
    assert result["action"] == pytest.approx(case["unnormalized_action"], abs=1e-12)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "/nonexistent/ckpt"], "checkpoint folder not found"),
        (["predict", "--checkpoint", str(CONFORMANCE), "--image", IMAGE, "--instruction", "go"],
         "config.json is missing"),
        (["predict", "--checkpoint", str(TINY_CHECKPOINT), "--image", IMAGE, "--instruction", "go",
          "--unnorm-key", "libero"], "not in norm_stats; available: bridge_orig, toy_kitchen"),
        (["predict", "--checkpoint", str(TINY_CHECKPOINT), "--image", IMAGE, "--instruction", "go"],
         "unnorm_key is required"),
        (["predict", "--checkpoint", str(TINY_CHECKPOINT), "--image", IMAGE, "--instruction", "  "],
         "instruction is empty"),
        (["predict", "--checkpoint", str(TINY_CHECKPOINT), "--image", str(CONFORMANCE / "cases.json"),
          "--instruction", "go"], "cannot decode image"),
        (["info", "--preset", "nope"], "unknown preset 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_entry_point():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "robovla.cli", "info", "/nonexistent"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "robovla info: error: checkpoint folder not found: /nonexistent"


def test_export_writes_a_half_size_model_without_training_state(capsys, tmp_path):
    import robovla

    wide, out = tmp_path / "fp32", tmp_path / "shipped"
    assert run_cli(capsys, "export", "--checkpoint", str(TINY_CHECKPOINT), "--out", str(wide), "--dtype", "float32")[0] == 0
    code, printed, _ = run_cli(capsys, "export", "--checkpoint", str(wide), "--out", str(out))
    assert code == 0 and "bfloat16" in printed
    assert (out / "model.safetensors").stat().st_size < 0.6 * (wide / "model.safetensors").stat().st_size
    assert not (out / "training_state").exists()
    model = robovla.load_pretrained(out)
    assert model.config.norm_stats == robovla.load_pretrained(TINY_CHECKPOINT).config.norm_stats
    assert model.recipe.selection == "greedy"
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(TINY_CHECKPOINT), "--out", str(out))
    assert code == 2 and "already exists" in err
    median = tmp_path / "median"
    assert run_cli(capsys, "export", "--checkpoint", str(wide), "--out", str(median), "--selection", "median")[0] == 0
    assert robovla.load_pretrained(median).recipe.selection == "median"


def test_the_overview_lists_every_command(capsys):
    from robovla.cli import COMMANDS

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and "95% intervals" in out
