"""report.md and success.png of `robovla experiment generalization` (from its results.json alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from robovla.eval.report import COLORS, save_figure
from robovla.eval.stats import rate_summary, rate_text
from robovla.experiments.common import compare
from robovla.files import write_atomic

AXES = {"tabletop-visual": "visual", "tabletop-motion": "motion", "tabletop-physical": "physical",
        "tabletop-semantic": "semantic"}
TRAIN = "tabletop-train"
FAMILIES = ("punctuation", "polite", "synonym", "order")
STEPS = (("shipped", "narrow", "more narrow data, a refitted pointer"), ("narrow", "diverse", "the diverse mixture"),
         ("diverse", "diverse-vl", "vision-language co-training"))
# the shipped generalist's targets (issue 20): success on the training suite, the largest drop on the visual, motion
# and physical suites, semantic success, and the largest loss of a rewrite family, in points
TARGETS = {"train": 80.0, "drop": 20.0, "semantic": 50.0, "rewrite_loss": 10.0}
# what was tried against the missed targets, each with its validation-seed numbers in docs/generalist.md
TRIED = ("Tried against the missed targets (each a probe on validation seeds, [docs/generalist.md]"
         "(../../docs/generalist.md)): colour jitter in training and in the pointer's frames (kept: visual 2 -> "
         "17-31/50); pointers fitted on many scenes under several instructions, and started from the starting "
         "point's (kept); corpus referring questions in the pointer (kept in diverse-vl; semantic 3 -> 8/30 on "
         "the starting point); filler-word instruction noise (not kept: rewrites read alike, but the trained "
         "phrasings fall from 34 to 18/40).")
BUDGET_MINUTES = 120  # the full size's wall-clock on 2 CPU cores, the starting point's training not counted


def data_size(record: dict[str, Any]) -> str:
    """What a collection holds, in words: questions, demonstrations, or the pointer's short scene clips."""
    if "examples" in record:
        return f"{record['examples']} questions"
    if record.get("scenes"):
        return f"{record['scenes']} scenes under {record['instructions_per_scene']} instructions (first frames)"
    return f"{record['episodes']} demonstrations"


def machines_text(machines: list[dict]) -> str:
    """Which machines the stages ran on, by their float32 GEMM rate (runs before this was recorded: nothing)."""
    if not machines:
        return ""
    rates = sorted({m["gemm_gflops_float32"] for m in machines})
    span = f"{rates[0]:.0f}" if len(rates) == 1 else f"{rates[0]:.0f} to {rates[-1]:.0f}"
    return (f" Measured on {machines[0]['cpus']} CPUs with a float32 GEMM rate of {span} GFLOP/s "
            f"({len(machines)} start(s)); training and the pointers' feature passes scale with that rate.")


def time_spent(stages: dict[str, float]) -> dict[str, float]:
    """Seconds per kind of stage (every stage counts once; the generalist's copy goes to "other")."""
    groups = {"collecting": ("demos/", "pointer-scenes/", "vl-corpus"), "training": ("train/",),
              "fitting pointers": ("pointer/",), "evaluating": ("eval/", "validate/")}
    spent = {label: sum(v for k, v in stages.items() if k.startswith(prefixes)) for label, prefixes in groups.items()}
    return {**spent, "other": sum(stages.values()) - sum(spent.values())}


def pointer_text(document: dict[str, Any]) -> str:
    """How each arm's grounding pointer is refitted (results written before this was recorded: nothing)."""
    if "pointer_steps" not in document:
        return ""
    return (f"Each arm then refits its grounding pointer for {document['pointer_steps']} steps, starting from the "
            "starting point's. ")


def budget_text(seconds: float) -> str:
    """The stages' total against the 2-hour budget."""
    minutes = seconds / 60
    verdict = ("within the 2-hour budget" if minutes <= BUDGET_MINUTES else
               f"over the 2-hour budget by {minutes - BUDGET_MINUTES:.0f} min")
    return f"{minutes:.0f} min in all, {verdict}"


def joins_text(document: dict[str, Any]) -> str:
    """Whether the generalist beat its starting point on the validation seeds (what decides shipping it)."""
    return ("It beats the starting point there, so it joins the shipped policies."
            if document["generalist"]["beats_starting_point"] else
            "It does not beat the starting point there, so the shipped policy stays as it is.")


def points(row: dict[str, Any]) -> float:
    return 100.0 * (row["rate"] or 0.0)


def followed(arm: dict[str, Any], condition: str = "tabletop-semantic") -> dict[str, Any]:
    """How often the first object an episode moved was the named one, among episodes that moved one."""
    counts = arm["evaluation"]["handled"][condition]
    return {**rate_summary(counts["target"], counts["target"] + counts["other"]), "none": counts["none"]}


def rewrite_losses(arm: dict[str, Any]) -> dict[str, float]:
    """Points each rewrite family loses against the trained phrasings (the same seeds)."""
    trained = points(arm["success"][TRAIN])
    return {family: trained - points(arm["success"][f"{TRAIN}:{family}"]) for family in FAMILIES}


def target_check(arm: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for each of the shipped generalist's targets."""
    success = arm["success"]
    train = points(success[TRAIN])
    drops = {AXES[s]: train - points(success[s]) for s in ("tabletop-visual", "tabletop-motion", "tabletop-physical")}
    worst_axis = max(drops, key=drops.get)
    losses = rewrite_losses(arm)
    worst_family = max(losses, key=losses.get)
    semantic = points(success["tabletop-semantic"])
    return [
        (f"training suite >= {TARGETS['train']:.0f}%", train >= TARGETS["train"], f"{train:.0f}%"),
        (f"visual, motion, physical within {TARGETS['drop']:.0f} points of it", drops[worst_axis] <= TARGETS["drop"],
         ", ".join(f"{axis} {-drop:+.0f}" for axis, drop in drops.items())),
        (f"semantic >= {TARGETS['semantic']:.0f}%", semantic >= TARGETS["semantic"], f"{semantic:.0f}%"),
        (f"rewrites lose <= {TARGETS['rewrite_loss']:.0f} points", losses[worst_family] <= TARGETS["rewrite_loss"],
         f"worst: {worst_family} {-losses[worst_family]:+.0f}"),
    ]


def plot_success(document: dict[str, Any], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conditions = document["conditions"]
    arms = document["arms"]
    figure = Figure(figsize=(11, 3.8), dpi=110)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    width = 0.8 / len(arms)
    x = np.arange(len(conditions))
    for k, (name, arm) in enumerate(arms.items()):
        rows = [arm["success"][c] for c in conditions]
        rates = np.array([r["rate"] or 0.0 for r in rows])
        lo, hi = np.array([r["ci95"][0] for r in rows]), np.array([r["ci95"][1] for r in rows])
        axis.bar(x + (k - (len(arms) - 1) / 2) * width, rates, width, yerr=[rates - lo, hi - rates],
                 color=COLORS[k % len(COLORS)], capsize=2, label=name, error_kw={"alpha": 0.6})
    labels = [c.replace("tabletop-train:", "train: ").replace("tabletop-", "") for c in conditions]
    axis.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    axis.set_ylim(0, 1.02)
    axis.set_ylabel("success rate (95% Wilson CI)")
    axis.grid(axis="y", alpha=0.3)
    axis.spines[["top", "right"]].set_visible(False)
    axis.legend(fontsize=8, frameon=False, ncol=len(arms))
    return save_figure(figure, path)


def write_generalization_report(out: Path, document: dict[str, Any]) -> Path:
    plot_success(document, out / "success.png")
    arms, data = document["arms"], document["data"]
    lines = [
        "# Generalization: what diverse robot data and vision-language co-training buy",
        "",
        f"Command: `{document.get('command') or 'robovla experiment generalization'}` (scale `{document['scale']}`; "
        f"mujoco {document['simulator'].get('mujoco', '?')}). Every arm starts from the shipped policy "
        f"(`{document['starting_point']}`, trained on narrow `tabletop-train` data) and fine-tunes for "
        f"{document['steps']} steps of batch {document['batch_size']} (lr {document['lr']:g}, warm-up + cosine); "
        f"the arms differ only in their data. {pointer_text(document)}Each runs {document['episodes']} episodes "
        f"per condition on the official seeds (the same scenes for every arm), decoding with "
        f"`{document['selection']}` selection.",
        "",
        "| arm | what it trains on | mixture weights | training; its grounding pointer |",
        "|---|---|---|---|",
    ]
    for name, arm in arms.items():
        weights = ", ".join(f"{k} {v:g}" for k, v in (arm.get("weights") or {}).items()) or "-"
        trained, pointer = arm.get("training"), arm.get("pointer")
        within = " / ".join(f"{v:.0%}" for v in pointer["holdout_within"]) if pointer else ""
        questions = pointer.get("vl_questions", 0) if pointer else 0  # results from before 2026-12-05 lack it
        cost = (f"{trained['train_seconds'] / 60:.0f} min; pointer on {pointer['frames'] - questions} frames, held-out "
                f"target / goal estimates within 5 cm: {within or '-'}") if trained else "-"
        if trained and questions:
            placed = pointer["vl_holdout_within"]  # None when no held-out scene asks about one thing
            cost += (f"; and on {questions} corpus questions about one thing, held-out ones within 5 cm: "
                     f"{'-' if placed is None else f'{placed:.0%}'}")
        lines.append(f"| {name} | {arm['label']} | {weights} | {cost} |")
    lines += ["", "Data: " + "; ".join(f"{name} {data_size(record)} (seed {record['seed']})"
                                        for name, record in data.items())
              + ". No robot data holds a held-out value: the diverse scenes are drawn clear of every suite's held-out "
              "table, light, colour, position, size and shape; the colour words orange, purple, cyan and pink and "
              "the shape and container synonyms appear only in the vision-language corpus.", ""]
    lines += ["## Zero-shot success per axis", "",
              "| arm | train | visual | motion | physical | semantic |", "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        lines.append(f"| {name} | " + " | ".join(rate_text(arm["success"][s]) for s in (TRAIN, *AXES)) + " |")
    lines += ["", "![success per condition](success.png)", "", "## What each step buys", "",
              "Points gained per suite; **higher** or **lower** only where the 95% intervals are apart.", "",
              "| step | " + " | ".join(["train", *AXES.values()]) + " |", "|---|" + "---|" * (1 + len(AXES))]
    for before, after, label in STEPS:
        if before in arms and after in arms:
            cells = []
            for suite in (TRAIN, *AXES):
                a, b = arms[after]["success"][suite], arms[before]["success"][suite]
                side = compare(a, b)
                mark = f" **{side}**" if side != "overlap" else ""
                cells.append(f"{points(a) - points(b):+.0f}{mark}")
            lines.append(f"| {label} ({before} -> {after}) | " + " | ".join(cells) + " |")
    lines += ["", "## Instructions a person reads as the same", "",
              "The training suite's episodes under each held-out rewrite family (same seeds as the trained phrasings; "
              "`robovla.sim.rewrites`): punctuation (capitals, \"!\"), polite (\"could you ...?\"), synonym (block "
              "for cube, dish for bowl, lay for put) and order (the goal first). Training never saw them: the diverse "
              "collections rewrite with other words (\"go ahead and\", \"now\", \"for me\", \".\", the target first).", "",
              "| arm | trained phrasings | " + " | ".join(FAMILIES) + " | worst loss (points) |",
              "|---|---|" + "---|" * (len(FAMILIES) + 1)]
    for name, arm in arms.items():
        losses = rewrite_losses(arm)
        lines.append(f"| {name} | {rate_text(arm['success'][TRAIN])} | "
                     + " | ".join(rate_text(arm["success"][f"{TRAIN}:{f}"]) for f in FAMILIES)
                     + f" | {max(losses.values()):.0f} |")
    chance = document["semantic_chance"]
    lines += ["", "## Colour words learnt only from vision-language data", "",
              "The semantic suite's targets take colours (orange, purple, cyan, pink) that no robot data names. "
              "For each episode the simulator records which object the robot moved first; the rate below is how "
              f"often that was the named one, among episodes that moved one. Picking among the scene's objects at "
              f"random scores {chance:.0%}.", "",
              "| arm | named object first | another first | nothing moved | rate (95% CI) | against chance | "
              "training suite's rate (seen colours) |", "|---|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        row = followed(arm)
        if row["n"]:
            side = ("above chance" if row["ci95"][0] > chance else "below chance" if row["ci95"][1] < chance
                    else "not distinguishable from chance")
            seen = followed(arm, TRAIN)
            lines.append(f"| {name} | {row['successes']} | {row['n'] - row['successes']} | {row['none']} | "
                         f"{rate_text(row)} | {side} | {rate_text(seen) if seen['n'] else '-'} |")
        else:
            lines.append(f"| {name} | 0 | 0 | {row['none']} | - | nothing moved | - |")
    best = document["generalist"]["arm"]
    validation = document["validation"]
    totals = {name: (sum(r["successes"] for r in rows.values()), sum(r["n"] for r in rows.values()))
              for name, rows in validation["success"].items()}
    lines += ["", "## Against the shipped generalist's targets", "",
              f"The generalist is the arm with the most successes on validation seeds (from {validation['seed']:,}, "
              f"{validation['episodes']} episodes per suite; " + ", ".join(f"{n} {k}/{t}" for n, (k, t) in
                                                                           totals.items())
              + f"): `{best}`, in `{document['generalist']['checkpoint']}`. "
              + joins_text(document) + " Its official-seed figures above, against the targets, beside the "
              "starting point's:", "",
              f"| target | {best} | met | the shipped policy (start) | met |", "|---|---|---|---|---|"]
    for (target, met, measured), (_, start_met, start) in zip(target_check(arms[best]),
                                                              target_check(arms["shipped"])):
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} | {start} | "
                     f"{'yes' if start_met else '**no**'} |")
    lines += ["", TRIED]
    stages = document["wall_seconds"]
    spent = time_spent(stages)
    lines += ["", "## Wall-clock (2 CPU cores)", "",
              ", ".join(f"{label} {seconds / 60:.0f} min" for label, seconds in spent.items() if seconds >= 30)
              + f": {budget_text(sum(stages.values()))} (per stage in results.json; the starting point's "
              "training is not counted)." + machines_text(document.get("machines", []))]
    return write_atomic(out / "report.md", "\n".join(lines) + "\n")
