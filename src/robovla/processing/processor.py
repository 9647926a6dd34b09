"""The token layout in both directions: observation -> model inputs, (observation, action) -> training example
with labels, generated ids -> actions. One chain for training, serving and evaluation; its settings travel with
the checkpoint (`preprocessor_config.json`, `tokenizer.json`, `norm_stats`, the recipe)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from robovla.config import Recipe, VLAConfig
from robovla.errors import RobovlaError
from robovla.processing.actions import ActionNormalizer, ActionTokenizer, resolve_unnorm_key
from robovla.processing.images import ImageProcessorConfig, ImageTransform
from robovla.processing.prediction import ActionPrediction
from robovla.processing.text import TextTokenizer, build_prompt

IGNORE_INDEX = -100


@dataclass
class PromptBatch:
    """Token ids of several prompts, right-aligned so every prompt ends at the last position."""

    input_ids: torch.Tensor  # [B, T] (left padding with pad_token_id)
    attention_mask: torch.Tensor  # [B, T] 1 for real tokens


@dataclass
class ModelInputs:
    """What the model reads for a batch of observations."""

    pixel_values: torch.Tensor  # [B, 3 * backbones, H, W]
    input_ids: torch.Tensor  # [B, T] prompts, left-padded, each starting with BOS
    attention_mask: torch.Tensor | None  # [B, T] 1 for real tokens; None when no prompt is padded

    def __len__(self) -> int:
        return self.input_ids.shape[0]


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

    def generated_length(self, unnorm_key: str | None) -> int:
        """Ids generated per observation: the grounding tokens, then K actions of D tokens."""
        return self.grounding_dim(unnorm_key) + self.action_chunk * self.normalizer(unnorm_key).action_dim

    def grounding_dim(self, unnorm_key: str | None) -> int:
        """How many grounding tokens this model generates before the action (0 for the reference layout)."""
        return self._vector_normalizer("grounding", unnorm_key)[1].action_dim if self.uses_grounding else 0

    def decode_prediction(self, generated: np.ndarray, unnorm_key: str | None) -> ActionPrediction:
        """Generated ids [B, G + K * D] (grounding tokens, then K actions of D tokens) -> `ActionPrediction`."""
        normalizer = self.normalizer(unnorm_key)
        n_grounding, chunk = self.grounding_dim(unnorm_key), self.action_chunk
        chunk_ids = generated[:, n_grounding:].reshape(len(generated), chunk, normalizer.action_dim)
        normalized = self.action_tokenizer.decode(chunk_ids)
        actions = normalizer.unnormalize(normalized)
        grounding = self.decode_grounding(generated[:, :n_grounding], unnorm_key) if n_grounding else None
        return ActionPrediction(actions, chunk_ids, normalized, grounding)

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

    def model_inputs(self, images: Sequence[Any], instructions: Sequence[str], proprio: Sequence[Any] | None = None,
                     unnorm_key: str | None = None) -> ModelInputs:
        """A batch of observations -> `ModelInputs` (the state is read only by a model whose recipe has proprio)."""
        if len(images) != len(instructions):
            raise RobovlaError(f"got {len(images)} images but {len(instructions)} instructions")
        self.normalizer(unnorm_key)  # an unknown dataset fails before any image work
        prompts = self.encode_prompts(instructions, proprio if self.uses_proprio else None, unnorm_key)
        mask = None if bool(prompts.attention_mask.all()) else prompts.attention_mask
        return ModelInputs(self.pixel_values(images), prompts.input_ids, mask)

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
