"""report.md and success.png of `robovla experiment fine-tuning` (from its results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robovla.eval.report import COLORS, save_figure
from robovla.eval.stats import rate_text
from robovla.experiments.common import pooled
from robovla.experiments.verdicts import Claim, judge, verdict_line
from robovla.files import write_atomic

CLAIMS = (
    ("lab2-multi", Claim("fine-tuned OpenVLA beats Diffusion Policy on multi-object, language-conditioned tasks",
                         "OpenVLA ahead on the multi-instruction tasks", "openvla-full", "diffusion")),
    ("lab2-narrow", Claim("Diffusion Policy is at least as good on a narrow single-instruction task",
                          "Diffusion Policy wins the narrow tasks", "diffusion", "openvla-full", kind="matches")),
    (None, Claim("robot-data pretraining is a large boost over the same model from scratch",
                 "67.2% vs 43.4% on average", "openvla-full", "scratch")),
    (None, Claim("LoRA matches full fine-tuning", "68.2% vs 69.7%", "openvla-lora", "openvla-full",
                 kind="matches")),
)


def arm_success(document: dict[str, Any], arm: str, group: str | None) -> dict[str, Any]:
    """An arm's successes pooled over every demonstration count (and over both groups when `group` is None)."""
    groups = [group] if group else list(document["groups"])
    return pooled([cell["success"] for g in groups for cell in document["groups"][g]["arms"][arm].values()])


def verdicts(document: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for group, claim in CLAIMS:
        where = f" ({group}, pooled over {len(document['sizes'])} demonstration counts)" if group else \
            " (both groups and every demonstration count pooled)"
        claim = Claim(claim.text + where, claim.paper, claim.a, claim.b, claim.kind)
        out.append(judge(claim, arm_success(document, claim.a, group), arm_success(document, claim.b, group)))
    return out


def plot_success(document: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups, sizes = list(document["groups"]), document["sizes"]
    figure = Figure(figsize=(5 * len(groups), 3.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    for axis, group in zip(axes, groups):
        arms = document["groups"][group]["arms"]
        for k, (name, cells) in enumerate(arms.items()):
            rows = [cells[str(size)]["success"] for size in sizes]
            rates = np.array([r["rate"] or 0.0 for r in rows])
            lo, hi = np.array([r["ci95"][0] for r in rows]), np.array([r["ci95"][1] for r in rows])
            shift = (k - (len(arms) - 1) / 2) * 0.03  # side by side on the log axis
            axis.errorbar(np.array(sizes) * (1 + shift), rates, yerr=[rates - lo, hi - rates], color=COLORS[k],
                          marker="o", capsize=3, label=name)
        zero = document["groups"][group]["zero_shot"]
        axis.axhline(zero["rate"] or 0.0, color="gray", linestyle=":", label="generalist, no fine-tuning")
        axis.set_xscale("log")
        axis.set_xticks(sizes, [str(s) for s in sizes])
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("demonstrations")
        axis.set_title(group, fontsize=10)
        axis.grid(alpha=0.3)
        axis.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("success rate (95% Wilson CI)")
    axes[-1].legend(fontsize=8, frameon=False)
    return save_figure(figure, path)


def write_fine_tuning_report(out: Path, document: dict[str, Any]) -> Path:
    plot_success(document, out / "success.png")
    sizes, arms = document["sizes"], document["arms"]
    lines = [
        "# Fine-tuning to a new robot setup: OpenVLA against Diffusion Policy and training from scratch",
        "",
        f"Command: `{document.get('command') or 'robovla experiment fine-tuning'}` (scale `{document['scale']}`). "
        f"The `{document['embodiment']}` embodiment is in no pretraining data. Each cell trains on one task group's "
        f"first N scripted-expert demonstrations with batch {document['batch_size']} (warm-up + cosine; steps per "
        f"arm below), then runs {document['episodes_per_cell']} closed-loop episodes on the group's official "
        f"seeds. VLA arms decode with `{document['selection']}` selection.",
        "",
        "| arm | what it is | learning rate | steps |",
        "|---|---|---|---|",
        *[f"| {name} | {arm['label']} | {arm['lr']:g} | {arm['steps']} |" for name, arm in arms.items()],
    ]
    for group, data in document["groups"].items():
        demos = data["demonstrations"]
        lines += ["", f"## {group}", "",
                  f"{demos['episodes']} demonstrations collected ({demos['frames']} frames). The generalist "
                  f"without fine-tuning: {rate_text(data['zero_shot'])}.", "",
                  "| arm | " + " | ".join(f"{size} demos" for size in sizes) + " | trainable parameters |",
                  "|---|" + "---|" * (len(sizes) + 1)]
        for name, cells in data["arms"].items():
            first = cells[str(sizes[0])]["training"]
            lines.append(f"| {name} | " + " | ".join(rate_text(cells[str(s)]["success"]) for s in sizes)
                         + f" | {first['trainable_parameters']:,} |")
    lines += ["", "Success with 95% Wilson intervals. ![success](success.png)", "",
              "## Verdicts", "",
              "Agrees or disagrees only where the 95% intervals are apart; where they overlap the miniature "
              "cannot tell (inconclusive), and a claim of a match agrees when they overlap.", "",
              *map(verdict_line, verdicts(document)), "",
              "## Wall-clock (2 CPU cores)", ""]
    stages = document["wall_seconds"]
    train = sum(v for k, v in stages.items() if k.startswith("train/"))
    evaluation = sum(v for k, v in stages.items() if k.startswith("eval/"))
    collect = sum(v for k, v in stages.items() if k.startswith("demos/"))
    lines.append(f"Collecting {collect:.0f} s, training {train / 60:.0f} min, evaluating {evaluation / 60:.0f} min "
                 f"({(collect + train + evaluation) / 60:.0f} min in all; per stage in results.json).")
    return write_atomic(out / "report.md", "\n".join(lines) + "\n")
