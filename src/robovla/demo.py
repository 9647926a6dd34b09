"""`make demo`: the shipped policy acting in the built-in simulator.

Loads `assets/policies/tabletop-fine` (an openvla-7b-layout checkpoint trained by the command in the README),
rolls it out on seeded scenes of the training suite (validation seeds: nothing is tuned on them), prints every
episode and the success rate, and saves a filmstrip of the first successful episode.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np

import robovla
from robovla.cli import quiet_third_party_import_noise

SHIPPED_POLICY = "tabletop-fine"


def shipped_policy_path(name: str = SHIPPED_POLICY) -> Path:
    return Path(str(resources.files("robovla") / "assets" / "policies" / name))


def filmstrip(frames: list[np.ndarray], path: Path, every: int = 4) -> None:
    from PIL import Image

    picked = frames[::every][:12]
    Image.fromarray(np.concatenate(picked, axis=1)).save(path)


def run_policy_in_sim(policy: robovla.VLA, episodes: int, seed: int, out: Path) -> None:
    """Roll `policy` out on seeded tabletop-train scenes."""
    from robovla.eval.rollout import policy_actor, run_episodes
    from robovla.policy import Policy
    from robovla.sim import make_env
    from robovla.sim.vector import VectorEnv

    size = policy.processor.image_config.image_sizes[0]
    envs = VectorEnv([make_env("tabletop-train", image_size=size) for _ in range(episodes)])
    obs, _ = envs.reset(seeds=[seed + k for k in range(episodes)])
    start = time.perf_counter()
    act = policy_actor(Policy(policy, "tabletop_default", restrict_to_actions=True))
    success, length, seen = run_episodes(envs, obs, act, record=range(episodes))  # film a successful one afterwards
    elapsed = time.perf_counter() - start
    shown = int(np.argmax(success)) if success.any() else 0
    frames = seen[shown]
    for k in range(episodes):
        print(f"  episode {k}: {'success' if success[k] else 'failure'}  {envs.instructions[k]!r}")
    print(f"success {success.sum()}/{episodes} ({success.mean():.0%}); {length.max()} batched policy steps in "
          f"{elapsed:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    filmstrip(frames, out / "episode.png")
    print(f"filmstrip of episode {shown} ({'success' if success[shown] else 'failure'}): {out / 'episode.png'}")
    envs.close()


def main(argv: list[str] | None = None) -> None:
    quiet_third_party_import_noise()
    parser = argparse.ArgumentParser(description="robovla demo: a trained VLA acting in the simulator")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2_000_000, help="first scene's seed (held out from training)")
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    path = shipped_policy_path()
    policy = robovla.load_pretrained(path)  # a missing policy is a clear error naming the folder
    pointer = " and its grounding pointer" if policy.grounding_pointer is not None else ""
    print(f"robovla demo: {path.name} policy{pointer}, {robovla.parameter_counts(policy)['total']:,} parameters, "
          f"trained from scratch in the simulator (see the README); {args.episodes} seeded tabletop-train episodes")
    run_policy_in_sim(policy, args.episodes, args.seed, Path(args.out))


if __name__ == "__main__":
    main()
