"""One recorded episode in memory, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robovla.errors import RobovlaError

GROUNDING_KEY = "annotation.grounding"  # LeRobot column of the auxiliary grounding labels


@dataclass
class Episode:
    """Per-step arrays of one episode; `images` maps a camera name to [T, H, W, 3] uint8."""

    instruction: str
    action: np.ndarray  # [T, D] float32 (D = 7 for the tabletop robot and OpenVLA)
    proprio: np.ndarray  # [T, P] float32
    images: dict[str, np.ndarray] = field(default_factory=dict)
    success: bool = True
    grounding: np.ndarray | None = None  # [T, G] float32 auxiliary labels (where the named objects are), or None

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def validate(self, index: int) -> None:
        """Reject non-finite actions and inconsistent lengths, naming the episode."""
        if self.action.ndim != 2 or self.action.shape[1] < 1:
            raise RobovlaError(f"episode {index}: action must be [T, D], got {list(self.action.shape)}")
        bad = ~np.isfinite(self.action).all(axis=1)
        if bad.any():
            raise RobovlaError(f"episode {index}: action has NaN/inf at frame {int(np.argmax(bad))}")
        if not np.isfinite(self.proprio).all():
            raise RobovlaError(f"episode {index}: proprio has NaN/inf")
        if self.grounding is not None and not np.isfinite(self.grounding).all():
            raise RobovlaError(f"episode {index}: grounding has NaN/inf")
        extra = [] if self.grounding is None else [self.grounding.shape[0]]
        lengths = {len(self), self.proprio.shape[0], *extra, *(v.shape[0] for v in self.images.values())}
        if len(lengths) != 1:
            raise RobovlaError(f"episode {index}: features have different lengths {sorted(lengths)}")

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"action": self.action.shape[1:], "observation.state": self.proprio.shape[1:]}
        if self.grounding is not None:
            shapes[GROUNDING_KEY] = self.grounding.shape[1:]
        shapes.update({f"observation.images.{k}": v.shape[1:] for k, v in self.images.items()})
        return shapes
