"""Mixtures: reference weighting (weight x size, normalized), proportions, resumable sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from robovla.data import MIXTURES, MixtureDataset, MixtureSampler, get_mixture, sampling_weights
from robovla.errors import RobovlaError


def test_weights_scale_with_dataset_size():
    probs = sampling_weights({"a": 1.0, "b": 2.0}, {"a": 300, "b": 100})
    assert probs == pytest.approx({"a": 0.6, "b": 0.4})
    with pytest.raises(RobovlaError, match="not loaded: c"):
        sampling_weights({"a": 1.0, "c": 1.0}, {"a": 1})


def test_magic_soup_table_is_included():
    soup = get_mixture("oxe_magic_soup_plus_minus")
    assert len(soup) == 25 and soup["kuka"] == pytest.approx(0.8341046294) and soup["nyu_franka_play_dataset_converted_externally_to_rlds"] == 3.0
    assert "droid" not in soup and "language_table" not in soup
    assert set(MIXTURES["tabletop"]) == {"tabletop_default", "tabletop_sideview"}
    with pytest.raises(RobovlaError, match="valid: tabletop"):
        get_mixture("nope")


def test_sampler_proportions_and_coverage():
    sizes = {"a": 50, "b": 150, "c": 40}
    weights = {"a": 2.0, "b": 1.0, "c": 0.5}
    sampler = MixtureSampler(sizes, weights, seed=1)
    draws = [next(sampler) for _ in range(20000)]
    counts = Counter(name for name, _ in draws)
    expected = sampling_weights(weights, sizes)
    for name, p in expected.items():
        assert abs(counts[name] / len(draws) - p) < 0.015
    first_pass_a = [i for name, i in draws if name == "a"][:50]
    assert sorted(first_pass_a) == list(range(50))  # each pass is a permutation of the dataset


def test_sampler_resumes_exactly():
    sizes, weights = {"a": 7, "b": 5}, {"a": 1.0, "b": 1.0}
    sampler = MixtureSampler(sizes, weights, seed=3)
    for _ in range(23):
        next(sampler)
    state = sampler.state_dict()
    expected = [next(sampler) for _ in range(30)]
    resumed = MixtureSampler(sizes, weights, seed=3)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(30)] == expected
    with pytest.raises(RobovlaError, match="seed"):
        MixtureSampler(sizes, weights, seed=4).load_state_dict(state)


def test_mixture_dataset_yields_items_of_both_datasets():
    data = {"x": [{"v": i, "dataset_name": "x"} for i in range(4)], "y": [{"v": -i, "dataset_name": "y"} for i in range(4)]}
    stream = iter(MixtureDataset(data, {"x": 1.0, "y": 1.0}, seed=0))
    names = {next(stream)["dataset_name"] for _ in range(40)}
    assert names == {"x", "y"}
    assert np.isclose(sum(sampling_weights({"x": 1.0, "y": 1.0}, {"x": 4, "y": 4}).values()), 1.0)
