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
    max_body_bytes: int | None = None  # None: what one observation at max_image_side takes (`body_limit`)
    max_image_side: int = 2048  # pixels, either side (the model sees 224 or so; the server resizes)
    max_batch_request: int = 64  # observations in one /act/batch request
    retry_after_s: int = 1  # what a 503 tells the client
    # decode over the 256 action tokens only (what `robovla eval` does) instead of the whole vocabulary (the
    # reference's semantics, the default)
    restrict_to_actions: bool = False
    # each observation in its own model call, so answers never depend on what shared the batch (bf16 GEMMs sum in
    # a batch-shape-dependent order); costs the batching speed-up (`Policy(batch_invariant=True)`)
    batch_invariant: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "max_body_bytes", "max_image_side", "max_batch_request"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise RobovlaError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise RobovlaError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    def body_limit(self, cameras: int) -> int:
        """The largest request body (and websocket message) accepted: `max_body_bytes`, which must carry one
        observation of `cameras` images at `max_image_side`, or by default just that (`observation_body_bytes`)."""
        needed = observation_body_bytes(self.max_image_side, cameras)
        if self.max_body_bytes is None:
            return needed
        if self.max_body_bytes < needed:
            raise RobovlaError(
                f"a body limit of {self.max_body_bytes / 2**20:.1f} MiB cannot carry one observation of {cameras} "
                f"camera image(s) at the largest accepted side, {self.max_image_side} px ({needed / 2**20:.1f} MiB "
                "as json-numpy): raise the body limit or lower the image side")
        return self.max_body_bytes


OBSERVATION_SLACK_BYTES = 1024 * 1024  # the instruction (its character limit is far below this), state, keys


def observation_body_bytes(max_image_side: int, cameras: int) -> int:
    """Bytes of the largest valid observation as json-numpy: each camera's side x side x 3 uint8 array in base64
    (4 characters per 3 bytes), plus a slack for everything else. msgpack (websocket) sends raw bytes: smaller."""
    image = 4 * -(-(max_image_side * max_image_side * 3) // 3)
    return cameras * image + OBSERVATION_SLACK_BYTES
