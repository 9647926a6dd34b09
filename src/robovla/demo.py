"""`make demo`: the main job, end to end on a CPU in seconds.

Builds the `tiny` preset (random weights), saves it as an openvla-7b-layout checkpoint, loads it back and
predicts a batch of actions for generated images. Once a trained policy ships, the demo drives it in the
simulator instead.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import robovla
from robovla.cli import quiet_third_party_import_noise

DEMO_STATS = {
    "demo": {
        "action": {
            "q01": [-0.05, -0.05, -0.05, -0.2, -0.2, -0.2, 0.0],
            "q99": [0.05, 0.05, 0.05, 0.2, 0.2, 0.2, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    }
}


def generated_images(size: int = 224) -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size]
    gradient = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], axis=-1)
    checker = ((x // 28 + y // 28) % 2)[..., None] * np.array([200, 60, 40])
    scene = np.full((size, size, 3), (190, 160, 120))
    scene[60:120, 40:100] = (220, 30, 30)  # a red block
    scene[130:200, 130:200] = (40, 60, 220)  # a blue bowl
    return {name: img.astype(np.uint8) for name, img in
            {"gradient": gradient, "checkerboard": checker, "scene": scene}.items()}


def main() -> None:
    quiet_third_party_import_noise()
    model = robovla.build_model("tiny", norm_stats=DEMO_STATS)
    counts = robovla.parameter_counts(model)
    print(f"robovla demo: tiny preset, {counts['total']:,} parameters (random weights)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = robovla.save_pretrained(model, Path(tmp) / "tiny-vla")
        model = robovla.load_pretrained(folder)
        print(f"saved and reloaded an openvla-7b-layout checkpoint: {sorted(p.name for p in folder.iterdir())}")
    images = generated_images()
    instructions = ["put the red block in the blue bowl", "push the block left", "open the gripper"]
    start = time.perf_counter()
    prediction = model.predict(list(images.values()), instructions, unnorm_key="demo", restrict_to_actions=True)
    elapsed = time.perf_counter() - start
    with np.printoptions(precision=4, suppress=True, floatmode="fixed"):
        for (name, _), text, action, ids in zip(images.items(), instructions, prediction.actions,
                                                 prediction.token_ids):
            print(f"  {name:<12} {text!r:<38} -> {action}  tokens {ids.tolist()}")
    print(f"batch of {len(instructions)} predicted in {elapsed * 1000:.0f} ms on CPU")


if __name__ == "__main__":
    main()
