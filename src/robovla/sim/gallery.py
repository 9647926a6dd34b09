"""Render the pictures of docs/simulator.md: one per task family, variation axis and embodiment.

    python -m robovla.sim.gallery docs/images

Each picture shows the first frame and a frame a few expert steps later, side by side; the captions (with the
episode's instruction) are printed as markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from robovla.sim.env import make_env
from robovla.sim.tasks import sample_episode
from robovla.sim.variations import AXES, FAMILIES, SUITES, Suite

SIZE = 160
STEPS = 10


def _frames(env, episode, steps: int = STEPS) -> np.ndarray:
    from robovla.sim.expert import expert_action

    obs, _ = env.reset(options={"episode": episode})
    first = obs["image"]
    for _ in range(steps):
        obs, *_ = env.step(expert_action(env))
    return np.concatenate([first, obs["image"]], axis=1)


def _save(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).quantize(colors=128).save(path, optimize=True)


def render_gallery(out_dir: str | Path, seed: int = 4) -> list[tuple[str, str]]:
    """Write the PNGs into `out_dir`; returns (file name, caption) pairs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    captions = []
    env = make_env(image_size=SIZE)
    for family in FAMILIES:
        episode = sample_episode(rng, SUITES["tabletop-train"], family)
        name = f"task_{family}.png"
        _save(_frames(env, episode), out / name)
        captions.append((name, f"{family}: \"{episode.instruction}\""))
    for axis, spec in AXES.items():
        suite = Suite(f"axis-{axis}", "", (axis,))
        family = "push" if axis == "task_combo" else None
        episode = sample_episode(rng, suite, family)
        name = f"axis_{axis}.png"
        _save(_frames(env, episode), out / name)
        captions.append((name, f"{spec.category} / {axis} (held-out value): \"{episode.instruction}\""))
    env.close()
    episode = sample_episode(rng, SUITES["tabletop-train"], "pick_place")
    for embodiment in ("default", "sideview"):
        emb_env = make_env(embodiment=embodiment, image_size=SIZE, wrist_camera=True)
        obs, _ = emb_env.reset(options={"episode": episode})
        from robovla.sim.expert import expert_action

        for _ in range(STEPS):
            obs, *_ = emb_env.step(expert_action(emb_env))
        name = f"embodiment_{embodiment}.png"
        _save(np.concatenate([obs["image"], obs["wrist_image"]], axis=1), out / name)
        captions.append((name, f"embodiment {embodiment}: front and wrist camera, \"{episode.instruction}\""))
        emb_env.close()
    return captions


if __name__ == "__main__":
    for file, caption in render_gallery(sys.argv[1] if len(sys.argv) > 1 else "docs/images"):
        print(f"| ![{file}](images/{file}) | {caption} |")
