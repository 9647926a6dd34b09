"""The wire protocol as robovla's own client speaks it: the robot state goes out, the whole chunk comes back,
/metadata says what a client must send, and `serve --action-tokens-only` reaches the model's decoding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_CHECKPOINT

import robovla
import robovla.serve
from robovla.cli import main
from robovla.client import PolicyClient, WebsocketPolicyClient
from robovla.serve import BackgroundServer, ServerConfig, create_app

STATS = {"tabletop_default": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0],
                                         "mask": [True] * 6 + [False]},
                              "proprio": {"q01": [-0.2, -0.13, 0.0, -0.01, -0.01, -1.2, 0.0],
                                          "q99": [0.2, 0.13, 0.18, 0.01, 0.01, 1.2, 1.0]}}}


@pytest.fixture(scope="module")
def proprio_chunk_model():
    config = robovla.preset("tabletop-cpu")  # reads the robot state as prompt tokens
    config.recipe = robovla.Recipe(proprio=True, action_chunk=3)
    model = robovla.build_model(config, norm_stats=STATS, seed=2)
    assert model.recipe.proprio and model.recipe.action_chunk == 3
    return model


def observation(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), rng.uniform(-0.1, 0.1, 7)


@pytest.mark.parametrize("restrict", [False, True])
def test_clients_drive_a_model_that_reads_the_robot_state(proprio_chunk_model, restrict):
    model = proprio_chunk_model
    config = ServerConfig(max_wait_ms=0.0, restrict_to_actions=restrict)
    image, state = observation(1)
    decoding = robovla.Decoding(restrict_to_actions=restrict)
    expected = model.predict([image], ["put the red cube in the bowl"], proprio=[state], decoding=decoding).actions[0]
    with BackgroundServer(create_app(model, config, "stateful")) as server:
        rest = PolicyClient(server.url)
        assert np.array_equal(rest.act_chunk(image, "put the red cube in the bowl", proprio=state), expected)
        assert np.array_equal(rest.act(image, "put the red cube in the bowl", proprio=state), expected[0])
        second, other = observation(2)
        batch = rest.act_chunk_batch([{"image": image, "instruction": "put the red cube in the bowl", "proprio": state},
                                      {"image": second, "instruction": "push the cube", "proprio": other}])
        together = model.predict([image, second], ["put the red cube in the bowl", "push the cube"],
                                 proprio=[state, other], decoding=decoding).actions
        assert np.array_equal(np.stack(batch), together)
        assert [a.shape for a in rest.act_batch([{"image": image, "instruction": "x", "proprio": state}])] == [(7,)]
        with WebsocketPolicyClient(f"ws://{server.host}:{server.port}") as ws:
            assert np.array_equal(ws.act_chunk(image, "put the red cube in the bowl", proprio=state), expected)
            assert np.array_equal(ws.act(image, "put the red cube in the bowl", proprio=state), expected[0])
        meta = rest.metadata()
    assert meta["proprio_required"] and meta["proprio_dim"] == 7 and meta["proprio_dims"] == {"tabletop_default": 7}
    assert meta["action_horizon"] == 3 and meta["restrict_to_actions"] is restrict
    assert meta["image_keys"] == ["image", "observation/image"] and "proprio" in meta["proprio_keys"]
    assert meta["unnorm_keys"] == ["tabletop_default"]


def test_a_missing_state_is_refused_naming_the_field(proprio_chunk_model):
    from robovla.client import PolicyServerError

    config = ServerConfig(max_wait_ms=0.0)
    image, _ = observation(3)
    with BackgroundServer(create_app(proprio_chunk_model, config, "stateful")) as server:
        with pytest.raises(PolicyServerError) as refused:
            PolicyClient(server.url).act(image, "push the cube")
    assert refused.value.status == 400 and refused.value.field == "proprio"


def test_a_plain_model_still_answers_with_its_vector(tiny_vla):
    config = ServerConfig(max_wait_ms=0.0)
    image = np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    with BackgroundServer(create_app(tiny_vla, config, "tiny")) as server:
        client = PolicyClient(server.url)
        raw = client._request("/act", {"image": image, "instruction": "lift the cup", "unnorm_key": "bridge_orig"})
        assert np.asarray(raw).shape == (7,)  # the reference's reply, unchanged
        assert client.act_chunk(image, "lift the cup", "bridge_orig").shape == (1, 7)
        meta = client.metadata()
    assert meta["proprio_required"] is False and meta["proprio_dim"] is None and meta["action_horizon"] == 1


@pytest.mark.parametrize("flags, restrict", [([], False), (["--action-tokens-only"], True)])
def test_action_tokens_only_flag_reaches_the_model(monkeypatch, flags, restrict):
    """`robovla serve --action-tokens-only` decodes over the action tokens only; the default is the reference's."""
    served = {}
    monkeypatch.setattr(robovla.serve, "serve_forever", lambda app, config, **_: served.update(app=app, config=config))
    assert main(["serve", "--checkpoint", str(TINY_CHECKPOINT), "--log-level", "warning", *flags]) == 0
    app, config = served["app"], served["config"]
    assert config.restrict_to_actions is restrict
    model = app.state.service.model
    calls = []
    decode = model.decode

    def spy(prefix, decoding, *args, **kwargs):
        calls.append(decoding.restrict_to_actions)
        return decode(prefix, decoding, *args, **kwargs)

    monkeypatch.setattr(model, "decode", spy)
    image = np.random.default_rng(5).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    with BackgroundServer(app) as server:
        client = PolicyClient(server.url)
        action = client.act(image, "lift the cup", "bridge_orig")
        assert client.metadata()["restrict_to_actions"] is restrict
    assert calls == [restrict]
    np.testing.assert_array_equal(action, model.predict([image], ["lift the cup"], "bridge_orig",
                                                        decoding=robovla.Decoding(restrict_to_actions=restrict)).first[0])
