"""Running the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, notebooks)."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import uvicorn

from robovla.serve.config import ServerConfig


def _uvicorn_config(app: Any, host: str, port: int, log_level: str) -> uvicorn.Config:
    # our middleware logs one line per request, so uvicorn's access log is off; a websocket message may be as
    # large as a request body (the app's limit, which fits one observation of its model)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on",
                          ws_max_size=app.state.service.body_limit, timeout_graceful_shutdown=5)


def serve_forever(app: Any, config: ServerConfig, log_level: str = "info") -> None:
    """Serve in this process until Ctrl-C. What is alive by now (torch, transformers, the model and the app: about
    half a million objects with the tiny test checkpoint) lives as long as the server, so it is frozen out of the
    garbage collector: full collections stop re-scanning it while serving, and so does the interpreter's last one
    after Ctrl-C, which took tens of seconds on a busy 2-core machine."""
    gc.freeze()
    uvicorn.Server(_uvicorn_config(app, config.host, config.port, log_level)).run()


class BackgroundServer:
    """`with BackgroundServer(app) as server: server.url` serves on a free loopback port until the block ends."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 30.0) -> None:
        self._server = uvicorn.Server(_uvicorn_config(app, host, port, "warning"))
        self._thread = threading.Thread(target=self._server.run, name="robovla-server", daemon=True)
        self._start_timeout_s = start_timeout_s
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
