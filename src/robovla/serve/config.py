"""Server settings in one dataclass: the CLI fills it, tests shrink its limits to exercise them quickly."""

from __future__ import annotations

from dataclasses import dataclass

from robovla.errors import RobovlaError


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None: no authentication
    max_batch_size: int = 16  # observations per model call
    max_wait_ms: float = 5.0  # how long a lone request waits for company before it runs
    max_queue: int = 256  # observations waiting for the model; beyond this requests get 503
    max_body_bytes: int = 32 * 1024 * 1024  # a 2048x2048 RGB image in json-numpy base64 is ~17 MiB
    max_image_side: int = 4096  # pixels, either side
    max_batch_request: int = 64  # observations in one /act/batch request
    retry_after_s: int = 1  # what a 503 tells the client
    # decode over the 256 action tokens only (what `robovla eval` does) instead of the whole vocabulary (the
    # reference's semantics, the default)
    restrict_to_actions: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_image_side", "max_batch_request"):
            if getattr(self, name) < 1:
                raise RobovlaError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise RobovlaError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
