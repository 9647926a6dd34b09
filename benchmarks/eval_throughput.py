"""Evaluation throughput: episodes per minute of the shipped policy on the tabletop training suite, in this
process (1 and 2 env workers) and through a `robovla serve` process (REST and websocket), on this machine.
Writes benchmarks/results/eval.json.

    python benchmarks/eval_throughput.py [--episodes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: Path, port: int) -> subprocess.Popen:
    """`robovla serve` in its own process, decoding over the action tokens only as in-process evaluation does."""
    process = subprocess.Popen([sys.executable, "-m", "robovla.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), "--action-tokens-only", "--log-level", "warning"])
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("robovla serve exited before it answered /health")
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("robovla serve did not answer /health within 120 s")


def measure(policy, episodes: int, workers: int = 1) -> dict:
    from robovla.eval import EvalSettings, evaluate

    settings = EvalSettings(episodes=episodes, workers=workers, progress=False)
    start = time.perf_counter()
    results = evaluate(policy, settings)
    seconds = time.perf_counter() - start
    row = results["conditions"]["tabletop-train"]
    return {"episodes": episodes, "workers": workers, "seconds": round(seconds, 1),
            "episodes_per_minute": round(episodes / seconds * 60, 1), "successes": row["successes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval.json"))
    args = parser.parse_args()
    import robovla
    from robovla.demo import shipped_policy_path
    from robovla.eval import CheckpointPolicy, ServerPolicy
    from robovla.files import write_json_atomic

    checkpoint = shipped_policy_path()
    model = robovla.load_pretrained(checkpoint)
    rows = {"in-process": measure(CheckpointPolicy(model, checkpoint), args.episodes),
            "in-process, 2 workers": measure(CheckpointPolicy(model, checkpoint), args.episodes, workers=2)}
    port = free_port()
    server = start_server(checkpoint, port)
    try:
        rows["server, REST"] = measure(ServerPolicy(f"http://127.0.0.1:{port}"), args.episodes)
        rows["server, websocket"] = measure(ServerPolicy(f"ws://127.0.0.1:{port}"), args.episodes)
    finally:
        server.terminate()
        server.wait(timeout=30)
    results = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "policy": checkpoint.name, "suite": "tabletop-train", "num_envs": 25, "rows": rows}
    write_json_atomic(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
