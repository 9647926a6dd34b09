"""The one processing chain shared by training, serving and evaluation.

image(s) -> per-backbone resize + normalise -> pixel_values; instruction -> prompt -> token ids; actions <->
normalised values <-> action token ids. Its settings are saved beside the weights (`preprocessor_config.json`,
`tokenizer.json`, `norm_stats`), so a checkpoint is self-describing.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from robovla.config import Recipe, VLAConfig
from robovla.errors import RobovlaError
from robovla.model.action_tokenizer import ActionTokenizer
from robovla.model.normalization import ActionNormalizer, resolve_unnorm_key

IGNORE_INDEX = -100
PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"

# Per-backbone normalisation constants as the reference's converter stores them (ImageNet values rounded to
# bfloat16 for DINOv2; 0.5 for SigLIP), keyed by timm id prefix.
_BACKBONE_NORMALIZATION = {
    "vit_large_patch14_reg4_dinov2": ((0.484375, 0.455078125, 0.40625), (0.228515625, 0.2236328125, 0.224609375)),
    "vit_so400m_patch14_siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def build_prompt(instruction: str) -> str:
    """The prompt every reference caller uses (instruction lower-cased, one newline, no trailing space)."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise RobovlaError("instruction must be a non-empty string")
    return PROMPT_TEMPLATE.format(instruction=instruction.lower())


# ------------------------------------------------------------------------------------------------------ images
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


# --------------------------------------------------------------------------------------------------- tokenizer
class TextTokenizer:
    """The checkpoint's fast tokenizer (`tokenizer.json`, read with the `tokenizers` library; no remote code)."""

    def __init__(self, tokenizer_json: str | Path, pad_token_id: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.path = Path(tokenizer_json)
        try:
            self._tok = Tokenizer.from_file(str(self.path))
        except Exception as error:  # tokenizers raises a bare Exception on malformed files
            raise RobovlaError(f"cannot read tokenizer {self.path}: {error}") from None
        self.bos_token_id = self._required_id("<s>")
        self.eos_token_id = self._required_id("</s>")
        pad = self._tok.token_to_id("<PAD>")
        self.pad_token_id = pad if pad is not None else pad_token_id
        # The bare word-boundary piece ("▁", id 29871 in Llama-2) that precedes the action tokens.
        self.space_token_id = self._required_id("\u2581")

    def _required_id(self, token: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise RobovlaError(f"tokenizer {self.path} has no {token!r} token")
        return token_id

    def __len__(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids with BOS prepended (the checkpoint's post-processor) and no EOS."""
        ids = self._tok.encode(text).ids
        if not ids or ids[0] != self.bos_token_id:
            ids = [self.bos_token_id] + ids
        return ids

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in ids]

    def save(self, folder: Path) -> None:
        self._tok.save(str(folder / "tokenizer.json"))


# --------------------------------------------------------------------------------------------------- the chain
@dataclass
class PromptBatch:
    """Token ids of several prompts, right-aligned so every prompt ends at the last position."""

    input_ids: torch.Tensor  # [B, T] (left padding with pad_token_id)
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens


class VLAProcessor:
    """Images + instructions -> model inputs; generated tokens -> actions; and training examples."""

    def __init__(
        self,
        image_config: ImageProcessorConfig,
        tokenizer: TextTokenizer,
        action_tokenizer: ActionTokenizer,
        norm_stats: dict[str, Any] | None,
        recipe: Recipe | None = None,
    ) -> None:
        self.image_config = image_config
        self.image_transform = ImageTransform(image_config)
        self.tokenizer = tokenizer
        self.action_tokenizer = action_tokenizer
        self.norm_stats = norm_stats or {}
        self.recipe = recipe or Recipe()  # the model's (VLA.set_recipe keeps the two the same object)

    @classmethod
    def for_model(cls, config: VLAConfig, tokenizer: TextTokenizer, image_config: ImageProcessorConfig | None = None):
        return cls(
            image_config or ImageProcessorConfig.for_model(config),
            tokenizer,
            ActionTokenizer(config.action_vocab_size, config.n_action_bins),
            config.norm_stats,
            config.recipe,
        )

    @property
    def uses_proprio(self) -> bool:
        return self.recipe.proprio

    @property
    def uses_grounding(self) -> bool:
        return self.recipe.grounding

    @property
    def action_chunk(self) -> int:
        return self.recipe.action_chunk

    def normalizer(self, unnorm_key: str | None) -> ActionNormalizer:
        return ActionNormalizer.from_norm_stats(self.norm_stats, unnorm_key)

    def _vector_normalizer(self, field: str, unnorm_key: str | None) -> tuple[str, ActionNormalizer]:
        """The q01/q99 normaliser of a non-action vector (`proprio`, `grounding`) of one dataset."""
        key = resolve_unnorm_key(self.norm_stats, unnorm_key)
        stats = self.norm_stats[key].get(field)
        if not stats:
            raise RobovlaError(
                f"norm_stats[{key!r}] has no {field} statistics, but this model reads or predicts {field}"
            )
        # a dim that never varies in the data (a fixed tilt) passes raw instead of dividing by ~0
        spread = np.asarray(stats["q99"], dtype=np.float64) - np.asarray(stats["q01"], dtype=np.float64)
        return key, ActionNormalizer({"q01": stats["q01"], "q99": stats["q99"], "mask": (spread > 1e-6).tolist()})

    def _vector_ids(self, field: str, values: Any, unnorm_key: str | None) -> list[int]:
        key, normalizer = self._vector_normalizer(field, unnorm_key)
        vector = np.asarray(values, dtype=np.float64)
        if vector.shape != (normalizer.action_dim,):
            raise RobovlaError(
                f"{field} must be a vector of {normalizer.action_dim} numbers for {key!r}, "
                f"got shape {tuple(vector.shape)}"
            )
        if not np.isfinite(vector).all():
            raise RobovlaError(f"{field} has NaN or infinite values")
        return self.action_tokenizer.encode(normalizer.normalize(vector)).tolist()

    def proprio_ids(self, proprio: Any, unnorm_key: str | None) -> list[int]:
        """The robot state as tokens: normalised with the dataset's proprio q01/q99, binned like actions."""
        return self._vector_ids("proprio", proprio, unnorm_key)

    def grounding_ids(self, grounding: Any, unnorm_key: str | None) -> list[int]:
        """Grounding labels (where the named objects are) as tokens, binned like actions."""
        return self._vector_ids("grounding", grounding, unnorm_key)

    def forced_grounding_ids(self, grounding: Any, batch: int, unnorm_key: str | None) -> np.ndarray:
        """[B, G] given grounding values (NaN: the model chooses) -> ids to force, -1 where the model chooses."""
        if not self.uses_grounding:
            raise RobovlaError("this model has no grounding tokens: it cannot be given grounding")
        key, normalizer = self._vector_normalizer("grounding", unnorm_key)
        values = np.asarray(grounding, dtype=np.float64)
        if values.shape != (batch, normalizer.action_dim):
            raise RobovlaError(f"grounding must be [{batch}, {normalizer.action_dim}] for {key!r} (NaN where the "
                               f"model chooses), got shape {tuple(values.shape)}")
        if np.isinf(values).any():
            raise RobovlaError("grounding has infinite values")
        given = ~np.isnan(values)
        ids = self.action_tokenizer.encode(normalizer.normalize(np.where(given, values, 0.0)))
        return np.where(given, ids, -1).astype(np.int64)

    def grounding_dim(self, unnorm_key: str | None) -> int:
        """How many grounding tokens this model generates before the action (0 for the reference layout)."""
        return self._vector_normalizer("grounding", unnorm_key)[1].action_dim if self.uses_grounding else 0

    def decode_grounding(self, token_ids: np.ndarray, unnorm_key: str | None) -> np.ndarray:
        """[B, G] generated grounding ids -> positions in the dataset's units."""
        return self._vector_normalizer("grounding", unnorm_key)[1].unnormalize(self.action_tokenizer.decode(token_ids))

    def prompt_ids(self, instruction: str, proprio: Any = None, unnorm_key: str | None = None) -> list[int]:
        """BOS + prompt (+ state tokens when the model reads proprio) + the word-boundary token before actions."""
        ids = self.tokenizer.encode(build_prompt(instruction))
        if self.uses_proprio:
            if proprio is None:
                raise RobovlaError("this model reads the robot state: pass proprio (the observation's state vector)")
            if ids[-1] == self.tokenizer.space_token_id:
                ids.pop()
            ids += self.proprio_ids(proprio, unnorm_key)
        if ids[-1] != self.tokenizer.space_token_id:
            ids.append(self.tokenizer.space_token_id)
        return ids

    def pad_left(self, sequences: Sequence[Sequence[int]]) -> PromptBatch:
        length = max(len(s) for s in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(sequences), length), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, length - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, length - len(seq) :] = 1
        return PromptBatch(ids, mask)

    def encode_prompts(
        self, instructions: Sequence[str], proprio: Sequence[Any] | None = None, unnorm_key: str | None = None
    ) -> PromptBatch:
        if proprio is not None and len(proprio) != len(instructions):
            raise RobovlaError(f"got {len(proprio)} proprio vectors but {len(instructions)} instructions")
        states = list(proprio) if proprio is not None else [None] * len(instructions)
        return self.pad_left([self.prompt_ids(text, state, unnorm_key) for text, state in zip(instructions, states)])

    def pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        return self.image_transform.batch(images)

    def decode_actions(self, token_ids: np.ndarray, unnorm_key: str | None) -> np.ndarray:
        """[B, action_dim] generated ids -> unnormalised float64 actions."""
        return self.normalizer(unnorm_key).unnormalize(self.action_tokenizer.decode(token_ids))

    def training_example(
        self,
        image: Any,
        instruction: str,
        action: np.ndarray,
        unnorm_key: str | None,
        proprio: Any = None,
        grounding: Any = None,
    ) -> dict:
        """One supervised example: prompt + "▁" (+ grounding tokens) + action tokens + EOS; only the tokens after
        the prompt are labelled. `action` is [D], or [K, D] for a model that predicts chunks of K actions."""
        action = np.asarray(action)
        if action.shape[:-1] != ((self.action_chunk,) if self.action_chunk > 1 else ()):
            raise RobovlaError(f"this model predicts {self.action_chunk} action(s) per step, got actions of shape "
                               f"{tuple(action.shape)}")
        normalized = self.normalizer(unnorm_key).normalize(action)
        target_ids = self.action_tokenizer.encode(normalized).reshape(-1).tolist() + [self.tokenizer.eos_token_id]
        if self.uses_grounding:
            if grounding is None:
                raise RobovlaError("this model predicts grounding tokens, but the dataset has no grounding labels "
                                   "(collect it again with this version of `robovla collect`)")
            target_ids = self.grounding_ids(grounding, unnorm_key) + target_ids
        input_ids = self.prompt_ids(instruction, proprio, unnorm_key) + target_ids
        labels = [IGNORE_INDEX] * (len(input_ids) - len(target_ids)) + target_ids
        return {
            "pixel_values": self.image_transform(image),
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Training examples -> one batch (prompts left-padded, labels aligned with their ids)."""
        batch = self.pad_left([e["input_ids"].tolist() for e in examples])
        labels = torch.full_like(batch.input_ids, IGNORE_INDEX)
        for row, example in enumerate(examples):
            labels[row, labels.shape[1] - example["labels"].shape[0] :] = example["labels"]
        mask = None if bool(batch.attention_mask.all()) else batch.attention_mask
        return {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "input_ids": batch.input_ids,
            "attention_mask": mask,
            "labels": labels,
        }

    # ------------------------------------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        (folder / "preprocessor_config.json").write_text(json.dumps(self.image_config.to_hf_dict(), indent=2))
        self.tokenizer.save(folder)
