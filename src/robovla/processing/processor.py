"""The token layout in both directions: observation -> model inputs, (observation, action) -> training example
with labels, generated ids -> actions. One chain for training, serving and evaluation; its settings travel with
the checkpoint (`preprocessor_config.json`, `tokenizer.json`, `norm_stats`, the recipe)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from robovla.config import Recipe, VLAConfig
from robovla.errors import RobovlaError
from robovla.processing.actions import ActionNormalizer, ActionTokenizer, vector_normalizer
from robovla.processing.images import ImageProcessorConfig, ImageTransform
from robovla.processing.prediction import ActionPrediction
from robovla.processing.text import TextTokenizer, build_prompt, build_vl_prompt

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
    state: torch.Tensor | None = None  # [B, state_dim] normalised robot state, for a recipe's state projector

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

    @property
    def cameras(self) -> tuple[str, ...]:
        """The images each observation carries, in the recipe's order (what training data must provide)."""
        return tuple(self.recipe.cameras)

    def normalizer(self, unnorm_key: str | None) -> ActionNormalizer:
        return ActionNormalizer.from_norm_stats(self.norm_stats, unnorm_key)

    def _vector_normalizer(self, field: str, unnorm_key: str | None) -> tuple[str, ActionNormalizer]:
        return vector_normalizer(self.norm_stats, field, unnorm_key)

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

    def check_proprio(self, proprio: Any, unnorm_key: str | None) -> None:
        """Raise a RobovlaError when `proprio` is not a state this model can read for the dataset."""
        self.proprio_ids(proprio, unnorm_key)

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
        if self.recipe.state_as_prompt_tokens:
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
        """One image per observation, or with several cameras a dict keyed by camera name (or a tuple in the
        recipe's camera order) per observation -> [B, cameras * 3k, H, W], the cameras in the recipe's order."""
        cameras = self.recipe.cameras
        rows = [self.camera_images(k, image) for k, image in enumerate(images)]
        return torch.cat([self.image_transform.batch([row[c] for row in rows]) for c in range(len(cameras))], dim=1)

    def camera_images(self, index: int, image: Any) -> list[Any]:
        """One observation's images in the recipe's camera order; a missing camera is an error naming it."""
        cameras = self.recipe.cameras
        if isinstance(image, Mapping):
            missing = [c for c in cameras if image.get(c) is None]
            if missing:
                raise RobovlaError(f"observation {index} has no {', '.join(map(repr, missing))} camera image (this "
                                   f"model reads {', '.join(cameras)})")
            return [image[c] for c in cameras]
        if len(cameras) == 1:
            return [image]
        if isinstance(image, (list, tuple)) and len(image) == len(cameras):
            return list(image)
        raise RobovlaError(f"observation {index}: this model reads {len(cameras)} cameras ({', '.join(cameras)}); give "
                           f"a dict keyed by camera name, or a tuple in that order")

    def normalized_state(self, proprio: Any, unnorm_key: str | None) -> np.ndarray:
        """The robot state for a state projector: q01/q99-normalised to [-1, 1] with the dataset's statistics."""
        key, normalizer = self._vector_normalizer("proprio", unnorm_key)
        vector = np.asarray(proprio, dtype=np.float64)
        width = self.recipe.state_dim
        if vector.shape != (width,) or normalizer.action_dim != width:
            got = vector.shape[0] if vector.ndim == 1 else tuple(vector.shape)
            raise RobovlaError(f"proprio has {got} numbers, but this model's state projector reads {width} (the "
                               f"statistics of {key!r} describe {normalizer.action_dim})")
        if not np.isfinite(vector).all():
            raise RobovlaError("proprio has NaN or infinite values")
        return normalizer.normalize(vector).astype(np.float32)

    def model_inputs(self, images: Sequence[Any], instructions: Sequence[str], proprio: Sequence[Any] | None = None,
                     unnorm_key: str | None = None) -> ModelInputs:
        """A batch of observations -> `ModelInputs` (the state is read only by a model whose recipe has proprio:
        as prompt tokens, or normalised for its state projector)."""
        if len(images) != len(instructions):
            raise RobovlaError(f"got {len(images)} images but {len(instructions)} instructions")
        self.normalizer(unnorm_key)  # an unknown dataset fails before any image work
        state = None
        if self.recipe.state_tokens:
            if proprio is None or len(proprio) != len(instructions):
                raise RobovlaError("this model reads the robot state: pass proprio, one vector per observation")
            state = torch.as_tensor(np.stack([self.normalized_state(p, unnorm_key) for p in proprio]))
        prompts = self.encode_prompts(instructions, proprio if self.recipe.state_as_prompt_tokens else None,
                                      unnorm_key)
        mask = None if bool(prompts.attention_mask.all()) else prompts.attention_mask
        return ModelInputs(self.pixel_values(images), prompts.input_ids, mask, state)

    def parallel_prediction(self, token_ids: np.ndarray | torch.Tensor | None,
                            normalized: np.ndarray | torch.Tensor | None, unnorm_key: str | None) -> ActionPrediction:
        """A parallel pass's bins [B, K, D] (discrete head) or normalised values [B, K, D] (L1 head) ->
        `ActionPrediction` (the L1 head's values also come back as the bins they fall in)."""
        normalizer = self.normalizer(unnorm_key)
        if normalizer.action_dim != self.recipe.action_dim:
            raise RobovlaError(f"this model says {self.recipe.action_dim}-D actions, but the statistics of "
                               f"{unnorm_key!r} describe {normalizer.action_dim}-D ones")
        if token_ids is not None:
            token_ids = np.asarray(token_ids.cpu() if isinstance(token_ids, torch.Tensor) else token_ids)
            normalized = self.action_tokenizer.decode(token_ids)
        else:
            assert normalized is not None
            normalized = np.asarray(normalized.cpu() if isinstance(normalized, torch.Tensor) else normalized,
                                    dtype=np.float64)
            token_ids = self.action_tokenizer.encode(normalized)
        return ActionPrediction(normalizer.unnormalize(normalized), token_ids, normalized)

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
        the prompt are labelled. `action` is [D], or [K, D] for a model that predicts chunks of K actions.
        `image` is one image, or with several cameras a dict keyed by camera name.

        The parallel recipe's example is the prompt alone, with its targets beside it: `labels` the K x D action
        bins and `action_targets` the normalised actions [K, D]."""
        action = np.asarray(action)
        if action.shape[:-1] != ((self.action_chunk,) if self.action_chunk > 1 else ()):
            raise RobovlaError(f"this model predicts {self.action_chunk} action(s) per step, got actions of shape "
                               f"{tuple(action.shape)}")
        normalized = self.normalizer(unnorm_key).normalize(action)
        pixel_values = torch.cat([self.image_transform(one) for one in self.camera_images(0, image)], dim=0)
        example: dict[str, torch.Tensor] = {"pixel_values": pixel_values}
        if self.recipe.state_tokens:
            if proprio is None:
                raise RobovlaError("this model reads the robot state, but the example has none")
            example["state"] = torch.as_tensor(self.normalized_state(proprio, unnorm_key))
        if self.recipe.parallel:
            if normalized.shape[-1] != self.recipe.action_dim:
                raise RobovlaError(f"this model says {self.recipe.action_dim}-D actions, but {unnorm_key!r} has "
                                   f"{normalized.shape[-1]}-D ones")
            chunk = normalized.reshape(self.action_chunk, -1)
            example["input_ids"] = torch.tensor(self.prompt_ids(instruction, proprio, unnorm_key), dtype=torch.long)
            example["labels"] = torch.as_tensor(self.action_tokenizer.encode(chunk).reshape(-1), dtype=torch.long)
            example["action_targets"] = torch.as_tensor(chunk, dtype=torch.float32)
            return example
        target_ids = self.action_tokenizer.encode(normalized).reshape(-1).tolist() + [self.tokenizer.eos_token_id]
        if self.uses_grounding:
            if grounding is None:
                raise RobovlaError("this model predicts grounding tokens, but the dataset has no grounding labels "
                                   "(collect it again with this version of `robovla collect`)")
            target_ids = self.grounding_ids(grounding, unnorm_key) + target_ids
        input_ids = self.prompt_ids(instruction, proprio, unnorm_key) + target_ids
        labels = [IGNORE_INDEX] * (len(input_ids) - len(target_ids)) + target_ids
        example["input_ids"] = torch.tensor(input_ids, dtype=torch.long)
        example["labels"] = torch.tensor(labels, dtype=torch.long)
        return example

    def vl_prompt_ids(self, question: str) -> list[int]:
        """BOS + a vision-language question's prompt ("In: question\nOut:")."""
        return self.tokenizer.encode(build_vl_prompt(question))

    def vl_pixel_values(self, images: Sequence[Any]) -> torch.Tensor:
        """One picture per question, shown in every camera slot of the recipe: [B, cameras * 3k, H, W]."""
        return torch.stack([torch.cat([self.image_transform(image)] * len(self.cameras), dim=0) for image in images])

    def vl_example(self, image: Any, question: str, answer: str) -> dict:
        """One vision-language example (the Prismatic stage's and RT-2 co-training's): "In: question\nOut:" with
        the scene's image in every camera slot, then the answer and EOS, only those labelled. A model with a state
        projector reads a zero state (the middle of every range): the question is about the picture alone."""
        if self.recipe.parallel:
            raise RobovlaError("the parallel-decoding recipe says actions, not words: train the vision-language "
                               "stage on an autoregressive model, then fine-tune it with --decoding parallel")
        if not isinstance(answer, str) or not answer.strip():
            raise RobovlaError("answer must be a non-empty string")
        prompt_ids = self.vl_prompt_ids(question)
        full = self.tokenizer.encode(f"{build_vl_prompt(question)} {answer.lower()}")
        if full[: len(prompt_ids)] != prompt_ids:
            raise RobovlaError(f"the tokenizer merges the prompt's end with the answer {answer!r}")
        target_ids = full[len(prompt_ids):] + [self.tokenizer.eos_token_id]
        example: dict[str, torch.Tensor] = {
            "pixel_values": self.vl_pixel_values([image])[0],
            "input_ids": torch.tensor(prompt_ids + target_ids, dtype=torch.long),
            "labels": torch.tensor([IGNORE_INDEX] * len(prompt_ids) + target_ids, dtype=torch.long),
        }
        if self.recipe.state_tokens:
            example["state"] = torch.zeros(self.recipe.state_dim, dtype=torch.float32)
        return example

    def collate(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Training examples -> one batch (prompts left-padded, labels aligned with their ids)."""
        batch = self.pad_left([e["input_ids"].tolist() for e in examples])
        if self.recipe.parallel:  # per-slot targets, not aligned with the prompt
            labels = torch.stack([e["labels"] for e in examples])
        else:
            labels = torch.full_like(batch.input_ids, IGNORE_INDEX)
            for row, example in enumerate(examples):
                labels[row, labels.shape[1] - example["labels"].shape[0] :] = example["labels"]
        mask = None if bool(batch.attention_mask.all()) else batch.attention_mask
        out = {
            "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
            "input_ids": batch.input_ids,
            "attention_mask": mask,
            "labels": labels,
        }
        for key in ("state", "action_targets"):
            if key in examples[0]:
                out[key] = torch.stack([e[key] for e in examples])
        return out

    # ------------------------------------------------------------------------------------------------ files
    def save(self, folder: Path) -> None:
        (folder / "preprocessor_config.json").write_text(json.dumps(self.image_config.to_hf_dict(), indent=2))
        self.tokenizer.save(folder)
