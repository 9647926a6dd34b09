"""One observation from a request dict, checked field by field so a rejection names the field at fault.

The same keys serve REST and websocket clients; the openpi-style aliases let openpi clients send their usual
`observation/image` and `prompt` unchanged. A model reads the cameras its recipe names (`image` by default; each
camera `c` also accepted as `observation/c`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from robovla.errors import RobovlaError
from robovla.processing import resolve_unnorm_key
from robovla.processing import VLAProcessor, build_prompt, to_pil_rgb
from robovla.serve.errors import RequestError

def camera_keys(camera: str) -> tuple[str, ...]:
    """The request keys of one camera's image: its name, then the openpi-style alias."""
    return (camera, f"observation/{camera}")


IMAGE_KEYS = camera_keys("image")
INSTRUCTION_KEYS = ("instruction", "prompt")
UNNORM_KEY = "unnorm_key"
PROPRIO_KEYS = ("proprio", "state", "observation/state")
MAX_CHARS_PER_TOKEN = 32  # no token of a Llama vocabulary is longer: more characters than this per allowed token
                          # cannot fit, whatever the text


@dataclass(frozen=True)
class Observation:
    images: dict[str, Image.Image]  # one per camera of the model's recipe, keyed by camera name
    instruction: str
    unnorm_key: str  # resolved: never None, always one of the checkpoint's datasets
    proprio: np.ndarray | None = None  # the robot state, for models that read it


def _first(payload: dict[str, Any], keys: tuple[str, ...], where: str) -> Any:
    for key in keys:
        if key in payload:
            return payload[key]
    raise RequestError(400, f"missing field {keys[0]!r} (also accepted: {', '.join(keys[1:])})", where + keys[0])


def parse_observation(
    payload: Any, norm_stats: dict[str, Any], max_image_side: int, where: str = "",
    processor: VLAProcessor | None = None, prompt_limit: int | None = None,
) -> Observation:
    """Validate `{image, instruction, unnorm_key?, proprio?}`; `where` prefixes field names (`observations[2].`).

    The cameras are those of `processor`'s model (`image` without one); it is a VLA's or a Diffusion Policy's. `proprio` is required, and checked
    against the statistics, when `processor` belongs to a model that reads it. With `prompt_limit` (prompt ids that
    fit the model's context) a longer instruction is refused here, before it is queued: a text far too long by
    its characters alone is never tokenized.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, f"an observation must be a JSON object (a msgpack map), got {type(payload).__name__}",
                           where.rstrip(".") or "body")
    cameras = processor.cameras if processor is not None else ("image",)
    images = {camera: _image(payload, camera, max_image_side, where) for camera in cameras}
    instruction = _first(payload, INSTRUCTION_KEYS, where)
    unnorm_key = payload.get(UNNORM_KEY)
    if unnorm_key is not None and not isinstance(unnorm_key, str):
        raise RequestError(400, f"unnorm_key must be a string, got {type(unnorm_key).__name__}", where + UNNORM_KEY)
    _checked(where + "instruction", build_prompt, instruction)
    if prompt_limit is not None and len(instruction) > MAX_CHARS_PER_TOKEN * prompt_limit:
        raise RequestError(400, f"instruction has {len(instruction)} characters; this model's context leaves room "
                                f"for {prompt_limit} prompt tokens", where + "instruction")
    key = _checked(where + UNNORM_KEY, resolve_unnorm_key, norm_stats, unnorm_key)
    proprio = None
    if processor is not None and processor.uses_proprio:
        raw = _first(payload, PROPRIO_KEYS, where)
        try:
            proprio = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise RequestError(400, "proprio must be a vector of numbers", where + PROPRIO_KEYS[0]) from None
        _checked(where + PROPRIO_KEYS[0], processor.check_proprio, proprio, key)
    if prompt_limit is not None and processor is not None:
        tokens = len(processor.prompt_ids(instruction, proprio, key))
        if tokens > prompt_limit:
            raise RequestError(400, f"instruction takes {tokens} prompt tokens; this model's context leaves room "
                                    f"for {prompt_limit}", where + "instruction")
    return Observation(images, instruction, key, proprio)


def _image(payload: dict[str, Any], camera: str, max_image_side: int, where: str) -> Image.Image:
    image = _first(payload, camera_keys(camera), where)
    if not isinstance(image, np.ndarray):
        raise RequestError(400, f"{camera} must be an HxWx3 uint8 array (json-numpy or msgpack-numpy encoded), "
                                f"got {type(image).__name__}", where + camera)
    if image.ndim >= 2 and max(image.shape[:2]) > max_image_side:
        raise RequestError(413, f"{camera} is {image.shape[0]}x{image.shape[1]}: the limit is {max_image_side} "
                                f"pixels per side", where + camera)
    return _checked(where + camera, to_pil_rgb, image)


def _checked(field: str, check: Any, *args: Any) -> Any:
    """Run a core validator (one rule for CLI, API and server); its RobovlaError becomes a 400 naming `field`."""
    try:
        return check(*args)
    except RobovlaError as error:
        raise RequestError(400, str(error), field) from None
