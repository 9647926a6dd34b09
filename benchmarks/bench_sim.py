"""Simulator benchmark: env steps/s (one 224 px camera, one process), expert success per suite and task family,
and the wall time of `robovla collect` for 50 episodes. Writes benchmarks/results/sim.json.

    python benchmarks/bench_sim.py [--episodes 100] [--skip-collect]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def steps_per_second(image_size: int, wrist: bool, episodes: int) -> dict:
    from robovla.sim import expert_action, make_env

    env = make_env("tabletop-train", image_size=image_size, wrist_camera=wrist, seed=0)
    env.reset()  # GL context and first compile out of the timing
    steps, resets, start = 0, 0.0, time.perf_counter()
    for _ in range(episodes):
        t = time.perf_counter()
        env.reset()
        resets += time.perf_counter() - t
        for _ in range(env.max_episode_steps):
            _, _, terminated, truncated, _ = env.step(expert_action(env))
            steps += 1
            if terminated or truncated:
                break
    total = time.perf_counter() - start
    env.close()
    return {"image_size": image_size, "wrist_camera": wrist, "steps": steps, "steps_per_s": round(steps / (total - resets), 1),
            "steps_per_s_including_resets": round(steps / total, 1), "reset_ms": round(1000 * resets / episodes, 1)}


def expert_success(suite: str, embodiment: str, episodes: int) -> dict:
    from robovla.sim import expert_action, make_env

    env = make_env(suite, embodiment=embodiment, image_size=32, seed=1)
    per_task: dict[str, list[int]] = {}
    lengths = []
    for _ in range(episodes):
        _, info = env.reset()
        for t in range(env.max_episode_steps):
            _, _, terminated, truncated, info = env.step(expert_action(env))
            if terminated or truncated:
                break
        counts = per_task.setdefault(info["task"], [0, 0])
        counts[0] += info["success"]
        counts[1] += 1
        lengths.append(t + 1)
    env.close()
    total = sum(s for s, _ in per_task.values())
    return {"success": round(total / episodes, 3), "episodes": episodes, "mean_length": round(sum(lengths) / len(lengths), 1),
            "per_task": {k: f"{s}/{n}" for k, (s, n) in sorted(per_task.items())}}


def collect_time(episodes: int = 50) -> dict:
    from robovla.data.collection import CollectConfig, collect

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = collect(CollectConfig(episodes=episodes), Path(tmp) / "ds", workers=2, progress=False)
        seconds = time.perf_counter() - start
    return {"episodes": episodes, "workers": 2, "image_size": 128, "seconds": round(seconds, 1), "frames": result.frames,
            "expert_success": round(result.success_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per suite for expert success")
    parser.add_argument("--skip-collect", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "sim.json"))
    args = parser.parse_args()
    from robovla.sim import EMBODIMENTS, list_suites

    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "MUJOCO_GL": os.environ["MUJOCO_GL"]},
        "speed": [steps_per_second(224, False, 20), steps_per_second(224, True, 10), steps_per_second(128, False, 20)],
        "expert": {
            f"{suite}/{emb}": expert_success(suite, emb, args.episodes)
            for emb in EMBODIMENTS
            for suite in (list_suites() if emb == "default" else ["tabletop-train"])
        },
    }
    if not args.skip_collect:
        results["collect"] = collect_time()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
