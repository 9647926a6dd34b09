"""The openpi policy-server protocol, so openpi clients (`WebsocketClientPolicy`) can drive robovla.

On connect the server sends the metadata as one msgpack-numpy frame; then each binary frame holding a packed
observation dict gets one packed reply `{"actions": [horizon, action_dim], "server_timing": {"infer_ms": ...}}`
(OpenVLA predicts one step, so its chunk has length 1; a chunking model sends its K actions). Unlike openpi, a
bad observation does not end the session: the reply is a text frame with the JSON error (openpi clients raise
it), and the next frame is served.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from robovla.client import msgpack_packb, msgpack_unpackb
from robovla.serve.errors import RequestError, as_request_error
from robovla.serve.service import PolicyService

logger = logging.getLogger("robovla.serve")

WS_PATH = "/"  # openpi clients connect to ws://host:port with no path
WS_ROUTE_LABEL = "ws:infer"  # metrics label of one websocket inference


def build_router(service: PolicyService) -> APIRouter:
    router = APIRouter()

    @router.websocket(WS_PATH)
    async def openpi_session(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await websocket.send_bytes(msgpack_packb(service.metadata))
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await _answer(websocket, service, message)
        except WebSocketDisconnect:
            return

    return router


async def _answer(websocket: WebSocket, service: PolicyService, message: dict) -> None:
    start = time.perf_counter()
    status, batch_size = 200, "-"
    try:
        if message.get("bytes") is None:
            raise RequestError(400, "frames must be binary msgpack-numpy (openpi's Packer)", "frame")
        try:
            payload = msgpack_unpackb(message["bytes"])
        except Exception as error:  # msgpack raises several unrelated types for malformed data
            raise RequestError(400, f"frame is not valid msgpack-numpy: {error}", "frame") from None
        [result] = await service.act([service.parse(payload)])
        batch_size = result.batch_size
        infer_ms = (time.perf_counter() - start) * 1000
        await websocket.send_bytes(msgpack_packb(
            {"actions": result.chunk, "server_timing": {"infer_ms": infer_ms, "batch_size": batch_size}}
        ))
    except WebSocketDisconnect:
        status = 499
        raise
    except Exception as error:  # reported to the client; the session and the server go on
        reply = as_request_error(error)
        status = reply.status
        await websocket.send_text(json.dumps(reply.to_json()))
    finally:
        seconds = time.perf_counter() - start
        service.metrics.record_request(WS_ROUTE_LABEL, status, seconds)
        logger.info("WS infer %d %.1f ms batch=%s", status, seconds * 1000, batch_size)
