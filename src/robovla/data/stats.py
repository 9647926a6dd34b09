"""Normalization statistics in the two formats the stack reads.

`dataset_statistics.json` is the OpenVLA reference format (keyed by dataset name = `unnorm_key`, q01/q99 used
for action normalization, `mask` False on the absolute gripper dim); `meta/stats.json` is LeRobot's per-feature
format. Both come from the same arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robovla.files import write_atomic


def array_stats(values: np.ndarray) -> dict[str, list[float]]:
    """mean/std/max/min/q01/q99 per dimension of an [N, D] array."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": v.mean(0).tolist(),
        "std": v.std(0).tolist(),
        "max": v.max(0).tolist(),
        "min": v.min(0).tolist(),
        "q01": np.quantile(v, 0.01, axis=0).tolist(),
        "q99": np.quantile(v, 0.99, axis=0).tolist(),
    }


def compute_stats(
    actions: np.ndarray,
    proprio: np.ndarray,
    num_trajectories: int,
    dataset_name: str,
    grounding: np.ndarray | None = None,
) -> dict[str, dict]:
    """Reference-format statistics: {dataset_name: {action, proprio, num_transitions, num_trajectories}}, plus
    `grounding` when the dataset carries grounding labels (robovla's extension)."""
    action = array_stats(actions)
    action["mask"] = [True] * (actions.shape[1] - 1) + [False]  # the absolute gripper dim stays unnormalized
    stats = {
        "action": action,
        "proprio": array_stats(proprio),
        "num_transitions": int(actions.shape[0]),
        "num_trajectories": int(num_trajectories),
    }
    if grounding is not None:
        stats["grounding"] = array_stats(grounding)
    return {dataset_name: stats}


def dataset_stats(dataset) -> dict[str, dict]:
    """Reference-format statistics of a robovla step dataset (LeRobot or RLDS reader)."""
    return compute_stats(dataset.actions, dataset.proprio, dataset.num_episodes, dataset.dataset_name, dataset.grounding)


def lerobot_stats(actions: np.ndarray, proprio: np.ndarray) -> dict[str, dict]:
    """LeRobot `meta/stats.json` content for the action and state features."""
    out = {}
    for key, values in (("action", actions), ("observation.state", proprio)):
        s = array_stats(values)
        out[key] = {"min": s["min"], "max": s["max"], "mean": s["mean"], "std": s["std"], "count": [int(len(values))], "q01": s["q01"], "q99": s["q99"]}
    return out


def write_dataset_statistics(stats: dict[str, dict], path: str | Path) -> None:
    """Merge per-dataset statistics into `path` (one key per dataset, as in a checkpoint's file)."""
    path = Path(path)
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(stats)
    save_json(merged, path)


def image_stats(frames: np.ndarray) -> dict[str, list]:
    """LeRobot's per-channel image statistics ([3, 1, 1] lists, pixel values in [0, 1]) of [N, H, W, 3] uint8."""
    x = np.asarray(frames, dtype=np.float64) / 255.0

    def per_channel(reduce) -> list:
        return [[[float(v)]] for v in reduce(x, axis=(0, 1, 2))]

    return {"min": per_channel(np.min), "max": per_channel(np.max), "mean": per_channel(np.mean), "std": per_channel(np.std), "count": [int(len(x))]}


def save_json(data: dict, path: str | Path) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    write_atomic(path, json.dumps(data, indent=2))
