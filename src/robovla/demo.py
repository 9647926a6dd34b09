"""`make demo`: the shipped, CPU-trained policy acting in the built-in simulator.

Loads `assets/policies/tabletop-cpu` (an openvla-7b-layout checkpoint trained by the command in the README),
rolls it out on seeded scenes of the training suite, prints every episode and the success rate, and saves a
filmstrip of the first episode. Without a shipped policy it falls back to the random-weight `tiny` preset.
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np

import robovla
from robovla.cli import quiet_third_party_import_noise

SHIPPED_POLICY = "tabletop-cpu"


def shipped_policy_path(name: str = SHIPPED_POLICY) -> Path:
    return Path(str(resources.files("robovla") / "assets" / "policies" / name))


def filmstrip(frames: list[np.ndarray], path: Path, every: int = 4) -> None:
    from PIL import Image

    picked = frames[::every][:12]
    Image.fromarray(np.concatenate(picked, axis=1)).save(path)


def run_policy_in_sim(policy: robovla.VLA, episodes: int, seed: int, out: Path) -> None:
    from robovla.sim import make_env
    from robovla.sim.vector import VectorEnv

    size = policy.processor.image_config.image_sizes[0]
    envs = VectorEnv([make_env("tabletop-train", image_size=size) for _ in range(episodes)])
    obs, infos = envs.reset(seeds=[seed + k for k in range(episodes)])
    success = np.zeros(episodes, dtype=bool)
    frames = [obs["image"][0]]
    start = time.perf_counter()
    calls = 0
    for _ in range(envs.max_episode_steps):
        running = np.flatnonzero(~envs.done)
        if running.size == 0:
            break
        actions = np.zeros((episodes, 7), dtype=np.float32)
        actions[running] = policy.predict(list(obs["image"][running]), [envs.instructions[k] for k in running],
                                          "tabletop_default", restrict_to_actions=True).actions
        calls += 1
        obs, _, _, _, infos = envs.step(actions)
        if not envs.done[0] or len(frames) < 2:
            frames.append(obs["image"][0])
        for k in running:
            success[k] |= bool(infos[k].get("success"))
    elapsed = time.perf_counter() - start
    for k in range(episodes):
        print(f"  episode {k}: {'success' if success[k] else 'failure'}  {envs.instructions[k]!r}")
    print(f"success {success.sum()}/{episodes} ({success.mean():.0%}); {calls} batched policy steps in "
          f"{elapsed:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    filmstrip(frames, out / "episode0.png")
    print(f"filmstrip of episode 0: {out / 'episode0.png'}")
    envs.close()


def run_random_tiny() -> None:
    stats = {"demo": {"action": {"q01": [-0.05] * 3 + [-0.2] * 3 + [0.0], "q99": [0.05] * 3 + [0.2] * 3 + [1.0],
                                 "mask": [True] * 6 + [False]}}}
    model = robovla.build_model("tiny", norm_stats=stats)
    print(f"no shipped policy found: tiny preset with random weights ({robovla.parameter_counts(model)['total']:,} "
          "parameters)")
    image = np.zeros((224, 224, 3), np.uint8)
    image[60:120, 40:100] = (220, 30, 30)
    print(model.predict_action(image, "put the red block in the blue bowl", restrict_to_actions=True))


def main(argv: list[str] | None = None) -> None:
    quiet_third_party_import_noise()
    parser = argparse.ArgumentParser(description="robovla demo: a trained VLA acting in the simulator")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2_000_000, help="first scene's seed (held out from training)")
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args(argv)
    path = shipped_policy_path()
    if not (path / "config.json").exists():
        run_random_tiny()
        return
    policy = robovla.load_pretrained(path)
    print(f"robovla demo: {path.name} policy, {robovla.parameter_counts(policy)['total']:,} parameters, "
          f"trained on CPU; {args.episodes} seeded tabletop-train episodes")
    run_policy_in_sim(policy, args.episodes, args.seed, Path(args.out))


if __name__ == "__main__":
    main()
