"""Augmentation: uint8 HxWx3 in and out, seeded, crop then colour jitter; centre crop for evaluation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from robovla.data import TrainAugment, center_crop


def scene(h: int = 40, w: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_same_seed_same_output_and_shape():
    aug = TrainAugment()
    image = scene()
    a = aug(image, torch.Generator().manual_seed(5))
    b = aug(image, torch.Generator().manual_seed(5))
    c = aug(image, torch.Generator().manual_seed(6))
    assert a.shape == image.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    n1, n2 = aug(image, np.random.default_rng(1)), aug(image, np.random.default_rng(1))
    assert np.array_equal(n1, n2)


def test_accepts_pil_and_keeps_non_square_size():
    out = TrainAugment()(Image.fromarray(scene(30, 50)), np.random.default_rng(0))
    assert out.shape == (30, 50, 3)


def test_center_crop_is_deterministic_and_zooms_in():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:1] = 255  # a bright border row that a 90% centre crop removes
    out = center_crop(image)
    assert out.shape == image.shape and np.array_equal(out, center_crop(image))
    assert out[0].mean() < image[0].mean()


def test_jitter_changes_colours_but_not_too_much():
    image = np.full((32, 32, 3), 128, np.uint8)
    image[:, :, 0] = 200
    outs = [TrainAugment()(image, np.random.default_rng(s)).astype(int) for s in range(20)]
    diffs = [np.abs(o - image).mean() for o in outs]
    assert max(diffs) > 1 and max(diffs) < 80


def test_jitter_alone_keeps_every_pixel_in_place():
    """crop_area 1 (`--no-augment-crop`): colours change, geometry does not (a cropping run moves the edge)."""
    from robovla.data.augment import AugmentConfig

    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = (200, 120, 60)  # a vertical edge at column 20
    for seed in range(5):
        out = TrainAugment(AugmentConfig(crop_area=1.0))(image, np.random.default_rng(seed))
        assert (out[:, :20] == out[0, 0]).all() and (out[:, 20:] == out[0, 39]).all()
        assert not np.array_equal(out, image)
    cropped = [TrainAugment()(image, np.random.default_rng(seed)) for seed in range(5)]
    assert any(not (c[:, 20:] == c[0, 39]).all() or not (c[:, :20] == c[0, 0]).all() for c in cropped)
