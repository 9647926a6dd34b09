"""The typed recipe: one frozen dataclass says what a model reads and says, saved under one config.json key."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import robovla
from robovla.config import LEGACY_RECIPE_KEYS, RECIPE_KEY, Recipe, VLAConfig
from robovla.errors import RobovlaError
from robovla.train.config import TrainConfig

from conftest import CONFORMANCE, TINY_CHECKPOINT

STATS = {"sim": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]},
                 "proprio": {"q01": [-0.2] * 7, "q99": [0.2] * 7}}}


def test_the_reference_layout_reads_as_the_plain_recipe_and_is_written_back_unchanged(tmp_path):
    reference = json.loads((CONFORMANCE / "openvla-7b-config.reconstructed.json").read_text())
    assert VLAConfig.from_hf_dict(reference).recipe == Recipe() and Recipe().is_reference
    tiny = robovla.load_pretrained(TINY_CHECKPOINT)
    assert tiny.recipe == Recipe()
    written = json.loads((robovla.save_pretrained(tiny, tmp_path / "tiny") / "config.json").read_text())
    assert RECIPE_KEY not in written and not set(LEGACY_RECIPE_KEYS) & set(written)


def test_a_recipe_round_trips_through_config_json_under_one_key(tmp_path):
    config = robovla.preset("tabletop-cpu")
    recipe = Recipe(cameras=("image",), proprio=True, grounding=False, action_chunk=4, selection="median")
    config.recipe = recipe
    model = robovla.build_model(config, norm_stats=STATS, seed=1)
    folder = robovla.save_pretrained(model, tmp_path / "m")
    written = json.loads((folder / "config.json").read_text())
    assert written[RECIPE_KEY] == {"cameras": ["image"], "proprio": True, "grounding": False,
                                   "grounding_source": "tokens", "action_chunk": 4, "action_head": "tokens",
                                   "selection": "median", "decoding": "autoregressive", "action_dim": 0,
                                   "state_tokens": 0, "state_dim": 0}
    assert not set(LEGACY_RECIPE_KEYS) & set(written)  # one key, no copies
    loaded = robovla.load_pretrained(folder)
    assert loaded.recipe == recipe and loaded.processor.recipe is loaded.config.recipe


def test_older_checkpoints_keys_are_read_into_the_recipe_and_saved_as_one_key(tmp_path):
    data = robovla.preset("tabletop-cpu").to_hf_dict()
    data.pop(RECIPE_KEY)
    data.update(robovla_proprio=True, robovla_grounding=True, robovla_action_chunk=4,
                robovla_action_selection="median")
    config = VLAConfig.from_hf_dict(data)
    assert config.recipe == Recipe(proprio=True, grounding=True, action_chunk=4, selection="median")
    assert not set(LEGACY_RECIPE_KEYS) & set(config.extra)
    again = VLAConfig.from_hf_dict(config.to_hf_dict())
    assert again.recipe == config.recipe


def test_set_recipe_keeps_the_model_and_its_processor_on_one_recipe():
    model = robovla.build_model("tabletop-cpu", norm_stats=STATS, seed=1)
    model.set_recipe(replace(model.recipe, action_chunk=3))
    assert model.processor.recipe is model.config.recipe and model.processor.action_chunk == 3


@pytest.mark.parametrize("fields, words", [
    ({"action_chunk": 0}, "recipe field 'action_chunk' must be a whole number >= 1, got 0"),
    ({"grounding_source": "pointer"}, "'grounding_source' is 'pointer', but 'grounding' is false"),
    ({"selection": "beam"}, "recipe field 'selection' is 'beam'; valid: greedy, median, sample"),
    ({"cameras": []}, "recipe field 'cameras' must name at least one camera"),
    ({"proprio": "yes"}, "recipe field 'proprio' must be true or false"),
])
def test_contradictory_recipes_name_the_field(fields, words):
    with pytest.raises(RobovlaError, match=words.replace("(", r"\(")):
        Recipe(**fields)


def test_bad_config_json_recipes_name_the_field():
    data = robovla.preset("tiny").to_hf_dict()
    with pytest.raises(RobovlaError, match="unknown recipe field\\(s\\) 'wrist_cam'"):
        VLAConfig.from_hf_dict({**data, RECIPE_KEY: {"wrist_cam": True}})
    with pytest.raises(RobovlaError, match="both robovla_recipe and the older keys robovla_proprio"):
        VLAConfig.from_hf_dict({**data, RECIPE_KEY: {"proprio": True}, "robovla_proprio": True})
    with pytest.raises(RobovlaError, match="'grounding_source' is 'pointer' but robovla_grounding_pointer"):
        VLAConfig.from_hf_dict({**data, RECIPE_KEY: {"grounding": True, "grounding_source": "pointer"}})


def test_training_options_change_only_the_fields_they_set():
    base = Recipe(proprio=True, action_chunk=4, selection="median")
    assert TrainConfig(grounding=True).recipe_for(base) == replace(base, grounding=True)
    assert TrainConfig().recipe_for(base) == base
