"""`robovla serve`: a batched policy server speaking OpenVLA's REST `/act` and openpi's websocket protocol.

Modules: config (settings), observation (request validation), batcher (dynamic batching, one model thread),
service (what both protocols share), rest / websocket (wire formats), middleware (auth, logs, metrics),
metrics (Prometheus text), app (assembly), server (uvicorn). The robot-side client is `robovla.client`.
"""

from robovla.serve.app import create_app
from robovla.serve.config import ServerConfig
from robovla.serve.server import BackgroundServer, serve_forever

__all__ = ["BackgroundServer", "ServerConfig", "create_app", "serve_forever"]
