"""The openpi policy-server protocol, driven by an openpi-style client written here (msgpack with openpi's
`__ndarray__` layout, websockets' sync client), so nothing of robovla's own codec is used on the client side."""

from __future__ import annotations

import contextlib
import json

import msgpack
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from robovla.serve import BackgroundServer, ServerConfig, create_app


# ------------------------------------------------- openpi_client.msgpack_numpy, as openpi clients encode frames
def pack_array(obj):
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def unpack_array(obj):
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj) -> bytes:
    return msgpack.packb(obj, default=pack_array)


def unpackb(data: bytes):
    return msgpack.unpackb(data, object_hook=unpack_array)


class OpenpiStyleClient:
    """Mirrors openpi_client.WebsocketClientPolicy: metadata on connect, infer() = send packed obs, recv reply."""

    def __init__(self, uri: str, api_key: str | None = None) -> None:
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._stack = contextlib.ExitStack()  # websockets >= 17 wants connect() entered as a context
        self.ws = self._stack.enter_context(connect(uri, compression=None, max_size=None, additional_headers=headers))
        self.metadata = unpackb(self.ws.recv(timeout=30))

    def infer(self, obs: dict) -> dict:
        self.ws.send(packb(obs))
        reply = self.ws.recv(timeout=60)
        if isinstance(reply, str):
            raise RuntimeError(f"Error in inference server:\n{reply}")
        return unpackb(reply)

    def close(self) -> None:
        self._stack.close()


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server(tiny_vla):
    config = ServerConfig(max_wait_ms=1.0)
    with BackgroundServer(create_app(tiny_vla, config, "tiny-openvla")) as running:
        yield running


def ws_uri(server) -> str:
    return f"ws://{server.host}:{server.port}"


def test_openpi_round_trip(server, tiny_vla):
    client = OpenpiStyleClient(ws_uri(server))
    assert client.metadata["action_dim"] == 7 and client.metadata["unnorm_keys"] == ["bridge_orig", "toy_kitchen"]
    assert client.metadata["observation_keys"]["image"] == ["image", "observation/image"]
    for seed, (image_key, text_key), key in [(1, ("observation/image", "prompt"), "bridge_orig"),
                                            (2, ("image", "instruction"), "toy_kitchen")]:
        picture = image(seed)
        reply = client.infer({image_key: picture, text_key: "put the carrot on the plate", "unnorm_key": key,
                              "observation/state": np.zeros(8, np.float32)})  # extra openpi keys are ignored
        assert reply["actions"].shape == (1, 7)  # an action chunk of one step
        np.testing.assert_array_equal(reply["actions"][0],
                                      tiny_vla.predict_action(picture, "put the carrot on the plate", key))
        assert reply["server_timing"]["infer_ms"] > 0
    client.close()


def test_bad_frames_get_an_error_and_the_session_goes_on(server, tiny_vla):
    client = OpenpiStyleClient(ws_uri(server))
    cases = [
        ({"prompt": "pick", "unnorm_key": "bridge_orig"}, "image"),
        ({"image": image(3), "prompt": "pick", "unnorm_key": "pluto"}, "unnorm_key"),
        ({"image": np.zeros((4, 4), np.uint8), "prompt": "pick", "unnorm_key": "bridge_orig"}, "image"),
    ]
    for obs, field in cases:
        with pytest.raises(RuntimeError, match="Error in inference server") as error:
            client.infer(obs)
        assert json.loads(str(error.value).split("\n", 1)[1])["field"] == field
    client.ws.send(b"\xc1 not msgpack")
    assert json.loads(client.ws.recv(timeout=10))["field"] == "frame"
    client.ws.send("a text frame")
    assert json.loads(client.ws.recv(timeout=10))["field"] == "frame"
    reply = client.infer({"image": image(4), "prompt": "pick", "unnorm_key": "bridge_orig"})
    np.testing.assert_array_equal(reply["actions"][0], tiny_vla.predict_action(image(4), "pick", "bridge_orig"))
    client.close()


def test_client_disconnects_mid_request(server, tiny_vla):
    for _ in range(3):  # gone before the reply: the server logs 499 and goes on
        client = OpenpiStyleClient(ws_uri(server))
        client.ws.send(packb({"image": image(6), "prompt": "go", "unnorm_key": "bridge_orig"}))
        client.close()
    client = OpenpiStyleClient(ws_uri(server))
    reply = client.infer({"image": image(6), "prompt": "go", "unnorm_key": "bridge_orig"})
    np.testing.assert_array_equal(reply["actions"][0], tiny_vla.predict_action(image(6), "go", "bridge_orig"))
    client.close()


def test_websocket_api_key(tiny_vla):
    config = ServerConfig(api_key="k3y")
    with BackgroundServer(create_app(tiny_vla, config)) as keyed:
        with pytest.raises(InvalidStatus) as refused:
            OpenpiStyleClient(ws_uri(keyed))
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["field"] == "api_key"
        client = OpenpiStyleClient(ws_uri(keyed), api_key="k3y")  # openpi's header: Authorization: Api-Key
        assert client.metadata["auth_required"] is True
        client.close()


def test_a_chunking_model_sends_its_whole_chunk_over_both_protocols():
    import httpx
    import json_numpy

    import robovla

    config = robovla.preset("tiny")
    config.recipe = robovla.Recipe(action_chunk=3)
    stats = {"sim": {"action": {"q01": [-1.0] * 6 + [0.0], "q99": [1.0] * 6 + [1.0], "mask": [True] * 6 + [False]}}}
    model = robovla.build_model(config, norm_stats=stats, seed=4)
    server_config = ServerConfig(max_wait_ms=1.0)
    with BackgroundServer(create_app(model, server_config, "chunky")) as running:
        client = OpenpiStyleClient(ws_uri(running))
        assert client.metadata["action_horizon"] == 3
        reply = client.infer({"image": image(8), "prompt": "pick"})
        expected = model.predict([image(8)], ["pick"]).actions[0]
        assert reply["actions"].shape == (3, 7) and np.array_equal(reply["actions"], expected)
        client.close()
        body = json_numpy.dumps({"image": image(8), "instruction": "pick"})
        response = httpx.post(f"http://{running.host}:{running.port}/act", content=body,
                              headers={"content-type": "application/json"})
        assert np.array_equal(json_numpy.loads(response.text), expected)  # REST /act: the chunk too
