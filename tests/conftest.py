"""Shared fixtures: the conformance checkpoint (a copy of shared/conformance) and its golden cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CONFORMANCE = Path(__file__).parent / "fixtures" / "conformance"
TINY_CHECKPOINT = CONFORMANCE / "tiny-openvla"


@pytest.fixture(scope="session")
def conformance_cases() -> dict:
    return json.loads((CONFORMANCE / "cases.json").read_text())


@pytest.fixture(scope="session")
def tiny_vla():
    import robovla

    return robovla.load_pretrained(TINY_CHECKPOINT)


def case_image(case: dict) -> np.ndarray:
    return np.array(Image.open(CONFORMANCE / "images" / f"{case['case_id']}.png").convert("RGB"))


def case_arrays(case: dict) -> dict[str, np.ndarray]:
    with np.load(CONFORMANCE / "arrays" / f"{case['case_id']}.npz") as data:
        return {k: data[k] for k in data.files}
