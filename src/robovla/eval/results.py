"""results.json: every figure of an evaluation, derived from its episode records alone.

Layout (schema "robovla.eval.results/1"):
- the header the harness passes: command, robovla_version, git_commit, policy, settings, conditions (in order);
- "overall": n, successes, rate, ci95 (Wilson 95%), mean_steps;
- "conditions": per condition (a suite, or "SUITE:paraphrase"): the same, plus its suite, instruction set, failure
  counts by reason and a row per task family (per task on Meta-World, which adds a row per difficulty group);
- "timing": wall-clock, episodes per minute, sessions. Only this part depends on how the run went (interrupted,
  resumed, how many workers): everything else is a pure function of the records, in any order.
"""

from __future__ import annotations

from typing import Any

from robovla.eval.stats import rate_summary

SCHEMA = "robovla.eval.results/1"


def _families() -> tuple[str, ...]:
    from robovla.sim.variations import FAMILIES

    return FAMILIES


def _rows(records: list[dict[str, Any]]) -> dict[str, Any]:
    successes = sum(bool(r["success"]) for r in records)
    steps = [r["steps"] for r in records]
    return {**rate_summary(successes, len(records)),
            "mean_steps": round(sum(steps) / len(steps), 2) if steps else None}


def _difficulties(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success per Meta-World difficulty group (the episode's family is its task), in the groups' order."""
    from robovla.sim.metaworld_tasks import DIFFICULTY, difficulty_of

    return {group: rate_summary(sum(bool(r["success"]) for r in rows), len(rows)) for group in DIFFICULTY
            if (rows := [r for r in records if difficulty_of(r["family"]) == group])}


def summarize(records: list[dict[str, Any]], header: dict[str, Any]) -> dict[str, Any]:
    """The results.json document of `records` (one dict per episode; the last of duplicates wins)."""
    from robovla.sim.metaworld_tasks import is_metaworld_suite

    order = list(header.get("conditions") or sorted({r["condition"] for r in records}))
    latest = {(r["condition"], r["episode"]): r for r in records}
    ranked = sorted(latest.values(), key=lambda r: (order.index(r["condition"]) if r["condition"] in order
                                                   else len(order), r["condition"], r["episode"]))
    conditions: dict[str, Any] = {}
    for condition in order + sorted({r["condition"] for r in ranked} - set(order)):
        mine = [r for r in ranked if r["condition"] == condition]
        failures: dict[str, int] = {}
        for r in mine:
            if not r["success"]:
                reason = r.get("failure") or "timeout"
                failures[reason] = failures.get(reason, 0) + 1
        families = {f: rate_summary(sum(bool(r["success"]) for r in rows), len(rows))
                    for f in (*_families(), *sorted({r["family"] for r in mine} - set(_families())))
                    if (rows := [r for r in mine if r["family"] == f])}
        suite, _, instructions = condition.partition(":")
        conditions[condition] = {**_rows(mine), "suite": suite, "instructions": instructions or "suite",
                                 "failures": dict(sorted(failures.items())), "families": families}
        if is_metaworld_suite(suite):
            conditions[condition]["difficulties"] = _difficulties(mine)
    timing = dict(header.get("timing") or {})
    timing["episode_seconds"] = round(sum(r.get("seconds", 0.0) for r in ranked), 1)
    body = {k: v for k, v in header.items() if k != "timing"}
    return {"schema": SCHEMA, **body, "overall": _rows(ranked), "conditions": conditions, "timing": timing}


def percent_interval(row: dict[str, Any]) -> str:
    lo, hi = row["ci95"]
    return f"[{lo:.0%}, {hi:.0%}]"


def one_line(condition: str, row: dict[str, Any]) -> str:
    """`tabletop-train: 41/50 = 82% [95% CI 69%-90%] (pick_place 10/12, ...)`: the terminal's summary."""
    lo, hi = row["ci95"]
    families = ", ".join(f"{f} {r['successes']}/{r['n']}" for f, r in row["families"].items())
    rate = f"{row['rate']:.0%}" if row["rate"] is not None else "-"
    return f"{condition}: {row['successes']}/{row['n']} = {rate} [95% CI {lo:.0%}-{hi:.0%}] ({families})"


def format_tables(results: dict[str, Any]) -> str:
    """Markdown: one row per condition (success, interval, steps, failures), then success per task family."""
    from robovla.sim.tasks import FAILURE_REASONS

    reasons = list(FAILURE_REASONS)
    lines = ["| condition | success | rate | 95% CI (Wilson) | mean steps | " + " | ".join(reasons) + " |",
             "|---|---|---|---|---|" + "---|" * len(reasons)]
    rows = [*results["conditions"].items(), ("**all**", results["overall"] | {"failures": _all_failures(results)})]
    for name, row in rows:
        rate = f"{row['rate']:.0%}" if row["rate"] is not None else "-"
        counts = " | ".join(str(row["failures"].get(r, 0)) for r in reasons)
        lines.append(f"| {name} | {row['successes']}/{row['n']} | {rate} | {percent_interval(row)} | "
                     f"{row['mean_steps']} | {counts} |")
    from robovla.sim.metaworld_tasks import DIFFICULTY

    families = [f for f in _families() if any(f in row["families"] for row in results["conditions"].values())]
    if families:
        lines += ["", _breakdown(results["conditions"], "families", families)]
    if any("difficulties" in row for row in results["conditions"].values()):
        lines += ["", _breakdown(results["conditions"], "difficulties", list(DIFFICULTY)), "", _task_rows(results)]
    return "\n".join(lines)


def _cell(row: dict[str, Any] | None) -> str:
    return f"{row['successes']}/{row['n']} {percent_interval(row)}" if row else "-"


def _breakdown(conditions: dict[str, Any], key: str, columns: list[str]) -> str:
    """One row per condition, one column per task family or difficulty group."""
    columns = [c for c in columns if any(c in row.get(key, {}) for row in conditions.values())]
    lines = ["| condition | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(_cell(row.get(key, {}).get(c)) for c in columns) + " |"
              for name, row in conditions.items() if key in row]
    return "\n".join(lines)


def _task_rows(results: dict[str, Any]) -> str:
    """Meta-World: one row per task (with its difficulty group), one column per condition that ran it."""
    from robovla.sim.metaworld_tasks import by_difficulty, difficulty_of

    names = [name for name, row in results["conditions"].items() if "difficulties" in row]
    tasks = by_difficulty({t for name in names for t in results["conditions"][name]["families"]})
    lines = ["| task | difficulty | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    lines += [f"| {task} | {difficulty_of(task)} | "
              + " | ".join(_cell(results["conditions"][name]["families"].get(task)) for name in names) + " |"
              for task in tasks]
    return "\n".join(lines)


def _all_failures(results: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for row in results["conditions"].values():
        for reason, count in row["failures"].items():
            total[reason] = total.get(reason, 0) + count
    return total
