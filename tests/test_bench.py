"""`make bench` harness: one tiny configuration end to end on the CPU, and the table redrawn from its JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

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
    table = out_md.read_text()
    assert str(out_json) in table and "| tiny | float32 | none | 1 | eager |" in table and table.rstrip().endswith("- |")
    redrawn = tmp_path / "redrawn.md"
    monkeypatch.setattr(sys, "argv", ["run.py", "--redraw", "--json", str(out_json), "--markdown", str(redrawn)])
    bench.main()
    assert redrawn.read_text() == table
