"""How sure a success rate is: the Wilson score interval, which stays inside [0, 1] and behaves at 0/n and n/n
(where the normal approximation collapses to a zero-width interval)."""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # the two-sided 95% quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of `successes` out of `n` Bernoulli trials; (0, 1) when n is 0."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_summary(successes: int, n: int) -> dict[str, Any]:
    """{n, successes, rate, ci95: [lo, hi]}, floats rounded to 4 places: one row of results.json."""
    lo, hi = wilson_interval(successes, n)
    return {"n": n, "successes": successes, "rate": round(successes / n, 4) if n else None,
            "ci95": [round(lo, 4), round(hi, 4)]}


def rate_text(row: dict[str, Any]) -> str:
    """A `rate_summary` row as reports print it: "k/n [lo%, hi%]"."""
    return f"{row['successes']}/{row['n']} [{row['ci95'][0]:.0%}, {row['ci95'][1]:.0%}]"
