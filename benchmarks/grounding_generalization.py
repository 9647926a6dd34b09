"""Does a grounded policy name the right objects in scenes it never saw, or only in the ones it trained on?

For each collection seed, rebuilds the first frame of that seed's first N episodes exactly as `robovla collect
--seed S` made them (same attempt seeds), asks the policy for its grounding tokens (where the instruction's
target and goal are) and counts the estimates more than 5 cm from the simulator's truth, per task family.
Seeds the policy was trained on against a seed it never saw measures how much of its grounding is memorised.
It then renames the target's colour in the instruction (red -> green -> blue -> yellow -> red) where another
object of the target's shape has the new colour: a policy that reads the words moves its estimate to that object.

    python benchmarks/grounding_generalization.py [--checkpoint DIR] [--seeds 21,22,77] [--scenes 200] [--no-pointer]

A policy with a grounding pointer (robovla fit-pointer) is measured with it; `--no-pointer` measures the language
model's own grounding tokens instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import torch

import robovla
from robovla.data.collection import attempt_seed
from robovla.demo import shipped_policy_path
from robovla.sim import make_env

WRONG = 0.05  # metres: further than this from the truth names another object (objects sit >= 10 cm apart)
RECOLOUR = {"red": "green", "green": "blue", "blue": "yellow", "yellow": "red"}


def first_frames(seed: int, scenes: int, image_size: int) -> list[dict]:
    env = make_env("tabletop-train", image_size=image_size)
    frames = []
    for attempt in range(scenes):
        obs, info = env.reset(seed=attempt_seed(seed, attempt))
        target = env.episode.target
        renamed = RECOLOUR.get(target.color)
        same_shape = [o for o in env.episode.objects if o.color == renamed and o.shape == target.shape]
        frames.append({"image": obs["image"], "proprio": obs["proprio"], "instruction": info["instruction"],
                       "truth": env.grounding(), "family": env.episode.family,
                       "renamed": (re.sub(rf"\b{target.color}\b", renamed, info["instruction"], count=1),
                                   np.array([same_shape[0].x, same_shape[0].y])) if same_shape else None})
    env.close()
    return frames


def grounding_estimates(model: robovla.VLA, frames: list[dict], instructions: list[str], batch: int = 25) -> np.ndarray:
    """The policy's grounding tokens [N, 4] (target x, y, goal x, y in metres) for each frame under its instruction."""
    policy = robovla.Policy(model)  # its grounding pointer when it has one, else its own tokens
    said = []
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        said.append(policy.predict([{"image": f["image"], "instruction": text, "proprio": f["proprio"]}
                                    for f, text in zip(chunk, instructions[start : start + batch])]).grounding)
    return np.concatenate(said)


def grounding_errors(model: robovla.VLA, frames: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (m) of the policy's target and goal estimates from the truth, one row per frame."""
    said = grounding_estimates(model, frames, [f["instruction"] for f in frames])
    truth = np.stack([f["truth"] for f in frames])
    return np.linalg.norm(said[:, :2] - truth[:, :2], axis=1), np.linalg.norm(said[:, 2:] - truth[:, 2:], axis=1)


def follows_renamed_target(model: robovla.VLA, frames: list[dict]) -> np.ndarray:
    """Per renamed frame: does the target estimate land on the object the renamed instruction names?"""
    renamed = [f for f in frames if f["renamed"] is not None]
    if not renamed:
        return np.zeros(0, dtype=bool)
    said = grounding_estimates(model, renamed, [f["renamed"][0] for f in renamed])
    named = np.stack([f["renamed"][1] for f in renamed])
    return np.linalg.norm(said[:, :2] - named, axis=1) <= WRONG


def report(seed: int, frames: list[dict], target: np.ndarray, goal: np.ndarray, follows: np.ndarray) -> dict:
    families = np.array([f["family"] for f in frames])
    row = {"seed": seed, "scenes": len(frames), "renamed_scenes": len(follows),
           "follows_renamed_target": float(follows.mean()) if len(follows) else None,
           "target_wrong": float((target > WRONG).mean()),
           "goal_wrong": float((goal > WRONG).mean()), "either_wrong": float(((target > WRONG) | (goal > WRONG)).mean())}
    row["per_family"] = {
        str(f): {"scenes": int((families == f).sum()), "target_wrong": float((target[families == f] > WRONG).mean()),
                 "goal_wrong": float((goal[families == f] > WRONG).mean())}
        for f in sorted(set(families))
    }
    return row


def markdown(result: dict) -> str:
    families = sorted({f for row in result["rows"] for f in row["per_family"]})
    source = "its grounding pointer" if result.get("pointer") else "its own grounding tokens"
    lines = [f"Grounding estimates more than {WRONG * 100:.0f} cm off on the first frame "
             f"(`{result['checkpoint']}`, {source}, {result['rows'][0]['scenes']} scenes a seed; target / goal):", "",
             "| scenes from | trained on them | either wrong | " + " | ".join(families) + " | target colour renamed: follows |",
             "|---|---|---:|" + "---:|" * len(families) + "---:|"]
    for row in result["rows"]:
        counts = [row["per_family"].get(f) for f in families]
        cells = [f"{c['target_wrong']:.0%} / {c['goal_wrong']:.0%}" if c else "-" for c in counts]
        seen = "yes" if row["seed"] in result["training_seeds"] else "no"
        follows = "-" if row["follows_renamed_target"] is None else f"{row['follows_renamed_target']:.0%} of {row['renamed_scenes']}"
        lines.append(f"| `collect --seed {row['seed']}` | {seen} | {row['either_wrong']:.0%} | " + " | ".join(cells)
                     + f" | {follows} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=os.path.relpath(shipped_policy_path()))
    parser.add_argument("--seeds", default="21,22,77", help="collection seeds, comma-separated")
    parser.add_argument("--training-seeds", default="21", help="which of them the policy was trained on (the shipped one: 21)")
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/grounding.json")
    parser.add_argument("--no-pointer", action="store_true", help="the language model's own grounding tokens")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = robovla.load_pretrained(args.checkpoint)
    if args.no_pointer:
        model.set_grounding_pointer(None)
    if not model.processor.grounding_dim(None):
        raise SystemExit(f"{args.checkpoint} has no grounding tokens (trained without --grounding)")
    size = model.processor.image_config.image_sizes[0]
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        frames = first_frames(seed, args.scenes, size)
        rows.append(report(seed, frames, *grounding_errors(model, frames), follows_renamed_target(model, frames)))
    result = {"checkpoint": args.checkpoint, "pointer": model.grounding_pointer is not None,
              "training_seeds": [int(s) for s in args.training_seeds.split(",") if s], "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
