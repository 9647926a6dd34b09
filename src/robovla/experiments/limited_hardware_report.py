"""report.md and strategies.png of `robovla experiment limited-hardware` (from its results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from robovla.eval.report import COLORS, save_figure
from robovla.eval.stats import rate_text
from robovla.experiments.verdicts import Claim, judge, verdict_line
from robovla.files import write_atomic


def verdicts(document: dict[str, Any]) -> list[dict[str, Any]]:
    strategies, precisions = document["strategies"], document["precisions"]
    out = [judge(Claim(f"LoRA r=32 matches full fine-tuning ({document['group']})", "68.2% vs 69.7%",
                       "lora-r32", "full", kind="matches"),
                 strategies["lora-r32"]["success"], strategies["full"]["success"])]
    for name in ("int8", "int4"):
        out.append(judge(Claim(f"{name} weights keep the success of the {document['best']} policy",
                               "int4 71.9% vs bf16 71.3% (int8 58.1%, slowed by its kernels)", name, "bf16",
                               kind="matches"),
                         precisions[name]["success"], precisions["bf16"]["success"]))
    return out


def plot_strategies(document: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    strategies = document["strategies"]
    figure = Figure(figsize=(6.5, 3.8), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for k, (name, arm) in enumerate(strategies.items()):
        row = arm["success"]
        rate = row["rate"] or 0.0
        axis.errorbar([arm["training"]["trainable_parameters"]], [rate],
                      yerr=[[rate - row["ci95"][0]], [row["ci95"][1] - rate]], color=COLORS[k], marker="o",
                      capsize=3, label=name)
    axis.set_xscale("log")
    axis.set_ylim(-0.02, 1.02)
    axis.set_xlabel("trainable parameters (miniature)")
    axis.set_ylabel("success rate (95% Wilson CI)")
    axis.set_title(f"fine-tuning strategies on {document['group']}, {document['demonstrations']['used']} demos",
                   fontsize=10)
    axis.grid(alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(fontsize=8, frameon=False)
    return save_figure(figure, path)


def _millions(count: int) -> str:
    return f"{count / 1e6:,.1f}M"


def explain_counts(counts: dict[str, Any]) -> list[str]:
    """Where each difference from the paper's counts lies, read off the per-part breakdown."""
    lines = []
    full, sandwich = counts["full"], counts["sandwich"]
    if full["difference_millions"] == sandwich["difference_millions"]:
        shared = full["parts"].get("vision", 0) + full["parts"].get("projector", 0)
        lines.append(f"- full and sandwich both exceed the paper by the same {full['difference_millions']:,.1f}M. "
                     f"Beyond the last layer they share only the vision towers and the projector "
                     f"({_millions(shared)} here), so the paper's count holds {full['difference_millions']:,.1f}M less there. "
                     f"Ours trains every "
                     f"vision weight the forward pass reaches (the towers' unused last blocks stay frozen).")
    lora32, lora64 = counts["lora-r32"], counts["lora-r64"]
    layers = lora32["parts"].get("llm layers", 0)
    beyond = {part: n for part, n in lora32["parts"].items() if part != "llm layers"}
    lines.append(f"- LoRA's difference grows with the rank ({lora32['difference_millions']:+,.1f}M at r=32, "
                 f"{lora64['difference_millions']:+,.1f}M at r=64), so it lies in which layers get adapters. Ours "
                 f"puts them on every linear layer (peft `all-linear`): {_millions(layers)} in the language model's "
                 f"layers and " + ", ".join(f"{part} {_millions(n)}" for part, n in beyond.items())
                 + f" elsewhere. The paper's r=32 count leaves {lora32['paper_millions'] - layers / 1e6:,.1f}M "
                 f"beyond those decoder layers, against our {sum(beyond.values()) / 1e6:,.1f}M.")
    frozen = counts["frozen-vision"]
    lines.append(f"- frozen vision: {frozen['difference_millions']:+,.1f}M against the paper. Ours trains the "
                 f"projector and the whole language model; the paper does not say which "
                 f"{abs(frozen['difference_millions']):,.1f}M of these its count leaves out.")
    if counts["last-layer"]["difference_millions"] == 0:
        lines.append("- last layer matches the paper exactly (embeddings, the last decoder layer and the LM head).")
    return lines


def write_limited_hardware_report(out: Path, document: dict[str, Any]) -> Path:
    plot_strategies(document, out / "strategies.png")
    strategies, precisions, counts = document["strategies"], document["precisions"], document["openvla_7b"]
    demos = document["demonstrations"]
    lines = [
        "# Fine-tuning and acting on limited hardware",
        "",
        f"Command: `{document.get('command') or 'robovla experiment limited-hardware'}` (scale "
        f"`{document['scale']}`). From the shipped generalist, each strategy fine-tunes on the first "
        f"{demos['used']} `{document['group']}` demonstrations of the `{document['embodiment']}` setup for "
        f"{document['steps']} steps of batch {document['batch_size']} in a fresh process, then runs "
        f"{document['episodes']} closed-loop episodes (official seeds, `{document['selection']}` selection).",
        "",
        "| strategy | success | paper | trainable | peak training RSS | optimizer + gradients | wall-clock |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in strategies.items():
        training = arm["training"]
        state = training["trainable_parameters"] * 12  # fp32 gradient + AdamW's two moments
        lines.append(f"| {name} | {rate_text(arm['success'])} | {arm['paper_success']:.1f}% | "
                     f"{training['trainable_parameters']:,} | {training['peak_memory_mb']:,.0f} MB | "
                     f"{state / 2**20:,.1f} MB | {training['train_seconds']:.0f} s |")
    lines += ["", "Peak training RSS is the whole training process's (Python, torch, data and model): at this "
              "size it is mostly the process itself, so the strategies' differences show in the optimizer and "
              "gradient memory column, which scales with the trainable parameters as it does at 7B. "
              "![strategies](strategies.png)", "",
              f"## Weights for acting ({document['best']}, the best strategy)", "",
              "| weights | success | weight memory (all / language model) | latency, batch 1 | actions per second |",
              "|---|---|---|---|---|"]
    for name, row in precisions.items():
        lines.append(f"| {name} | {rate_text(row['success'])} | {row['weight_bytes'] / 2**20:,.1f} / "
                     f"{row['language_model_bytes'] / 2**20:,.1f} MiB | {row['latency_ms']:.1f} ms | "
                     f"{row['actions_per_second']:,.1f} |")
    first = next(iter(precisions.values()))
    lines += ["", f"int8/int4 quantize the language model's linear layers (robovla's CPU kernels). Latency: median "
              f"of {first['calls']} `Policy.predict` calls, eager, {first['threads']} threads.", "",
              "## Trainable parameters on openvla-7b (meta device)", "",
              "| strategy | robovla | paper | difference | where robovla's lie |", "|---|---|---|---|---|"]
    for name, row in counts.items():
        parts = ", ".join(f"{part} {_millions(n)}" for part, n in row["parts"].items())
        lines.append(f"| {name} | {_millions(row['trainable'])} | {row['paper_millions']:,.1f}M | "
                     f"{row['difference_millions']:+,.1f}M | {parts} |")
    lines += ["", f"Of {_millions(next(iter(counts.values()))['total'])} parameters in all. Where the counts differ:",
              "", *explain_counts(counts), "", "## Verdicts", "",
              "Agrees or disagrees only where the 95% intervals are apart; a claim of a match agrees when they "
              "overlap.", "", *map(verdict_line, verdicts(document)), "", "## Wall-clock (2 CPU cores)", ""]
    stages = document["wall_seconds"]
    train = sum(v for k, v in stages.items() if k.startswith("train/"))
    evaluation = sum(v for k, v in stages.items() if k.startswith(("eval/", "timing/")))
    lines.append(f"Collecting {stages.get('demos', 0):.0f} s, training {train / 60:.0f} min, evaluating and timing "
                 f"{evaluation / 60:.0f} min (per stage in results.json).")
    return write_atomic(out / "report.md", "\n".join(lines) + "\n")
