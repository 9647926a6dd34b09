"""`PointerFitConfig`: the settings of `robovla fit-pointer` (no torch import, so the CLI parser stays light)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PointerFitConfig:
    """Everything `robovla fit-pointer` reads; saved beside the fitted model as `pointer_fit.json`."""

    checkpoint: str
    datasets: list[str]
    out: str
    embodiment: str = "default"  # whose camera maps patches to the table
    frame_stride: int = 4  # every k-th frame of each episode (first frames always), to spread the cache
    max_frames: int | None = None  # cap on cached frames (about 170 kB each for a 256-patch, 256-wide model)
    holdout_episodes: int = 100  # whole episodes kept out of training, for the reported accuracy
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    width: int = 128
    layer: int | None = None  # language-model layer whose input the pointer reads (default: the last one)
    seed: int = 0
    dtype: str = "bfloat16"  # of the saved model's weights
    feature_batch: int = 32
    vl_corpus: str | None = None  # a vision-language corpus (robovla collect-vl): its referring questions join in
    vl_questions: int = 4000  # at most this many of its questions about one thing, drawn at random
    vl_holdout_scenes: int = 100  # corpus scenes kept out of training, for the reported accuracy on its questions
    # colour jitter (the training's, without its crop) on each robot frame before its features are cached, one
    # seeded draw per frame (held-out frames too, so its reported accuracy is on jittered frames): the pointer of a
    # policy trained with jitter must read unseen lights as well as it does
    augment: bool = False
    # share of robot frames whose instruction gets filler words (robovla.data.instruction_noise, one seeded draw per
    # frame, held-out frames too): the pointer reads the instruction, so it must learn to pass over them as well
    instruction_noise: float = 0.0
    # a checkpoint whose fitted pointer (same layer, width and roles) starts this fit instead of random weights: a
    # policy fine-tuned from it moved its hidden states only so far, so its old pointer needs fewer steps to catch up
    init_pointer: str | None = None
