"""`robovla info`: what a checkpoint or preset contains, without running it."""

from __future__ import annotations

import argparse
import json

HELP = "Show parameter counts, shapes and norm_stats keys of a checkpoint folder or a preset."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("path", nargs="?", help="checkpoint folder (openvla-7b Hugging Face layout)")
    source.add_argument("--preset", help="a named preset, built on the meta device (no memory, no weights)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def describe(model) -> dict:
    """A JSON-able summary of a model's architecture and action space."""
    from robovla import parameter_counts
    from robovla.config import DATA_SEEN_KEY

    config = model.config
    vision = model.vision_backbone
    text = config.text_config
    return {
        "parameters": parameter_counts(model),
        "vision": [
            {"timm_model_id": timm_id, "embed_dim": t.embed_dim, "depth": len(t.blocks),
             "feature_block": len(t.blocks) - 2, "num_prefix_tokens": t.num_prefix_tokens}
            for timm_id, t in zip(config.timm_model_ids, vision.towers)
        ],
        "num_patches": vision.num_patches,
        "fused_feature_dim": vision.embed_dim,
        "image_sizes": config.image_sizes,
        "llm": {"hidden_size": text.hidden_size, "num_hidden_layers": text.num_hidden_layers,
                "num_attention_heads": text.num_attention_heads, "vocab_size": text.vocab_size},
        "action_token_ids": [config.action_vocab_size - config.n_action_bins, config.action_vocab_size - 1],
        "norm_stats_keys": sorted(config.norm_stats or {}),
        "data_seen": config.extra.get(DATA_SEEN_KEY, []),
    }


def run(args: argparse.Namespace) -> int:
    import robovla

    if args.preset:
        model = robovla.build_model(args.preset, device="meta")
        name = f"preset {args.preset}"
    else:
        model = robovla.load_pretrained(args.path)
        name = args.path
    summary = describe(model)
    if args.json:
        print(json.dumps({"source": name, **summary}, indent=2))
        return 0
    print(f"{name}")
    for component, count in summary["parameters"].items():
        print(f"  {component:<34} {count:>15,}")
    for tower in summary["vision"]:
        print(f"  vision {tower['timm_model_id']}: width {tower['embed_dim']}, depth {tower['depth']}, "
              f"features from block {tower['feature_block']}")
    llm = summary["llm"]
    print(f"  patches {summary['num_patches']} x {summary['fused_feature_dim']} -> llm {llm['hidden_size']} wide, "
          f"{llm['num_hidden_layers']} layers, vocab {llm['vocab_size']}")
    first, last = summary["action_token_ids"]
    print(f"  action tokens {first}..{last}; image size {summary['image_sizes']}")
    print(f"  norm_stats keys: {', '.join(summary['norm_stats_keys']) or '(none)'}")
    for run in summary["data_seen"]:  # the training runs behind the checkpoint, oldest first
        samples = ", ".join(f"{name} {count:,}" for name, count in run["samples"].items())
        print(f"  trained: {run['stage']}, {run['steps']} steps; samples drawn: {samples}")
    return 0
