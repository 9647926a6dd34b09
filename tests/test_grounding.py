"""Grounding tokens (`recipe.grounding`): the model first says where the named objects are, then acts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import robovla
from robovla.errors import RobovlaError
from robovla.policy import Policy
from robovla.processing import IGNORE_INDEX

STATS = {
    "tabletop_default": {
        "action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]},
        "proprio": {"q01": [-0.2] * 7, "q99": [0.2] * 7},
        "grounding": {"q01": [-0.2, -0.1, -0.2, -0.1], "q99": [0.2, 0.1, 0.2, 0.1]},
    }
}
STATE = np.zeros(7)


@pytest.fixture(scope="module")
def model():
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True, grounding=True)
    return robovla.build_model(config, norm_stats=STATS, seed=5)


def observations(images, texts, grounding=None) -> list[dict]:
    rows = [{"image": image, "instruction": text, "proprio": STATE} for image, text in zip(images, texts)]
    for row, given in zip(rows, grounding if grounding is not None else []):
        row["grounding"] = given
    return rows


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_grounding_tokens_are_targets_between_prompt_and_action(model):
    processor = model.processor
    where = np.array([0.1, -0.05, -0.1, 0.05])
    example = processor.training_example(picture(0), "push the cube", np.zeros(7), "tabletop_default", STATE, where)
    labels = example["labels"]
    labelled = labels[labels != IGNORE_INDEX].tolist()
    assert len(labelled) == 4 + 7 + 1  # grounding, action, EOS
    # 0.1 of [-0.2, 0.2] is +0.5 normalised, -0.05 of [-0.1, 0.1] is -0.5
    expected = processor.action_tokenizer.encode(np.array([0.5, -0.5, -0.5, 0.5])).tolist()
    assert labelled[:4] == expected
    assert example["input_ids"][-12:].tolist() == labelled  # teacher forcing feeds the same tokens back
    with pytest.raises(RobovlaError, match="no grounding labels"):
        processor.training_example(picture(0), "push the cube", np.zeros(7), "tabletop_default", STATE)


def test_predict_generates_grounding_then_the_action(model):
    images = [picture(1), picture(2)]
    prediction = model.predict(images, ["push the cube"] * 2, "tabletop_default", proprio=[STATE, STATE])
    assert prediction.actions.shape == (2, 1, 7) and prediction.grounding.shape == (2, 4)
    processor = model.processor
    inputs = processor.model_inputs(images, ["push the cube"] * 2, [STATE, STATE], "tabletop_default")
    generated = model.generate(inputs, 11).numpy()
    assert np.array_equal(prediction.token_ids[:, 0], generated[:, 4:])  # the action is read after the grounding
    assert np.allclose(prediction.grounding, processor.decode_grounding(generated[:, :4], "tabletop_default"))
    single = model.predict_action(images[0], "push the cube", "tabletop_default", proprio=STATE)
    assert np.allclose(single, prediction.first[0])


def test_grounding_tokens_take_the_argmax_under_median_selection(model):
    from robovla.model.decoding import pick_tokens

    images = [picture(3), picture(4), picture(5)]
    processor = model.processor
    inputs = processor.model_inputs(images, ["push the cube"] * 3, [STATE] * 3, "tabletop_default")
    logits: list[torch.Tensor] = []
    generated = model.generate(inputs, 11, robovla.Decoding("median", greedy_steps=4), step_logits=logits)
    bins = (model.config.action_vocab_size - model.config.n_action_bins, model.config.action_vocab_size)
    for step, step_logits in enumerate(logits):
        expected = pick_tokens(step_logits, bins, "greedy" if step < 4 else "median")
        assert torch.equal(generated[:, step], expected), step
    # a median between two candidate objects names neither: predict reads the grounding by argmax
    prediction = model.predict(images, ["push the cube"] * 3, "tabletop_default", proprio=[STATE] * 3,
                               decoding=robovla.Decoding("median"))
    assert np.allclose(prediction.grounding, processor.decode_grounding(generated[:, :4].numpy(), "tabletop_default"))
    assert np.array_equal(prediction.token_ids[:, 0], generated[:, 4:].numpy())


def test_reference_layout_generates_no_grounding(tiny_vla):
    assert tiny_vla.processor.grounding_dim(None) == 0


def test_env_grounding_follows_the_named_objects():
    from robovla.sim import ScriptedExpert
    from robovla.sim.env import make_env

    env = make_env("tabletop-train", image_size=32, task="pick_place")
    env.reset(seed=4)
    spec = env.episode
    goal = spec.entity(spec.goal)
    where = env.grounding()
    assert np.allclose(where, [spec.target.x, spec.target.y, goal.x, goal.y], atol=0.01)
    expert = ScriptedExpert(env)
    for _ in range(env.max_episode_steps):
        _, _, done, truncated, _ = env.step(expert.act())
        if done or truncated:
            break
    moved = env.grounding()
    assert done and np.allclose(moved[:2], env.object_pos(spec.target.name)[:2])
    assert np.hypot(*(moved[:2] - moved[2:])) < 0.06  # the target now sits on the goal
    torch.testing.assert_close(torch.tensor(moved[2:]), torch.tensor(where[2:]))  # fixtures do not move


def test_given_grounding_is_emitted_and_the_rest_is_chosen(model):
    images, texts, states = [picture(3), picture(4)], ["push the cube"] * 2, [STATE, STATE]
    free = model.predict(images, texts, "tabletop_default", proprio=states)
    given = np.array([[0.1, -0.05, np.nan, np.nan], [np.nan] * 4])
    told = Policy(model, "tabletop_default", grounding="given").predict(observations(images, texts, given))
    np.testing.assert_allclose(told.grounding[0, :2], [0.1, -0.05], atol=0.002)  # within one of 256 bins
    assert np.array_equal(told.grounding[1], free.grounding[1])  # all NaN: the model chooses, as before
    assert np.array_equal(told.token_ids[1], free.token_ids[1])
    processor = model.processor
    forced = processor.forced_grounding_ids(given, 2, "tabletop_default")
    assert forced[0, :2].tolist() == processor.grounding_ids([0.1, -0.05, 0, 0], "tabletop_default")[:2]
    assert (forced[0, 2:] == -1).all() and (forced[1] == -1).all()
    # the actions are conditioned on the given tokens: the same as decoding with them forced
    inputs = processor.model_inputs(images, texts, states, "tabletop_default")
    generated = model.generate(inputs, 11, forced=torch.as_tensor(forced)).numpy()
    assert np.array_equal(told.token_ids[:, 0], generated[:, 4:])


def test_given_grounding_is_validated(model, tiny_vla):
    policy = Policy(model, "tabletop_default", grounding="given")
    with pytest.raises(RobovlaError, match=r"grounding must be \[1, 4\]"):
        policy.predict(observations([picture(1)], ["push the cube"], [[0.1, 0.0]]))
    with pytest.raises(RobovlaError, match="infinite"):
        policy.predict(observations([picture(1)], ["push the cube"], [[np.inf, 0, 0, 0]]))
    with pytest.raises(RobovlaError, match="same length"):
        policy.predict(observations([picture(1)] * 2, ["push the cube"] * 2, [[0.0] * 4, [0.0] * 3]))
    with pytest.raises(RobovlaError, match="no grounding tokens"):
        Policy(tiny_vla, "bridge_orig", grounding="given")


def test_rollout_can_give_the_policy_the_true_grounding(model):
    from robovla.eval.rollout import policy_actor
    from robovla.sim.env import make_env
    from robovla.sim.vector import VectorEnv

    seen = []

    class Recording(Policy):
        def predict(self, batch, unnorm_key=None):
            seen.append([o.get("grounding") for o in batch])
            return super().predict(batch, unnorm_key)

    envs = VectorEnv([make_env("tabletop-train", image_size=32) for _ in range(2)])
    obs, _ = envs.reset(seeds=[5, 6])
    told = Recording(model, "tabletop_default", restrict_to_actions=True, grounding="given")
    actions = policy_actor(told, sim_grounding=True)(envs, obs, np.array([0, 1]))
    assert actions.shape == (2, 7)
    np.testing.assert_allclose(seen[0], [env.grounding() for env in envs.envs])
    policy_actor(Recording(model, "tabletop_default", restrict_to_actions=True))(envs, obs, np.array([0, 1]))
    assert seen[1] == [None, None]  # off by default: the model estimates the grounding itself
    envs.close()
