"""`make demo`: the shipped policy acting in the built-in simulator.

Loads `assets/policies/tabletop-fine` (an openvla-7b-layout checkpoint trained by the command in the README),
rolls it out on seeded scenes of the training suite, prints every episode and the success rate, and saves a
filmstrip of the first successful episode. Without a shipped policy it shows the pieces instead: the
random-weight `tiny` preset saved, reloaded and predicting, and the simulator solved by its scripted expert.
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


def run_policy_in_sim(policy: robovla.VLA | None, episodes: int, seed: int, out: Path) -> None:
    """Roll `policy` (or, when None, the scripted expert) out on seeded tabletop-train scenes."""
    from robovla.eval.rollout import policy_actor, run_episodes
    from robovla.sim import make_env
    from robovla.sim.vector import VectorEnv

    size = policy.processor.image_config.image_sizes[0] if policy is not None else 128
    envs = VectorEnv([make_env("tabletop-train", image_size=size) for _ in range(episodes)])
    obs, _ = envs.reset(seeds=[seed + k for k in range(episodes)])
    start = time.perf_counter()
    act = policy_actor(policy, "tabletop_default") if policy is not None else (lambda e, o, r: e.expert_actions())
    success, length, seen = run_episodes(envs, obs, act, record=range(episodes))  # film a successful one afterwards
    elapsed = time.perf_counter() - start
    shown = int(np.argmax(success)) if success.any() else 0
    frames = seen[shown]
    for k in range(episodes):
        print(f"  episode {k}: {'success' if success[k] else 'failure'}  {envs.instructions[k]!r}")
    who = "policy" if policy is not None else "scripted-expert"
    print(f"success {success.sum()}/{episodes} ({success.mean():.0%}); {length.max()} batched {who} steps in "
          f"{elapsed:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    filmstrip(frames, out / "episode.png")
    print(f"filmstrip of episode {shown} ({'success' if success[shown] else 'failure'}): {out / 'episode.png'}")
    envs.close()


def generated_images(size: int = 224) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    gradient = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], axis=-1)
    checker = ((x // 28 + y // 28) % 2)[..., None] * np.array([200, 60, 40])
    scene = np.full((size, size, 3), (190, 160, 120))
    scene[60:120, 40:100] = (220, 30, 30)  # a red block
    scene[130:200, 130:200] = (40, 60, 220)  # a blue bowl
    return {name: img.astype(np.uint8) for name, img in
            {"gradient": gradient, "checkerboard": checker, "scene": scene}.items()}


def run_random_tiny() -> None:
    """No shipped policy: build the tiny preset, save and reload it, and predict a batch of actions."""
    import tempfile

    stats = {"demo": {"action": {"q01": [-0.05] * 3 + [-0.2] * 3 + [0.0], "q99": [0.05] * 3 + [0.2] * 3 + [1.0],
                                 "mask": [True] * 6 + [False]}}}
    model = robovla.build_model("tiny", norm_stats=stats)
    print(f"robovla demo: no shipped policy yet; tiny preset with random weights "
          f"({robovla.parameter_counts(model)['total']:,} parameters)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = robovla.save_pretrained(model, Path(tmp) / "tiny-vla")
        model = robovla.load_pretrained(folder)
        print(f"saved and reloaded an openvla-7b-layout checkpoint: {sorted(p.name for p in folder.iterdir())}")
    images = generated_images()
    instructions = ["put the red block in the blue bowl", "push the block left", "open the gripper"]
    start = time.perf_counter()
    prediction = model.predict(list(images.values()), instructions, "demo", restrict_to_actions=True)
    with np.printoptions(precision=4, suppress=True, floatmode="fixed"):
        for name, text, action in zip(images, instructions, prediction.actions):
            print(f"  {name:<12} {text!r:<38} -> {action}")
    print(f"batch of {len(instructions)} predicted in {(time.perf_counter() - start) * 1000:.0f} ms on CPU")


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
        print(f"the simulator with its scripted expert, {args.episodes} seeded tabletop-train episodes:")
        run_policy_in_sim(None, args.episodes, args.seed, Path(args.out))
        return
    policy = robovla.load_pretrained(path)
    pointer = " and its grounding pointer" if policy.grounding_pointer is not None else ""
    print(f"robovla demo: {path.name} policy{pointer}, {robovla.parameter_counts(policy)['total']:,} parameters, "
          f"trained from scratch in the simulator (see the README); {args.episodes} seeded tabletop-train episodes")
    run_policy_in_sim(policy, args.episodes, args.seed, Path(args.out))


if __name__ == "__main__":
    main()
