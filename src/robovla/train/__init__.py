"""Training and fine-tuning: `train(TrainConfig(...))`, or `robovla train` / `robovla finetune`."""

from robovla.train.config import STRATEGIES, TrainConfig
from robovla.train.loop import TrainSummary, Trainer, train

__all__ = ["STRATEGIES", "TrainConfig", "TrainSummary", "Trainer", "train"]
