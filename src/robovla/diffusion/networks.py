"""Diffusion Policy's networks: a GroupNorm ResNet with spatial-softmax keypoints per camera, and the 1-D
conditional U-Net that denoises an action sequence under FiLM conditioning.

Batch statistics do not suit a policy trained with EMA weights and small batches, so the ResNet's BatchNorm
becomes GroupNorm; global average pooling would discard where things are, so spatial softmax returns each
keypoint's expected image position instead (Diffusion Policy, section IV-B).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, ResNet


class SpatialSoftmax(nn.Module):
    """[B, C, H, W] -> [B, 2K]: a 1x1 conv to K maps, a softmax over each map's positions, expected (x, y)."""

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels, keypoints, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.project(features)
        batch, keypoints, height, width = maps.shape
        weights = maps.flatten(2).softmax(dim=-1).view(batch, keypoints, height, width)
        ys = torch.linspace(-1.0, 1.0, height, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, width, device=maps.device, dtype=maps.dtype)
        x = (weights.sum(dim=2) * xs).sum(dim=-1)
        y = (weights.sum(dim=3) * ys).sum(dim=-1)
        return torch.stack([x, y], dim=-1).flatten(1)


class ImageEncoder(nn.Module):
    """One camera: torchvision's ResNet (BasicBlocks, GroupNorm) up to its last stage -> keypoints -> [B, dim]."""

    def __init__(self, layers: tuple[int, ...], width: int, keypoints: int, dim: int) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"a ResNet has 4 stages, got {len(layers)} block counts")
        resnet = _group_norm_resnet(layers, width)
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])  # without the pooling and the classifier
        self.keypoints = SpatialSoftmax(width * 8, keypoints)
        self.out = nn.Sequential(nn.Linear(2 * keypoints, dim), nn.ReLU())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.keypoints(self.trunk(images)))


def _group_norm_resnet(layers: tuple[int, ...], width: int) -> ResNet:
    """torchvision's ResNet of BasicBlocks with GroupNorm (16 channels a group) and `width` channels in its first
    stage (64: ResNet-18's; its `width_per_group` only widens bottleneck blocks, so the stem and stages are
    rebuilt at the given width)."""
    def norm(channels: int) -> nn.GroupNorm:
        return nn.GroupNorm(max(1, channels // 16), channels)

    resnet = ResNet(BasicBlock, list(layers), norm_layer=norm)
    resnet.inplanes = width
    resnet.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    resnet.bn1 = norm(width)
    resnet.layer1 = resnet._make_layer(BasicBlock, width, layers[0])
    resnet.layer2 = resnet._make_layer(BasicBlock, width * 2, layers[1], stride=2)
    resnet.layer3 = resnet._make_layer(BasicBlock, width * 4, layers[2], stride=2)
    resnet.layer4 = resnet._make_layer(BasicBlock, width * 8, layers[3], stride=2)
    return resnet


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the noise level [B] -> [B, dim] (the transformer's positional code)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / max(half - 1, 1))
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvBlock(nn.Sequential):
    def __init__(self, inputs: int, outputs: int, kernel_size: int, groups: int) -> None:
        super().__init__(nn.Conv1d(inputs, outputs, kernel_size, padding=kernel_size // 2),
                         nn.GroupNorm(groups, outputs), nn.Mish())


class ResidualFiLMBlock(nn.Module):
    """Two conv blocks; the condition scales and shifts the first one's output per channel (FiLM)."""

    def __init__(self, inputs: int, outputs: int, condition: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.first = ConvBlock(inputs, outputs, kernel_size, groups)
        self.second = ConvBlock(outputs, outputs, kernel_size, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(condition, 2 * outputs))
        self.skip = nn.Conv1d(inputs, outputs, 1) if inputs != outputs else nn.Identity()

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(condition)[..., None].chunk(2, dim=1)
        hidden = self.first(x) * scale + shift
        return self.second(hidden) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Noisy actions [B, T, A] + noise level [B] + condition [B, C] -> predicted noise [B, T, A].

    Each level has two FiLM blocks, then halves T (but the last); the way up concatenates the skip connections.
    """

    def __init__(self, action_dim: int, condition_dim: int, down_dims: tuple[int, ...], kernel_size: int,
                 groups: int, timestep_dim: int) -> None:
        super().__init__()
        self.timestep_dim = timestep_dim
        self.timestep_mlp = nn.Sequential(nn.Linear(timestep_dim, timestep_dim * 4), nn.Mish(),
                                          nn.Linear(timestep_dim * 4, timestep_dim))
        cond = timestep_dim + condition_dim
        widths = [action_dim, *down_dims]
        self.down = nn.ModuleList()
        for level, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:])):
            last = level == len(down_dims) - 1
            self.down.append(nn.ModuleList([
                ResidualFiLMBlock(inputs, outputs, cond, kernel_size, groups),
                ResidualFiLMBlock(outputs, outputs, cond, kernel_size, groups),
                nn.Conv1d(outputs, outputs, 3, stride=2, padding=1) if not last else nn.Identity(),
            ]))
        middle = down_dims[-1]
        self.middle = nn.ModuleList([ResidualFiLMBlock(middle, middle, cond, kernel_size, groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for inputs, outputs in zip(reversed(down_dims[1:]), reversed(down_dims[:-1])):
            self.up.append(nn.ModuleList([
                ResidualFiLMBlock(inputs * 2, outputs, cond, kernel_size, groups),
                ResidualFiLMBlock(outputs, outputs, cond, kernel_size, groups),
                nn.ConvTranspose1d(outputs, outputs, 4, stride=2, padding=1),
            ]))
        self.final = nn.Sequential(ConvBlock(down_dims[0], down_dims[0], kernel_size, groups),
                                   nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, actions: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.timestep_mlp(timestep_embedding(timesteps, self.timestep_dim)), condition], dim=-1)
        x = actions.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down:
            x = second(first(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for block in self.middle:
            x = block(x, cond)
        for first, second, upsample in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = upsample(second(first(x, cond), cond))
        return self.final(x).transpose(1, 2)


def masked_mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D] averaged over the positions where mask [B, L] is 1 (a row with none gives zeros)."""
    weights = mask.to(embeddings.dtype)[..., None]
    return (embeddings * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

