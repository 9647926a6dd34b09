"""`robovla experiment NAME`: one of the paper's claims tested end to end on this machine, resumable."""

from __future__ import annotations

import argparse
import shlex

HELP = ("Run an experiment end to end (collect -> train -> evaluate -> report), resuming whatever a previous run "
        "left. recipes: the parallel-decoding recipe (OpenVLA-OFT) against the reference recipe; fine-tuning: the "
        "generalist fine-tuned on a new robot setup against Diffusion Policy and training from scratch, for 10-150 "
        "demonstrations; limited-hardware: fine-tuning strategies, then fp32/bf16/int8/int4 weights; metaworld: a VLA and "
        "Diffusion Policy trained on Meta-World's MT10 beside published results (needs the metaworld extra); "
        "generalization: narrow data, the diverse mixture and vision-language co-training, per generalization axis "
        "and on rewritten instructions.")
EXPERIMENTS = ("recipes", "fine-tuning", "limited-hardware", "metaworld", "generalization")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run of the whole pipeline in minutes (its numbers mean nothing)")
    parser.add_argument("--work", default=None,
                        help="folder for demonstrations, training runs and episode logs (default runs/NAME[-quick])")
    parser.add_argument("--out", default=None,
                        help="folder for results.json, report.md and plots (default results/NAME[-quick])")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="recipes: train each model only up to this step of its schedule now; rerun later with a "
                             "larger value (or none) to continue (the others save each cell as it finishes)")
    parser.add_argument("--workers", type=int, default=1, help="processes stepping the evaluation envs")
    parser.add_argument("--ship", action="store_true",
                        help="generalization: copy the generalist into the package's shipped policies "
                             "(assets/policies/tabletop-generalist) when it beats the starting point on validation "
                             "seeds")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from robovla.errors import RobovlaError

    if args.stop_at is not None and (args.stop_at < 1 or args.name != "recipes"):
        raise RobovlaError(f"--stop-at is for the recipes experiment, as a step >= 1; got {args.stop_at} for "
                           f"{args.name}")
    if args.ship and args.name != "generalization":
        raise RobovlaError(f"--ship is for the generalization experiment; got {args.name}")
    if args.workers < 1:
        raise RobovlaError(f"--workers must be >= 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    suffix = "-quick" if args.quick else ""
    common = {"scale": "quick" if args.quick else "full", "work": Path(args.work or f"runs/{args.name}{suffix}"),
              "out": Path(args.out or f"results/{args.name}{suffix}"), "workers": args.workers}
    typed = getattr(args, "_argv", None)
    command = None if typed is None else "robovla " + " ".join(shlex.quote(a) for a in typed)
    if args.name == "recipes":
        from robovla.experiments import recipes
        from robovla.experiments.recipes_report import verdict

        document = recipes.run(recipes.RecipesSettings(**common, stop_at=args.stop_at), command)
        lines = verdict(document)
    elif args.name == "fine-tuning":
        from robovla.experiments import fine_tuning
        from robovla.experiments.fine_tuning_report import verdicts
        from robovla.experiments.verdicts import verdict_line

        document = fine_tuning.run(fine_tuning.FineTuningSettings(**common), command)
        lines = [verdict_line(v) for v in verdicts(document)]
    elif args.name == "generalization":
        from robovla.eval.stats import rate_text
        from robovla.experiments import generalization

        document = generalization.run(generalization.GeneralizationSettings(**common), command)
        lines = [f"- {name}: " + ", ".join(f"{suite.replace('tabletop-', '')} {rate_text(row)}"
                                           for suite, row in arm["success"].items() if ":" not in suite)
                 for name, arm in document["arms"].items()]
        if args.ship:
            lines.append(generalization.ship_generalist(document))
    elif args.name == "metaworld":
        from robovla.eval.stats import rate_text
        from robovla.experiments import metaworld

        document = metaworld.run(metaworld.MetaWorldSettings(**common), command)
        lines = [f"- {name}: {document['suite']} {rate_text(policy['success'])}"
                 for name, policy in document["policies"].items()]
    else:
        from robovla.experiments import limited_hardware
        from robovla.experiments.limited_hardware_report import verdicts
        from robovla.experiments.verdicts import verdict_line

        document = limited_hardware.run(limited_hardware.LimitedHardwareSettings(**common), command)
        lines = [verdict_line(v) for v in verdicts(document)]
    print(f"robovla experiment {args.name}: {common['out'] / 'report.md'}")
    for line in lines:
        print(line)
    return 0
