"""Training and fine-tuning: `train(TrainConfig(...))`, or `robovla train` / `robovla finetune`.

Imported lazily so that building the CLI parser (`robovla train --help`) does not load torch.
"""

from __future__ import annotations

from robovla._lazy import lazy_exports

_EXPORTS = {
    "PointerFitConfig": "robovla.train.pointer_config",
    "STRATEGIES": "robovla.train.config",
    "TrainConfig": "robovla.train.config",
    "TrainSummary": "robovla.train.loop",
    "fit_pointer": "robovla.train.pointer",
    "Trainer": "robovla.train.loop",
    "train": "robovla.train.loop",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports("robovla.train", _EXPORTS)
