"""The typed recipe of a Diffusion Policy (Chi et al. 2023): what it sees, what it predicts, how it denoises."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from robovla.errors import RobovlaError

POLICY_TYPE = "diffusion"  # `config.json`'s "policy_type"; OpenVLA-layout checkpoints have none


@dataclass(frozen=True)
class DiffusionConfig:
    """Defaults follow Diffusion Policy's CNN variant: a GroupNorm ResNet-18 per camera with spatial-softmax
    keypoints, a 1-D conditional U-Net over 16 future actions of which 8 are executed, DDPM with 100 steps to
    train and DDIM with 10 to act, epsilon prediction, EMA weights. Language enters as FiLM conditioning from a
    learnt mean-pooled embedding of the instruction's token ids (no pretrained sentence encoder)."""

    cameras: tuple[str, ...] = ("image",)
    image_size: int = 96  # square crops the encoder sees (Diffusion Policy: 84-96 px)
    state_dim: int = 0  # the robot state's length (0: the policy reads none)
    action_dim: int = 7
    horizon: int = 16  # actions predicted per call
    n_action_steps: int = 8  # of those, executed before asking again
    resnet_layers: tuple[int, ...] = (2, 2, 2, 2)  # BasicBlocks per stage: ResNet-18
    resnet_width: int = 64  # channels of the first stage (doubles per stage)
    keypoints: int = 32  # spatial-softmax keypoints per camera (2 features each)
    vision_dim: int = 64  # each camera's feature size after the keypoints
    vocab_size: int = 32064  # of the tokenizer whose ids the language embedding reads
    language_dim: int = 64
    down_dims: tuple[int, ...] = (256, 512, 1024)  # U-Net channels per level
    kernel_size: int = 5
    groups: int = 8  # GroupNorm groups inside the U-Net
    timestep_dim: int = 128
    train_steps: int = 100  # DDPM noise levels in training
    inference_steps: int = 10  # DDIM steps when acting
    beta_schedule: str = "squaredcos_cap_v2"
    ema_decay: float = 0.9999  # the EMA's ceiling; it warms up (power 0.75) as Diffusion Policy's does
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        positive = ("image_size", "action_dim", "horizon", "n_action_steps", "resnet_width", "keypoints",
                    "vision_dim", "vocab_size", "language_dim", "kernel_size", "groups", "timestep_dim",
                    "train_steps", "inference_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise RobovlaError(f"diffusion config: {name} must be at least 1, got {getattr(self, name)}")
        if not self.cameras:
            raise RobovlaError("diffusion config: at least one camera")
        if self.state_dim < 0:
            raise RobovlaError(f"diffusion config: state_dim must be >= 0, got {self.state_dim}")
        if self.n_action_steps > self.horizon:
            raise RobovlaError(f"diffusion config: n_action_steps ({self.n_action_steps}) exceeds the horizon "
                               f"({self.horizon}) it is taken from")
        levels = len(self.down_dims)
        if self.horizon % 2 ** (levels - 1):
            raise RobovlaError(f"diffusion config: the U-Net halves the horizon {levels - 1} times, so it must be a "
                               f"multiple of {2 ** (levels - 1)}, got {self.horizon}")
        if any(dim % self.groups for dim in self.down_dims):
            raise RobovlaError(f"diffusion config: every down_dims entry must be a multiple of groups ({self.groups})")
        if self.inference_steps > self.train_steps:
            raise RobovlaError(f"diffusion config: inference_steps ({self.inference_steps}) exceeds train_steps "
                               f"({self.train_steps})")

    @property
    def condition_dim(self) -> int:
        """FiLM's input besides the timestep: every camera's features, the language embedding, the state."""
        return len(self.cameras) * self.vision_dim + self.language_dim + self.state_dim

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policy_type"] = POLICY_TYPE
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffusionConfig":
        if data.get("policy_type") != POLICY_TYPE:
            raise RobovlaError(f"not a diffusion policy config (policy_type {data.get('policy_type')!r})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"policy_type"})
        if unknown:
            raise RobovlaError(f"diffusion config: unknown fields {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


PRESETS: dict[str, DiffusionConfig] = {
    # Diffusion Policy's CNN defaults (about 76M parameters with one camera)
    "diffusion": DiffusionConfig(),
    # the same design at the size of the tabletop VLA presets (about 6M): 2 CPU cores train it at ~4 steps/s
    "diffusion-cpu": DiffusionConfig(resnet_layers=(1, 1, 1, 1), resnet_width=32, down_dims=(64, 128, 256),
                                     timestep_dim=64),
}


def diffusion_preset(name: str, **changes: Any) -> DiffusionConfig:
    """A named configuration with `changes` (cameras, state_dim, action_dim, vocab_size, ...) applied."""
    from dataclasses import replace

    if name not in PRESETS:
        raise RobovlaError(f"unknown Diffusion Policy preset {name!r}; valid: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **changes)
