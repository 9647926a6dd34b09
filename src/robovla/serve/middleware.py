"""Every HTTP request and websocket handshake passes here: API key check, one log line, metrics.

A pure ASGI middleware (not `BaseHTTPMiddleware`) so it sees the real status and never buffers bodies.
Handlers put the batch size of their model call in `scope["state"]["batch_size"]` for the log line.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable

from robovla.serve.auth import is_authorized
from robovla.serve.metrics import Metrics

logger = logging.getLogger("robovla.serve")

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class AccessMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None, open_paths: frozenset[str],
                 known_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.api_key = api_key
        self.open_paths = open_paths  # reachable without the key (health checks)
        self.known_paths = known_paths  # metric labels; anything else counts as "other"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def tracking_send(message: dict) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                status = message["status"]
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            if scope["path"] in self.open_paths or is_authorized(headers, self.api_key):
                await self.app(scope, receive, tracking_send)
            else:
                await _deny(scope, tracking_send)
        finally:
            seconds = time.perf_counter() - start
            route = scope["path"] if scope["path"] in self.known_paths else "other"
            self.metrics.record_request(route, status, seconds)
            batch = scope.get("state", {}).get("batch_size", "-")
            kind = "WS" if scope["type"] == "websocket" else scope["method"]
            logger.info("%s %s %d %.1f ms batch=%s", kind, scope["path"], status, seconds * 1000, batch)


async def _deny(scope: dict, send: Any) -> None:
    """401 with a JSON body; a websocket gets the same through the denial-response extension when it can."""
    body = json.dumps({"error": "missing or wrong API key: send 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
                       "field": "api_key", "status": 401}).encode()
    start = {"status": 401, "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]}
    if scope["type"] == "http":
        await send({"type": "http.response.start", **start})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", **start})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
