"""A PyTorch dataset of steps over episodes held as flat arrays; the LeRobot and RLDS readers fill it.

Each item: `image` (uint8 HxWx3), optional `wrist_image`, `instruction`, `proprio` (float32), `action`
(float32 [7]), `episode_index`, `frame_index`, `dataset_name`, and with `chunk_size=H` an `action_chunk`
[H, 7] of this and the next actions of the same episode, padded by repeating the episode's last action;
`grounding` (float32) where the dataset records grounding labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset


class StepDataset(Dataset):
    """Steps of many episodes; subclasses supply `_images(i)`."""

    def __init__(
        self,
        *,
        dataset_name: str,
        actions: np.ndarray,
        proprio: np.ndarray,
        episode_index: np.ndarray,
        frame_index: np.ndarray,
        instructions: list[str],
        chunk_size: int | None = None,
        grounding: np.ndarray | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.dataset_name = dataset_name
        self.actions = np.ascontiguousarray(actions, dtype=np.float32)
        self.proprio = np.ascontiguousarray(proprio, dtype=np.float32)
        self.episode_index = np.asarray(episode_index, dtype=np.int64)
        self.frame_index = np.asarray(frame_index, dtype=np.int64)
        self.instructions = instructions  # one per step
        # [N, G] auxiliary labels (where the instruction's objects are), for datasets that record them
        self.grounding = None if grounding is None else np.ascontiguousarray(grounding, dtype=np.float32)
        self.chunk_size = chunk_size
        # last row of each step's episode (rows of one episode are contiguous)
        n = len(self.actions)
        boundary = np.flatnonzero(np.diff(self.episode_index) != 0)
        ends = np.append(boundary, n - 1) if n else np.zeros(0, dtype=np.int64)
        lengths = np.diff(np.concatenate([[-1], ends]))
        self._episode_end = np.repeat(ends, lengths)

    @property
    def num_episodes(self) -> int:
        return int(len(np.unique(self.episode_index)))

    def __len__(self) -> int:
        return len(self.actions)

    def _images(self, i: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        item = {
            **self._images(i),
            "instruction": self.instructions[i],
            "proprio": self.proprio[i].copy(),  # copies: a consumer may modify its item in place
            "action": self.actions[i].copy(),
            "episode_index": int(self.episode_index[i]),
            "frame_index": int(self.frame_index[i]),
            "dataset_name": self.dataset_name,
        }
        if self.grounding is not None:
            item["grounding"] = self.grounding[i].copy()
        if self.chunk_size is not None:
            rows = np.minimum(np.arange(i, i + self.chunk_size), self._episode_end[i])
            item["action_chunk"] = self.actions[rows]
        return item


class PooledSteps(Dataset):
    """Several folders of one robot (the same dataset name) read as one dataset, with one set of statistics and
    one sampling weight: extra demonstrations or DAgger rounds join their base dataset this way."""

    def __init__(self, parts: list[StepDataset]) -> None:
        from robovla.errors import RobovlaError

        names = sorted({part.dataset_name for part in parts})
        if len(names) != 1:
            raise RobovlaError(f"only datasets of one name can be pooled, got {', '.join(names)}")
        for field_name in ("actions", "proprio"):
            widths = sorted({getattr(part, field_name).shape[1] for part in parts})
            if len(widths) != 1:
                raise RobovlaError(f"datasets named {names[0]!r} disagree on the {field_name} width: {widths}")
        self.parts = parts
        self.dataset_name = names[0]
        self.actions = np.concatenate([part.actions for part in parts])
        self.proprio = np.concatenate([part.proprio for part in parts])
        # grounding labels only when every part has them: a model that predicts them needs them on every step
        labelled = all(part.grounding is not None for part in parts)
        self.grounding = np.concatenate([part.grounding for part in parts]) if labelled else None
        self._starts = np.cumsum([0] + [len(part) for part in parts])

    @property
    def num_episodes(self) -> int:
        return sum(part.num_episodes for part in self.parts)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = int(i) % len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        item = self.parts[k][i - int(self._starts[k])]
        if self.grounding is None:
            item.pop("grounding", None)
        return item


class FirstEpisodes(Dataset):
    """The steps of a dataset's first `count` episodes (in episode order): data-efficiency studies train on 10,
    50 or 150 demonstrations of one collection, each set inside the next, with statistics of what they keep."""

    def __init__(self, dataset: Any, count: int, where: str = "") -> None:
        from robovla.errors import RobovlaError

        episodes = np.unique(dataset.episode_index)
        if count > len(episodes):
            raise RobovlaError(f"dataset {where or dataset.dataset_name} has {len(episodes)} demonstrations, fewer "
                               f"than the {count} requested")
        self.indices = np.flatnonzero(np.isin(dataset.episode_index, episodes[:count]))
        self.dataset = dataset
        self.dataset_name = dataset.dataset_name
        self.episode_index = dataset.episode_index[self.indices]
        self.actions = dataset.actions[self.indices]
        self.proprio = dataset.proprio[self.indices]
        self.grounding = None if dataset.grounding is None else dataset.grounding[self.indices]

    @property
    def num_episodes(self) -> int:
        return int(len(np.unique(self.episode_index)))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return self.dataset[int(self.indices[int(i)])]
