"""REST endpoints. `/act` speaks OpenVLA's deploy.py wire format, so existing OpenVLA clients work unchanged:

- request: a json-numpy body `{"image": HxWx3 uint8, "instruction": str, "unnorm_key": str?}`, or
  `{"encoded": "<that JSON as a string>"}` for clients without json-numpy;
- reply: the action as a json-numpy array (`requests.post(...).json()` after `json_numpy.patch()`), or, for an
  encoded request, that JSON as a string (`json_numpy.loads(response.json())`), as the reference does.

A model that predicts action chunks answers with the whole chunk, [horizon, action_dim] (its first row is the
action to execute now); a plain OpenVLA checkpoint answers with its action vector, exactly as the reference.
Models that read the robot state take it as `proprio` (aliases: `state`, `observation/state`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from robovla.client import json_numpy_dumps, json_numpy_loads
from robovla.serve.batcher import BatchedAction
from robovla.serve.errors import RequestError
from robovla.serve.observation import Observation
from robovla.serve.service import PolicyService

ACT_PATHS = ("/act", "/act/batch")


def build_router(service: PolicyService) -> APIRouter:
    router = APIRouter()

    @router.post("/act")
    async def act(request: Request) -> Response:
        payload, encoded = decode_body(await read_body(request, service.body_limit))
        [result] = await _act_unless_disconnected(request, service, [service.parse(payload)])
        return encode_reply(service.reply_actions(result), encoded)

    @router.post("/act/batch")
    async def act_batch(request: Request) -> Response:
        payload, encoded = decode_body(await read_body(request, service.body_limit))
        observations = _batch_observations(service, payload)
        results = await _act_unless_disconnected(request, service, observations)
        return encode_reply({"actions": [service.reply_actions(r) for r in results]}, encoded)

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.metadata["model"]}

    @router.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return service.metadata

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes (never buffered beyond it)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body is {int(declared)} bytes: the limit is {limit}", "body")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes", "body")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(499, "the client disconnected while sending the body", "body") from None
    return b"".join(chunks)


def decode_body(raw: bytes) -> tuple[Any, bool]:
    """json-numpy body -> (payload, was it the `{"encoded": ...}` form)."""
    payload = _loads(raw, "body")
    if isinstance(payload, dict) and "encoded" in payload:
        if len(payload) != 1 or not isinstance(payload["encoded"], str):
            raise RequestError(400, "the encoded form is exactly {\"encoded\": \"<JSON string>\"}", "encoded")
        return _loads(payload["encoded"], "encoded"), True
    return payload, False


def _loads(text: bytes | str, field: str) -> Any:
    try:
        return json_numpy_loads(text)
    except (ValueError, TypeError, KeyError, RecursionError) as error:
        raise RequestError(400, f"{field} is not valid JSON with json-numpy arrays: {error}", field) from None


def encode_reply(content: Any, encoded: bool) -> Response:
    text = json_numpy_dumps(content)
    return Response(json.dumps(text) if encoded else text, media_type="application/json")


def _batch_observations(service: PolicyService, payload: Any) -> list[Observation]:
    observations = payload.get("observations") if isinstance(payload, dict) else None
    if not isinstance(observations, list) or not observations:
        raise RequestError(400, "expected {\"observations\": [{image, instruction, unnorm_key?, proprio?}, ...]} with at "
                                "least one observation", "observations")
    limit = service.config.max_batch_request
    if len(observations) > limit:
        raise RequestError(413, f"{len(observations)} observations in one request: the limit is {limit}",
                           "observations")
    return [service.parse(o, f"observations[{i}].") for i, o in enumerate(observations)]


async def _act_unless_disconnected(
    request: Request, service: PolicyService, observations: list[Observation]
) -> list[BatchedAction]:
    """Wait for the actions, but give up (and unqueue them) if the client hangs up first."""
    work = asyncio.ensure_future(service.act(observations))
    hangup = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, hangup}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hangup.cancel()
    if work not in done:
        work.cancel()
        raise RequestError(499, "the client disconnected before its action was ready")
    results = work.result()
    request.state.batch_size = max(r.batch_size for r in results)
    return results


async def _disconnected(request: Request) -> None:
    """Returns when the ASGI server reports the client gone (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
