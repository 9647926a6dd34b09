"""Episode videos a person can read: frames upscaled, the instruction on top, the outcome at the bottom.

MP4 (H.264 through imageio-ffmpeg) where an encoder is installed, otherwise an animated GIF (Pillow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 256  # frames are upscaled to at least this many pixels so the captions stay legible
BAND = 22  # caption band height in pixels (top and bottom)
GREEN, RED, WHITE = (60, 200, 90), (230, 70, 60), (240, 240, 240)


def captioned(frame: np.ndarray, caption: str, footer: str = "", footer_color: tuple = WHITE) -> np.ndarray:
    """`frame` upscaled to at least MIN_SIDE, with a dark band above (caption) and below (footer)."""
    image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
    scale = max(1, -(-MIN_SIDE // min(image.size)))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (image.width, image.height + 2 * BAND), (20, 20, 24))
    canvas.paste(image, (0, BAND))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    draw.text((6, 4), _fit(draw, caption, font, canvas.width - 12), fill=WHITE, font=font)
    if footer:
        draw.text((6, canvas.height - BAND + 4), _fit(draw, footer, font, canvas.width - 12), fill=footer_color,
                  font=font)
    return np.asarray(canvas)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def write_episode_video(frames: list[np.ndarray], stem: Path, caption: str, outcome: str, fps: int = 10) -> Path:
    """`stem`.mp4 (or .gif without an encoder) of `frames`, captioned; the outcome in green/red on every frame
    from the last second on, and "step t" before it. Written to a temporary file, then renamed."""
    color = GREEN if outcome.startswith("success") else RED
    last_second = max(0, len(frames) - fps)
    shown = [captioned(f, caption, outcome if t >= last_second else f"step {t}", color if t >= last_second else WHITE)
             for t, f in enumerate(frames)]
    shown += [shown[-1]] * fps  # hold the outcome for a second
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (the encoder binary; without it, fall back to GIF)
    except ImportError:
        return _write_gif(shown, stem, fps)
    path = stem.with_suffix(".mp4")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        imageio.mimwrite(tmp, shown, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                         macro_block_size=2)  # every side here is even: no rescaling
        os.replace(tmp, path)
    except Exception:  # an ffmpeg without an H.264 encoder: a GIF says the same
        tmp.unlink(missing_ok=True)
        return _write_gif(shown, stem, fps)
    return path


def _write_gif(frames: list[np.ndarray], stem: Path, fps: int) -> Path:
    path = stem.with_suffix(".gif")
    tmp = path.with_name(f".{path.name}.tmp.gif")
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    os.replace(tmp, path)
    return path


def write_still_grid(items: list[tuple[np.ndarray, str, str, bool]], path: Path, columns: int = 4) -> Path:
    """A PNG grid of (frame, caption, footer, success) stills captioned like the videos: the report's overview."""
    from io import BytesIO

    from robovla.files import write_atomic

    tiles = [captioned(frame, caption, footer, GREEN if success else RED) for frame, caption, footer, success in items]
    height, width = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    grid = np.full((rows * (height + 4), columns * (width + 4), 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[r * (height + 4): r * (height + 4) + tile.shape[0], c * (width + 4): c * (width + 4) + tile.shape[1]] = tile
    buffer = BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())
