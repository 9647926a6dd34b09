"""`robovla <command>`: a thin layer over the Python API.

Each command lives in `robovla.commands.<name>` with `HELP`, `add_arguments(parser)` and `run(args) -> int`;
modules are imported only when their command runs, so `robovla --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from robovla.errors import RobovlaError

# command name -> module under robovla.commands (one line per command)
COMMANDS: dict[str, str] = {
    "info": "info",
    "predict": "predict",
    "train": "train",
    "finetune": "finetune",
    "eval": "eval",
    "collect": "collect",
    "collect-vl": "collect_vl",
    "serve": "serve",
    "export": "export",
    "fit-pointer": "fit_pointer",
    "experiment": "experiment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robovla", description="robovla: an open Vision-Language-Action stack.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"robovla.commands.{module_name}")
        # argparse %-formats a subcommand's help in the overview ("95% intervals" would break `robovla --help`)
        command_parser = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def quiet_third_party_import_noise() -> None:
    """transformers imports torchao when it is installed, and torch logs a deprecation line per enum it sees."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    quiet_third_party_import_noise()
    args = build_parser().parse_args(argv)
    args._argv = list(argv) if argv is not None else sys.argv[1:]  # what was typed, for commands that record it
    try:
        return int(args._run(args) or 0)
    except RobovlaError as error:
        print(f"robovla {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robovla {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
