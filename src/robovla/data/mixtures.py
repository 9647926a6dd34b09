"""Named dataset mixtures and a seeded, resumable sampler over them.

A mixture is one table: dataset name -> weight. As in the reference, weights are multiplied by each dataset's
number of transitions and then normalized, so a weight of 1.0 means "sample proportionally to its size".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from torch.utils.data import Dataset, IterableDataset

from robovla.errors import RobovlaError

MIXTURES: dict[str, dict[str, float]] = {
    # the built-in benchmark's two embodiments
    "tabletop": {"tabletop_default": 1.0, "tabletop_sideview": 1.0},
    # the generalist's mixture: both embodiments and the vision-language corpus (`robovla collect-vl`, drawn under
    # `vision_language` by `--stage cotrain`). Each weight multiplies the dataset's size, so with the generalization
    # experiment's data (1200 + 400 demonstrations: 69,770 frames; 2000 scenes x 6 = 12,000 questions) about one
    # sample in seven is a question. Override one weight with `robovla train --weights vision_language=2`.
    "tabletop_generalist": {"tabletop_default": 1.0, "tabletop_sideview": 1.0, "vision_language": 1.0},
    "tabletop_default": {"tabletop_default": 1.0},
    # the reference's OpenVLA training mixture (Open X-Embodiment), for users with OXE on disk
    "oxe_magic_soup_plus_minus": {
        "fractal20220817_data": 1.0,
        "kuka": 0.8341046294,
        "bridge_orig": 1.0,
        "taco_play": 2.0,
        "jaco_play": 1.0,
        "berkeley_cable_routing": 1.0,
        "roboturk": 2.0,
        "viola": 2.0,
        "berkeley_autolab_ur5": 2.0,
        "toto": 1.0,
        "stanford_hydra_dataset_converted_externally_to_rlds": 2.0,
        "austin_buds_dataset_converted_externally_to_rlds": 1.0,
        "nyu_franka_play_dataset_converted_externally_to_rlds": 3.0,
        "furniture_bench_dataset_converted_externally_to_rlds": 0.1,
        "ucsd_kitchen_dataset_converted_externally_to_rlds": 2.0,
        "austin_sailor_dataset_converted_externally_to_rlds": 1.0,
        "austin_sirius_dataset_converted_externally_to_rlds": 1.0,
        "dlr_edan_shared_control_converted_externally_to_rlds": 1.0,
        "iamlab_cmu_pickup_insert_converted_externally_to_rlds": 1.0,
        "utaustin_mutex": 1.0,
        "berkeley_fanuc_manipulation": 2.0,
        "cmu_stretch": 1.0,
        "bc_z": 0.2,
        "fmb_dataset": 1.0,
        "dobbe": 0.2,
    },
}


def get_mixture(name: str) -> dict[str, float]:
    try:
        return dict(MIXTURES[name])
    except KeyError:
        raise RobovlaError(f"unknown mixture {name!r}; valid: {', '.join(MIXTURES)}") from None


def sampling_weights(weights: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
    """Reference-style probabilities: weight x number of transitions, normalized to sum to 1."""
    missing = [k for k in weights if k not in sizes]
    if missing:
        raise RobovlaError(f"mixture datasets not loaded: {', '.join(missing)}")
    scaled = {k: float(w) * float(sizes[k]) for k, w in weights.items()}
    total = sum(scaled.values())
    if total <= 0:
        raise RobovlaError("mixture weights x dataset sizes sum to zero")
    return {k: v / total for k, v in scaled.items()}


class MixtureSampler:
    """Endless stream of (dataset name, step index) drawn by mixture probability.

    Within a dataset, steps come from a fresh seeded permutation per pass, so every step is seen once per
    pass. `state_dict()` captures the RNG and the positions; `load_state_dict()` continues the exact stream.
    """

    def __init__(self, sizes: Mapping[str, int], weights: Mapping[str, float], seed: int = 0) -> None:
        self.names = list(weights)
        self.sizes = {k: int(sizes[k]) for k in self.names}
        probabilities = sampling_weights(weights, sizes)
        self.probabilities = np.array([probabilities[k] for k in self.names])
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._position = {k: 0 for k in self.names}
        self._epoch = {k: 0 for k in self.names}
        self._perm: dict[str, tuple[int, np.ndarray]] = {}  # name -> (epoch, permutation of that pass)

    def _permutation(self, name: str) -> np.ndarray:
        epoch = self._epoch[name]
        if name not in self._perm or self._perm[name][0] != epoch:
            rng = np.random.default_rng([self.seed, self.names.index(name), epoch])
            self._perm[name] = (epoch, rng.permutation(self.sizes[name]))
        return self._perm[name][1]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return self

    def __next__(self) -> tuple[str, int]:
        name = self.names[int(self._rng.choice(len(self.names), p=self.probabilities))]
        index = int(self._permutation(name)[self._position[name]])
        self._position[name] += 1
        if self._position[name] == self.sizes[name]:
            self._position[name] = 0
            self._epoch[name] += 1
        return name, index

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "rng": self._rng.bit_generator.state,
            "position": dict(self._position),
            "epoch": dict(self._epoch),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed:
            raise RobovlaError(f"sampler state was saved with seed {state['seed']}, this sampler uses {self.seed}")
        self._rng.bit_generator.state = state["rng"]
        self._position = dict(state["position"])
        self._epoch = dict(state["epoch"])


class MixtureDataset(IterableDataset):
    """Items from several step datasets, interleaved by a `MixtureSampler` (resumable via its state)."""

    def __init__(self, datasets: Mapping[str, Dataset], weights: Mapping[str, float] | str, seed: int = 0) -> None:
        self.datasets = dict(datasets)
        table = get_mixture(weights) if isinstance(weights, str) else dict(weights)
        self.sampler = MixtureSampler({k: len(d) for k, d in self.datasets.items()}, table, seed)

    def __iter__(self) -> Iterator[dict]:
        for name, index in self.sampler:
            yield self.datasets[name][index]
