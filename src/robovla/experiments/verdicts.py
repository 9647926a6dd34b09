"""A paper's claim checked against two success counts: agrees, disagrees, or inconclusive where the 95% intervals
overlap. One rule for every experiment's report, so that a verdict means the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robovla.experiments.common import compare

FLOOR = 2  # at most this many successes on both sides: nothing learnt yet, so nothing to compare


@dataclass(frozen=True)
class Claim:
    text: str  # the paper's claim, in a sentence
    paper: str  # the paper's figures behind it
    a: str  # what the claim says is better (or equal)
    b: str
    kind: str = "higher"  # "higher": a beats b; "matches": a is as good as b


def judge(claim: Claim, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The miniature's verdict on `claim` from a's and b's success rows ({successes, n, rate, ci95})."""
    side = compare(a, b)
    if max(a["successes"], b["successes"]) <= FLOOR:
        verdict, why = "inconclusive", "neither side succeeds more than twice: nothing to compare yet"
    elif claim.kind == "matches":
        verdict = "agrees" if side == "overlap" else "disagrees"
        why = ("the intervals overlap (no evidence of a difference)" if side == "overlap" else
               f"{claim.a} is {side} than {claim.b} with intervals apart")
    else:
        verdict = {"higher": "agrees", "lower": "disagrees", "overlap": "inconclusive"}[side]
        why = {"higher": "the intervals are apart, in the paper's direction",
               "lower": "the intervals are apart, against the paper",
               "overlap": "the intervals overlap"}[side]
    return {"claim": claim.text, "paper": claim.paper, "a": claim.a, "b": claim.b, "verdict": verdict, "why": why,
            "a_success": a, "b_success": b}


def verdict_line(v: dict[str, Any]) -> str:
    def rate(row: dict[str, Any]) -> str:
        return f"{row['successes']}/{row['n']} [{100 * row['ci95'][0]:.0f}-{100 * row['ci95'][1]:.0f}%]"

    return (f"- **{v['verdict']}**: {v['claim']} (paper: {v['paper']}). Here {v['a']} {rate(v['a_success'])} vs "
            f"{v['b']} {rate(v['b_success'])}: {v['why']}.")
