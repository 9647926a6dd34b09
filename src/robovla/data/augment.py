"""Training-time image augmentation (seeded) and the matching evaluation crop, on uint8 HxWx3 images.

Follows the reference's order: random resized crop (90% area, square), brightness 0.2, contrast [0.8, 1.2],
saturation [0.8, 1.2], hue 0.05. Output keeps the input size; the model's processing chain resizes and
normalizes afterwards, so these run before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    crop_area: float = 0.9
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.05


NO_CROP = AugmentConfig(crop_area=1.0)  # the colour jitter alone: for frames a policy will see uncropped


def _to_tensor(image: np.ndarray | Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {array.dtype} {array.shape}")
    return torch.from_numpy(np.array(array)).permute(2, 0, 1)  # a copy: inputs may be read-only


def _to_array(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).contiguous().numpy()


def _uniform(rng: torch.Generator | np.random.Generator, lo: float, hi: float) -> float:
    if isinstance(rng, np.random.Generator):
        return float(rng.uniform(lo, hi))
    return lo + (hi - lo) * float(torch.rand((), generator=rng))


class TrainAugment:
    """Random crop + colour jitter; draws from `rng` (a torch.Generator or numpy Generator) for each image."""

    def __init__(self, config: AugmentConfig = AugmentConfig()) -> None:
        self.config = config

    def __call__(self, image: np.ndarray | Image.Image, rng: torch.Generator | np.random.Generator) -> np.ndarray:
        c = self.config
        x = _to_tensor(image)
        h, w = x.shape[-2:]
        side = min(h, w) * math.sqrt(c.crop_area)
        crop = int(round(side))
        top = int(round(_uniform(rng, 0, h - crop)))
        left = int(round(_uniform(rng, 0, w - crop)))
        x = F.resized_crop(x, top, left, crop, crop, [h, w], antialias=True)
        x = F.adjust_brightness(x, _uniform(rng, 1 - c.brightness, 1 + c.brightness))
        x = F.adjust_contrast(x, _uniform(rng, *c.contrast))
        x = F.adjust_saturation(x, _uniform(rng, *c.saturation))
        x = F.adjust_hue(x, _uniform(rng, -c.hue, c.hue))
        return _to_array(x)


def center_crop(image: np.ndarray | Image.Image, area: float = 0.9) -> np.ndarray:
    """Evaluation counterpart of the training crop: the central square of `area`, resized back."""
    x = _to_tensor(image)
    h, w = x.shape[-2:]
    crop = int(round(min(h, w) * math.sqrt(area)))
    x = F.resized_crop(x, (h - crop) // 2, (w - crop) // 2, crop, crop, [h, w], antialias=True)
    return _to_array(x)
