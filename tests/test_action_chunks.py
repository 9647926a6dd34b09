"""Action chunks (`recipe.action_chunk`) and how a decoding step picks its token (`pick_tokens`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import robovla
from robovla.errors import RobovlaError
from robovla.model.decoding import pick_tokens
from robovla.processing import IGNORE_INDEX

STATS = {"tabletop_default": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0],
                                         "mask": [True] * 6 + [False]}}}


@pytest.fixture(scope="module")
def model():
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(action_chunk=3)
    return robovla.build_model(config, norm_stats=STATS, seed=2)


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_median_follows_the_mass_where_greedy_takes_the_spike():
    probs = torch.tensor([[0.30, 0.05, 0.20, 0.25, 0.20]])  # a spike at bin 0, most mass further on
    logits = torch.cat([torch.full((1, 3), -30.0), probs.log()], dim=1)  # ids 3..7 are the bins
    assert pick_tokens(logits, (3, 8), "greedy").item() == 3
    assert pick_tokens(logits, (3, 8), "median").item() == 5  # cumulative 0.30, 0.35, 0.55: the third bin
    assert pick_tokens(logits, None).item() == 3
    torch.manual_seed(0)
    draws = pick_tokens(logits.expand(4000, -1), (3, 8), "sample")
    assert abs((draws == 6).float().mean().item() - 0.25) < 0.03


def test_a_chunk_is_labelled_in_order(model):
    chunk = np.stack([np.full(7, v) for v in (-0.5, 0.0, 0.5)])
    chunk[:, -1] = 1.0
    example = model.processor.training_example(picture(0), "push the cube", chunk, "tabletop_default")
    labelled = example["labels"][example["labels"] != IGNORE_INDEX].tolist()
    assert len(labelled) == 3 * 7 + 1
    tokenizer = model.processor.action_tokenizer
    assert labelled[:21] == tokenizer.encode(np.where(np.arange(7) < 6, chunk, 1.0)).reshape(-1).tolist()
    with pytest.raises(RobovlaError, match="predicts 3 action"):
        model.processor.training_example(picture(0), "push the cube", np.zeros(7), "tabletop_default")


def test_predict_returns_the_chunk_and_its_first_action(model):
    prediction = model.predict([picture(1), picture(2)], ["push the cube"] * 2, "tabletop_default",
                               decoding=robovla.Decoding(restrict_to_actions=True))
    assert prediction.actions.shape == (2, 3, 7) and prediction.token_ids.shape == (2, 3, 7)
    assert np.array_equal(prediction.first, prediction.actions[:, 0])


def test_a_model_that_does_not_chunk_has_one_next_action(tiny_vla):
    image = np.zeros((224, 224, 3), dtype=np.uint8)
    prediction = tiny_vla.predict([image, image], ["pick up the cup"] * 2, "bridge_orig")
    assert prediction.actions.shape == (2, 1, 7) and prediction.first.shape == (2, 7)


def test_rollout_executes_a_chunk_before_asking_again(model):
    from robovla.eval.rollout import policy_actor
    from robovla.policy import Policy
    from robovla.sim.env import make_env
    from robovla.sim.vector import VectorEnv

    calls = []
    real_prefill = model.prefill

    def counting(inputs, *args, **kwargs):
        calls.append(len(inputs))
        return real_prefill(inputs, *args, **kwargs)

    model.prefill = counting
    try:
        envs = VectorEnv([make_env("tabletop-train", image_size=32) for _ in range(2)])
        obs, _ = envs.reset(seeds=[1, 2])
        act = policy_actor(Policy(model, "tabletop_default", restrict_to_actions=True))
        first = act(envs, obs, np.array([0, 1]))
        chunk = model.predict(list(obs["image"]), list(envs.instructions), "tabletop_default",
                              decoding=robovla.Decoding(restrict_to_actions=True)).actions
        assert calls == [2, 2]  # the policy's call, then the direct one
        del calls[1]
        assert np.allclose(first, chunk[:, 0])
        for step in (1, 2):
            assert np.allclose(act(envs, obs, np.array([0, 1])), chunk[:, step])
        assert calls == [2]  # three actions from one call
        act(envs, obs, np.array([1]))
        assert calls == [2, 1]
        replanning = policy_actor(Policy(model, "tabletop_default", restrict_to_actions=True), execute=1)  # first action only, then ask again
        for _ in range(2):
            assert np.allclose(replanning(envs, obs, np.array([0, 1])), chunk[:, 0])
        assert calls == [2, 1, 2, 2]
        envs.close()
    finally:
        del model.prefill


def test_temporal_ensembling_averages_the_overlapping_predictions(model):
    from robovla.eval.rollout import policy_actor
    from robovla.policy import Policy
    from robovla.sim.env import make_env
    from robovla.sim.vector import VectorEnv

    envs = VectorEnv([make_env("tabletop-train", image_size=32) for _ in range(2)])
    obs, _ = envs.reset(seeds=[1, 2])
    chunk = model.predict(list(obs["image"]), list(envs.instructions), "tabletop_default",
                          decoding=robovla.Decoding(restrict_to_actions=True)).actions  # the same observation gives the same chunk each step
    m = 0.5
    act = policy_actor(Policy(model, "tabletop_default", restrict_to_actions=True), ensemble=m)
    w = np.exp(-m * np.arange(3))
    assert np.allclose(act(envs, obs, np.array([0, 1])), chunk[:, 0], atol=1e-6)
    assert np.allclose(act(envs, obs, np.array([0, 1])), (w[0] * chunk[:, 0] + w[1] * chunk[:, 1]) / w[:2].sum(),
                       atol=1e-6)
    for _ in range(3):  # from the third step on, three chunks overlap: this step's, and the two before
        expected = (w[0] * chunk[:, 0] + w[1] * chunk[:, 1] + w[2] * chunk[:, 2]) / w.sum()
        assert np.allclose(act(envs, obs, np.array([0, 1])), expected, atol=1e-6)
    envs.close()


def test_the_default_selection_is_validated():
    assert robovla.Recipe(selection="median").selection == "median"
    with pytest.raises(RobovlaError, match="recipe field 'selection' is 'beam'; valid: greedy, median, sample"):
        robovla.Recipe(selection="beam")
