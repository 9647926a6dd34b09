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
from robovla.data.vl_corpus import VL_DATASET_NAME
from robovla.train.config import TrainConfig

VL_ROWS = "vision_language_rows"  # a batch's key: which rows are vision-language questions (bool [B])
NOISE_STREAM = 1_000_003  # the last seed word of a sample's instruction-noise draw (cameras use 1, 2, ...)


@dataclass
class TrainingData:
    datasets: dict[str, Any]  # dataset_name -> StepDataset (robot data)
    sampler: Any  # robovla.data.MixtureSampler
    processor: VLAProcessor  # or any processor with action_chunk, cameras, training_example and collate
    augment: Any | None  # robovla.data.TrainAugment
    seed: int
    vl: Any | None = None  # robovla.data.vl_corpus.VLDataset, drawn as VL_DATASET_NAME
    noise: Any | None = None  # robovla.data.instruction_noise.InstructionNoise, on robot-data instructions

    @classmethod
    def open(cls, config: TrainConfig, processor: VLAProcessor) -> "TrainingData":
        from robovla.data import MixtureSampler, TrainAugment, open_dataset
        from robovla.data.augment import NO_CROP, AugmentConfig
        from robovla.data.instruction_noise import InstructionNoise
        from robovla.data.steps import FirstEpisodes, PooledSteps

        if not config.datasets and config.stage != "vl-pretrain":
            raise RobovlaError("no training data: pass --datasets DIR [DIR ...]")
        vl = open_vl_corpus(config, processor) if config.stage != "actions" else None
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
        sizes = {name: len(d) for name, d in datasets.items()}
        if vl is not None:
            sizes[VL_DATASET_NAME] = len(vl)
        weights = mixture_weights(config, sizes)
        sampler = MixtureSampler(sizes, weights, seed=config.seed)
        augment = TrainAugment(AugmentConfig() if config.augment_crop else NO_CROP) if config.augment else None
        noise = InstructionNoise(share=config.instruction_noise) if config.instruction_noise > 0 else None
        return cls(datasets, sampler, processor, augment, config.seed, vl, noise)

    def samples_drawn(self, sampler_state: dict) -> dict[str, int]:
        """How many samples of each dataset a run has drawn, from its sampler's state (what a checkpoint records
        about the data it has seen)."""
        sizes = self.sampler.sizes
        return {name: int(sampler_state["epoch"][name]) * sizes[name] + int(sampler_state["position"][name])
                for name in sizes}

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
        vl_rows = [name == VL_DATASET_NAME for name, _ in samples]
        for position, (name, index) in enumerate(samples, start=offset):
            if name == VL_DATASET_NAME:
                item = self.vl[index]
                image = item["image"]
                if self.augment is not None:
                    image = self.augment(image, np.random.default_rng([self.seed, step, position]))
                examples.append(self.processor.vl_example(image, item["question"], item["answer"]))
                continue
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
            instruction = item["instruction"]
            if self.noise is not None:  # its own stream: the images' draws stay those of a run without noise
                instruction = self.noise(instruction, np.random.default_rng([self.seed, step, position, NOISE_STREAM]))
            examples.append(self.processor.training_example(
                images, instruction, action, name, item.get("proprio"), item.get("grounding")
            ))
        batch = self.processor.collate(examples)
        if any(vl_rows):  # which rows ask questions (the trainer reports their loss apart from the actions')
            batch[VL_ROWS] = torch.tensor(vl_rows)
        return batch


def open_vl_corpus(config: TrainConfig, processor: VLAProcessor):
    """The run's vision-language corpus, after checking the model can read it: an autoregressive recipe, and a
    tokenizer that holds every word of the questions and answers."""
    from robovla.data.vl_corpus import VLDataset, check_vocabulary

    if processor.recipe.parallel:
        raise RobovlaError(f"--stage {config.stage}: this model's recipe decodes actions in parallel, which says no "
                           "words; train the vision-language stage on an autoregressive model, then fine-tune "
                           "with --decoding parallel")
    corpus = VLDataset(config.vl_corpus)
    if len(corpus) == 0:
        raise RobovlaError(f"vision-language corpus {config.vl_corpus} has no questions")
    check_vocabulary(processor.tokenizer, corpus.words())
    return corpus


def mixture_weights(config: TrainConfig, sizes: dict[str, int]) -> dict[str, float]:
    """The sampling weights of a run's datasets: the named mixture's (or 1.0 each), then --weights overrides.
    A mixture or override naming a dataset the run does not have is an error naming the ones it has."""
    from robovla.data import get_mixture

    if config.mixture:
        table = get_mixture(config.mixture)
        missing = sorted(set(table) - set(sizes))
        if missing:
            raise RobovlaError(f"mixture {config.mixture!r} needs datasets not given: {', '.join(missing)}")
        weights = dict(table)
    else:
        weights = {name: 1.0 for name in sizes}
    for name, weight in config.mixture_weights().items():
        if name not in sizes:
            raise RobovlaError(f"--weights names unknown dataset {name!r}; this run's datasets: "
                               f"{', '.join(sizes)}")
        weights[name] = weight
    if not any(weights.values()):
        raise RobovlaError("every mixture weight is 0: nothing to train on")
    return weights


class _BatchJobs(Dataset):
    """`TrainingData.batch` as a map-style dataset keyed by (samples, step, offset, state) jobs."""

    def __init__(self, data: TrainingData) -> None:
        self.data = data

    def __getitem__(self, job):
        samples, step, offset, state = job
        return self.data.batch(samples, step, offset), state
