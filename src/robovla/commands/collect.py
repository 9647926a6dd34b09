"""`robovla collect`: record scripted-expert demonstrations from the tabletop simulator as a LeRobot dataset."""

from __future__ import annotations

import argparse
import sys

HELP = "collect scripted-expert episodes from a tabletop or Meta-World suite into a LeRobotDataset v3.0 folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", default="tabletop-train",
                        help="suite name (see docs/simulator.md), or metaworld-mt10 | metaworld-mt50 | metaworld-TASK ...")
    parser.add_argument("--episodes", type=int, default=50, help="successful episodes to keep")
    parser.add_argument("--out", required=True, help="dataset folder to write (replaced atomically)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--embodiment", default=None, help="embodiment variant: default | sideview | lab2 (the fine-tuning "
                        "setup); Meta-World suites run on 'metaworld' (the default for them)")
    parser.add_argument("--task", default=None, help="restrict to one task family (or one Meta-World task)")
    parser.add_argument("--image-size", type=int, default=128, help="square image size in pixels")
    parser.add_argument("--wrist-camera", action="store_true", help="also record the wrist camera")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.1, help="std of Gaussian noise on the executed motion (recorded labels stay clean)")
    parser.add_argument("--policy", default=None, metavar="CHECKPOINT",
                        help="DAgger: this trained policy drives a share of the steps and the expert labels every "
                             "visited state; every episode is kept, failed or not")
    parser.add_argument("--policy-share", type=float, default=0.5, help="share of steps the --policy drives")
    parser.add_argument("--instructions-per-scene", type=int, default=1, metavar="N",
                        help="demonstrate each sampled scene under N instructions: the sampled task, then other "
                             "targets/goals in the same layout, so the words decide what to do (default 1)")
    parser.add_argument("--instructions", choices=["suite", "augmented"], default="suite",
                        help="'augmented': half the episodes under a training rewrite of their instruction (a polite "
                             "word, an end mark, the target first); evaluation holds other rewrites out")
    parser.add_argument("--max-frames", type=int, default=None, metavar="K",
                        help="keep only the first K frames of each demonstration (not run to success): many more "
                             "distinct scenes for the same time, for the first decisions (which object, where)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from robovla.data.collection import CollectConfig, collect
    from robovla.errors import RobovlaError

    if args.image_size < 16:
        raise RobovlaError(f"--image-size must be >= 16, got {args.image_size}")
    from robovla.sim.env import default_embodiment

    config = CollectConfig(
        suite=args.suite,
        episodes=args.episodes,
        embodiment=args.embodiment or default_embodiment([args.suite]),
        image_size=args.image_size,
        wrist_camera=args.wrist_camera,
        task=args.task,
        seed=args.seed,
        noise=args.noise,
        policy=args.policy,
        policy_share=args.policy_share,
        instructions_per_scene=args.instructions_per_scene,
        instructions=args.instructions,
        max_frames=args.max_frames,
    )
    try:
        result = collect(config, args.out, workers=args.workers, progress=not args.quiet)
    except KeyboardInterrupt as interrupt:
        print(f"robovla collect: {interrupt}", file=sys.stderr)  # where the progress went and how to resume
        raise
    tasks = ", ".join(f"{k} {s}/{n}" for k, (s, n) in sorted(result.per_task.items()))
    if args.max_frames:
        outcome = f"the first {args.max_frames} frames of each demonstration"
    elif args.policy:
        outcome = f"the policy drove {args.policy_share:.0%} of the steps; episodes that succeeded per task"
    else:
        outcome = f"expert success {result.success_rate:.1%} ({result.failed} failed episodes not saved)"
    print(f"wrote {result.episodes} episodes ({result.frames} frames) to {result.out} in {result.seconds:.0f} s; "
          f"{outcome}{': ' + tasks if tasks else ''}")
    return 0
