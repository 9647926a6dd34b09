"""`robovla eval`: closed-loop success of a policy in the built-in simulator, with intervals, a log and a report."""

from __future__ import annotations

import argparse
import shlex
import sys

from robovla.config import SELECTIONS

HELP = ("Roll a policy (a checkpoint, the scripted expert, a random policy or a running server) out in tabletop "
        "suites; report success per suite and task family with 95% intervals (results.json, report.md, plots, "
        "videos under --out; rerun to resume).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robovla.eval.harness import OFFICIAL_SEED, VALIDATION_SEED
    from robovla.eval.policies import POLICY_KINDS

    who = parser.add_argument_group("the policy")
    who.add_argument("--checkpoint", default=None, help="checkpoint folder (implies --policy checkpoint)")
    who.add_argument("--policy", default=None, choices=[k for k in POLICY_KINDS if k != "server"],
                     help="what acts: a checkpoint, the scripted expert or uniform random actions")
    who.add_argument("--server", default=None, metavar="URL",
                     help="a running `robovla serve`: http://HOST:PORT (REST) or ws://HOST:PORT (websocket)")
    who.add_argument("--api-key", default=None, help="with --server: the server's API key")

    what = parser.add_argument_group("what to run")
    what.add_argument("--suite", action="append", default=None,
                      help="tabletop suite, repeatable, or 'all' (the five generalization suites; default: tabletop-train); "
                           "SUITE:paraphrase (or :punctuation, :polite, :synonym, :order) rewrites that suite's "
                           "instructions; Meta-World: metaworld-mt10, "
                           "metaworld-mt50, metaworld-easy|medium|hard|very-hard or metaworld-TASK")
    what.add_argument("--instructions", choices=["suite", "paraphrase", "punctuation", "polite", "synonym", "order"],
                      default="suite", help="'paraphrase': every instruction rewritten with templates no training "
                      "data uses; a rewrite family: rewritten in that family alone (robovla.sim.rewrites)")
    what.add_argument("--episodes", type=int, default=50, help="seeded episodes per suite")
    what.add_argument("--seed", type=int, default=OFFICIAL_SEED,
                      help=f"seed of episode 0 (then +1 each); {OFFICIAL_SEED} = the official seeds that results "
                           f"report, {VALIDATION_SEED} = validation seeds for choosing settings")
    what.add_argument("--embodiment", default=None,
                      help="embodiment variant (default: 'default', or 'metaworld' for Meta-World suites)")
    what.add_argument("--num-envs", type=int, default=25, help="episodes stepped together (one policy call)")
    what.add_argument("--workers", type=int, default=1, help="processes stepping the environments")

    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None,
                     help="folder for episodes.jsonl, results.json, report.md, success.png and videos; rerunning "
                          "the same command there resumes")
    out.add_argument("--resume", action="store_true", help="continue the evaluation in --out with its own command")
    out.add_argument("--videos", type=int, default=0, metavar="K", help="film the first K episodes of each suite")
    out.add_argument("--quiet", action="store_true", help="no progress bar (for logs)")
    out.add_argument("--json", action="store_true", help="print results.json instead of the table")

    model = parser.add_argument_group("checkpoint options")
    model.add_argument("--unnorm-key", default=None, help="statistics key (default: the embodiment's dataset)")
    model.add_argument("--full-vocabulary", action="store_true",
                       help="greedy over the whole vocabulary (reference semantics) instead of the action tokens")
    model.add_argument("--selection", choices=SELECTIONS, default=None,
                       help="how each action token is picked (default: the checkpoint's, greedy unless set)")
    model.add_argument("--execute", type=int, default=None,
                       help="actions of each predicted chunk to execute before asking again (default: all)")
    model.add_argument("--ensemble", type=float, default=None, metavar="M",
                       help="temporal ensembling of action chunks: ask every step and average the overlapping "
                            "predictions, weight exp(-M * age): 0 is a plain mean, M < 0 trusts older ones more")
    model.add_argument("--sim-grounding", action="store_true",
                       help="give a grounding model the simulator's true target and goal positions instead of "
                            "its own estimate (a diagnostic: how well it acts when it knows where things are)")
    model.add_argument("--no-pointer", action="store_true",
                       help="a model with a grounding pointer (robovla fit-pointer) says its own grounding tokens "
                            "instead of taking the pointer's estimate")
    model.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    model.add_argument("--compile", action="store_true", help="torch.compile the model's inference path")


def build_policy(args: argparse.Namespace):
    """The `EvalPolicy` the arguments name; each bad combination is a RobovlaError that says what to do."""
    from robovla.errors import RobovlaError
    from robovla.eval import policies

    kind = args.policy or ("server" if args.server else "checkpoint" if args.checkpoint else None)
    if kind is None:
        raise RobovlaError("say what to evaluate: --checkpoint CKPT, --policy expert|random or --server URL")
    if args.server and (args.policy or args.checkpoint):
        raise RobovlaError("--server evaluates the served model: drop --checkpoint/--policy")
    if (args.execute is not None and args.execute < 1) or args.episodes < 1 or args.num_envs < 1:
        raise RobovlaError("--episodes, --num-envs and --execute must be >= 1")
    if kind == "server":
        return policies.ServerPolicy(args.server, args.api_key, args.unnorm_key, args.execute, args.ensemble)
    if kind != "checkpoint":
        if args.checkpoint:
            raise RobovlaError(f"--policy {kind} takes no --checkpoint")
        return policies.ExpertPolicy() if kind == "expert" else policies.RandomPolicy()
    if not args.checkpoint:
        raise RobovlaError("--policy checkpoint needs --checkpoint CKPT")
    from robovla.diffusion.runner import is_diffusion_checkpoint

    if is_diffusion_checkpoint(args.checkpoint):
        return _diffusion_policy(args)
    import robovla

    model = robovla.load_pretrained(args.checkpoint, dtype=args.dtype)
    if args.no_pointer and model.grounding_pointer is None:
        raise RobovlaError("--no-pointer: this model has no grounding pointer")
    if args.selection:
        from dataclasses import replace

        model.set_recipe(replace(model.recipe, selection=args.selection))
    if args.compile:
        model.compile_inference()
    # who says where the named objects are: the simulator's truth, the language model (no pointer), or the recipe's
    grounding = "given" if args.sim_grounding else "tokens" if args.no_pointer else None
    return policies.CheckpointPolicy(model, args.checkpoint, args.unnorm_key, not args.full_vocabulary,
                                     args.execute, args.ensemble, grounding, {"dtype": args.dtype})


def _diffusion_policy(args: argparse.Namespace):
    """A Diffusion Policy checkpoint; the VLA's decoding options mean nothing to it and are refused."""
    from robovla.diffusion.runner import DiffusionRunner
    from robovla.errors import RobovlaError
    from robovla.eval import policies

    vla_only = [flag for flag, given in (("--ensemble", args.ensemble is not None), ("--selection", args.selection),
                                         ("--sim-grounding", args.sim_grounding), ("--no-pointer", args.no_pointer),
                                         ("--full-vocabulary", args.full_vocabulary), ("--compile", args.compile),
                                         ("--dtype", args.dtype != "float32")) if given]
    if vla_only:
        raise RobovlaError(f"{', '.join(vla_only)}: VLA options, but {args.checkpoint} holds a Diffusion Policy")
    runner = DiffusionRunner.from_pretrained(args.checkpoint, args.unnorm_key)
    return policies.DiffusionCheckpointPolicy(runner, args.checkpoint, args.execute)


def resumed_arguments(args: argparse.Namespace, parser_argv: list[str]) -> list[str]:
    """`--resume --out DIR`: the command recorded in DIR/run.json, with this call's --workers and --quiet."""
    from pathlib import Path

    from robovla.errors import RobovlaError
    from robovla.eval.harness import RUN_NAME
    from robovla.files import read_json

    if not args.out:
        raise RobovlaError("--resume needs --out DIR (the folder of the evaluation to continue)")
    path = Path(args.out) / RUN_NAME
    if not path.exists():
        raise RobovlaError(f"nothing to resume in {args.out}: it has no {RUN_NAME}")
    argv = read_json(path).get("argv")
    if not argv:
        raise RobovlaError(f"{path} records no command to resume")
    extra = [a for a in ("--quiet", "--json") if getattr(args, a[2:])]
    return [*argv, *extra, *(["--workers", str(args.workers)] if "--workers" in parser_argv else [])]


def run(args: argparse.Namespace) -> int:
    import json

    from robovla.eval.harness import EvalSettings, evaluate, expand_conditions, split_condition
    from robovla.sim.env import default_embodiment
    from robovla.eval.results import one_line

    argv = list(getattr(args, "_argv", None) or sys.argv[1:])
    if args.resume:
        from robovla.cli import build_parser

        argv = resumed_arguments(args, argv)
        args = build_parser().parse_args(argv)
    argv = [a for a in argv if a != "--resume"]
    conditions = expand_conditions(args.suite or ["tabletop-train"], args.instructions)
    args.embodiment = args.embodiment or default_embodiment([split_condition(c)[0] for c in conditions])
    settings = EvalSettings(conditions, args.episodes, args.seed, args.embodiment, args.num_envs, args.workers,
                            args.videos, progress=not (args.quiet or args.json))
    if args.quiet and not args.json:  # log lines (one per batch of episodes) instead of a progress bar
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    policy = build_policy(args)
    recorded = [a for a in argv if a not in ("--quiet", "--json")]
    results = evaluate(policy, settings, args.out, "robovla " + shlex.join(recorded), recorded)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for condition in conditions:
        print(one_line(condition, results["conditions"][condition]))
    timing = results["timing"]
    print(f"{results['overall']['n']} episodes in {timing['wall_clock_s']:.0f} s "
          f"({timing['episodes_per_minute']} episodes/min)" + (f"; report: {args.out}/report.md" if args.out else ""))
    return 0
