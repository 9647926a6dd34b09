"""report.md, success.png and speed.png of `robovla experiment recipes` (from its results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robovla.eval.report import COLORS, save_figure
from robovla.eval.stats import rate_text
from robovla.files import write_atomic


def speedups(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each arm's actions per second over the reference's, per batch size."""
    arms = document["arms"]
    reference = arms["reference"]["timing"]
    return {name: {batch: arm["timing"][batch]["actions_per_second"] / reference[batch]["actions_per_second"]
                   for batch in reference if batch.startswith("batch_")}
            for name, arm in arms.items()}


def verdict(document: dict[str, Any]) -> list[str]:
    """The issue's two bars, checked on the numbers: training-suite success at least the reference's, and at
    least 8x its actions per second; and what the intervals allow one to conclude."""
    arms, lines = document["arms"], []
    reference = arms["reference"]["evaluation"]["conditions"]["tabletop-train"]
    for name, arm in arms.items():
        if name == "reference":
            continue
        train = arm["evaluation"]["conditions"]["tabletop-train"]
        apart = train["ci95"][0] > reference["ci95"][1] or train["ci95"][1] < reference["ci95"][0]
        if max(train["successes"], reference["successes"]) <= 2:
            meaning = "neither succeeds yet, so this says nothing about the recipes"
        elif not apart:
            meaning = "the intervals overlap: no evidence of a difference"
        else:
            meaning = "the intervals are apart: a real difference"
        fast = speedups(document)[name]
        at_least = "at least" if train["successes"] >= reference["successes"] else "below"
        lines.append(f"- **{name}**: training suite {train['successes']}/{train['n']} against the reference's "
                     f"{reference['successes']}/{reference['n']} ({at_least} it; {meaning}); "
                     + ", ".join(f"{ratio:.2f}x its actions/s at {batch.replace('_', ' ')}"
                                 for batch, ratio in fast.items())
                     + f" ({'meets' if max(fast.values()) >= 8 else 'misses'} the 8x bar).")
    return lines


def plot_success(document: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    suites, arms = document["suites"], document["arms"]
    figure = Figure(figsize=(9, 4), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    width = 0.8 / len(arms)
    for k, (name, arm) in enumerate(arms.items()):
        rows = [arm["evaluation"]["conditions"][suite] for suite in suites]
        rates = np.array([r["rate"] or 0.0 for r in rows])
        lo, hi = np.array([r["ci95"][0] for r in rows]), np.array([r["ci95"][1] for r in rows])
        axis.bar(np.arange(len(suites)) + (k - (len(arms) - 1) / 2) * width, rates, width, color=COLORS[k],
                 label=name, yerr=[rates - lo, hi - rates], capsize=3, error_kw={"elinewidth": 1})
    axis.set_xticks(np.arange(len(suites)), [s.replace("tabletop-", "") for s in suites])
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("success rate (95% Wilson CI)")
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(fontsize=8, frameon=False)
    budget = document["budget"]
    axis.set_title(f"{document['episodes_per_suite']} episodes per suite; each model trained "
                   f"{budget['steps_trained']} of {budget['schedule_steps']} steps", fontsize=10)
    return save_figure(figure, path)


def plot_speed(document: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arms = document["arms"]
    batches = [b for b in arms["reference"]["timing"] if b.startswith("batch_")]
    figure = Figure(figsize=(6, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    width = 0.8 / len(arms)
    for k, (name, arm) in enumerate(arms.items()):
        values = [arm["timing"][b]["actions_per_second"] for b in batches]
        axis.bar(np.arange(len(batches)) + (k - (len(arms) - 1) / 2) * width, values, width, color=COLORS[k],
                 label=name)
    axis.set_xticks(np.arange(len(batches)), [b.replace("_", " ") for b in batches])
    axis.set_yscale("log")
    axis.set_ylabel("actions per second")
    axis.grid(axis="y", alpha=0.3, which="both")
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(fontsize=8, frameon=False)
    threads = arms["reference"]["timing"]["threads"]
    axis.set_title(f"Policy.predict, float32, eager, {threads} CPU threads", fontsize=10)
    return save_figure(figure, path)


def write_recipes_report(out: Path, document: dict[str, Any]) -> Path:
    plot_success(document, out / "success.png")
    plot_speed(document, out / "speed.png")
    arms, suites, budget = document["arms"], document["suites"], document["budget"]
    lines = [
        "# The parallel-decoding recipe against the reference recipe",
        "",
        f"Command: `{document.get('command') or 'robovla experiment recipes'}` (scale `{document['scale']}`). "
        f"Demonstrations: {document['demonstrations']['episodes']} scripted-expert episodes "
        f"({document['demonstrations']['frames']} frames, front + wrist camera, 128 px). Every model trained from "
        f"scratch (`tabletop-cpu` preset) with the same data, steps, batch ({budget['batch_size']}), learning "
        f"rate and schedule: {budget['steps_trained']} of a {budget['schedule_steps']}-step schedule"
        + ("." if budget["complete"] else " (**an interim result**: the schedule is not finished; rerun to continue)."),
        "",
        "| model | recipe | parameters | train time | " + " | ".join(s.replace("tabletop-", "") for s in suites)
        + " |",
        "|---|---|---|---|" + "---|" * len(suites),
    ]
    for name, arm in arms.items():
        cells = []
        for suite in suites:
            row = arm["evaluation"]["conditions"][suite]
            cells.append(rate_text(row))
        training = arm["training"]
        lines.append(f"| {name} | {arm['label']} | {training['parameters']:,} | "
                     f"{training['train_seconds'] / 60:.0f} min | " + " | ".join(cells) + " |")
    lines += ["", "Success per suite with 95% Wilson intervals, official seeds. ![success](success.png)", "",
              "| model | batch | latency per call | actions per second | vs reference |", "|---|---|---|---|---|"]
    ratios = speedups(document)
    for name, arm in arms.items():
        for batch in ratios[name]:
            row = arm["timing"][batch]
            lines.append(f"| {name} | {batch.split('_')[1]} | {row['latency_ms']:.1f} ms | "
                         f"{row['actions_per_second']:.0f} | {ratios[name][batch]:.2f}x |")
    timing = arms["reference"]["timing"]
    lines += ["", f"Timed in one process, the models called in turns: median of {timing['calls']} calls of "
              f"`Policy.predict` per model and batch, float32, eager, {timing['threads']} threads. "
              "![speed](speed.png)", "", "## Verdict", "", *verdict(document), "",
              "## Wall-clock (2 CPU cores)", "", "| model | training (all sessions) | evaluation |", "|---|---|---|"]
    stages, step = document["wall_seconds"], budget["steps_trained"]
    for name, arm in arms.items():
        lines.append(f"| {name} | {arm['training']['train_seconds']:.0f} s in {arm['training'].get('sessions', 1)} "
                     f"session(s) | {stages.get(f'eval/{name}@{step}', 0):.0f} s |")
    lines.append(f"\nTiming every model: {stages.get(f'timing@{step}', 0):.0f} s.")
    return write_atomic(out / "report.md", "\n".join(lines) + "\n")
