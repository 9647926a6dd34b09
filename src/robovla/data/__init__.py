"""Robot datasets: LeRobot v3.0 / v2.1 and RLDS readers, statistics, mixtures and augmentation.

Names are imported on first use so that light users (the collection workers) do not pay for torch.
"""

from __future__ import annotations

from pathlib import Path

from robovla._lazy import lazy_exports
from robovla.errors import RobovlaError

_EXPORTS = {
    "LeRobotDataset": "robovla.data.lerobot",
    "RLDSDataset": "robovla.data.rlds",
    "StepDataset": "robovla.data.steps",
    "Episode": "robovla.data.episodes",
    "write_lerobot_dataset": "robovla.data.lerobot_writer",
    "episode_table": "robovla.data.lerobot_writer",
    "compute_stats": "robovla.data.stats",
    "dataset_stats": "robovla.data.stats",
    "save_json": "robovla.data.stats",
    "write_dataset_statistics": "robovla.data.stats",
    "MIXTURES": "robovla.data.mixtures",
    "MixtureSampler": "robovla.data.mixtures",
    "MixtureDataset": "robovla.data.mixtures",
    "sampling_weights": "robovla.data.mixtures",
    "get_mixture": "robovla.data.mixtures",
    "TrainAugment": "robovla.data.augment",
    "center_crop": "robovla.data.augment",
    "InstructionNoise": "robovla.data.instruction_noise",
    "CollectConfig": "robovla.data.collection",
    "collect": "robovla.data.collection",
}
__all__ = [*_EXPORTS, "open_dataset"]


__getattr__ = lazy_exports("robovla.data", _EXPORTS)


def open_dataset(path: str | Path, **kwargs):
    """A LeRobot or RLDS folder as a step dataset, or an error naming the files each format would need."""
    from robovla.data.lerobot import LeRobotDataset, lerobot_missing
    from robovla.data.rlds import RLDSDataset, rlds_missing

    root = Path(path)
    if not root.is_dir():
        raise RobovlaError(f"dataset folder {root} does not exist")
    lerobot, rlds = lerobot_missing(root), rlds_missing(root)
    if not lerobot:
        return LeRobotDataset(root, **kwargs)
    if not rlds:
        return RLDSDataset(root, **kwargs)
    raise RobovlaError(
        f"{root} is neither a LeRobot dataset (missing {', '.join(lerobot)}) nor an RLDS dataset (missing {', '.join(rlds)})"
    )
