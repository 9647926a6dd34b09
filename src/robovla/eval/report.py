"""report.md and success.png of an evaluation folder: the results.json tables for people, and the plot."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from robovla.files import write_atomic

COLORS = ("#3b6fb6", "#e07b39", "#4a9d5b", "#c23b3b", "#8a62b3", "#7f7f7f", "#c9a227")


def plot_success(results: dict[str, Any], path: Path) -> Path:
    """success.png: rate per condition and per task family (per difficulty group on Meta-World, whose families are
    its 50 tasks), Wilson 95% whiskers, n in the labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conditions = results["conditions"]
    names = list(conditions)
    key = "difficulties" if all("difficulties" in row for row in conditions.values()) else "families"
    families = [f for f in dict.fromkeys(f for row in conditions.values() for f in row[key])]
    figure = Figure(figsize=(max(7.0, 1.3 * len(names) + 5), 4.2), dpi=110)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [max(len(names), 2), max(len(names), 2) + 1]})

    def bars(axis, x, rows, width, color, label=None):
        rates = np.array([r["rate"] or 0.0 for r in rows])
        lo = np.array([r["ci95"][0] for r in rows])
        hi = np.array([r["ci95"][1] for r in rows])
        axis.bar(x, rates, width, color=color, label=label, yerr=[rates - lo, hi - rates], capsize=3,
                 error_kw={"elinewidth": 1, "ecolor": "#222222"})

    x = np.arange(len(names))
    bars(left, x, [conditions[n] for n in names], 0.6, [COLORS[k % len(COLORS)] for k in range(len(names))])
    labels = [f"{n.replace('tabletop-', '').replace(':', chr(10))}\n{conditions[n]['successes']}/{conditions[n]['n']}"
              for n in names]
    left.set_xticks(x, labels, fontsize=8)
    left.set_title("success per condition (95% Wilson CI)", fontsize=10)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):  # a family a condition never draws gets no bar
        present = [(j, conditions[name][key][f]) for j, f in enumerate(families) if f in conditions[name][key]]
        bars(right, np.array([j for j, _ in present]) + (k - (len(names) - 1) / 2) * width, [r for _, r in present],
             width, COLORS[k % len(COLORS)], name.replace("tabletop-", ""))
    right.set_xticks(np.arange(len(families)), families, fontsize=8)
    right.set_title("success per difficulty group" if key == "difficulties" else "success per task family",
                    fontsize=10)
    right.legend(fontsize=7, ncols=min(len(names), 6), loc="upper center", bbox_to_anchor=(0.5, -0.1),
                 frameon=False)
    for axis in (left, right):
        axis.set_ylim(0, 1.02)
        axis.set_yticks(np.linspace(0, 1, 6))
        axis.grid(axis="y", alpha=0.3)
        axis.spines[["top", "right"]].set_visible(False)
    left.set_ylabel("success rate")
    policy = results.get("policy") or {}
    n = results["overall"]["n"]
    figure.suptitle(f"{policy.get('name') or policy.get('kind', 'policy')}: {n} episodes", fontsize=11)
    return save_figure(figure, path)


def plot_tasks(results: dict[str, Any], path: Path) -> Path:
    """tasks.png (Meta-World): success per task, one horizontal bar per condition, grouped by difficulty."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from robovla.sim.metaworld_tasks import by_difficulty, difficulty_of

    names = [name for name, row in results["conditions"].items() if "difficulties" in row]
    tasks = by_difficulty({t for name in names for t in results["conditions"][name]["families"]})
    figure = Figure(figsize=(7, 1.2 + 0.22 * len(tasks) * max(1, len(names)) ** 0.5), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    height = 0.8 / len(names)
    y = np.arange(len(tasks))[::-1]
    for k, name in enumerate(names):
        rows = [results["conditions"][name]["families"].get(t) for t in tasks]
        rates = np.array([r["rate"] if r else np.nan for r in rows], dtype=float)
        lo = np.array([r["ci95"][0] if r else np.nan for r in rows])
        hi = np.array([r["ci95"][1] if r else np.nan for r in rows])
        axis.barh(y - (k - (len(names) - 1) / 2) * height, rates, height, color=COLORS[k % len(COLORS)], label=name,
                  xerr=[rates - lo, hi - rates], error_kw={"elinewidth": 0.8, "ecolor": "#222222", "capsize": 2})
    axis.set_yticks(y, [f"{t} ({difficulty_of(t)})" for t in tasks], fontsize=7)
    axis.set_xlim(0, 1.02)
    axis.set_xlabel("success rate (95% Wilson CI)")
    axis.grid(axis="x", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
    if len(names) > 1:
        axis.legend(fontsize=7, frameon=False, loc="lower right")
    return save_figure(figure, path)


def save_figure(figure: Any, path: Path) -> Path:
    """A matplotlib figure, laid out tight, as a PNG written atomically."""
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return write_atomic(path, buffer.getvalue())


def write_report(folder: Path, results: dict[str, Any], videos: list[dict[str, Any]] | None = None) -> Path:
    """report.md (+ success.png, + videos/grid.png when there are videos) in `folder`."""
    from robovla.eval.results import format_tables
    from robovla.sim.tasks import FAILURE_REASONS

    folder = Path(folder)
    plot_success(results, folder / "success.png")
    per_task = any("difficulties" in row for row in results["conditions"].values())
    if per_task:
        plot_tasks(results, folder / "tasks.png")
    policy = results.get("policy") or {}
    timing = results.get("timing") or {}
    settings = results.get("settings") or {}
    described = ", ".join(f"{k} {v}" for k, v in policy.items()
                          if k not in ("name", "kind") and v is not None and k != "checkpoint_sha256")
    lines = [
        f"# Evaluation: {policy.get('name') or policy.get('kind')}",
        "",
        f"- policy: {policy.get('kind')} ({described})",
    ]
    if policy.get("checkpoint_sha256"):
        lines.append(f"- checkpoint sha256: `{policy['checkpoint_sha256']}`")
    lines += [
        f"- episodes: {settings.get('episodes')} per condition, seeds {settings.get('seed')} + episode index, "
        f"embodiment {settings.get('embodiment')}, {settings.get('num_envs')} episodes stepped together",
        f"- robovla {results.get('robovla_version')}, commit `{results.get('git_commit')}`"
        + "".join(f", {name} {version}" for name, version in (results.get("simulator") or {}).items()),
        f"- wall-clock {timing.get('wall_clock_s')} s over {timing.get('sessions')} session(s) "
        f"({timing.get('episodes_per_minute')} episodes/min, {timing.get('cpu_count')} CPU cores, "
        f"workers {timing.get('workers')})",
        "",
        "```bash",
        results.get("command") or "(run from Python)",
        "```",
        "",
        "## Success (95% Wilson intervals)",
        "",
        format_tables(results),
        "",
        "Failure reasons, from the simulator's state at the end of the episode:",
        *[f"- `{reason}`: {meaning}" for reason, meaning in FAILURE_REASONS.items()],
        "",
        "![success per condition and task family](success.png)",
        *(["", "![success per Meta-World task](tasks.png)"] if per_task else []),
    ]
    if videos:
        from PIL import Image

        from robovla.eval.video import write_still_grid

        stills = [(np.asarray(Image.open(folder / v["still"]).convert("RGB")), v["instruction"],
                   f"{v['condition'].replace('tabletop-', '')}: {v['outcome']}", v["success"]) for v in videos]
        write_still_grid(stills, folder / "videos" / "grid.png")
        lines += ["", "## Videos", "", "Last frame of each filmed episode:", "", "![filmed episodes](videos/grid.png)",
                  ""]
        lines += [f"- [{v['condition']} episode {v['episode']}]({v['video']}): \"{v['instruction']}\", "
                  f"{v['outcome']}" for v in videos]
    return write_atomic(folder / "report.md", "\n".join(lines) + "\n")
