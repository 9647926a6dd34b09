"""A robot-side client for `robovla serve`: numpy and the standard library only.

Robot computers should not need torch, so this one file imports nothing from robovla and can be copied onto a
robot as it is. It speaks both wire protocols the server offers:

- REST (`PolicyClient`): the OpenVLA `deploy.py` format, json-numpy arrays over HTTP (`urllib`).
- websocket (`WebsocketPolicyClient`): the openpi policy-server protocol, msgpack-numpy frames; it needs the
  optional `msgpack` and `websockets` packages, imported only when it is used.

The server decodes requests with the same codec functions, so client and server cannot drift apart.
"""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

import numpy as np

# dtype kinds accepted on the wire: bool, signed/unsigned integers, floats (never objects or raw bytes)
_SAFE_KINDS = frozenset("biuf")


class PolicyServerError(RuntimeError):
    """The server rejected a request: HTTP status, the offending field and the server's message."""

    def __init__(self, status: int, message: str, field: str | None = None, retry_after: float | None = None):
        super().__init__(f"{status}: {message}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after


# ------------------------------------------------------------------------------------------- array codecs
def _checked_dtype(descr: Any) -> np.dtype:
    if not isinstance(descr, str):
        raise ValueError(f"array dtype must be a string like '|u1', got {descr!r}")
    dtype = np.dtype(descr)
    if dtype.kind not in _SAFE_KINDS:
        raise ValueError(f"array dtype {descr!r} is not allowed (numeric and bool only)")
    return dtype


def _array_from_bytes(data: bytes, dtype: np.dtype, shape: Any) -> np.ndarray:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"array shape must be a list of non-negative integers, got {shape!r}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"array data has {len(data)} bytes but shape {list(shape)} of {dtype} needs {expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def json_numpy_default(obj: Any) -> dict[str, Any]:
    """`json.dumps(default=...)` hook writing arrays exactly as the `json-numpy` package does."""
    if isinstance(obj, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(obj)
        return {"__numpy__": base64.b64encode(array.tobytes()).decode(), "dtype": array.dtype.str,
                "shape": list(array.shape)}
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def json_numpy_hook(obj: dict[str, Any]) -> Any:
    """`json.loads(object_hook=...)` hook reading `json-numpy` arrays (numeric dtypes only)."""
    if "__numpy__" not in obj:
        return obj
    array = _array_from_bytes(base64.b64decode(obj["__numpy__"], validate=True), _checked_dtype(obj.get("dtype")),
                              obj.get("shape"))
    return array if array.ndim else array[()]


def json_numpy_dumps(obj: Any) -> str:
    return json.dumps(obj, default=json_numpy_default)


def json_numpy_loads(text: str | bytes) -> Any:
    return json.loads(text, object_hook=json_numpy_hook)


def _msgpack_default(obj: Any) -> Any:
    """openpi's msgpack-numpy layout: arrays as {__ndarray__, data, dtype, shape} with bytes keys."""
    if isinstance(obj, np.ndarray):
        _checked_dtype(obj.dtype.str)
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"Object of type {type(obj).__name__} cannot be packed")


def _msgpack_hook(obj: dict[Any, Any]) -> Any:
    """Inverse of `_msgpack_default`; text keys are accepted too (other msgpack writers use them)."""
    if b"__ndarray__" in obj or "__ndarray__" in obj:
        fields = _text_keys(obj)
        return _array_from_bytes(fields["data"], _checked_dtype(fields["dtype"]), fields["shape"])
    if b"__npgeneric__" in obj or "__npgeneric__" in obj:
        fields = _text_keys(obj)
        return _checked_dtype(fields["dtype"]).type(fields["data"])
    return obj


def _text_keys(obj: dict[Any, Any]) -> dict[str, Any]:
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in obj.items()}


def msgpack_packb(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=_msgpack_default)


def msgpack_unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, object_hook=_msgpack_hook)


# ---------------------------------------------------------------------------------------------- REST client
def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


class PolicyClient:
    """REST client: `act` posts to `/act` exactly as OpenVLA's deploy.py clients do."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, path: str, body: Any = None) -> Any:
        data = None if body is None else json_numpy_dumps(body).encode()
        headers = {"Content-Type": "application/json", **_auth_headers(self.api_key)}
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json_numpy_loads(response.read())
        except urllib.error.HTTPError as error:
            raise _server_error(error.code, error.read(), error.headers.get("Retry-After")) from None

    def act(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None,
            proprio: np.ndarray | None = None, cameras: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One observation -> the action to execute now [action_dim] (the first of a chunking model's chunk).

        `proprio` is the robot state, for models that read it (`metadata()["proprio_required"]`); `cameras` the
        images of further cameras by name (`metadata()["cameras"]`, e.g. {"wrist_image": ...})."""
        return _first_action(self.act_chunk(image, instruction, unnorm_key, proprio, cameras))

    def act_chunk(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None,
                  proprio: np.ndarray | None = None, cameras: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One observation -> every action the model predicted, in order [horizon, action_dim] (horizon 1 for a
        model that predicts one step)."""
        reply = self._request("/act", _observation(image, instruction, unnorm_key, proprio, cameras))
        return np.atleast_2d(np.asarray(reply))

    def act_batch(self, observations: list[dict[str, Any]]) -> list[np.ndarray]:
        """Several {image, instruction, unnorm_key?, proprio?} dicts -> the action to execute now, one each."""
        return [_first_action(chunk) for chunk in self.act_chunk_batch(observations)]

    def act_chunk_batch(self, observations: list[dict[str, Any]]) -> list[np.ndarray]:
        """Several observations in one request (one model call when they fit the server's batch) -> one
        [horizon, action_dim] chunk each."""
        reply = self._request("/act/batch", {"observations": observations})["actions"]
        return [np.atleast_2d(np.asarray(chunk)) for chunk in reply]

    def metadata(self) -> dict[str, Any]:
        return self._request("/metadata")

    def health(self) -> dict[str, Any]:
        return self._request("/health")


def _observation(image: np.ndarray, instruction: str, unnorm_key: str | None,
                 proprio: np.ndarray | None = None, cameras: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    observation: dict[str, Any] = {"image": np.asarray(image), "instruction": instruction}
    observation.update({name: np.asarray(picture) for name, picture in (cameras or {}).items()})
    if unnorm_key is not None:
        observation["unnorm_key"] = unnorm_key
    if proprio is not None:
        observation["proprio"] = np.asarray(proprio, dtype=np.float64).reshape(-1)
    return observation


def _first_action(chunk: np.ndarray) -> np.ndarray:
    return chunk[0] if chunk.ndim == 2 else chunk


def _server_error(status: int, body: bytes | str, retry_after: str | None = None) -> PolicyServerError:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = {"error": body.decode(errors="replace") if isinstance(body, bytes) else str(body)}
    return PolicyServerError(status, str(payload.get("error")), payload.get("field"),
                             float(retry_after) if retry_after else None)


# ----------------------------------------------------------------------------------------- websocket client
class WebsocketPolicyClient:
    """openpi-protocol client: metadata frame on connect, then one packed observation -> one packed reply.

    Replies carry `actions` as a chunk [horizon, action_dim] (horizon 1 for OpenVLA, which predicts one step)
    and `server_timing`.
    """

    def __init__(self, url: str = "ws://127.0.0.1:8000", api_key: str | None = None, timeout: float = 60.0):
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._connection = contextlib.ExitStack()  # websockets >= 17 wants connect() entered as a context
        self._ws = self._connection.enter_context(
            connect(url, additional_headers=headers, max_size=None, compression=None, open_timeout=timeout)
        )
        self._timeout = timeout
        self.metadata = msgpack_unpackb(self._ws.recv(timeout=timeout))

    def infer(self, observation: dict[str, Any]) -> dict[str, Any]:
        self._ws.send(msgpack_packb(observation))
        reply = self._ws.recv(timeout=self._timeout)
        if isinstance(reply, str):  # errors come back as JSON text frames
            raise _server_error(int(json.loads(reply).get("status", 400)), reply)
        return msgpack_unpackb(reply)

    def act(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None,
            proprio: np.ndarray | None = None, cameras: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One observation -> the action to execute now [action_dim]."""
        return self.act_chunk(image, instruction, unnorm_key, proprio, cameras)[0]

    def act_chunk(self, image: np.ndarray, instruction: str, unnorm_key: str | None = None,
                  proprio: np.ndarray | None = None, cameras: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """One observation -> every action the model predicted, in order [horizon, action_dim]."""
        observation = _observation(image, instruction, unnorm_key, proprio, cameras)
        return np.atleast_2d(np.asarray(self.infer(observation)["actions"]))

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "WebsocketPolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ChunkExecutor:
    """Turns a chunking policy's answers into one action per control step, the three ways the field executes
    chunks: the whole chunk open loop (default), the first `execute` actions then ask again, or with
    `ensemble=m` ask at every step and average every chunk's prediction for this step, the one predicted i steps
    ago weighted by exp(-m * i) (ACT's temporal ensembling; m > 0 trusts the newest most, m < 0 the oldest).

    `ask(...)` is any call returning a [horizon, action_dim] chunk, e.g. a client's `act_chunk`; calling the
    executor with the robot's current observation returns the action to execute now, asking only when it must.
    One executor per episode (or `reset()` between episodes). Evaluation runs one per simulated env."""

    def __init__(self, ask: Any = None, execute: int | None = None, ensemble: float | None = None) -> None:
        if execute is not None and ensemble is not None:
            raise ValueError("ensemble asks at every step; it cannot be combined with execute")
        if execute is not None and execute < 1:
            raise ValueError(f"execute must be >= 1, got {execute}")
        self.ask, self.execute, self.ensemble = ask, execute, ensemble
        self.reset()

    def reset(self) -> None:
        self._queue: list[np.ndarray] = []  # the actions still to execute of the current chunk
        self._pending: list[np.ndarray] = []  # ensembling: chunks still covering future steps, newest first

    def wants_chunk(self) -> bool:
        return self.ensemble is not None or not self._queue

    def give(self, chunk: Any) -> None:
        """A new chunk [horizon, action_dim] from the policy, predicted for the current step."""
        chunk = np.atleast_2d(np.asarray(chunk))
        if self.ensemble is not None:
            self._pending = [chunk] + [c[1:] for c in self._pending if len(c) > 1]
        else:
            self._queue = list(chunk[: self.execute])

    def next_action(self) -> np.ndarray:
        if self.ensemble is not None:
            weights = np.exp(-self.ensemble * np.arange(len(self._pending)))
            return np.average([c[0] for c in self._pending], axis=0, weights=weights)
        return self._queue.pop(0)

    def __call__(self, *observation: Any, **named: Any) -> np.ndarray:
        if self.wants_chunk():
            self.give(self.ask(*observation, **named))
        return self.next_action()
