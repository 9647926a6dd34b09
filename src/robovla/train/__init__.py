"""Training and fine-tuning: `train(TrainConfig(...))`, or `robovla train` / `robovla finetune`.

Imported lazily so that building the CLI parser (`robovla train --help`) does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "STRATEGIES": "robovla.train.config",
    "TrainConfig": "robovla.train.config",
    "TrainSummary": "robovla.train.loop",
    "Trainer": "robovla.train.loop",
    "train": "robovla.train.loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'robovla.train' has no attribute {name!r}")
