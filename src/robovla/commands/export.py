"""`robovla export`: a checkpoint's weights in another dtype, without its training state (for shipping)."""

from __future__ import annotations

import argparse
import json

from robovla.config import SELECTIONS

HELP = "Copy a checkpoint's model (weights, config, tokenizer, statistics) to a new folder, optionally in bf16."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (openvla-7b Hugging Face layout)")
    parser.add_argument("--out", required=True, help="new folder (written atomically; must not exist)")
    parser.add_argument("--dtype", default="bfloat16", help="weights dtype: bfloat16 (default, half size) or float32")
    parser.add_argument("--selection", choices=SELECTIONS, default=None,
                        help="how `predict` picks action tokens by default for the exported model "
                             "(default: keep the checkpoint's, greedy unless set)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import robovla
    from robovla.errors import RobovlaError
    from robovla.model.checkpoint import resolve_dtype

    out = Path(args.out)
    if out.exists():
        raise RobovlaError(f"{out} already exists: choose a new --out")
    dtype = resolve_dtype(args.dtype)
    model = robovla.load_pretrained(args.checkpoint, dtype=dtype)
    if args.selection:
        from dataclasses import replace

        model.set_recipe(replace(model.recipe, selection=args.selection))
    extras = {}
    config_file = Path(args.checkpoint) / "training_config.json"
    if config_file.exists():  # provenance: how the weights were trained
        extras["training_config.json"] = json.loads(config_file.read_text())
    folder = robovla.save_pretrained(model, out, dtype=dtype, extra_files=extras)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(f"exported {args.checkpoint} -> {folder} ({args.dtype}, {size:.1f} MB)")
    return 0
