"""`make bench`: what a compiled policy server pays to start and holds in memory, and whether its batched answers
equal single ones.

Each start is a fresh process with an empty inductor folder (PyTorch's own on-disk cache would otherwise carry
graphs between starts), measured for one model in one mode:
- eager: no compiling;
- frozen: robovla's earlier compiled path (weights packed into each graph; cannot be cached);
- lean cold: the default compiled path with an empty robovla compile cache (it builds, then saves);
- lean cached: the same with the cache the cold start saved.
Each reports the seconds to load the checkpoint and to warm up (`Policy.warm_up`: every graph a server needs), the
graphs built or taken from the cache, the peak RSS after the warm-up and after a load run (batches of 1 to 8 with
new instructions), the median latency at batch 1 and 8, and how many greedy action tokens of a batch of 8 (mixed
prompt lengths, so padding) equal the same observations predicted one by one. A batch-invariant row (each
observation in its own call, `Policy(batch_invariant=True)`) gives that setting's cost.

    python benchmarks/serve_startup.py [--models shipped small] [--out benchmarks/results/serve_startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "robovla" / "assets" / "policies" / "tabletop-fine"
MODELS = {  # name: (checkpoint folder or preset, dtype)
    "shipped": (str(SHIPPED), "float32"),
    "small": ("small", "bfloat16"),
}
MODES = ("eager", "frozen", "lean cold", "lean cached")
WORDS = ("pick up the red block", "put the green cube in the blue bowl", "push the yellow cylinder to the left",
         "stack the blue cube on top of the red cube and then move the green cube next to the yellow bowl")


# ------------------------------------------------------------------------------------------------ one start
def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def observations(policy, rng, count: int) -> list[dict]:
    import numpy as np

    size = policy.image_size
    out = []
    for k in range(count):
        obs = {camera: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for camera in policy.recipe.cameras}
        obs["instruction"] = WORDS[k % len(WORDS)] + (" now" * int(rng.integers(0, 6)))
        if policy.recipe.proprio:
            obs["proprio"] = rng.uniform(-0.5, 0.5, policy.proprio_dim())
        out.append(obs)
    return out


def one_start(model: str, dtype: str, mode: str, cache: str | None, batch_invariant: bool) -> dict:
    import numpy as np
    import torch

    import robovla

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    start = time.perf_counter()
    if Path(model).is_dir():
        vla = robovla.load_pretrained(model, dtype=dtype)
    else:
        stats = {"bench": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7}}}
        vla = robovla.build_model(model, dtype=dtype, norm_stats=stats).eval()
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss_mb()
    policy = robovla.Policy(vla, batch_invariant=batch_invariant)
    if mode != "eager":
        policy.compile(mode.split()[0], cache=cache or False)
    report = policy.warm_up()
    rss_warm = peak_rss_mb()
    rng = np.random.default_rng(0)
    latency: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(3):  # the load run: new instructions, every batch size from 1 to 8
        for batch in range(1, 9):
            obs = observations(policy, rng, batch)
            began = time.perf_counter()
            policy.predict(obs)
            if batch in latency:
                latency[batch].append(time.perf_counter() - began)
    batch = observations(policy, np.random.default_rng(1), 8)
    together = policy.predict(batch).token_ids
    alone = np.concatenate([policy.predict(o).token_ids for o in batch])
    return {
        "load_s": round(load_s, 2), "warm_up_s": round(report.seconds, 2), "start_s": round(load_s + report.seconds, 2),
        "graphs_built": report.graphs_built, "graphs_from_cache": report.graphs_from_cache,
        "peak_rss_mb_loaded": round(rss_loaded), "peak_rss_mb_warm": round(rss_warm),
        "peak_rss_mb_after_load": round(peak_rss_mb()),
        "batch1_ms": round(statistics.median(latency[1]) * 1e3, 1),
        "batch8_ms": round(statistics.median(latency[8]) * 1e3, 1),
        "batch8_actions_per_s": round(8 / statistics.median(latency[8]), 2),
        "batched_tokens_equal_single": int((together == alone).sum()), "tokens": int(together.size),
    }


# ----------------------------------------------------------------------------------------------- the report
def markdown(result: dict, source: str) -> str:
    """The JSON as a table, each compiled row's memory also as a multiple of the same model's eager row."""
    eager = {(r["model"], r["dtype"]): r for r in result["rows"] if r["mode"] == "eager"}
    lines = [
        "# Start-up, memory and batch invariance of a served policy",
        "",
        f"`{result['command']}` on {result['date']}, {result['threads']} CPU threads ({Path(source).name}). "
        + result["notes"][:1].upper() + result["notes"][1:] + ".",
        "",
        "| model | dtype | mode | start (load + warm-up) | graphs built / cached | peak RSS warm | peak RSS after load "
        "| batch 1 | batch 8 | batched = single |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        base = eager.get((r["model"], r["dtype"]))
        ratio = f" ({r['peak_rss_mb_after_load'] / base['peak_rss_mb_after_load']:.2f}x)" if base else ""
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['mode']} | {r['start_s']:.1f} s ({r['load_s']:.1f} + "
            f"{r['warm_up_s']:.1f}) | {r['graphs_built']} / {r['graphs_from_cache']} | {r['peak_rss_mb_warm']} MB | "
            f"{r['peak_rss_mb_after_load']} MB{ratio} | {r['batch1_ms']:.0f} ms | {r['batch8_ms']:.0f} ms | "
            f"{r['batched_tokens_equal_single']}/{r['tokens']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- the parent
def run_start(model: str, dtype: str, mode: str, cache: str | None, batch_invariant: bool = False) -> dict:
    """`one_start` in its own process, with an empty inductor folder."""
    with tempfile.TemporaryDirectory(prefix="inductor-") as inductor:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": inductor}
        args = [sys.executable, __file__, "--child", json.dumps([model, dtype, mode, cache, batch_invariant])]
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} start of {model} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dtypes", nargs="+", default=None, help="override each model's dtype (float32, bfloat16)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_startup.json"))
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "serve_startup.md"))
    parser.add_argument("--redraw", action="store_true", help="only rewrite the markdown from --out")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows of --out and skip each model and dtype that has all of its rows")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_start(*json.loads(args.child))))
        return
    from robovla.files import write_atomic, write_json_atomic

    if args.redraw:
        write_atomic(args.markdown, markdown(json.loads(Path(args.out).read_text()), args.out))
        return

    rows: list[dict] = []
    if args.resume and Path(args.out).exists():
        rows = json.loads(Path(args.out).read_text())["rows"]
    done = {(row["model"], row["dtype"]) for row in rows if row["mode"] == "eager, batch-invariant"}

    def record(row: dict) -> None:  # the file is rewritten after every row, so a failed start loses nothing
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_json_atomic(args.out, {
            "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "threads": int(os.environ.get("BENCH_THREADS", "2")), "command": "python " + " ".join(sys.argv),
            "notes": "each row is a fresh process with an empty inductor folder; 'lean cached' reuses the compile "
                     "cache 'lean cold' saved; peak RSS is the process's maximum resident set (ru_maxrss); batched "
                     "tokens: a batch of 8 with mixed prompt lengths against the same 8 one by one",
            "rows": rows,
        })

    for name in args.models:
        model, default_dtype = MODELS[name]
        for dtype in args.dtypes or [default_dtype]:
            if (name, dtype) in done:
                continue
            rows = [row for row in rows if (row["model"], row["dtype"]) != (name, dtype)]  # a group half done
            with tempfile.TemporaryDirectory(prefix="robovla-compile-") as cache:
                for mode in args.modes:
                    began = time.perf_counter()
                    row = run_start(model, dtype, mode, cache if mode.startswith("lean") else None)
                    record({"model": name, "dtype": dtype, "mode": mode, **row,
                            "wall_s": round(time.perf_counter() - began, 1)})
            row = run_start(model, dtype, "eager", None, batch_invariant=True)
            record({"model": name, "dtype": dtype, "mode": "eager, batch-invariant", **row})
    write_atomic(args.markdown, markdown(json.loads(Path(args.out).read_text()), args.out))
    print(f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
    main()
