"""Vision backbone: one or two timm ViTs whose second-to-last block patch tokens are concatenated on channels.

The modules keep timm's parameter names, except LayerScale's `gamma`, which the reference stores as
`scale_factor`; we swap in a LayerScale with that name so our state dict *is* the reference key layout.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from robovla.config import VLAConfig


class LayerScale(nn.Module):
    """timm's LayerScale with the parameter named as in OpenVLA checkpoints."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


def _rename_layerscale(vit: nn.Module) -> None:
    from timm.layers import LayerScale as TimmLayerScale

    for block in vit.blocks:
        for name in ("ls1", "ls2"):
            old = getattr(block, name, None)
            if isinstance(old, TimmLayerScale):
                new = LayerScale(old.gamma.shape[0]).to(device=old.gamma.device, dtype=old.gamma.dtype)
                with torch.no_grad():
                    if old.gamma.device.type != "meta":
                        new.scale_factor.copy_(old.gamma)
                setattr(block, name, new)


def create_vit(timm_id: str, image_size: int, overrides: dict[str, Any], act_layer: str | None) -> nn.Module:
    """Build one ViT tower by timm id (random init; weights come from the checkpoint)."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "img_size": image_size}
    kwargs.update(overrides)
    if act_layer is not None:
        kwargs["act_layer"] = act_layer
    vit = timm.create_model(timm_id, **kwargs)
    _rename_layerscale(vit)
    return vit


def vit_patch_features(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch tokens after block depth-2 (0-based), no final norm, prefix tokens dropped: [B, N, D].

    The last block is never run: its output would be discarded.
    """
    x = vit.patch_embed(pixels)
    x = vit._pos_embed(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    for block in vit.blocks[: len(vit.blocks) - 1]:
        if getattr(vit, "grad_checkpointing", False) and torch.is_grad_enabled():
            x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x[:, vit.num_prefix_tokens :]


class VisionBackbone(nn.Module):
    """`featurizer` (DINOv2 for openvla-7b) and optionally `fused_featurizer` (SigLIP)."""

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        image_size = config.image_sizes[0]
        act_layers = list(config.timm_override_act_layers or []) + [None, None]
        self.featurizer = create_vit(config.timm_model_ids[0], image_size, config.backbone_kwargs(0), act_layers[0])
        self.fused_featurizer = (
            create_vit(config.timm_model_ids[1], config.image_sizes[-1], config.backbone_kwargs(1), act_layers[1])
            if config.use_fused_vision_backbone
            else None
        )

    @property
    def towers(self) -> list[nn.Module]:
        return [t for t in (self.featurizer, self.fused_featurizer) if t is not None]

    @property
    def embed_dim(self) -> int:
        return sum(t.embed_dim for t in self.towers)

    @property
    def num_patches(self) -> int:
        return self.featurizer.patch_embed.num_patches

    def unused_modules(self) -> list[nn.Module]:
        """Stored for checkpoint compatibility but never run: each tower's last block, final norm, pool head."""
        unused = []
        for tower in self.towers:
            unused += [tower.blocks[-1], tower.norm]
            if getattr(tower, "attn_pool", None) is not None:
                unused.append(tower.attn_pool)
        return unused

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3*k, H, W] (one 3-channel slice per tower, in tower order) -> [B, N, sum(D)]."""
        slices = torch.split(pixel_values, 3, dim=1)
        return torch.cat([vit_patch_features(t, x) for t, x in zip(self.towers, slices)], dim=2)
