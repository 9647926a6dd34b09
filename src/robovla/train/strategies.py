"""What trains: the reference's fine-tuning strategies as explicit parameter selections.

- full: everything.
- frozen-vision: projector + LLM.
- sandwich: vision + projector + the LLM's embeddings, last layer and LM head.
- last-layer: the LLM's embeddings, last layer and LM head.
- lora / qlora: low-rank adapters on every linear layer (peft, `all-linear`, alpha = min(rank, 16), gaussian
  init), base weights frozen (4-bit NF4 base for qlora, where bitsandbytes runs).

In every strategy the modules the forward pass never runs (each ViT's last block and final norm, SigLIP's
pooling head) stay frozen: they receive no gradient, and DDP requires every trainable parameter to get one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robovla.errors import RobovlaError
from robovla.model.vla import VLA
from robovla.train.config import TrainConfig


@dataclass
class StrategyReport:
    strategy: str
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / max(self.total, 1)

    def line(self) -> str:
        return f"strategy {self.strategy}: {self.trainable:,} of {self.total:,} parameters train ({self.fraction:.2%})"


def _llm_last_layer_modules(model: VLA) -> list[nn.Module]:
    lm = model.language_model
    return [lm.model.embed_tokens, lm.model.layers[-1], lm.lm_head]


def _recipe_modules(model: VLA) -> list[nn.Module]:
    """The recipe's own modules (parallel action positions and heads, the state projector): new with the recipe,
    so every strategy trains them in full, as OpenVLA-OFT trains its heads beside LoRA."""
    return [m for m in (model.action_queries, model.action_head, model.state_projector) if m is not None]


def _unused_modules(model: VLA) -> list[nn.Module]:
    """Modules the forward pass never reaches: they get no gradient (and so no optimizer state), so they stay
    frozen; an L1 action head says the actions, so the LM head is never used."""
    unused = list(model.vision_backbone.unused_modules())
    if model.action_head is not None:
        unused.append(model.language_model.lm_head)
    return unused


def _unused_parameter_ids(model: VLA) -> set[int]:
    return {id(p) for module in _unused_modules(model) for p in module.parameters()}


def select_trainable(model: VLA, strategy: str) -> None:
    """Set requires_grad for a non-LoRA strategy."""
    groups: dict[str, list[nn.Module]] = {
        "full": [model],
        "frozen-vision": [model.projector, model.language_model],
        "sandwich": [model.vision_backbone, model.projector, *_llm_last_layer_modules(model)],
        "last-layer": _llm_last_layer_modules(model),
    }
    if strategy not in groups:
        raise RobovlaError(f"unknown strategy {strategy!r}; valid: {', '.join(list(groups) + ['lora', 'qlora'])}")
    model.requires_grad_(False)
    for module in [*groups[strategy], *_recipe_modules(model)]:
        module.requires_grad_(True)
    unused = _unused_parameter_ids(model)
    for p in model.parameters():
        if id(p) in unused:
            p.requires_grad_(False)


def apply_lora(model: VLA, config: TrainConfig) -> nn.Module:
    """Wrap `model` with peft LoRA adapters (the reference's fine-tuning recipe)."""
    from peft import LoraConfig, get_peft_model

    if config.strategy == "qlora":
        quantize_base_4bit(model)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=min(config.lora_rank, 16),
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        init_lora_weights="gaussian" if config.lora_init == "gaussian" else True,
    )
    skipped = {id(m) for root in [*_unused_modules(model), *_recipe_modules(model)]
               for m in root.modules()}
    skipped_names = [name for name, m in model.named_modules() if id(m) in skipped and isinstance(m, nn.Linear)]
    lora.exclude_modules = skipped_names or None
    wrapped = get_peft_model(model, lora)
    for module in _recipe_modules(model):  # trained in full beside the adapters
        module.requires_grad_(True)
    return wrapped


def quantize_base_4bit(model: VLA) -> None:
    """Replace the LLM decoder's linear layers with bitsandbytes NF4 layers (QLoRA's frozen base; CUDA only)."""
    if model.device.type != "cuda":
        raise RobovlaError("qlora needs a CUDA GPU (bitsandbytes 4-bit); on this device use --strategy lora")
    try:
        import bitsandbytes as bnb
    except Exception as error:  # ImportError or a bitsandbytes backend error
        raise RobovlaError(f"qlora needs bitsandbytes with a working 4-bit backend: {error}") from None
    layers = model.language_model.model.layers
    for parent in list(layers.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                              compute_dtype=torch.bfloat16, quant_type="nf4")
                quantized.weight = bnb.nn.Params4bit(child.weight.data.cpu(), requires_grad=False, quant_type="nf4")
                if child.bias is not None:
                    quantized.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, child_name, quantized.to(model.device))


def apply_strategy(model: VLA, config: TrainConfig) -> tuple[nn.Module, StrategyReport]:
    """Freeze/unfreeze (or wrap with adapters) according to `config.strategy`."""
    total = sum(p.numel() for p in model.parameters())
    if config.strategy in ("lora", "qlora"):
        model.requires_grad_(False)
        wrapped: nn.Module = apply_lora(model, config)
    else:
        select_trainable(model, config.strategy)
        wrapped = model
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    if trainable == 0:
        raise RobovlaError(f"strategy {config.strategy!r} leaves no trainable parameters")
    return wrapped, StrategyReport(config.strategy, trainable, total)


def unwrap(model: nn.Module) -> VLA:
    """The VLA inside DDP / peft wrappers."""
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    if not isinstance(inner, VLA):
        raise TypeError(f"expected a VLA inside {type(model).__name__}")
    return inner


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights with LoRA folded in, in the reference key layout (the live model is left untouched)."""
    inner = getattr(model, "module", model)
    if not hasattr(inner, "get_base_model"):
        return unwrap(model).state_dict()
    merged: dict[str, torch.Tensor] = {}
    base = inner.get_base_model()
    lora_layers = {name: m for name, m in base.named_modules() if hasattr(m, "get_delta_weight")}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        clean = name.replace(".base_layer.", ".")
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        if owner in lora_layers and name.endswith("base_layer.weight"):
            layer = lora_layers[owner]
            tensor = tensor + sum(layer.get_delta_weight(a) for a in layer.active_adapters).to(tensor.dtype)
        merged[clean] = tensor.detach()
    return merged
