"""`make bench` harness: one tiny configuration end to end on the CPU, and the table redrawn from its JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_rows_and_redraws_the_same_table(tmp_path, monkeypatch):
    bench = load_bench()
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["run.py", "--presets", "tiny", "--dtypes", "float32", "--batches", "1", "--modes", "eager",
            "--repeats", "1", "--device", "cpu", "--json", str(out_json), "--markdown", str(out_md)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    saved = json.loads(out_json.read_text())
    (row,) = saved["results"]
    assert saved["machine"]["device"] and saved["machine"]["read_bandwidth_gbs"] > 0
    assert row["same_tokens_as_reference"] == 1.0  # our decoding = the reference's greedy tokens
    assert row["end_to_end_ms"] > 0 and row["floor_ms"] > 0 and "peak_memory_mb" not in row  # GPU runs only
    assert row["speedup_vs_reference"] == pytest.approx(row["reference_end_to_end_ms"] / row["end_to_end_ms"], abs=0.02)
    table = out_md.read_text()
    assert str(out_json) in table and "| tiny | float32 | none | 1 | eager |" in table and table.rstrip().endswith("- |")
    redrawn = tmp_path / "redrawn.md"
    monkeypatch.setattr(sys, "argv", ["run.py", "--redraw", "--json", str(out_json), "--markdown", str(redrawn)])
    bench.main()
    assert redrawn.read_text() == table


def test_paths_compared_are_timed_in_turns():
    """Our path and the reference's alternate (after one warm-up round each), so machine drift hits both alike."""
    bench = load_bench()
    calls = []
    medians = bench.timed_alternately([lambda: calls.append("ours"), lambda: calls.append("reference")], repeats=3)
    assert calls == ["ours", "reference"] * 4 and len(medians) == 2 and all(m >= 0 for m in medians)


def test_grounding_generalization_rebuilds_collected_scenes_and_reports_per_family(tmp_path, monkeypatch):
    from robovla.data.collection import CollectConfig, collect
    from robovla.data.lerobot import LeRobotDataset

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import grounding_generalization as bench

    # the policy loads first: importing torch's compiler stack after an EGL context exists crashes
    out = tmp_path / "grounding.json"
    monkeypatch.setattr(sys, "argv", ["grounding_generalization.py", "--scenes", "4", "--seeds", "21,77",
                                      "--training-seeds", "21", "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    assert [row["seed"] for row in result["rows"]] == [21, 77]
    for row in result["rows"]:
        assert row["scenes"] == 4 and sum(f["scenes"] for f in row["per_family"].values()) == 4
        assert 0 <= row["target_wrong"] <= row["either_wrong"] <= 1
        assert row["renamed_scenes"] <= 4 and (row["follows_renamed_target"] is None or 0 <= row["follows_renamed_target"] <= 1)
    table = out.with_suffix(".md").read_text()
    assert "| `collect --seed 21` | yes |" in table and "| `collect --seed 77` | no |" in table
    assert result["pointer"] and "its grounding pointer" in table  # the shipped policy has one
    monkeypatch.setattr(sys, "argv", sys.argv + ["--no-pointer"])
    bench.main()
    assert not json.loads(out.read_text())["pointer"] and "its own grounding tokens" in out.with_suffix(".md").read_text()

    # the frame the benchmark rebuilds for a seed is the one `collect --seed` recorded (attempt 0 succeeds here)
    data = LeRobotDataset(collect(CollectConfig(episodes=1, image_size=32, seed=21), tmp_path / "ds", workers=1,
                                  progress=False).out)
    (frame,) = bench.first_frames(21, 1, 32)
    assert np.array_equal(frame["image"], data[0]["image"]) and frame["instruction"] == data[0]["instruction"]
    assert np.allclose(frame["truth"], data.grounding[0])


def test_recipes_speed_times_every_recipe_against_the_reference(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import recipes_speed as bench

    out = tmp_path / "recipes.json"
    monkeypatch.setattr(sys, "argv", ["recipes_speed.py", "--presets", "tiny", "--batches", "1", "2", "--repeats", "1",
                                      "--json", str(out)])
    bench.main()
    rows = json.loads(out.read_text())["rows"]
    assert [(r["recipe"], r["batch"]) for r in rows] == [(name, batch) for batch in (1, 2) for name in bench.RECIPES]
    for row in rows:
        expected = 1.0 if row["recipe"] == "reference" else None
        assert row["latency_ms"] > 0 and (expected is None or row["vs_reference"] == expected)


def test_strategies_memory_trains_each_strategy_one_step_and_counts_its_parameters(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import strategies_memory as bench

    out = tmp_path / "strategies.json"
    monkeypatch.setattr(sys, "argv", ["strategies_memory.py", "--preset", "tiny", "--arms", "last-layer", "lora-r32",
                                      "lora-r64", "--steps", "1", "--dtype", "bfloat16", "--json", str(out)])
    bench.main()
    saved = json.loads(out.read_text())
    rows = {row["arm"]: row for row in saved["rows"]}
    assert list(rows) == ["last-layer", "lora-r32", "lora-r64"] and saved["weights"] == "bfloat16"
    assert rows["lora-r64"]["trainable"] == 2 * rows["lora-r32"]["trainable"]  # LoRA's count is linear in the rank
    for row in rows.values():
        assert 0 < row["trainable"] < row["total"] and row["step_s"] > 0 and np.isfinite(row["loss"])
        assert "peak_memory_gb" not in row  # measured on a GPU only


def test_gemm_rate_stops_growing_once_a_product_is_long_enough_to_time(monkeypatch):
    """A CPU without bfloat16 units multiplies at about 1 GFLOP/s: the probe must not climb to the largest size."""
    bench = load_bench()
    sizes = []
    real_randn = bench.torch.randn
    monkeypatch.setattr(bench.torch, "randn", lambda *shape, **kw: sizes.append(shape[0]) or real_randn(*shape, **kw))
    rate = bench.gemm_rate(bench.torch.bfloat16, bench.torch.device("cpu"), largest=8192, repeats=1, enough_s=0.0)
    assert rate > 0 and max(sizes) == 256
