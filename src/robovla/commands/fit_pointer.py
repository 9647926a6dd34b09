"""`robovla fit-pointer`: give a trained grounding policy a grounding pointer (robovla.train.pointer)."""

from __future__ import annotations

import argparse

HELP = ("Fit a grounding pointer on a frozen grounding policy: a small head that picks the image patch of each "
        "object the instruction names; its estimate becomes the policy's grounding tokens.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robovla.train.pointer_config import PointerFitConfig

    defaults = PointerFitConfig(checkpoint="", datasets=[], out="")
    parser.add_argument("--checkpoint", required=True, help="a policy trained with --grounding")
    parser.add_argument("--datasets", nargs="+", required=True,
                        help="dataset folders that record grounding labels (robovla collect)")
    parser.add_argument("--out", required=True, help="new checkpoint folder: the policy plus its pointer")
    parser.add_argument("--embodiment", default=defaults.embodiment, help="whose camera maps patches to the table (default: %(default)s)")
    parser.add_argument("--frame-stride", type=int, default=defaults.frame_stride,
                        help="cache every k-th frame of each episode, first frames always (default: %(default)s)")
    parser.add_argument("--max-frames", type=int, default=None, help="cap on cached frames (memory)")
    parser.add_argument("--holdout-episodes", type=int, default=defaults.holdout_episodes,
                        help="episodes kept out of training to report the pointer's accuracy (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="default: %(default)s")
    parser.add_argument("--lr", type=float, default=defaults.lr,
                        help="peak learning rate, after a 5%% warm-up, then cosine decay (default: %(default)s)")
    parser.add_argument("--width", type=int, default=defaults.width, help="the pointer's own width (default: %(default)s)")
    parser.add_argument("--layer", type=int, default=None,
                        help="language-model layer whose input the pointer reads (default: the last layer)")
    parser.add_argument("--vl-corpus", default=None,
                        help="a vision-language corpus (robovla collect-vl): its questions about one thing (\"where is "
                             "the orange cylinder?\") teach the pointer the words robot data never uses")
    parser.add_argument("--vl-questions", type=int, default=defaults.vl_questions,
                        help="at most this many corpus questions, drawn at random (default: %(default)s)")
    parser.add_argument("--vl-holdout-scenes", type=int, default=defaults.vl_holdout_scenes,
                        help="corpus scenes kept out of training to report accuracy on its questions "
                             "(default: %(default)s)")
    parser.add_argument("--augment", action="store_true",
                        help="jitter each robot frame's colours (the training's jitter, no crop) before caching its "
                             "features: for a policy trained with --augment, so that its pointer also reads unseen "
                             "lights and tables")
    parser.add_argument("--instruction-noise", type=float, default=defaults.instruction_noise,
                        help="share of robot frames whose instruction gets one or two filler words the model cannot "
                             "read (as `robovla train --instruction-noise`): for a policy trained with it "
                             "(default: %(default)s)")
    parser.add_argument("--init-pointer", default=None, metavar="CHECKPOINT",
                        help="start from this checkpoint's fitted pointer (say, the one --checkpoint was fine-tuned "
                             "from) instead of random weights; it needs the same layer and width")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    parser.add_argument("--dtype", default=defaults.dtype, help="weights dtype of the saved checkpoint (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from robovla.errors import RobovlaError
    from robovla.train.pointer import fit_pointer
    from robovla.train.pointer_config import PointerFitConfig

    for name in ("frame_stride", "steps", "batch_size", "width", "holdout_episodes", "vl_questions",
                 "vl_holdout_scenes"):
        if getattr(args, name) < (0 if name in ("holdout_episodes", "vl_holdout_scenes") else 1):
            raise RobovlaError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0.0 <= args.instruction_noise <= 1.0:
        raise RobovlaError(f"--instruction-noise is a share of the frames, in [0, 1]; got {args.instruction_noise}")
    if args.max_frames is not None and args.max_frames < 1:
        raise RobovlaError(f"--max-frames must be positive, got {args.max_frames}")
    config = PointerFitConfig(
        checkpoint=args.checkpoint, datasets=list(args.datasets), out=args.out, embodiment=args.embodiment,
        frame_stride=args.frame_stride, max_frames=args.max_frames, holdout_episodes=args.holdout_episodes,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width, layer=args.layer,
        seed=args.seed, dtype=args.dtype, vl_corpus=args.vl_corpus, vl_questions=args.vl_questions,
        vl_holdout_scenes=args.vl_holdout_scenes, augment=args.augment, instruction_noise=args.instruction_noise,
        init_pointer=args.init_pointer,
    )
    _, report = fit_pointer(config, progress=not args.quiet)
    within = ", ".join(f"{share:.1%}" for share in report.holdout_within)
    first = ", ".join(f"{share:.1%}" for share in report.holdout_first_frame_within) or "none held out"
    print(f"fitted a pointer on {report.train_frames} frames ({report.feature_seconds:.0f} s of features, "
          f"{report.train_seconds:.0f} s of training); held-out estimates within 5 cm (target, goal): {within} "
          f"(first frames: {first}) -> {config.out}")
    if report.vl_questions:
        held = "none held out" if report.vl_holdout_within is None else f"{report.vl_holdout_within:.1%}"
        print(f"with {report.vl_questions} corpus questions; held-out ones whose thing is placed within 5 cm: {held}")
    return 0
