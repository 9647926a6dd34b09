"""The six fine-tuning strategies on one small job, side by side: writes JSON and a markdown table.

Each strategy runs in its own process (`robovla finetune`), so peak memory is that run's own.

    python benchmarks/finetune_strategies.py --checkpoint CKPT --dataset DATA --steps 150 \
        --json benchmarks/results/strategies.json --markdown docs/strategies.md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

STRATEGIES = ("full", "frozen-vision", "sandwich", "last-layer", "lora", "qlora")


def run_strategy(strategy: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "robovla.cli", "finetune", "--checkpoint", args.checkpoint,
           "--datasets", args.dataset, "--strategy", strategy, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr if "lora" in strategy else args.full_lr),
           "--save-every", "0", "--no-progress", "--out", str(out / strategy), "--log-every", "10"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        reason = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        return {"strategy": strategy, "error": reason}
    summary = json.loads((out / strategy / "summary.json").read_text())
    return {"strategy": strategy, **{k: summary[k] for k in (
        "trainable_parameters", "total_parameters", "peak_memory_mb", "samples_per_second",
        "final_action_accuracy", "final_loss", "final_l1", "wall_seconds")}}


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    lines = [
        "| strategy | trainable parameters | share | peak memory (MB) | samples/s | final action-token accuracy | final loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['strategy']} | - | - | - | - | - | not run here: {r['error']} |")
            continue
        share = r["trainable_parameters"] / r["total_parameters"]
        lines.append(f"| {r['strategy']} | {r['trainable_parameters']:,} | {share:.1%} | {r['peak_memory_mb']:.0f} | "
                     f"{r['samples_per_second']:.1f} | {r['final_action_accuracy']:.3f} | {r['final_loss']:.3f} |")
    header = (f"Fine-tuning `{args.checkpoint}` on `{args.dataset}`: {args.steps} steps, batch {args.batch_size}, "
              f"lr {args.full_lr} (LoRA: {args.lr}), bf16 autocast on CPU. Accuracy and loss are the last "
              f"logged training batch's. Made by `benchmarks/finetune_strategies.py`.\n\n")
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate")
    parser.add_argument("--full-lr", type=float, default=1e-4, help="learning rate of the non-LoRA strategies")
    parser.add_argument("--json", default="benchmarks/results/strategies.json")
    parser.add_argument("--markdown", default=None, help="also write the table to this markdown file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for strategy in STRATEGIES:
            rows.append(run_strategy(strategy, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"config": vars(args), "results": rows}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, args))


if __name__ == "__main__":
    main()
