"""The ASGI app: REST + websocket routers over one `PolicyService`, behind the access middleware."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import robovla
from robovla.serve import rest, websocket
from robovla.serve.config import ServerConfig
from robovla.serve.errors import RequestError, as_request_error
from robovla.serve.metrics import Metrics
from robovla.serve.middleware import AccessMiddleware
from robovla.serve.service import PolicyService

logger = logging.getLogger("robovla.serve")

OPEN_PATHS = frozenset({"/health"})


def create_app(model: Any, config: ServerConfig | None = None, model_name: str = "robovla") -> FastAPI:
    """One app per model (a `robovla.VLA` or a Diffusion Policy's `DiffusionRunner`); the batcher starts and stops
    with the app's lifespan."""
    config = config or ServerConfig()
    metrics = Metrics()
    service = PolicyService(model, config, metrics, model_name)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="robovla policy server", version=robovla.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(rest.build_router(service))
    app.include_router(websocket.build_router(service))

    async def error_reply(_: Request, error: Exception) -> JSONResponse:
        reply = as_request_error(error)
        if reply.status >= 500:
            logger.error("request failed: %s", reply.message, exc_info=error)
        return JSONResponse(reply.to_json(), status_code=reply.status, headers=reply.headers)

    # RequestError and RobovlaError are answered where they occur; Exception reaches Starlette's outermost
    # handler, which replies with our JSON and then re-raises for the server's own log.
    for kind in (RequestError, robovla.RobovlaError, Exception):
        app.add_exception_handler(kind, error_reply)

    known = frozenset({*rest.ACT_PATHS, "/health", "/metadata", "/metrics", websocket.WS_PATH})
    app.add_middleware(AccessMiddleware, metrics=metrics, api_key=config.api_key, open_paths=OPEN_PATHS,
                       known_paths=known)
    app.state.service = service
    return app
