"""Observations to Diffusion Policy's tensors and its normalized chunks back to robot actions.

The same observation dicts a VLA `Policy` reads (one image per recipe camera, "instruction", "proprio"), and the
same dataset statistics (q01/q99 per dimension; the gripper, masked off, passes raw), so a dataset, the simulator
and the server feed both policy types alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from robovla.diffusion.config import DiffusionConfig
from robovla.diffusion.model import DiffusionInputs
from robovla.errors import RobovlaError
from robovla.processing import ActionNormalizer, TextTokenizer, to_pil_rgb, vector_normalizer

MAX_LANGUAGE_TOKENS = 48  # an instruction's ids beyond this are dropped (tabletop instructions take ~15)


class DiffusionProcessor:
    def __init__(self, config: DiffusionConfig, tokenizer: TextTokenizer, norm_stats: dict[str, Any]) -> None:
        if len(tokenizer) > config.vocab_size:
            raise RobovlaError(f"the tokenizer has {len(tokenizer)} ids, the policy's language embedding "
                               f"{config.vocab_size}")
        self.config = config
        self.tokenizer = tokenizer
        self.norm_stats = norm_stats

    def image(self, image: Any) -> torch.Tensor:
        """HxWx3 uint8 (or a PIL image) -> [3, S, S] float in [0, 1], resized whole (no crop)."""
        size = self.config.image_size
        resized = to_pil_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def language(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, L] and their mask, padded to the longest (at most MAX_LANGUAGE_TOKENS)."""
        encoded = []
        for text in instructions:
            if not isinstance(text, str) or not text.strip():
                raise RobovlaError("an instruction must be a non-empty string")
            encoded.append(self.tokenizer.encode(text.strip().lower())[:MAX_LANGUAGE_TOKENS])
        width = max(len(ids) for ids in encoded)
        ids = torch.zeros(len(encoded), width, dtype=torch.long)
        mask = torch.zeros(len(encoded), width, dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask

    def inputs(self, observations: Sequence[Mapping[str, Any]], unnorm_key: str | None = None) -> DiffusionInputs:
        if not observations:
            raise RobovlaError("no observations given")
        needed = [*self.config.cameras, "instruction", *(["proprio"] if self.config.state_dim else [])]
        for index, observation in enumerate(observations):
            missing = [key for key in needed if observation.get(key) is None]
            if missing:
                raise RobovlaError(f"observation {index} has no {', '.join(map(repr, missing))} (this policy reads "
                                   f"{', '.join(needed)})")
        images = {camera: torch.stack([self.image(o[camera]) for o in observations]) for camera in self.config.cameras}
        ids, mask = self.language([o["instruction"] for o in observations])
        state = None
        if self.config.state_dim:
            _, normalizer = vector_normalizer(self.norm_stats, "proprio", unnorm_key)
            rows = []
            for o in observations:
                vector = np.asarray(o["proprio"], dtype=np.float64)
                if vector.shape != (self.config.state_dim,):
                    raise RobovlaError(f"proprio has {vector.size} numbers, this policy reads {self.config.state_dim}")
                rows.append(normalizer.normalize(vector))
            state = torch.tensor(np.stack(rows), dtype=torch.float32)
        return DiffusionInputs(images, ids, mask, state)

    @property
    def uses_proprio(self) -> bool:
        return bool(self.config.state_dim)

    def check_proprio(self, proprio: Any, unnorm_key: str | None) -> None:
        """Raise a RobovlaError when `proprio` is not a state this policy can read for the dataset."""
        vector = np.asarray(proprio, dtype=np.float64)
        if vector.shape != (self.config.state_dim,):
            raise RobovlaError(f"proprio has {vector.size} numbers, this policy reads {self.config.state_dim}")
        if not np.isfinite(vector).all():
            raise RobovlaError("proprio must be finite numbers")
        vector_normalizer(self.norm_stats, "proprio", unnorm_key)  # an unknown dataset or missing statistics

    def targets(self, actions: np.ndarray, unnorm_key: str | None = None) -> torch.Tensor:
        """Raw action chunks [B, horizon, action_dim] -> the normalized training targets."""
        normalizer = ActionNormalizer.from_norm_stats(self.norm_stats, unnorm_key)
        return torch.tensor(normalizer.normalize(actions), dtype=torch.float32)

    def actions(self, normalized: torch.Tensor, unnorm_key: str | None = None) -> np.ndarray:
        """The policy's normalized chunks -> raw actions [B, horizon, action_dim] (float64)."""
        normalizer = ActionNormalizer.from_norm_stats(self.norm_stats, unnorm_key)
        return normalizer.unnormalize(normalized.detach().cpu().double().numpy())

    # -------------------------------------------------------------------- training (robovla.train.data's protocol)
    @property
    def action_chunk(self) -> int:
        """Future actions per training target: the policy's horizon (the dataset pads past an episode's end)."""
        return self.config.horizon

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.config.cameras)

    def training_example(self, image: Any, instruction: str, action: np.ndarray, unnorm_key: str | None,
                         proprio: Any = None, grounding: Any = None) -> dict[str, Any]:
        """One observation and its [horizon, action_dim] future actions (`grounding` is not used)."""
        images = image if isinstance(image, Mapping) else {self.config.cameras[0]: image}
        observation = {**images, "instruction": instruction, "proprio": proprio}
        inputs = self.inputs([observation], unnorm_key)
        chunk = np.asarray(action, dtype=np.float64).reshape(-1, self.config.action_dim)
        if chunk.shape[0] != self.config.horizon:
            raise RobovlaError(f"a training target has {chunk.shape[0]} actions, this policy predicts "
                               f"{self.config.horizon}")
        return {"inputs": inputs, "actions": self.targets(chunk[None], unnorm_key)[0]}

    def collate(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Examples -> {"inputs": DiffusionInputs, "actions": [B, horizon, action_dim]}; instructions padded."""
        parts = [e["inputs"] for e in examples]
        width = max(p.language_ids.shape[1] for p in parts)
        ids = torch.zeros(len(parts), width, dtype=torch.long)
        mask = torch.zeros(len(parts), width, dtype=torch.long)
        for row, p in enumerate(parts):
            ids[row, : p.language_ids.shape[1]] = p.language_ids[0]
            mask[row, : p.language_mask.shape[1]] = p.language_mask[0]
        images = {camera: torch.cat([p.images[camera] for p in parts]) for camera in self.config.cameras}
        state = torch.cat([p.state for p in parts]) if self.config.state_dim else None
        return {"inputs": DiffusionInputs(images, ids, mask, state),
                "actions": torch.stack([e["actions"] for e in examples])}

    def save(self, folder: Path) -> None:
        self.tokenizer.save(Path(folder))
