"""Training batches: datasets -> seeded, resumable mixture sampling -> augmentation -> the shared processor.

Every sample's augmentation is seeded by (seed, step, position in the global batch), and the sampler's state
is saved with each checkpoint, so a resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from robovla.errors import RobovlaError
from robovla.processing import VLAProcessor
from robovla.train.config import TrainConfig


@dataclass
class TrainingData:
    datasets: dict[str, Any]  # dataset_name -> StepDataset
    sampler: Any  # robovla.data.MixtureSampler
    processor: VLAProcessor  # or any processor with action_chunk, cameras, training_example and collate
    augment: Any | None  # robovla.data.TrainAugment
    seed: int

    @classmethod
    def open(cls, config: TrainConfig, processor: VLAProcessor) -> "TrainingData":
        from robovla.data import MixtureSampler, TrainAugment, get_mixture, open_dataset
        from robovla.data.steps import FirstEpisodes, PooledSteps

        if not config.datasets:
            raise RobovlaError("no training data: pass --datasets DIR [DIR ...]")
        by_name: dict[str, list[Any]] = {}
        chunk = processor.action_chunk
        for path in config.datasets:
            dataset = open_dataset(path, chunk_size=chunk if chunk > 1 else None)
            if config.max_episodes is not None:
                dataset = FirstEpisodes(dataset, config.max_episodes, where=str(path))
            if len(dataset) == 0:
                raise RobovlaError(f"dataset {path} has no steps")
            shortest = int(np.unique(dataset.episode_index, return_counts=True)[1].min())
            if chunk > shortest:
                raise RobovlaError(f"dataset {path}: its shortest episode has {shortest} steps, fewer than the "
                                   f"{chunk} actions per chunk (a chunk is padded with the episode's last action "
                                   f"past its end, so it must fit in one episode): use a smaller --action-chunk")
            by_name.setdefault(dataset.dataset_name, []).append(dataset)
        # folders of one robot (one dataset name) pool into one dataset: one set of statistics, one weight
        datasets = {name: parts[0] if len(parts) == 1 else PooledSteps(parts) for name, parts in by_name.items()}
        if config.mixture:
            table = get_mixture(config.mixture)
            missing = sorted(set(table) - set(datasets))
            if missing:
                raise RobovlaError(f"mixture {config.mixture!r} needs datasets not given: {', '.join(missing)}")
            weights = {name: table[name] for name in table}
        else:
            weights = {name: 1.0 for name in datasets}
        sampler = MixtureSampler({k: len(d) for k, d in datasets.items()}, weights, seed=config.seed)
        augment = TrainAugment() if config.augment else None
        return cls(datasets, sampler, processor, augment, config.seed)

    def check_action_dims(self, norm_stats: dict[str, Any]) -> None:
        """A dataset whose actions do not match the model's action size is an error naming both sizes."""
        model_dims = {len(s["action"]["q01"]) for s in norm_stats.values()}
        for name, dataset in self.datasets.items():
            dim = int(dataset.actions.shape[1])
            if name not in norm_stats and model_dims and dim not in model_dims:
                raise RobovlaError(
                    f"dataset {name!r} has {dim}-dimensional actions but the model predicts "
                    f"{'/'.join(map(str, sorted(model_dims)))}-dimensional actions"
                )
            if name in norm_stats and len(norm_stats[name]["action"]["q01"]) != dim:
                raise RobovlaError(
                    f"dataset {name!r} has {dim}-dimensional actions but the checkpoint's statistics for it "
                    f"have {len(norm_stats[name]['action']['q01'])}"
                )

    def statistics(self) -> dict[str, Any]:
        from robovla.data import dataset_stats

        stats: dict[str, Any] = {}
        for dataset in self.datasets.values():
            stats.update(dataset_stats(dataset))
        return stats

    def draw(self, count: int) -> list[tuple[str, int]]:
        """The next `count` (dataset, index) pairs of the global stream."""
        return [next(self.sampler) for _ in range(count)]

    def steps(self, first_step: int, batch_size: int, micro_offsets: list[int], per_rank: int,
              workers: int = 0) -> Iterator[tuple[list[dict[str, torch.Tensor]], dict]]:
        """From `first_step` on, each step's micro-batches for this rank (at `micro_offsets` in the global
        batch), with the sampler's state once that step's samples are drawn (what a checkpoint after it saves).

        With `workers` > 0, worker processes build the next batches while the caller trains. The draws stay in
        this process and in order, so the batches are exactly those of `workers=0`."""
        jobs = self._jobs(first_step, batch_size, micro_offsets, per_rank)
        if workers == 0:
            for step_jobs in jobs:
                yield [self.batch(*job[:3]) for job in step_jobs], step_jobs[-1][3]
            return
        loader = DataLoader(
            _BatchJobs(self), batch_size=None, sampler=(job for step_jobs in jobs for job in step_jobs),
            num_workers=workers, prefetch_factor=4, persistent_workers=False,
        )
        pending: list[dict[str, torch.Tensor]] = []
        for batch, state in loader:
            pending.append(batch)
            if state is not None:  # the step's last micro-batch
                yield pending, state
                pending = []

    def _jobs(self, first_step: int, batch_size: int, micro_offsets: list[int], per_rank: int):
        """Per step: [(samples, step, offset, sampler state or None)], the state on the step's last job."""
        step = first_step
        while True:
            samples = self.draw(batch_size)
            state = self.sampler.state_dict()
            yield [(samples[offset : offset + per_rank], step, offset, state if i + 1 == len(micro_offsets) else None)
                   for i, offset in enumerate(micro_offsets)]
            step += 1

    def batch(self, samples: list[tuple[str, int]], step: int, offset: int) -> dict[str, torch.Tensor]:
        """Model inputs for `samples`, which sit at `offset` in the global batch of `step`."""
        examples = []
        cameras = self.processor.cameras
        for position, (name, index) in enumerate(samples, start=offset):
            item = self.datasets[name][index]
            images = {}
            for c, camera in enumerate(cameras):  # each camera augmented on its own draw
                if item.get(camera) is None:
                    raise RobovlaError(f"dataset {name!r} has no {camera!r} images, but the model reads the cameras "
                                       f"{', '.join(cameras)} (a simulator dataset records its wrist camera with "
                                       f"`robovla collect --wrist-camera`)")
                image = item[camera]
                if self.augment is not None:
                    draw = [self.seed, step, position] + ([c] if c else [])
                    image = self.augment(image, np.random.default_rng(draw))
                images[camera] = image
            action = item["action_chunk"] if "action_chunk" in item else item["action"]
            examples.append(self.processor.training_example(
                images, item["instruction"], action, name, item.get("proprio"), item.get("grounding")
            ))
        return self.processor.collate(examples)


class _BatchJobs(Dataset):
    """`TrainingData.batch` as a map-style dataset keyed by (samples, step, offset, state) jobs."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def __getitem__(self, job):
        samples, step, offset, state = job
        return self.data.batch(samples, step, offset), state
