"""The server under concurrency: 200 requests from 16 clients, none lost or mixed up, batches formed by the
dynamic batcher, and a full queue answered 503 + Retry-After while the server keeps serving."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import json_numpy
import numpy as np

from robovla.serve import BackgroundServer, ServerConfig, create_app

VERBS = ["pick up", "push", "put away", "open", "close the lid of", "move left of the bowl"]
OBJECTS = ["the red cube", "a spoon", "the tall green bottle near the sink", "the drawer", "it"]


def observation(i: int) -> dict:
    """Request i's own distinct image (its index is drawn into the pixels), instruction and unnorm_key."""
    rng = np.random.default_rng(1000 + i)
    picture = rng.integers(0, 256, (16 + i % 7, 24 + i % 5, 3), dtype=np.uint8)
    instruction = f"{VERBS[i % len(VERBS)]} {OBJECTS[(i // len(VERBS)) % len(OBJECTS)]} #{i}"
    return {"image": picture, "instruction": instruction, "unnorm_key": ("bridge_orig", "toy_kitchen")[i % 2]}


def metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def expected_actions(vla, requests: list[dict]) -> list[np.ndarray]:
    """Each request's action from the model directly (batched by key: padding does not change the result)."""
    actions: list[np.ndarray] = [np.empty(0)] * len(requests)
    for key in ("bridge_orig", "toy_kitchen"):
        rows = [i for i, o in enumerate(requests) if o["unnorm_key"] == key]
        for start in range(0, len(rows), 25):
            chunk = rows[start:start + 25]
            predicted = vla.predict([requests[i]["image"] for i in chunk],
                                    [requests[i]["instruction"] for i in chunk], key).first
            for i, action in zip(chunk, predicted):
                actions[i] = action
    return actions


def test_200_requests_from_16_clients(tiny_vla):
    requests = [observation(i) for i in range(200)]
    expected = expected_actions(tiny_vla, requests)
    config = ServerConfig(max_batch_size=16, max_wait_ms=5.0, max_queue=256)
    with BackgroundServer(create_app(tiny_vla, config)) as server:
        def client(worker: int) -> list[tuple[int, int, np.ndarray]]:
            answers = []
            with httpx.Client(base_url=server.url, timeout=120) as http:
                for i in range(worker, len(requests), 16):  # 12 or 13 requests each, one after another
                    response = http.post("/act", content=json_numpy.dumps(requests[i]))
                    answers.append((i, response.status_code, json_numpy.loads(response.text)))
            return answers

        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            answers = [a for chunk in pool.map(client, range(16)) for a in chunk]
        seconds = time.perf_counter() - start
        metrics = httpx.get(server.url + "/metrics").text
    assert sorted(i for i, _, _ in answers) == list(range(200))  # none lost, none answered twice
    for i, status, action in answers:
        assert status == 200, action
        np.testing.assert_array_equal(action, expected[i], err_msg=f"request {i} got another request's action")
    batches = metric(metrics, "robovla_batch_size_count")
    assert metric(metrics, "robovla_observations_total") == 200
    assert metric(metrics, "robovla_batch_size_max") > 1 and batches < 200, "the batcher formed no batches"
    print(f"\n200 requests / 16 clients: {200 / seconds:.1f} requests/s, {batches:.0f} model calls, "
          f"mean batch {200 / batches:.1f}, max batch {metric(metrics, 'robovla_batch_size_max'):.0f}")


def test_full_queue_is_503_with_retry_after(tiny_vla):
    config = ServerConfig(max_batch_size=1, max_wait_ms=0.0, max_queue=1, retry_after_s=2)
    with BackgroundServer(create_app(tiny_vla, config)) as server:
        two = {"observations": [observation(0), observation(1)]}  # more than the queue holds, at once
        refused = httpx.post(server.url + "/act/batch", content=json_numpy.dumps(two))
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
        assert refused.json()["field"] == "queue" and "retry later" in refused.json()["error"]

        start = threading.Barrier(16)

        def client(i: int) -> tuple[int, httpx.Response]:
            start.wait()
            return i, httpx.post(server.url + "/act", content=json_numpy.dumps(observation(i)), timeout=120)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(client, range(16)))
        statuses = [response.status_code for _, response in results]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        for i, response in results:
            if response.status_code == 200:
                o = observation(i)
                np.testing.assert_array_equal(json_numpy.loads(response.text),
                                              tiny_vla.predict_action(o["image"], o["instruction"], o["unnorm_key"]))
            else:
                assert response.headers["Retry-After"] == "2"
        after = httpx.post(server.url + "/act", content=json_numpy.dumps(observation(99)), timeout=120)
        assert after.status_code == 200  # still serving
        metrics = httpx.get(server.url + "/metrics").text
        assert metric(metrics, "robovla_rejected_total") == 1 + statuses.count(503)
