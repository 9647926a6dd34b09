"""`TrainConfig`: every option of a training run, saved with each checkpoint and compared on resume.

The command line is generated from the dataclass (one `--flag` per field, `--help` lists them all); a JSON file
given with `--config` supplies defaults that flags override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robovla.errors import RobovlaError

POLICIES = ("vla", "diffusion")
DEFAULT_PRESETS = {"vla": "tabletop-cpu", "diffusion": "diffusion-cpu"}
# recipe options that only a VLA has
VLA_ONLY = ("grounding", "action_chunk", "decoding", "action_head", "state_tokens")
STRATEGIES = ("full", "frozen-vision", "sandwich", "last-layer", "lora", "qlora")
SCHEDULES = ("constant", "warmup-cosine")
PRECISIONS = ("auto", "bf16", "fp32")
DISTRIBUTED = ("auto", "none", "ddp", "fsdp")
LORA_INITS = ("gaussian", "default")
# what a run trains on: robot data only; the vision-language corpus alone (Prismatic's stage before robot data);
# both in every batch (RT-2's co-training)
STAGES = ("actions", "vl-pretrain", "cotrain")
# Keys that may differ between a run and its resumption.
RESUMABLE_CHANGES = frozenset({"resume", "log_every", "tensorboard", "wandb", "wandb_project", "progress", "stop_at",
                               "loader_workers"})


@dataclass
class TrainConfig:
    # --- model
    policy: str = field(default="vla", metadata={
        "help": "vla (an OpenVLA-layout model) or diffusion (Diffusion Policy, the paper's baseline: reads the "
                "cameras and state, predicts 16 actions, executes 8)"})
    preset: str | None = field(default=None, metadata={
        "help": "preset to train from scratch (unset: tabletop-cpu; diffusion-cpu with --policy diffusion)"})
    checkpoint: str | None = field(default=None, metadata={"help": "checkpoint folder to fine-tune (overrides preset)"})
    proprio: bool | None = field(default=None, metadata={
        "help": "read the robot state as prompt tokens (unset: as the preset or checkpoint says; --proprio adds "
                "it when fine-tuning an image-only checkpoint, like OpenVLA-OFT)"})
    action_chunk: int | None = field(default=None, metadata={
        "help": "predict the next K actions per call, executed in order (unset: as the preset or checkpoint "
                "says, 1 for the reference)"})
    grounding: bool | None = field(default=None, metadata={
        "help": "first predict where the instruction's objects are (grounding tokens from the dataset's "
                "`annotation.grounding` labels), then the action (unset: as the preset or checkpoint says)"})
    cameras: list[str] | None = field(default=None, metadata={
        "help": "observation cameras the model reads, in order, e.g. image wrist_image (unset: as the preset or "
                "checkpoint says, image only for the reference)"})
    decoding: str | None = field(default=None, metadata={
        "help": "autoregressive (one action token per step, the reference's) or parallel (every action of the chunk "
                "in one forward pass, OpenVLA-OFT's); unset: as the preset or checkpoint says"})
    action_head: str | None = field(default=None, metadata={
        "help": "tokens (256-bin tokens) or l1 (continuous values from an MLP, L1 loss; needs --decoding parallel)"})
    state_tokens: int | None = field(default=None, metadata={
        "help": "> 0: a state projector turns the robot state into this many embedding tokens after the image "
                "patches (needs --proprio); 0: the state as prompt tokens"})
    grounding_loss_weight: float = field(default=1.0, metadata={
        "help": "weight of the grounding tokens in the loss, relative to the action tokens and EOS (1: every "
                "label token counts the same)"})
    # --- data
    datasets: list[str] = field(default_factory=list, metadata={"help": "dataset folders (LeRobot v3/v2.1 or RLDS)"})
    mixture: str | None = field(default=None, metadata={"help": "named mixture weighting the datasets by name"})
    weights: list[str] | None = field(default=None, metadata={
        "help": "NAME=WEIGHT mixture weights that override the --mixture's (or 1.0, proportional to size), e.g. "
                "vision_language=0.5; NAME is a dataset's name or vision_language for the --vl-corpus"})
    stage: str = field(default="actions", metadata={
        "help": "actions (robot data), vl-pretrain (the --vl-corpus alone: next-token loss on the answers, the "
                "Prismatic stage before robot data) or cotrain (robot data and the corpus in every batch, RT-2's "
                "recipe)"})
    vl_corpus: str | None = field(default=None, metadata={
        "help": "vision-language corpus folder (robovla collect-vl) for --stage vl-pretrain or cotrain"})
    max_episodes: int | None = field(default=None, metadata={
        "help": "train on the first N episodes of each dataset folder only (data-efficiency studies: 10, 50, 150 "
                "demonstrations of one collection, each set inside the next)"})
    augment: bool = field(default=True, metadata={"help": "random crop + colour jitter (the reference's)"})
    augment_crop: bool = field(default=True, metadata={
        "help": "with --augment: the random crop too (90%% of the area); --no-augment-crop keeps the colour jitter "
                "alone, for a policy that is evaluated on uncropped frames"})
    instruction_noise: float = field(default=0.0, metadata={
        "help": "share of robot-data instructions given one or two filler words the model cannot read (everyday "
                "and made-up words; robovla.data.instruction_noise), so that it learns to pass over unknown words; "
                "no filler is a word of an evaluation rewrite family (0 = off)"})
    loader_workers: int = field(default=0, metadata={
        "help": "processes that decode and process the next batches while the model trains (0: in the training "
                "process; the batches are the same either way). On a GPU the step is often faster than one "
                "process can make batches"})
    # --- what trains
    strategy: str = field(default="full", metadata={"help": f"one of {', '.join(STRATEGIES)}"})
    lora_rank: int = field(default=32, metadata={"help": "LoRA rank (alpha = min(rank, 16))"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    lora_init: str = field(default="gaussian", metadata={"help": "LoRA init: gaussian or default"})
    # --- optimisation
    steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "global batch per optimizer step (all ranks, all micro-steps)"})
    grad_accumulation: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    schedule: str = field(default="constant", metadata={"help": f"one of {', '.join(SCHEDULES)}"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps (warmup-cosine)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = off)"})
    precision: str = field(default="auto", metadata={
        "help": "bf16 autocast, fp32, or auto: bf16 where the GPU or CPU multiplies bfloat16 natively (default)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations to save memory"})
    seed: int = field(default=7, metadata={"help": "seed for init, sampling and augmentation"})
    # --- outputs
    out: str = field(default="runs/train", metadata={"help": "run folder (metrics.jsonl, checkpoints/)"})
    log_every: int = field(default=10, metadata={"help": "steps between metric lines"})
    save_every: int = field(default=500, metadata={"help": "steps between checkpoints (0 = only at the end)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "how many step checkpoints to keep"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in --out"})
    stop_at: int | None = field(default=None, metadata={
        "help": "stop after this step with a checkpoint, keeping the --steps schedule (time-sliced jobs: "
                "--resume later continues to exactly the weights of an uninterrupted run)"})
    tensorboard: bool = field(default=False, metadata={"help": "also log to TensorBoard (out/tensorboard)"})
    wandb: bool = field(default=False, metadata={"help": "also log to Weights & Biases"})
    wandb_project: str = field(default="robovla", metadata={"help": "W&B project"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    distributed: str = field(default="auto", metadata={"help": "auto (ddp under torchrun), none, ddp or fsdp"})

    def __post_init__(self) -> None:
        for name, allowed in (("policy", POLICIES), ("stage", STAGES), ("strategy", STRATEGIES), ("schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("distributed", DISTRIBUTED), ("lora_init", LORA_INITS)):
            if getattr(self, name) not in allowed:
                raise RobovlaError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(allowed)}")
        for name in ("steps", "batch_size", "grad_accumulation", "log_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise RobovlaError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise RobovlaError(f"max_episodes must be >= 1, got {self.max_episodes}")
        if not 0.0 <= self.instruction_noise <= 1.0:
            raise RobovlaError(f"instruction_noise is a share of the instructions, in [0, 1]; got "
                               f"{self.instruction_noise}")
        if self.loader_workers < 0:
            raise RobovlaError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if not self.grounding_loss_weight > 0:
            raise RobovlaError(f"grounding_loss_weight must be > 0, got {self.grounding_loss_weight}")
        if self.action_chunk is not None and self.action_chunk < 1:
            raise RobovlaError(f"action_chunk must be >= 1, got {self.action_chunk}")
        if self.batch_size % self.grad_accumulation:
            raise RobovlaError(
                f"batch_size {self.batch_size} is not divisible by grad_accumulation {self.grad_accumulation}"
            )
        self.mixture_weights()  # a malformed or negative weight fails before any work
        self._check_stage()
        if self.checkpoint is None:
            self.preset = self.preset or DEFAULT_PRESETS[self.policy]
        if self.policy == "diffusion":
            given = [name for name in VLA_ONLY if getattr(self, name) is not None]
            if given:
                flags = ", ".join("--" + name.replace("_", "-") for name in given)
                raise RobovlaError(f"{flags}: VLA recipe options; a Diffusion Policy's horizon and denoiser come "
                                   "from its preset")
            if self.strategy != "full":
                raise RobovlaError(f"--strategy {self.strategy}: a Diffusion Policy trains all its weights (it has "
                                   "no pretrained part to freeze); use --strategy full")

    def _check_stage(self) -> None:
        if self.stage == "actions":
            if self.vl_corpus:
                raise RobovlaError("--vl-corpus is read by --stage vl-pretrain or cotrain (this run trains on "
                                   "robot data only)")
            return
        if not self.vl_corpus:
            raise RobovlaError(f"--stage {self.stage} needs a vision-language dataset: pass --vl-corpus DIR "
                               "(written by robovla collect-vl)")
        if self.policy == "diffusion":
            raise RobovlaError(f"--stage {self.stage}: a Diffusion Policy has no language model to answer "
                               "questions; vision-language stages train a VLA")
        if self.decoding == "parallel":
            raise RobovlaError(f"--stage {self.stage}: the parallel-decoding recipe says actions, not words; train "
                               "this stage autoregressively, then fine-tune its checkpoint with --decoding parallel")
        if self.stage == "vl-pretrain" and self.datasets:
            raise RobovlaError("--stage vl-pretrain trains on the vision-language corpus alone: drop --datasets "
                               "(robot data comes in the next run, with --checkpoint on this one's result)")

    def mixture_weights(self) -> dict[str, float]:
        """--weights as {name: weight}; a malformed, repeated or negative weight is an error naming it."""
        parsed: dict[str, float] = {}
        for item in self.weights or []:
            name, sep, text = item.partition("=")
            try:
                weight = float(text)
            except ValueError:
                weight = None
            if not sep or not name or weight is None:
                raise RobovlaError(f"--weights {item!r}: expected NAME=WEIGHT, e.g. vision_language=0.5")
            if name in parsed:
                raise RobovlaError(f"--weights names {name!r} twice")
            if not (weight >= 0 and weight != float("inf")):
                raise RobovlaError(f"--weights {item!r}: a mixture weight must be a finite number >= 0")
            parsed[name] = weight
        return parsed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def recipe_for(self, base: Any, action_dim: int | None = None, state_dim: int | None = None) -> Any:
        """`base` (the preset's or checkpoint's `Recipe`) with the recipe options this run sets; a parallel
        recipe's action width and a state projector's input width are the data's (`action_dim`, `state_dim`)."""
        from robovla.config import Recipe

        changes = {name: getattr(self, name) for name in ("proprio", "grounding", "action_chunk", "decoding",
                                                          "action_head", "state_tokens")
                   if getattr(self, name) is not None}
        if self.cameras is not None:
            changes["cameras"] = tuple(self.cameras)
        merged = {**base.to_dict(), **changes}
        if merged["decoding"] == "parallel" and action_dim is not None:
            merged["action_dim"] = action_dim
        elif merged["decoding"] != "parallel":
            merged["action_dim"] = 0
        if merged["state_tokens"] and state_dim is not None:
            merged["state_dim"] = state_dim
        elif not merged["state_tokens"]:
            merged["state_dim"] = 0
        return Recipe.from_dict(merged, where="training options")

    @property
    def needs_data_widths(self) -> bool:
        """Whether the recipe's new modules take their shape from the data (a parallel head, a state projector)."""
        return self.decoding == "parallel" or bool(self.state_tokens)

    def differences(self, other: "TrainConfig") -> list[str]:
        """Keys whose values differ (ignoring those a resumption may change)."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in RESUMABLE_CHANGES and a[k] != b[k])

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RobovlaError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**data)


# ------------------------------------------------------------------------------------------------ command line
def _arg_type(annotation: Any):
    """The element parser for a field's annotation (str | None -> str, list[str] -> str, ...)."""
    base = annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        base = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(base) is list:
        return typing.get_args(base)[0], True
    return base, False


def add_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    parser.add_argument("--config", help="JSON file of options (flags override it)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind, is_list = _arg_type(hints[f.name])
        default = (defaults or {}).get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif is_list:
            parser.add_argument(flag, nargs="+", type=kind, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=help_text)


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults < --config file < explicit flags."""
    values: dict[str, Any] = dict(defaults or {})
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            values.update(json.loads(path.read_text()))
        except FileNotFoundError:
            raise RobovlaError(f"config file not found: {path}") from None
        except json.JSONDecodeError as error:
            raise RobovlaError(f"{path}: not valid JSON ({error})") from None
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            values[f.name] = value
    return TrainConfig.from_dict(values)
