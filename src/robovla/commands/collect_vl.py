"""`robovla collect-vl`: render the vision-language corpus (captions and questions about simulator scenes)."""

from __future__ import annotations

import argparse

HELP = ("render a vision-language corpus: tabletop scenes with every colour, shape and size word, captions and "
        "questions (colour, shape, size, cell, count) answered from the simulator's state")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="corpus folder to write (replaced atomically)")
    parser.add_argument("--scenes", type=int, default=500, help="scenes to render")
    parser.add_argument("--questions-per-scene", type=int, default=6, help="questions asked of each scene")
    parser.add_argument("--image-size", type=int, default=128, help="square image size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer.json whose vocabulary the corpus must fit (default: the tabletop presets')")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tokenizers import Tokenizer

    from robovla.data.vl_corpus import VLCorpusConfig, write_corpus
    from robovla.errors import RobovlaError
    from robovla.model.factory import packaged_tokenizer_path

    if args.image_size < 16:
        raise RobovlaError(f"--image-size must be >= 16, got {args.image_size}")
    path = Path(args.tokenizer) if args.tokenizer else packaged_tokenizer_path("tabletop-small")
    if not path.is_file():
        raise RobovlaError(f"--tokenizer {path}: no such file")
    config = VLCorpusConfig(scenes=args.scenes, questions_per_scene=args.questions_per_scene,
                            image_size=args.image_size, seed=args.seed)
    summary = write_corpus(Path(args.out), config, Tokenizer.from_file(str(path)), progress=not args.quiet)
    kinds = ", ".join(f"{kind} {n}" for kind, n in summary["kinds"].items())
    print(f"wrote {summary['examples']} questions about {summary['scenes']} scenes to {args.out} ({kinds})")
    return 0
