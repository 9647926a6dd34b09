"""Images -> pixel values: per-backbone resize and normalisation, exactly as the reference's processor."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from robovla.config import VLAConfig
from robovla.errors import RobovlaError

# Per-backbone normalisation constants as the reference's converter stores them (ImageNet values rounded to
# bfloat16 for DINOv2; 0.5 for SigLIP), keyed by timm id prefix.
_BACKBONE_NORMALIZATION = {
    "vit_large_patch14_reg4_dinov2": ((0.484375, 0.455078125, 0.40625), (0.228515625, 0.2236328125, 0.224609375)),
    "vit_so400m_patch14_siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class ImageProcessorConfig:
    """What `preprocessor_config.json` says, per backbone."""

    image_sizes: list[int] = field(default_factory=lambda: [224, 224])
    means: list[list[float]] = field(default_factory=lambda: [list(_IMAGENET[0]), [0.5, 0.5, 0.5]])
    stds: list[list[float]] = field(default_factory=lambda: [list(_IMAGENET[1]), [0.5, 0.5, 0.5]])
    resize_strategy: str = "resize-naive"  # or "letterbox"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.resize_strategy not in ("resize-naive", "letterbox"):
            raise RobovlaError(
                f"image_resize_strategy {self.resize_strategy!r} is not supported; use 'resize-naive' or 'letterbox'"
            )

    @classmethod
    def for_model(cls, config: VLAConfig) -> "ImageProcessorConfig":
        means, stds = [], []
        for timm_id in config.timm_model_ids[: config.num_backbones]:
            mean, std = next(
                (v for prefix, v in _BACKBONE_NORMALIZATION.items() if timm_id.startswith(prefix)), _IMAGENET
            )
            means.append(list(mean))
            stds.append(list(std))
        sizes = [config.image_sizes[min(i, len(config.image_sizes) - 1)] for i in range(config.num_backbones)]
        return cls(image_sizes=sizes, means=means, stds=stds, resize_strategy=config.image_resize_strategy)

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> "ImageProcessorConfig":
        """Reads `tvf_normalize_params` (the values the reference really uses), not the nominal means/stds."""
        data = copy.deepcopy(data)
        data.pop("auto_map", None)
        normalize = data.get("tvf_normalize_params")
        if normalize:
            means = [list(p["mean"]) for p in normalize]
            stds = [list(p["std"]) for p in normalize]
        else:
            means, stds = data.get("means"), data.get("stds")
        sizes = [int(s[-1]) for s in data.get("input_sizes", [[3, 224, 224]])]
        strategy = data.get("image_resize_strategy", "resize-naive")
        if data.get("tvf_do_letterbox"):
            strategy = "letterbox"
        if not means or not stds or len(means) != len(sizes) or len(stds) != len(sizes):
            raise RobovlaError("preprocessor_config.json: means/stds/input_sizes disagree in length")
        return cls(image_sizes=sizes, means=means, stds=stds, resize_strategy=strategy, extra=data)

    def to_hf_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        n = len(self.image_sizes)
        letterbox = self.resize_strategy == "letterbox"
        out.update(
            {
                "image_processor_type": "PrismaticImageProcessor",
                "processor_class": "PrismaticProcessor",
                "use_fused_vision_backbone": n == 2,
                "image_resize_strategy": self.resize_strategy,
                "input_sizes": [[3, s, s] for s in self.image_sizes],
                "interpolations": ["bicubic"] * n,
                "means": self.means,
                "stds": self.stds,
                "tvf_resize_params": [
                    {"size": [s, s], "interpolation": 3, "max_size": None, "antialias": True} for s in self.image_sizes
                ],
                "tvf_crop_params": [{"output_size": [s, s]} for s in self.image_sizes],
                "tvf_normalize_params": [
                    {"mean": m, "std": s, "inplace": False} for m, s in zip(self.means, self.stds)
                ],
                "tvf_do_letterbox": letterbox,
                "tvf_letterbox_fill": [int(255 * x) for x in self.means[0]] if letterbox else None,
            }
        )
        return out


def to_pil_rgb(image: Any, index: int | None = None) -> Image.Image:
    """Accept an HxWx3 uint8 array or a PIL image; anything else is a clear error."""
    where = "image" if index is None else f"image {index}"
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise RobovlaError(f"{where} must be an HxWx3 uint8 array or a PIL image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise RobovlaError(f"{where} must have shape HxWx3, got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise RobovlaError(f"{where} must have dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise RobovlaError(f"{where} is empty: shape {tuple(image.shape)}")
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def load_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 (clear error when it is not an image)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise RobovlaError(f"image file not found: {path}") from None
    except (OSError, ValueError) as error:
        raise RobovlaError(f"cannot decode image {path}: {error}") from None


class ImageTransform:
    """PIL bicubic (antialiased) resize per backbone, [0, 1] scaling, per-channel normalisation, channel concat."""

    def __init__(self, config: ImageProcessorConfig) -> None:
        self.config = config
        self._mean = [torch.tensor(m, dtype=torch.float32).view(3, 1, 1) for m in config.means]
        self._std = [torch.tensor(s, dtype=torch.float32).view(3, 1, 1) for s in config.stds]

    def _letterbox(self, image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
        w, h = image.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), fill)
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        return canvas

    def __call__(self, image: Any) -> torch.Tensor:
        """One image -> [3*k, S, S] float32."""
        pil = to_pil_rgb(image)
        if self.config.resize_strategy == "letterbox":
            pil = self._letterbox(pil, tuple(int(255 * x) for x in self.config.means[0]))
        parts = []
        resized_cache: dict[int, torch.Tensor] = {}
        for size, mean, std in zip(self.config.image_sizes, self._mean, self._std):
            if size not in resized_cache:
                resized = pil if pil.size == (size, size) else pil.resize((size, size), Image.Resampling.BICUBIC)
                array = np.array(resized, dtype=np.uint8)
                resized_cache[size] = torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
            parts.append((resized_cache[size] - mean) / std)
        return torch.cat(parts, dim=0)

    def batch(self, images: Sequence[Any]) -> torch.Tensor:
        return torch.stack([self(to_pil_rgb(im, i)) for i, im in enumerate(images)])
