"""`robovla train`: train a VLA from a preset (or continue from a checkpoint) on datasets or a mixture."""

from __future__ import annotations

import argparse

HELP = "Train a VLA on robot datasets (single process, or under torchrun with DDP/FSDP2)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robovla.train.config import add_arguments as add_config_arguments

    add_config_arguments(parser)


def run(args: argparse.Namespace, defaults: dict | None = None) -> int:
    from robovla.train import train
    from robovla.train.config import config_from_args

    summary = train(config_from_args(args, defaults))
    print(f"trained {summary.steps} steps in {summary.wall_seconds:.0f} s "
          f"({summary.samples_per_second:.1f} samples/s); checkpoint: {summary.checkpoint}")
    return 0
