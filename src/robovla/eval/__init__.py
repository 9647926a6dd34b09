"""Closed-loop evaluation of a policy in the built-in simulator."""

from robovla.eval.rollout import EvalResult, evaluate_policy

__all__ = ["EvalResult", "evaluate_policy"]
