"""robovla.client: importable without torch, codecs compatible with json-numpy and openpi's msgpack layout,
and both clients (REST and websocket) against a live server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import json_numpy
import msgpack
import numpy as np
import pytest

from robovla.client import (
    PolicyClient,
    PolicyServerError,
    WebsocketPolicyClient,
    json_numpy_dumps,
    json_numpy_loads,
    msgpack_packb,
    msgpack_unpackb,
)
from robovla.serve import BackgroundServer, ServerConfig, create_app

CLIENT_FILE = Path(__file__).parents[1] / "src" / "robovla" / "client.py"


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (30, 20, 3), dtype=np.uint8)


def test_client_file_imports_numpy_and_stdlib_only():
    """A robot copies client.py alone: loading it must not pull torch, robovla, msgpack or websockets."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('policy_client', {str(CLIENT_FILE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = [m for m in ('torch', 'robovla', 'msgpack', 'websockets', 'PIL') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_codecs_match_json_numpy_and_openpi():
    arrays = {"u8": image(0), "f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), "b": np.array([True])}
    for name, array in arrays.items():
        np.testing.assert_array_equal(json_numpy.loads(json_numpy_dumps({name: array}))[name], array)
        np.testing.assert_array_equal(json_numpy_loads(json_numpy.dumps({name: array}))[name], array)
        assert json_numpy.loads(json_numpy_dumps(array)).dtype == array.dtype
    packed = msgpack.unpackb(msgpack_packb({"a": arrays["f32"]}))  # openpi's layout: bytes keys
    assert packed["a"][b"__ndarray__"] is True and packed["a"][b"dtype"] == "<f4"
    assert packed["a"][b"shape"] == [2, 3]
    np.testing.assert_array_equal(msgpack_unpackb(msgpack_packb({"a": arrays["f32"]}))["a"], arrays["f32"])
    with pytest.raises(ValueError, match="not allowed"):
        json_numpy_loads('{"__numpy__": "", "dtype": "|O", "shape": [0]}')
    with pytest.raises(ValueError, match="bytes"):
        msgpack_unpackb(msgpack.packb({b"__ndarray__": True, b"data": b"\x00", b"dtype": "<f8", b"shape": [2]}))


@pytest.fixture(scope="module")
def server(tiny_vla):
    config = ServerConfig(api_key="robot-key", max_queue=8)
    with BackgroundServer(create_app(tiny_vla, config, "tiny-openvla")) as running:
        yield running


def test_rest_client(server, tiny_vla):
    client = PolicyClient(server.url, api_key="robot-key")
    assert client.health()["status"] == "ok"
    assert client.metadata()["unnorm_keys"] == ["bridge_orig", "toy_kitchen"]
    action = client.act(image(1), "lift the cup", "toy_kitchen")
    np.testing.assert_array_equal(action, tiny_vla.predict_action(image(1), "lift the cup", "toy_kitchen"))
    actions = client.act_batch([{"image": image(2), "instruction": "a", "unnorm_key": "bridge_orig"},
                                {"image": image(3), "instruction": "b c", "unnorm_key": "bridge_orig"}])
    np.testing.assert_array_equal(np.stack(actions),
                                  tiny_vla.predict([image(2), image(3)], ["a", "b c"], "bridge_orig").first)


def test_rest_client_errors(server):
    with pytest.raises(PolicyServerError) as error:
        PolicyClient(server.url, api_key="robot-key").act(image(1), "lift the cup", "atlantis")
    assert error.value.status == 400 and error.value.field == "unnorm_key" and "bridge_orig" in error.value.message
    with pytest.raises(PolicyServerError) as error:
        PolicyClient(server.url).act(image(1), "lift the cup", "bridge_orig")
    assert error.value.status == 401 and error.value.field == "api_key"
    too_many = [{"image": image(i), "instruction": "x", "unnorm_key": "bridge_orig"} for i in range(9)]
    with pytest.raises(PolicyServerError) as error:
        PolicyClient(server.url, api_key="robot-key").act_batch(too_many)
    assert error.value.status == 503 and error.value.retry_after == 1.0


def test_websocket_client(server, tiny_vla):
    with WebsocketPolicyClient(f"ws://{server.host}:{server.port}", api_key="robot-key") as client:
        assert client.metadata["action_horizon"] == 1
        action = client.act(image(4), "close the drawer", "bridge_orig")
        np.testing.assert_array_equal(action, tiny_vla.predict_action(image(4), "close the drawer", "bridge_orig"))
        with pytest.raises(PolicyServerError) as error:
            client.act(image(4), "", "bridge_orig")
        assert error.value.status == 400 and error.value.field == "instruction"
        assert client.infer({"observation/image": image(5), "prompt": "go", "unnorm_key": "bridge_orig"})[
            "actions"].shape == (1, 7)


def test_chunk_executor_runs_chunks_open_loop_replans_or_ensembles():
    from robovla.client import ChunkExecutor

    asked = []

    def ask(step):
        asked.append(step)
        return np.arange(3)[:, None] + 10.0 * step  # the chunk for steps step, step+1, step+2

    whole = ChunkExecutor(ask)
    assert [float(whole(t)[0]) for t in range(4)] == [0.0, 1.0, 2.0, 30.0] and asked == [0, 3]
    asked.clear()
    replanning = ChunkExecutor(ask, execute=2)
    assert [float(replanning(t)[0]) for t in range(4)] == [0.0, 1.0, 20.0, 21.0] and asked == [0, 2]
    asked.clear()
    ensembled = ChunkExecutor(ask, ensemble=0.0)  # a plain mean of every prediction for the step
    assert [float(ensembled(t)[0]) for t in range(3)] == [0.0, (1.0 + 10.0) / 2, (2.0 + 11.0 + 20.0) / 3]
    assert asked == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot be combined"):
        ChunkExecutor(ask, execute=2, ensemble=0.5)
