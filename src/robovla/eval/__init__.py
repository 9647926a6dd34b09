"""Closed-loop evaluation in the built-in simulator: policies, seeded batched rollouts, the episode log,
results with Wilson intervals, reports, plots and videos."""

from robovla.eval.harness import OFFICIAL_SEED, VALIDATION_SEED, EvalSettings, evaluate, expand_conditions
from robovla.eval.policies import (POLICY_KINDS, CheckpointPolicy, EvalPolicy, ExpertPolicy, RandomPolicy,
                                   ServerPolicy)

__all__ = [
    "OFFICIAL_SEED",
    "POLICY_KINDS",
    "VALIDATION_SEED",
    "CheckpointPolicy",
    "EvalPolicy",
    "EvalSettings",
    "ExpertPolicy",
    "RandomPolicy",
    "ServerPolicy",
    "evaluate",
    "expand_conditions",
]
