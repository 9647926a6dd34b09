"""Build a VLA from a config or preset: randomly initialised, or on the meta device for inspection."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from robovla.config import VLAConfig, preset
from robovla.model.vla import VLA
from robovla.processing import TextTokenizer, VLAProcessor

# A Llama-2-format tokenizer (32000 + <PAD>) shipped with the package for presets built from scratch.
DEFAULT_TOKENIZER = "llama2-synthetic"


def packaged_tokenizer_path(name: str = DEFAULT_TOKENIZER) -> Path:
    return Path(str(resources.files("robovla") / "assets" / "tokenizers" / name / "tokenizer.json"))


def build_model(
    config: VLAConfig | str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    tokenizer: str | Path | None = None,
    norm_stats: dict[str, Any] | None = None,
    seed: int | None = 0,
) -> VLA:
    """A fresh model for `config` (a VLAConfig or preset name).

    On device "meta" no memory is allocated: use it to inspect the full-size architecture.
    """
    config = preset(config) if isinstance(config, str) else config
    if norm_stats is not None:
        config.norm_stats = norm_stats
    if seed is not None and str(device) != "meta":
        torch.manual_seed(seed)
    with torch.device(device):
        model = VLA(config)
    from robovla.model.checkpoint import resolve_dtype

    model = model.to(dtype=resolve_dtype(dtype))
    if str(device) == "meta":
        return model
    tokenizer = tokenizer or packaged_tokenizer_path(config.extra.get("robovla_tokenizer", DEFAULT_TOKENIZER))
    text_tokenizer = TextTokenizer(tokenizer, config.text_config.pad_token_id)
    model.processor = VLAProcessor.for_model(config, text_tokenizer)
    return model


def parameter_counts(model: VLA) -> dict[str, int]:
    """Parameters per component and in total (works on the meta device)."""

    def count(module: torch.nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    vision = model.vision_backbone
    counts = {
        "vision_backbone.featurizer": count(vision.featurizer),
        "vision_backbone.fused_featurizer": count(vision.fused_featurizer),
        "projector": count(model.projector),
        "language_model": count(model.language_model),
    }
    for name in ("grounding_pointer", "state_projector", "action_queries", "action_head"):  # the recipe's parts
        if getattr(model, name) is not None:
            counts[name] = count(getattr(model, name))
    counts["total"] = sum(counts.values())
    return counts
