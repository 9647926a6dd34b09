"""Robot state in the prompt (`recipe.proprio`): one encoding for training, evaluation and the server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

import robovla
from robovla.errors import RobovlaError
from robovla.processing import IGNORE_INDEX
from robovla.serve import BackgroundServer, ServerConfig, create_app

STATS = {
    "tabletop_default": {
        "action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]},
        # roll never varies here: that dim must pass raw rather than divide by zero
        "proprio": {"q01": [-0.2, -0.1, 0.0, 0.0, -0.01, -1.0, 0.0], "q99": [0.2, 0.1, 0.2, 0.0, 0.01, 1.0, 1.0]},
    }
}
STATE = np.array([0.1, -0.05, 0.1, 0.0, 0.0, 0.5, 0.75])


@pytest.fixture(scope="module")
def model():
    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(proprio=True)
    return robovla.build_model(config, norm_stats=STATS, seed=3)


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)


def test_state_tokens_sit_between_prompt_and_actions(model):
    processor = model.processor
    plain = processor.tokenizer.encode("In: What action should the robot take to push the cube?\nOut:")
    ids = processor.prompt_ids("push the cube", STATE, "tabletop_default")
    state_ids = ids[len(plain):-1]
    assert ids[: len(plain)] == plain and ids[-1] == processor.tokenizer.space_token_id
    # x = 0.1 of [-0.2, 0.2] is +0.5 normalised; roll passes raw (0.0); the gripper 0.75 of [0, 1] is +0.5
    expected = processor.action_tokenizer.encode(np.array([0.5, -0.5, 0.0, 0.0, 0.0, 0.5, 0.5])).tolist()
    assert state_ids == expected
    moved = processor.prompt_ids("push the cube", STATE + [0.1, 0, 0, 0, 0, 0, 0], "tabletop_default")
    assert moved[len(plain)] != ids[len(plain)] and moved[len(plain) + 1:] == ids[len(plain) + 1:]


def test_training_labels_cover_only_actions(model):
    example = model.processor.training_example(picture(0), "push the cube", np.zeros(7), "tabletop_default", STATE)
    labelled = (example["labels"] != IGNORE_INDEX).sum().item()
    assert labelled == 8  # 7 action tokens + EOS; the state tokens are inputs, never targets


def test_predictions_depend_on_the_state_and_batch_like_singles(model):
    images = [picture(1), picture(2)]
    states = [STATE, -STATE]
    batch = model.predict(images, ["push the cube"] * 2, "tabletop_default", proprio=states)
    for k in range(2):
        single = model.predict_action(images[k], "push the cube", "tabletop_default", return_token_ids=True,
                                      proprio=states[k])
        np.testing.assert_array_equal(single[1], batch.token_ids[k, 0])
    prompts = model.processor.encode_prompts(["push the cube"] * 2, states, "tabletop_default")
    assert not np.array_equal(prompts.input_ids[0].numpy(), prompts.input_ids[1].numpy())


def test_missing_or_malformed_state_is_a_clear_error(model):
    with pytest.raises(RobovlaError, match="pass proprio"):
        model.predict_action(picture(0), "push the cube", "tabletop_default")
    with pytest.raises(RobovlaError, match="vector of 7 numbers"):
        model.predict_action(picture(0), "push the cube", "tabletop_default", proprio=STATE[:3])
    with pytest.raises(RobovlaError, match="NaN"):
        model.predict_action(picture(0), "push the cube", "tabletop_default", proprio=STATE * np.nan)
    with pytest.raises(RobovlaError, match="2 proprio vectors but 1 instructions"):
        model.processor.encode_prompts(["push"], [STATE, STATE], "tabletop_default")


def test_setting_survives_save_and_load(model, tmp_path):
    folder = robovla.save_pretrained(model, tmp_path / "ckpt")
    loaded = robovla.load_pretrained(folder)
    assert loaded.recipe.proprio and loaded.processor.uses_proprio
    a = model.predict_action(picture(4), "push the cube", "tabletop_default", proprio=STATE)
    b = loaded.predict_action(picture(4), "push the cube", "tabletop_default", proprio=STATE)
    np.testing.assert_array_equal(a, b)


def test_server_requires_and_uses_the_state(model):
    import json_numpy

    config = ServerConfig(max_wait_ms=1.0)
    with BackgroundServer(create_app(model, config, "tiny-proprio")) as server:
        assert httpx.get(f"{server.url}/metadata", timeout=30).json()["proprio_required"] is True
        body = {"image": picture(5), "instruction": "push the cube"}
        missing = httpx.post(f"{server.url}/act", content=json_numpy.dumps(body), timeout=60)
        assert missing.status_code == 400 and missing.json()["field"] == "proprio", missing.text
        bad = httpx.post(f"{server.url}/act", content=json_numpy.dumps({**body, "proprio": [1.0, 2.0]}), timeout=60)
        assert bad.status_code == 400 and "vector of 7 numbers" in bad.json()["error"], bad.text
        ok = httpx.post(f"{server.url}/act", content=json_numpy.dumps({**body, "state": STATE}), timeout=60)
        assert ok.status_code == 200, ok.text
        np.testing.assert_allclose(json_numpy.loads(ok.text),
                                   model.predict_action(picture(5), "push the cube", proprio=STATE), atol=1e-6)


def test_predict_cli_reads_the_state(model, tmp_path, capsys):
    import json

    from PIL import Image

    from robovla.cli import main

    folder = robovla.save_pretrained(model, tmp_path / "ckpt")
    frame = tmp_path / "frame.png"
    Image.fromarray(picture(6)).save(frame)
    args = ["predict", "--checkpoint", str(folder), "--image", str(frame), "--instruction", "push the cube"]
    assert main(args) == 2 and "pass proprio" in capsys.readouterr().err
    assert main(args + ["--proprio", "1,x"]) == 2 and "comma-separated numbers" in capsys.readouterr().err
    assert main(args + ["--proprio", ",".join(map(str, STATE)), "--json"]) == 0
    action = json.loads(capsys.readouterr().out)["action"]
    np.testing.assert_allclose(action, model.predict_action(picture(6), "push the cube", proprio=STATE), atol=1e-6)
