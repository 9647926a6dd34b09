"""`robovla experiment NAME`: one of the paper's claims tested end to end on this machine, resumable."""

from __future__ import annotations

import argparse
import shlex

HELP = ("Run an experiment end to end (collect -> train -> evaluate -> report), resuming whatever a previous run "
        "left; `recipes`: the parallel-decoding recipe (OpenVLA-OFT) against the reference recipe.")
EXPERIMENTS = ("recipes",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run of the whole pipeline in minutes (its numbers mean nothing)")
    parser.add_argument("--work", default=None,
                        help="folder for demonstrations, training runs and episode logs (default runs/NAME[-quick])")
    parser.add_argument("--out", default=None,
                        help="folder for results.json, report.md and plots (default results/NAME[-quick])")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="train each model only up to this step of its schedule now; rerun later with a larger "
                             "value (or none) to continue")
    parser.add_argument("--workers", type=int, default=1, help="processes stepping the evaluation envs")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from robovla.errors import RobovlaError
    from robovla.experiments import recipes
    from robovla.experiments.recipes_report import verdict

    if args.stop_at is not None and args.stop_at < 1:
        raise RobovlaError(f"--stop-at must be >= 1, got {args.stop_at}")
    if args.workers < 1:
        raise RobovlaError(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    suffix = "-quick" if args.quick else ""
    settings = recipes.RecipesSettings(
        scale="quick" if args.quick else "full", work=Path(args.work or f"runs/{args.name}{suffix}"),
        out=Path(args.out or f"results/{args.name}{suffix}"), stop_at=args.stop_at, workers=args.workers)
    typed = getattr(args, "_argv", None)
    command = None if typed is None else "robovla " + " ".join(shlex.quote(a) for a in typed)
    document = recipes.run(settings, command)
    print(f"robovla experiment {args.name}: {settings.out / 'report.md'}")
    for line in verdict(document):
        print(line)
    return 0
