"""`Policy`: a checkpoint ready to act, fed observation dicts keyed like its recipe."""

from __future__ import annotations

import numpy as np
import pytest

import robovla
from robovla.demo import shipped_policy_path
from robovla.errors import RobovlaError
from robovla.policy import Policy

SHIPPED = shipped_policy_path()


@pytest.fixture(scope="module")
def shipped():
    return Policy.from_pretrained(SHIPPED)


def observation(seed: int, instruction: str = "put the red cube in the blue bowl") -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), "instruction": instruction,
            "proprio": rng.uniform(-0.1, 0.1, 7)}


def test_a_pointer_policy_acts_as_if_its_estimate_were_given(shipped):
    batch = [observation(1), observation(2, "stack the green cube on the yellow cube")]
    mine = shipped.predict(batch)
    told = Policy(shipped.model, grounding="given").predict(
        [{**o, "grounding": where} for o, where in zip(batch, mine.grounding)])
    assert np.array_equal(mine.token_ids, told.token_ids) and np.array_equal(mine.actions, told.actions)
    own = Policy(shipped.model, grounding="tokens").predict(batch)
    assert not np.allclose(own.grounding, mine.grounding)  # the pointer, not the language model, said where
    assert np.array_equal(shipped.predict(batch[0]).token_ids, shipped.predict([batch[0]]).token_ids)
    assert shipped.recipe.action_chunk == 4 and shipped.image_size == 128
    assert shipped.action_dim() == 7 and shipped.proprio_dim() == 7 and shipped.grounding.name == "pointer"


def test_the_grounding_source_is_the_policys_choice(shipped):
    own = Policy(shipped.model, grounding="tokens").predict(observation(3))
    model = shipped.model.predict([observation(3)["image"]], ["put the red cube in the blue bowl"],
                                  proprio=[observation(3)["proprio"]])  # the language model says everything
    assert np.array_equal(own.token_ids, model.token_ids) and np.allclose(own.grounding, model.grounding)
    with pytest.raises(RobovlaError, match="unknown grounding source 'oracle'; valid: pointer, tokens, given"):
        Policy(shipped.model, grounding="oracle")


def test_bad_observations_and_settings_name_what_is_wrong(shipped):
    incomplete = {"image": observation(4)["image"], "instruction": "push the cube"}
    with pytest.raises(RobovlaError, match="observation 0 has no 'proprio' \\(this policy reads image, "
                                           "instruction, proprio\\)"):
        shipped.predict(incomplete)
    with pytest.raises(RobovlaError, match="proprio must be a vector of 7 numbers"):
        shipped.predict({**observation(4), "proprio": np.zeros(5)})
    with pytest.raises(RobovlaError, match="observation 0 gives 'grounding', but this policy's grounding source is "
                                           "'pointer'"):
        shipped.predict({**observation(4), "grounding": np.zeros(4)})
    with pytest.raises(RobovlaError, match="observation 0 has no 'grounding'"):
        Policy(shipped.model, grounding="given").predict(observation(4))
    with pytest.raises(RobovlaError, match="unnorm_key 'mars'"):
        Policy(shipped.model, unnorm_key="mars")
    plain = robovla.build_model("tiny", norm_stats={"sim": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7,
                                                                        "mask": [True] * 7}}})
    with pytest.raises(RobovlaError, match="this model has no grounding pointer"):
        Policy(plain, grounding="pointer")
    with pytest.raises(RobovlaError, match="grounding source 'given': this model has no grounding tokens"):
        Policy(plain, grounding="given")
    assert Policy(plain).proprio_dim() is None
