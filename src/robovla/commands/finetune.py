"""`robovla finetune --checkpoint PATH`: adapt a trained VLA to new data (LoRA by default)."""

from __future__ import annotations

import argparse

from robovla.commands import train as train_command

HELP = "Fine-tune a checkpoint on new datasets (default strategy: lora; see --strategy)."
DEFAULTS = {"strategy": "lora", "lr": 5e-4, "preset": None}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robovla.train.config import add_arguments as add_config_arguments

    add_config_arguments(parser, defaults=DEFAULTS)


def run(args: argparse.Namespace) -> int:
    from robovla.errors import RobovlaError

    if not args.checkpoint:
        raise RobovlaError("finetune needs --checkpoint PATH (use `robovla train` to start from a preset)")
    return train_command.run(args, defaults=DEFAULTS)
