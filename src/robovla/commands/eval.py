"""`robovla eval`: closed-loop success rate of a checkpoint in the built-in simulator."""

from __future__ import annotations

import argparse
import json

from robovla.config import SELECTIONS

HELP = "Roll a checkpoint out in a tabletop suite and report its success rate (per task family)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--suite", default="tabletop-train", help="tabletop suite (see docs/simulator.md)")
    parser.add_argument("--episodes", type=int, default=50, help="seeded episodes")
    parser.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode (then +1 each)")
    parser.add_argument("--embodiment", default="default", help="embodiment variant")
    parser.add_argument("--unnorm-key", default=None, help="statistics key (default: the embodiment's dataset)")
    parser.add_argument("--num-envs", type=int, default=25, help="environments stepped together")
    parser.add_argument("--full-vocabulary", action="store_true",
                        help="greedy over the whole vocabulary (reference semantics) instead of the action tokens")
    parser.add_argument("--selection", choices=SELECTIONS, default=None,
                        help="how each action token is picked (default: the checkpoint's, greedy unless set)")
    parser.add_argument("--execute", type=int, default=None,
                        help="actions of each predicted chunk to execute before asking again (default: all)")
    parser.add_argument("--ensemble", type=float, default=None, metavar="M",
                        help="temporal ensembling of action chunks: ask every step and average the overlapping "
                             "predictions, weight exp(-M * age): 0 is a plain mean, M < 0 trusts older ones more")
    parser.add_argument("--sim-grounding", action="store_true",
                        help="give a grounding model the simulator's true target and goal positions instead of "
                             "its own estimate (a diagnostic: how well it acts when it knows where things are)")
    parser.add_argument("--no-pointer", action="store_true",
                        help="a model with a grounding pointer (robovla fit-pointer) says its own grounding tokens "
                             "instead of taking the pointer's estimate")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's inference path")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    import robovla
    from robovla.errors import RobovlaError
    from robovla.eval import evaluate_policy

    if args.episodes < 1 or args.num_envs < 1 or (args.execute is not None and args.execute < 1):
        raise RobovlaError("--episodes, --num-envs and --execute must be >= 1")
    if args.ensemble is not None and args.execute is not None:
        raise RobovlaError("--ensemble asks at every step; it cannot be combined with --execute")
    from robovla.sim import list_suites

    if args.suite not in list_suites():
        raise RobovlaError(f"unknown suite {args.suite!r}; valid: {', '.join(list_suites())}")
    model = robovla.load_pretrained(args.checkpoint, dtype=args.dtype)
    if args.sim_grounding and not model.config.uses_grounding:
        raise RobovlaError("--sim-grounding needs a model with grounding tokens (trained with --grounding)")
    if args.no_pointer:
        if model.grounding_pointer is None:
            raise RobovlaError("--no-pointer: this model has no grounding pointer")
        model.set_grounding_pointer(None)  # the language model's own grounding tokens
    if args.selection:
        model.config.action_selection = args.selection
    if args.compile:
        model.compile_inference()
    result = evaluate_policy(model, args.suite, args.episodes, args.seed, args.embodiment, args.unnorm_key,
                             args.num_envs, restrict_to_actions=not args.full_vocabulary, progress=not args.json,
                             execute=args.execute, ensemble=args.ensemble, sim_grounding=args.sim_grounding)
    print(json.dumps(result.to_dict()) if args.json else result.line())
    return 0
