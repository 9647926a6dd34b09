"""Quantized vs unquantized actions of a trained policy on simulator observations (part of `make bench`).

Rolls the float32 policy out in the tabletop simulator, keeps every observation it sees (image, instruction,
robot state), then predicts on exactly those observations with each variant (bf16; int8 and int4 LLM weights)
and reports: share of identical action tokens, share of observations whose 7 tokens all agree, mean |delta
action| (unnormalised), LLM weight memory and batch-1 latency. Writes JSON and a markdown table.

    python benchmarks/quant_agreement.py [--checkpoint DIR] [--observations 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import robovla
from robovla.demo import shipped_policy_path
from robovla.quantize import module_bytes
from run import timed  # benchmarks/run.py: median wall time after a warm-up call

VARIANTS = (("float32", None), ("bfloat16", None), ("float32", "int8"), ("float32", "int4"), ("bfloat16", "int8"),
            ("bfloat16", "int4"))


def collect_observations(model: robovla.VLA, count: int, suite: str, seed: int, num_envs: int) -> list[dict]:
    """Observations the float policy itself visits, from seeded episodes, until `count` are gathered."""
    from robovla.eval.rollout import policy_actor, run_episodes
    from robovla.policy import Policy
    from robovla.sim import VectorEnv, get_embodiment, make_env

    size = model.processor.image_config.image_sizes[0]
    policy = policy_actor(Policy(model, get_embodiment("default").dataset_name, restrict_to_actions=True))
    observations: list[dict] = []

    def recording_actor(envs, obs, running):
        observations.extend({"image": obs["image"][k], "instruction": envs.instructions[k],
                             "proprio": obs["proprio"][k]} for k in running)
        return policy(envs, obs, running)

    wave = 0
    while len(observations) < count:
        envs = VectorEnv([make_env(suite, image_size=size) for _ in range(num_envs)])
        obs, _ = envs.reset(seeds=[seed + wave * num_envs + k for k in range(num_envs)])
        run_episodes(envs, obs, recording_actor)
        envs.close()
        wave += 1
    return observations[:count]


def predict_all(model: robovla.VLA, observations: list[dict], selection: str,
                batch: int = 25) -> tuple[np.ndarray, np.ndarray]:
    model.set_recipe(replace(model.recipe, selection=selection))
    policy = robovla.Policy(model)  # its grounding pointer when it has one
    ids, actions = [], []
    for start in range(0, len(observations), batch):
        out = policy.predict(observations[start : start + batch])
        ids.append(out.token_ids[:, 0])
        actions.append(out.first)
    return np.concatenate(ids), np.concatenate(actions)


def latency_ms(model: robovla.VLA, observation: dict, repeats: int = 10) -> float:
    policy = robovla.Policy(model)
    return 1e3 * timed(lambda: policy.predict(observation), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="trained policy (default: the shipped one)")
    parser.add_argument("--observations", type=int, default=200)
    parser.add_argument("--suite", default="tabletop-train")
    parser.add_argument("--seed", type=int, default=3_000_000)
    parser.add_argument("--json", default="benchmarks/results/quantization.json")
    parser.add_argument("--markdown", default="docs/quantization_agreement.md")
    args = parser.parse_args()
    if args.checkpoint is None:
        args.checkpoint = os.path.relpath(shipped_policy_path())
        if not (Path(args.checkpoint) / "config.json").exists():
            print("quant_agreement: no shipped policy yet; pass --checkpoint (e.g. a run of `make policy`)")
            return
    if not (Path(args.checkpoint) / "config.json").exists():
        raise SystemExit(f"no checkpoint at {args.checkpoint}")

    reference = robovla.load_pretrained(args.checkpoint, dtype="float32")
    observations = collect_observations(reference, args.observations, args.suite, args.seed, num_envs=10)
    # the checkpoint's own token selection, and greedy (the reference's) when that differs
    selections = list(dict.fromkeys([reference.recipe.selection, "greedy"]))
    rows = []
    for selection, (dtype, quantization) in itertools.product(selections, VARIANTS):
        ref_ids, ref_actions = predict_all(reference, observations, selection)
        model = robovla.load_pretrained(args.checkpoint, dtype=dtype, quantization=quantization)
        ids, actions = predict_all(model, observations, selection)
        row = {
            "selection": selection, "dtype": dtype, "quantization": quantization or "none",
            "observations": len(observations),
            "llm_weight_mb": round(module_bytes(model.language_model) / 2**20, 2),
            "identical_tokens": round(float(np.mean(ids == ref_ids)), 4),
            "identical_actions": round(float(np.mean((ids == ref_ids).all(axis=1))), 4),
            "mean_abs_action_delta": round(float(np.mean(np.abs(actions - ref_actions))), 5),
            "latency_ms_batch1": round(latency_ms(model, observations[0]), 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "suite": args.suite,
                                           "threads": torch.get_num_threads(), "results": rows}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(args, rows))


def markdown(args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        "# Quantized vs float actions of a trained policy",
        "",
        f"Made by `benchmarks/quant_agreement.py` (part of `make bench`) for `{args.checkpoint}`:",
        f"{rows[0]['observations']} observations that the float32 policy visits on `{args.suite}` (seeds from",
        f"{args.seed}), each predicted by every variant.",
        "Agreement is with the float32 model's action tokens under the same token selection (the checkpoint's",
        "default, then greedy as the reference decodes); deltas are in action units (unnormalised).",
        "",
        "| selection | weights | LLM weight MB | identical tokens | all 7 tokens identical | mean abs action delta "
        "| batch-1 ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = r["dtype"] if r["quantization"] == "none" else f"{r['quantization']} ({r['dtype']} activations)"
        lines.append(f"| {r['selection']} | {name} | {r['llm_weight_mb']:.2f} | {r['identical_tokens']:.1%} | "
                     f"{r['identical_actions']:.1%} | {r['mean_abs_action_delta']:.4f} | {r['latency_ms_batch1']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
