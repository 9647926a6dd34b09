"""`Policy`: a checkpoint ready to act, the one inference entry of the CLI, the server, evaluation and the demo.

A policy is a model plus what using it takes: which dataset's statistics turn tokens back into actions, whether
decoding may pick any token or only action tokens, and who says where the instruction's objects are (the
model's grounding pointer, its own tokens, or values handed in with each call: a detector, the simulator).
Observations are dicts keyed like the recipe's cameras (`"image"`, ...), plus `"instruction"` and, for models
that read the robot state, `"proprio"`; a missing key is an error that names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from robovla.config import Recipe
from robovla.errors import RobovlaError

GROUNDING_CHOICES = ("pointer", "tokens")
Observation = Mapping[str, Any]


class Policy:
    """`predict(observation(s)) -> ActionPrediction`, with `compile()` and `warm_up()` for repeated calls."""

    def __init__(self, model: Any, unnorm_key: str | None = None, restrict_to_actions: bool = False,
                 grounding: str | None = None) -> None:
        from robovla.processing import resolve_unnorm_key

        if unnorm_key is not None:
            resolve_unnorm_key(model.norm_stats, unnorm_key)  # an unknown dataset fails here, listing the known
        self.model = model
        self.unnorm_key = unnorm_key  # None: the checkpoint's only dataset, or one named with each call
        self.restrict_to_actions = restrict_to_actions
        grounding = grounding or self.recipe.grounding_source
        if grounding not in GROUNDING_CHOICES:
            raise RobovlaError(f"unknown grounding source {grounding!r}; valid: {', '.join(GROUNDING_CHOICES)}")
        if grounding == "pointer" and model.grounding_pointer is None:
            raise RobovlaError("grounding source 'pointer': this model has no grounding pointer (robovla fit-pointer)")
        self.grounding = grounding

    @classmethod
    def from_pretrained(cls, path: str | Path, unnorm_key: str | None = None, restrict_to_actions: bool = False,
                        grounding: str | None = None, **load: Any) -> "Policy":
        """Load a checkpoint folder (`load`: dtype, device, quantization, as `robovla.load_pretrained`)."""
        from robovla.model.checkpoint import load_pretrained

        return cls(load_pretrained(path, **load), unnorm_key, restrict_to_actions, grounding)

    # ------------------------------------------------------------------------------------------- what it needs
    @property
    def recipe(self) -> Recipe:
        return self.model.recipe

    @property
    def image_size(self) -> int:
        return self.model.processor.image_config.image_sizes[0]

    def action_dim(self, unnorm_key: str | None = None) -> int:
        return self.model.action_dim(unnorm_key or self.unnorm_key)

    def proprio_dim(self, unnorm_key: str | None = None) -> int | None:
        """Length of the robot state the model reads for a dataset (None: it reads none)."""
        from robovla.processing import resolve_unnorm_key

        if not self.recipe.proprio:
            return None
        key = resolve_unnorm_key(self.model.norm_stats, unnorm_key or self.unnorm_key)
        return len(self.model.norm_stats[key].get("proprio", {}).get("q01", [])) or None

    # ----------------------------------------------------------------------------------------------- acting
    def predict(self, observations: Observation | Sequence[Observation], grounding: Any = None,
                unnorm_key: str | None = None):
        """One observation dict, or a list of them (one batched model call) -> `ActionPrediction`.

        `grounding` [B, G] tells a grounding model where the named objects are (NaN: the policy's own source
        decides), in the dataset's units: an object detector's output, or the simulator's true positions.
        `unnorm_key` names this call's dataset when the policy has none of its own (a server's requests)."""
        batch = [observations] if isinstance(observations, Mapping) else list(observations)
        if not batch:
            raise RobovlaError("no observations given")
        for k, observation in enumerate(batch):
            self._check(k, observation)
        camera = self.recipe.cameras[0]  # the model reads one image today; more cameras come with their recipe
        return self.model.predict(
            [o[camera] for o in batch], [o["instruction"] for o in batch], unnorm_key or self.unnorm_key,
            restrict_to_actions=self.restrict_to_actions,
            proprio=[o["proprio"] for o in batch] if self.recipe.proprio else None,
            grounding=grounding, use_pointer=self.grounding == "pointer",
        )

    def _check(self, index: int, observation: Observation) -> None:
        if not isinstance(observation, Mapping):
            raise RobovlaError(f"observation {index} must be a dict, got {type(observation).__name__}")
        needed = [*self.recipe.cameras, "instruction", *(["proprio"] if self.recipe.proprio else [])]
        missing = [key for key in needed if observation.get(key) is None]
        if missing:
            raise RobovlaError(f"observation {index} has no {', '.join(map(repr, missing))} (this checkpoint reads "
                               f"{', '.join(needed)})")

    # ------------------------------------------------------------------------------------------- speed
    def compile(self) -> "Policy":
        """torch.compile the model's inference path (see `VLA.compile_inference`)."""
        self.model.compile_inference()
        return self

    def warm_up(self, on_call: Callable[[int, int, float], None] | None = None) -> None:
        """Compile now the shapes later calls need (see `VLA.warm_up`)."""
        self.model.warm_up(self.unnorm_key, on_call)

