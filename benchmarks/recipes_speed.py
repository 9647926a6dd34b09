"""`make bench`: latency per call and actions per second of the reference recipe against the parallel recipe.

The reference recipe says one action per call, seven tokens decoded one after another after the prefix; the
parallel recipe (OpenVLA-OFT's) reads a second camera and the state and says a chunk of 8 actions in the prefix's
own forward pass. Both are timed in turns (`run.timed_alternately`) through `Policy.predict` on freshly built
models of each preset (speed does not depend on the weights), per batch size.

    python benchmarks/recipes_speed.py [--presets tabletop-cpu small] [--batches 1 8] [--modes eager compiled]
                                       [--device cuda --dtype bfloat16]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np
import torch

import robovla
from run import timed_alternately  # benchmarks/run.py

CHUNK = 8
STATS = {"bench": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]},
                   "proprio": {"q01": [-0.5] * 8, "q99": [0.5] * 8}}}
RECIPES = {
    "reference": robovla.Recipe(),
    "parallel-tokens": robovla.Recipe(cameras=("image", "wrist_image"), proprio=True, action_chunk=CHUNK,
                                      decoding="parallel", action_dim=7, state_tokens=1, state_dim=8),
    "parallel-l1": robovla.Recipe(cameras=("image", "wrist_image"), proprio=True, action_chunk=CHUNK,
                                  decoding="parallel", action_head="l1", action_dim=7, state_tokens=1, state_dim=8),
}


def policy_for(preset: str, recipe: robovla.Recipe, compiled: bool, device: str = "cpu",
               dtype: str = "float32") -> robovla.Policy:
    config = robovla.preset(preset)
    config.recipe = recipe
    model = robovla.build_model(config, norm_stats=STATS, seed=0, device=device, dtype=dtype).eval()
    policy = robovla.Policy(model, "bench", restrict_to_actions=True)
    return policy.compile() if compiled else policy


def observations(policy: robovla.Policy, batch: int) -> list[dict]:
    rng = np.random.default_rng(0)
    size = policy.image_size
    one = {camera: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for camera in policy.recipe.cameras}
    one.update(instruction="put the red cube in the blue bowl", proprio=np.zeros(8))
    return [one] * batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tabletop-cpu", "small"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["eager"], choices=["eager", "compiled"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the models are built and run")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--json", default="benchmarks/results/recipes_speed.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            policies = {name: policy_for(preset, recipe, mode == "compiled", args.device, args.dtype)
                        for name, recipe in RECIPES.items()}
            for batch in args.batches:
                calls = [lambda p=p: p.predict(observations(p, batch)) for p in policies.values()]
                for _ in range(2 if mode == "compiled" else 0):  # compile every shape before timing
                    for call in calls:
                        call()
                seconds = timed_alternately(calls, args.repeats, device)
                reference = batch / seconds[0]
                for (name, policy), latency in zip(policies.items(), seconds):
                    actions = batch * policy.recipe.action_chunk / latency
                    rows.append({"preset": preset, "mode": mode, "recipe": name, "batch": batch,
                                 "latency_ms": round(1e3 * latency, 2), "actions_per_second": round(actions, 1),
                                 "vs_reference": round(actions / reference, 2)})
                    print(f"{preset:13s} {mode:8s} {name:16s} batch {batch}: {1e3 * latency:8.1f} ms/call, "
                          f"{actions:8.1f} actions/s ({actions / reference:.1f}x the reference)", flush=True)
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        machine["device"] = torch.cuda.get_device_name(device)
    document = {"machine": machine, "chunk": CHUNK, "dtype": args.dtype, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from robovla.files import write_json_atomic

    write_json_atomic(args.json, document)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
