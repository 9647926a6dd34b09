"""The policy server over a real loopback socket: OpenVLA /act wire compatibility, /act/batch, metadata,
metrics, every bad input answered 4xx with the field named, and the server still serving afterwards."""

from __future__ import annotations

import json
import socket
import time

import httpx
import json_numpy
import numpy as np
import numpy.testing  # imported before any test patches json (json_numpy breaks its import-time json.loads)
import pytest

from robovla.serve import BackgroundServer, ServerConfig, create_app

CONFIG = ServerConfig(max_image_side=256, max_batch_request=4, max_wait_ms=2.0)
LIMIT = CONFIG.body_limit(cameras=1)  # the derived body limit: one 256 x 256 image and the rest
KEYS = ("bridge_orig", "toy_kitchen")


def image(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def server(tiny_vla):
    with BackgroundServer(create_app(tiny_vla, CONFIG, "tiny-openvla")) as running:
        yield running


@pytest.fixture
def deploy_json(monkeypatch):
    """What an OpenVLA deploy.py client does first: `json_numpy.patch()`; undone after the test."""
    monkeypatch.setattr(json, "dumps", json.dumps)
    monkeypatch.setattr(json, "loads", json.loads)
    json_numpy.patch()


def post_like_deploy_client(url: str, payload: dict) -> httpx.Response:
    """`requests.post(url, json=payload)` with json patched; httpx binds json.dumps at import, so dump here."""
    return httpx.post(url, content=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=60)


def expected(vla, picture: np.ndarray, instruction: str, key: str) -> np.ndarray:
    return vla.predict_action(picture, instruction, key)


def assert_error(response: httpx.Response, status: int, field: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    for word in words:
        assert word in body["error"], body


# ------------------------------------------------------------------------------------ OpenVLA wire format
def test_act_plain_form_matches_predict_action(server, tiny_vla, deploy_json):
    picture = image(1)
    response = post_like_deploy_client(
        server.url + "/act", {"image": picture, "instruction": "Pick up the red cube", "unnorm_key": "bridge_orig"}
    )
    assert response.status_code == 200
    action = response.json()  # the deploy client's line: json-numpy decodes the array
    assert isinstance(action, np.ndarray) and action.shape == (7,) and action.dtype == np.float64
    np.testing.assert_array_equal(action, expected(tiny_vla, picture, "Pick up the red cube", "bridge_orig"))


def test_act_encoded_form_matches_predict_action(server, tiny_vla):
    picture = image(2, 40, 40)
    body = {"encoded": json_numpy.dumps({"image": picture, "instruction": "open the drawer",
                                         "unnorm_key": "toy_kitchen"})}
    response = httpx.post(server.url + "/act", json=body, timeout=60)  # plain JSON: no json-numpy on the client
    assert response.status_code == 200
    action = json_numpy.loads(response.json())
    np.testing.assert_array_equal(action, expected(tiny_vla, picture, "open the drawer", "toy_kitchen"))


def test_act_accepts_openpi_style_keys(server, tiny_vla):
    picture = image(3)
    body = json_numpy.dumps({"observation/image": picture, "prompt": "wipe the table", "unnorm_key": "bridge_orig"})
    response = httpx.post(server.url + "/act", content=body, timeout=60)
    np.testing.assert_array_equal(json_numpy.loads(response.text),
                                  expected(tiny_vla, picture, "wipe the table", "bridge_orig"))


def test_batch_endpoint_mixes_keys_and_lengths(server, tiny_vla):
    observations = [
        {"image": image(10), "instruction": "push the blue block left", "unnorm_key": "bridge_orig"},
        {"image": image(11, 50, 20), "instruction": "stack", "unnorm_key": "toy_kitchen"},
        {"image": image(12), "instruction": "put the spoon in the pot", "unnorm_key": "bridge_orig"},
    ]
    response = httpx.post(server.url + "/act/batch", content=json_numpy.dumps({"observations": observations}),
                          timeout=60)
    assert response.status_code == 200
    actions = json_numpy.loads(response.text)["actions"]
    assert len(actions) == 3
    for obs, action in zip(observations, actions):
        np.testing.assert_array_equal(action, expected(tiny_vla, obs["image"], obs["instruction"],
                                                        obs["unnorm_key"]))
    encoded = httpx.post(server.url + "/act/batch", timeout=60,
                         json={"encoded": json_numpy.dumps({"observations": observations[:1]})})
    np.testing.assert_array_equal(json_numpy.loads(encoded.json())["actions"][0], actions[0])


def test_health_metadata_and_metrics(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    meta = httpx.get(server.url + "/metadata").json()
    assert meta["model"] == "tiny-openvla" and meta["action_dim"] == 7 and meta["image_size"] == [224, 224]
    assert meta["unnorm_keys"] == list(KEYS) and meta["unnorm_key_required"] is True
    assert meta["grounding"] is None  # the reference layout: actions only
    text = httpx.get(server.url + "/metrics").text
    assert "# TYPE robovla_requests_total counter" in text and 'robovla_batch_size_bucket{le="+Inf"}' in text


# -------------------------------------------------------------------------------------------- bad input
GOOD = {"image": image(0), "instruction": "pick up the cube", "unnorm_key": "bridge_orig"}


@pytest.mark.parametrize(
    "change, status, field, words",
    [
        ({"image": None}, 400, "image", ["missing field 'image'"]),
        ({"instruction": None}, 400, "instruction", ["missing field 'instruction'"]),
        ({"instruction": "   "}, 400, "instruction", ["non-empty"]),
        ({"instruction": 7}, 400, "instruction", ["non-empty string"]),
        ({"image": np.zeros((24, 32), np.uint8)}, 400, "image", ["HxWx3", "(24, 32)"]),
        ({"image": np.zeros((24, 32, 3), np.float32)}, 400, "image", ["uint8", "float32"]),
        ({"image": np.zeros((0, 32, 3), np.uint8)}, 400, "image", ["empty"]),
        ({"image": [[[0, 0, 0]]]}, 400, "image", ["json-numpy", "list"]),
        ({"image": np.zeros((8, 300, 3), np.uint8)}, 413, "image", ["limit is 256"]),
        ({"unnorm_key": "mars_rover"}, 400, "unnorm_key", ["mars_rover", "bridge_orig, toy_kitchen"]),
        ({"unnorm_key": None}, 400, "unnorm_key", ["required", "bridge_orig, toy_kitchen"]),
    ],
)
def test_bad_observation_names_the_field(server, change, status, field, words):
    payload = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert_error(httpx.post(server.url + "/act", content=json_numpy.dumps(payload), timeout=60),
                 status, field, *words)


@pytest.mark.parametrize(
    "body, field, words",
    [
        (b"this is not json", "body", ["not valid JSON"]),
        (b'{"image": {"__numpy__": "AAAA", "dtype": "|O", "shape": [1]}, "instruction": "x"}', "body",
         ["not allowed"]),
        (b'{"image": {"__numpy__": "AAAA", "dtype": "|u1", "shape": [9, 9, 3]}, "instruction": "x"}', "body",
         ["bytes"]),
        (b'{"encoded": "{broken"}', "encoded", ["not valid JSON"]),
        (b'{"encoded": "{}", "image": 1}', "encoded", ["exactly"]),
        (b'[1, 2, 3]', "body", ["JSON object"]),
    ],
)
def test_bad_body_names_the_field(server, body, field, words):
    assert_error(httpx.post(server.url + "/act", content=body, timeout=60), 400, field, *words)


def test_bad_batches(server):
    url = server.url + "/act/batch"
    assert_error(httpx.post(url, content=json_numpy.dumps({"observations": []})), 400, "observations")
    too_many = {"observations": [GOOD] * 5}
    assert_error(httpx.post(url, content=json_numpy.dumps(too_many)), 413, "observations", "limit is 4")
    one_bad = {"observations": [GOOD, {**GOOD, "image": np.zeros((4, 4), np.uint8)}]}
    assert_error(httpx.post(url, content=json_numpy.dumps(one_bad)), 400, "observations[1].image", "HxWx3")


def test_oversized_body_is_refused_without_reading_it(server):
    big = b"x" * (LIMIT + 1)
    assert_error(httpx.post(server.url + "/act", content=big), 413, "body", "limit")

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(8):
            yield b"y" * (LIMIT // 4)

    assert_error(httpx.post(server.url + "/act", content=chunks()), 413, "body", "limit")


def test_the_body_limit_fits_the_largest_valid_observation(server, tiny_vla):
    """An image at max_image_side, in json-numpy's base64 and in the encoded form, passes the body limit."""
    largest = {"image": image(3, 256, 256), "instruction": "pick up the red block " * 20,
               "unnorm_key": "bridge_orig"}
    for body in (json_numpy.dumps(largest), json.dumps({"encoded": json_numpy.dumps(largest)})):
        assert len(body) <= LIMIT
        reply = httpx.post(server.url + "/act", content=body, timeout=60)
        assert reply.status_code == 200, reply.text
    assert httpx.get(server.url + "/metadata").json()["max_body_bytes"] == LIMIT


def test_a_body_limit_too_small_for_one_observation_is_refused_at_start(tiny_vla):
    from robovla import RobovlaError
    from robovla.serve.config import observation_body_bytes

    needed = observation_body_bytes(2048, 2)
    assert needed > 2 * 4 * 2048 * 2048  # two base64 images
    with pytest.raises(RobovlaError, match=r"2 camera image\(s\) at the largest accepted side, 2048 px"):
        ServerConfig(max_body_bytes=32 * 2**20).body_limit(cameras=2)
    with pytest.raises(RobovlaError, match="raise the body limit or lower the image side"):
        create_app(tiny_vla, ServerConfig(max_body_bytes=2**20, max_image_side=1024))
    assert ServerConfig(max_body_bytes=needed).body_limit(cameras=2) == needed


def raw_request(server, body: bytes, declared_length: int) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        head = (f"POST /act HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {declared_length}\r\n\r\n").encode()
        sock.sendall(head + body)
    # the socket is closed here, before any reply was read


def metric(server, line_prefix: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_client_disconnects_mid_request(server, tiny_vla):
    full = json_numpy.dumps(GOOD).encode()
    raw_request(server, full[:100], len(full))  # gone while sending the body
    for _ in range(3):
        raw_request(server, full, len(full))  # gone while waiting for the action
    deadline = time.monotonic() + 20
    while metric(server, 'robovla_requests_total{route="/act",status="499"}') < 1:
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.05)
    response = httpx.post(server.url + "/act", content=full, timeout=60)  # and it keeps serving
    np.testing.assert_array_equal(json_numpy.loads(response.text),
                                  expected(tiny_vla, GOOD["image"], GOOD["instruction"], "bridge_orig"))


# ---------------------------------------------------------------------------------------------- API key
def test_api_key(tiny_vla, monkeypatch):
    config = ServerConfig(api_key="s3cret")
    with BackgroundServer(create_app(tiny_vla, config)) as keyed:
        url = keyed.url + "/act"
        body = json_numpy.dumps(GOOD)
        assert_error(httpx.post(url, content=body), 401, "api_key", "API key")
        assert_error(httpx.post(url, content=body, headers={"X-API-Key": "wrong"}), 401, "api_key")
        assert_error(httpx.get(keyed.url + "/metadata"), 401, "api_key")
        assert httpx.get(keyed.url + "/health").status_code == 200  # open for load balancers
        for headers in ({"X-API-Key": "s3cret"}, {"Authorization": "Bearer s3cret"},
                        {"Authorization": "Api-Key s3cret"}):
            assert httpx.post(url, content=body, headers=headers, timeout=60).status_code == 200
        text = httpx.get(keyed.url + "/metrics", headers={"X-API-Key": "s3cret"}).text
        assert 'robovla_requests_total{route="/act",status="401"} 2' in text


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_serve_logs_one_line_per_request(tmp_path):
    """`robovla serve` end to end in a subprocess: API key from the environment, one log line per request."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import TINY_CHECKPOINT

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "serve.log").open("w+")
    env = {**os.environ, "ROBOVLA_API_KEY": "from-env"}
    process = subprocess.Popen([sys.executable, "-m", "robovla.cli", "serve", "--checkpoint", str(TINY_CHECKPOINT),
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "robovla serve did not come up"
                time.sleep(0.2)
        assert httpx.post(url + "/act", content=json_numpy.dumps(GOOD)).status_code == 401
        ok = httpx.post(url + "/act", content=json_numpy.dumps(GOOD), headers={"X-API-Key": "from-env"}, timeout=60)
        assert ok.status_code == 200 and json_numpy.loads(ok.text).shape == (7,)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            stopped = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stopped = None
    assert stopped == 0, (f"robovla serve did not stop cleanly within 60 s of Ctrl-C (exit code {stopped}):\n"
                          + (tmp_path / "serve.log").read_text())
    text = (tmp_path / "serve.log").read_text()
    assert "API key required" in text
    assert [line.split("robovla.serve: ")[1].split(" ms")[0].rsplit(" ", 1)[0]
            for line in text.splitlines() if "robovla.serve: POST /act" in line] == ["POST /act 401", "POST /act 200"]
    assert "batch=1" in text


def test_cli_serve_bad_arguments(capsys):
    from robovla.cli import main

    assert main(["serve", "--checkpoint", "/no/such/folder"]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", "/no/such/folder", "--max-queue", "0"]) == 2
    assert "max_queue must be at least 1" in capsys.readouterr().err


def test_a_recipe_with_two_cameras_needs_both_images_named(tiny_vla):
    """The request parser reads the cameras the model's recipe names, each under its name or `observation/NAME`."""
    from dataclasses import replace

    from robovla.processing import VLAProcessor
    from robovla.serve.errors import RequestError
    from robovla.serve.observation import parse_observation

    base = tiny_vla.processor
    processor = VLAProcessor(base.image_config, base.tokenizer, base.action_tokenizer, base.norm_stats,
                             replace(tiny_vla.recipe, cameras=("image", "wrist_image")))
    payload = {"image": image(1), "observation/wrist_image": image(2, 16, 16), "instruction": "lift the cup",
               "unnorm_key": "bridge_orig"}
    parsed = parse_observation(payload, base.norm_stats, 256, "", processor)
    assert list(parsed.images) == ["image", "wrist_image"] and parsed.images["wrist_image"].size == (16, 16)
    with pytest.raises(RequestError) as refused:
        parse_observation({k: v for k, v in payload.items() if "wrist" not in k}, base.norm_stats, 256,
                          "observations[1].", processor)
    assert refused.value.field == "observations[1].wrist_image" and "observation/wrist_image" in str(refused.value)


def test_an_instruction_longer_than_the_context_is_refused_before_the_model(tiny_vla, monkeypatch):
    """Bounded work per request: too many characters is refused untokenized, too many tokens after tokenizing;
    neither reaches the model's worker."""
    calls = []
    prefill = tiny_vla.prefill
    monkeypatch.setattr(tiny_vla, "prefill", lambda *a, **k: calls.append(1) or prefill(*a, **k))
    with BackgroundServer(create_app(tiny_vla, CONFIG, "tiny")) as running:
        limit = httpx.get(running.url + "/metadata").json()["max_prompt_tokens"]
        assert limit == 2048 - tiny_vla.vision_backbone.num_patches - 7  # context - patches - the action's ids
        url = running.url + "/act"
        huge = {"image": image(1), "instruction": "x" * 100_000, "unnorm_key": "bridge_orig"}
        assert_error(httpx.post(url, content=json_numpy.dumps(huge), timeout=60), 400, "instruction",
                     "100000 characters", f"room for {limit} prompt tokens")
        long = {**huge, "instruction": "put the cube in the bowl " * 400}
        assert_error(httpx.post(url, content=json_numpy.dumps(long), timeout=60), 400, "instruction",
                     "prompt tokens", f"room for {limit}")
        assert not calls
        ok = httpx.post(url, content=json_numpy.dumps({**huge, "instruction": "put the cube in the bowl"}), timeout=60)
        assert ok.status_code == 200 and calls
