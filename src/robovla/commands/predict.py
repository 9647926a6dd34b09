"""`robovla predict`: one action from image file(s) and an instruction."""

from __future__ import annotations

import argparse
import json

HELP = "Predict the action for image file(s) and an instruction with a checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder")
    parser.add_argument("--image", action="append", required=True,
                        help="image file (PNG/JPEG); repeat for a batch, one prediction per image")
    parser.add_argument("--camera", action="append", default=[], metavar="NAME=FILE",
                        help="another camera's image for a model that reads several (e.g. wrist_image=wrist.png); "
                             "the same for every --image")
    parser.add_argument("--instruction", required=True, help='e.g. "put the red cube in the blue bowl"')
    parser.add_argument("--unnorm-key", default=None, help="dataset whose statistics unnormalise the action")
    parser.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    parser.add_argument("--proprio", default=None,
                        help="robot state as comma-separated numbers (models trained with proprio need it)")
    parser.add_argument("--json", action="store_true", help="print JSON with action and action_token_ids")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import robovla
    from robovla.errors import RobovlaError

    if not args.instruction.strip():
        raise RobovlaError("--instruction is empty")
    images = [robovla.load_image_file(path) for path in args.image]
    proprio = None
    if args.proprio is not None:
        try:
            state = [float(x) for x in args.proprio.split(",")]
        except ValueError:
            raise RobovlaError(f"--proprio must be comma-separated numbers, got {args.proprio!r}") from None
        proprio = [state] * len(images)
    policy = robovla.Policy.from_pretrained(args.checkpoint, args.unnorm_key, dtype=args.dtype)
    if policy.recipe.proprio and proprio is None:
        raise RobovlaError("this checkpoint reads the robot state: pass proprio as --proprio x,y,...")
    others = {}
    for entry in args.camera:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise RobovlaError(f"--camera takes NAME=FILE, got {entry!r}")
        others[name] = robovla.load_image_file(path)
    camera = policy.recipe.cameras[0]
    prediction = policy.predict([{camera: image, **others, "instruction": args.instruction, "proprio": state}
                                 for image, state in zip(images, proprio or [None] * len(images))])
    if args.json:
        rows = [
            {"image": path, "action": chunk[0].tolist(), "action_token_ids": ids[0].tolist()}
            for path, chunk, ids in zip(args.image, prediction.actions, prediction.token_ids)
        ]
        if policy.recipe.action_chunk > 1:  # the whole chunk too, in execution order
            for row, chunk in zip(rows, prediction.actions):
                row["actions"] = chunk.tolist()
        if prediction.grounding is not None:  # where a grounding model says the named objects are
            for row, where in zip(rows, prediction.grounding):
                row["grounding"] = where.tolist()
        print(json.dumps(rows[0] if len(rows) == 1 else rows))
        return 0
    with np.printoptions(precision=5, suppress=True):
        for k, (path, action) in enumerate(zip(args.image, prediction.first)):
            where = "" if prediction.grounding is None else f"  (grounding {prediction.grounding[k]})"
            print(f"{path}: {action}{where}")
    return 0
